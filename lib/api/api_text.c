/* api_text: fi_tokenize and fi_detokenize of the public fi_text.h, over text/tokenizer.h (the
 * other functions of fi_text.h are the tokenizer's and the chat template's own). */
#include "fi/fi.h"

#include <stdlib.h>

#include "text/chat.h"
#include "text/tokenizer.h"

/* The public flags are the tokenizer's, under names of their own. */
_Static_assert((int)FI_TEXT_ADD_SPECIAL == (int)FI_TOK_ADD_SPECIAL, "flag");
_Static_assert((int)FI_TEXT_PARSE_SPECIAL == (int)FI_TOK_PARSE_SPECIAL, "flag");
_Static_assert((int)FI_TEXT_REPLACE_INVALID == (int)FI_TOK_REPLACE_INVALID, "flag");
_Static_assert((int)FI_TEXT_SKIP_SPECIAL == (int)FI_TOK_SKIP_SPECIAL, "flag");

fi_err fi_tokenize(const struct fi_tok *t, const char *text, size_t len, unsigned flags,
		   uint32_t **ids, size_t *n)
{
	struct fi_tok_ids v = {0};
	fi_err e;
	*ids = NULL;
	*n = 0;
	if ((e = fi_tok_encode(t, text, len, flags, &v))) {
		fi_tok_ids_free(&v);
		return e;
	}
	/* an empty result is still an allocation the caller may free() */
	if (!v.v && !(v.v = malloc(sizeof *v.v)))
		return fi_fail(FI_ENOMEM, "tokenize: out of memory");
	*ids = v.v;
	*n = v.n;
	return FI_OK;
}

fi_err fi_detokenize(const struct fi_tok *t, const uint32_t *ids, size_t n, unsigned flags,
		     char **text, size_t *len)
{
	size_t l = 0;
	fi_err e = fi_tok_decode(t, ids, n, flags, text, &l);
	if (len)
		*len = e ? 0 : l;
	return e;
}
