/* Encoding: added-token split, normalization, pre-tokenization, the model, post-processing
 * (TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, Sequence). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static fi_err ids_of(json_t *v, uint32_t **ids, size_t *n, const char *what)
{
	size_t i;
	json_t *x;
	if (!json_is_array(v))
		return fi_fail(FI_EFORMAT, "post_processor: %s: ids is not an array", what);
	*n = json_array_size(v);
	if (!(*ids = realloc(*ids, (*n + 1) * sizeof **ids)))
		return fi_fail(FI_ENOMEM, "post_processor");
	json_array_foreach(v, i, x) {
		if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= (1 << 26))
			return fi_fail(FI_ERANGE, "post_processor: %s: id out of range", what);
		(*ids)[i] = (uint32_t)json_integer_value(x);
	}
	return FI_OK;
}

static fi_err append_ids(uint32_t **dst, size_t *n, const uint32_t *src, size_t k)
{
	uint32_t *v = realloc(*dst, (*n + k + 1) * sizeof *v);
	if (!v)
		return fi_fail(FI_ENOMEM, "post_processor");
	memcpy(v + *n, src, k * sizeof *v);
	*dst = v;
	*n += k;
	return FI_OK;
}

static fi_err parse_template(json_t *j, struct tok_post *p)
{
	json_t *single = json_object_get(j, "single"), *sp = json_object_get(j, "special_tokens"), *it;
	size_t i;
	int seen_a = 0;
	fi_err e;
	if (!json_is_array(single))
		return fi_fail(FI_EFORMAT, "post_processor TemplateProcessing: 'single' is not an array");
	json_array_foreach(single, i, it) {
		json_t *s = json_object_get(it, "SpecialToken"), *q = json_object_get(it, "Sequence");
		if (json_is_object(q)) {
			json_t *id = json_object_get(q, "id");
			if (seen_a || !json_is_string(id) || strcmp(json_string_value(id), "A"))
				return fi_fail(FI_EFORMAT, "post_processor TemplateProcessing: 'single' must hold $A once");
			seen_a = 1;
		} else if (json_is_object(s)) {
			json_t *id = json_object_get(s, "id"), *tok;
			uint32_t *ids = NULL;
			size_t n = 0;
			if (!json_is_string(id) || !(tok = json_object_get(sp, json_string_value(id))))
				return fi_fail(FI_EFORMAT, "post_processor TemplateProcessing: missing special token '%s'",
					       json_is_string(id) ? json_string_value(id) : "?");
			if ((e = ids_of(json_object_get(tok, "ids"), &ids, &n, json_string_value(id)))) {
				free(ids);
				return e;
			}
			e = seen_a ? append_ids(&p->post, &p->npost, ids, n) : append_ids(&p->pre, &p->npre, ids, n);
			free(ids);
			if (e)
				return e;
		} else
			return fi_fail(FI_EFORMAT, "post_processor TemplateProcessing: bad item %zu", i);
	}
	if (!seen_a)
		return fi_fail(FI_EFORMAT, "post_processor TemplateProcessing: 'single' must hold $A once");
	return FI_OK;
}

fi_err tok_post_parse(const struct fi_tok *t, json_t *j, struct tok_post *p, int depth)
{
	json_t *ty = json_object_get(j, "type");
	const char *s = json_is_string(ty) ? json_string_value(ty) : NULL;
	memset(p, 0, sizeof *p);
	if (depth > TOK_MAX_DEPTH)
		return fi_fail(FI_EFORMAT, "post_processor: nested deeper than %d", TOK_MAX_DEPTH);
	if (!s)
		return fi_fail(FI_EFORMAT, "post_processor: not an object with a type");
	if (!strcmp(s, "Sequence")) {
		json_t *a = json_object_get(j, "processors"), *v;
		size_t i;
		p->type = TPP_SEQ;
		if (!json_is_array(a))
			return fi_fail(FI_EFORMAT, "post_processor Sequence: 'processors' is not an array");
		if (!(p->sub = calloc(json_array_size(a) + 1, sizeof *p->sub)))
			return fi_fail(FI_ENOMEM, "post_processor");
		json_array_foreach(a, i, v) {
			fi_err e = tok_post_parse(t, v, &p->sub[i], depth + 1);
			p->nsub = i + 1;
			if (e)
				return e;
		}
		return FI_OK;
	}
	if (!strcmp(s, "ByteLevel")) {
		p->type = TPP_NOOP; /* changes offsets only */
		return FI_OK;
	}
	if (!strcmp(s, "TemplateProcessing")) {
		p->type = TPP_TEMPLATE;
		return parse_template(j, p);
	}
	if (!strcmp(s, "RobertaProcessing") || !strcmp(s, "BertProcessing")) {
		json_t *cls = json_object_get(j, "cls"), *sep = json_object_get(j, "sep");
		json_t *ci = json_array_get(cls, 1), *si = json_array_get(sep, 1);
		p->type = TPP_TEMPLATE;
		if (!json_is_integer(ci) || !json_is_integer(si) || json_integer_value(ci) < 0 ||
		    json_integer_value(si) < 0)
			return fi_fail(FI_EFORMAT, "post_processor %s: bad cls/sep", s);
		p->pre = malloc(sizeof *p->pre);
		p->post = malloc(sizeof *p->post);
		if (!p->pre || !p->post)
			return fi_fail(FI_ENOMEM, "post_processor");
		p->pre[0] = (uint32_t)json_integer_value(ci);
		p->post[0] = (uint32_t)json_integer_value(si);
		p->npre = p->npost = 1;
		return FI_OK;
	}
	return fi_fail(FI_EUNSUPPORTED, "post_processor '%s' is not supported", s);
}

void tok_post_free(struct tok_post *p)
{
	for (size_t i = 0; i < p->nsub; i++)
		tok_post_free(&p->sub[i]);
	free(p->sub);
	free(p->pre);
	free(p->post);
}

/* Sequence [p1, p2] wraps as p2(p1(A)): prefixes outermost first, suffixes innermost first. */
static int post_prefix(const struct tok_post *p, struct fi_tok_ids *out)
{
	if (p->type == TPP_SEQ) {
		for (size_t i = p->nsub; i-- > 0;)
			if (post_prefix(&p->sub[i], out))
				return -1;
		return 0;
	}
	for (size_t i = 0; i < p->npre; i++)
		if (tok_ids_push(out, p->pre[i]))
			return -1;
	return 0;
}

static int post_suffix(const struct tok_post *p, struct fi_tok_ids *out)
{
	if (p->type == TPP_SEQ) {
		for (size_t i = 0; i < p->nsub; i++)
			if (post_suffix(&p->sub[i], out))
				return -1;
		return 0;
	}
	for (size_t i = 0; i < p->npost; i++)
		if (tok_ids_push(out, p->post[i]))
			return -1;
	return 0;
}

/* Normalized text of one plain split: normalized-token split, pre-tokenize, model. */
static fi_err encode_plain(const struct fi_tok *t, struct tok_ctx *c, const char *s, size_t n,
			   int first, unsigned flags, struct tok_asplit **sp, size_t *cap,
			   struct fi_tok_ids *out)
{
	size_t ns;
	fi_err e;
	if ((e = tok_added_find(t, &t->trie_norm, flags & FI_TOK_PARSE_SPECIAL, s, n, sp, &ns, cap)))
		return e;
	for (size_t i = 0; i < ns; i++) {
		struct tok_asplit g = (*sp)[i];
		if (g.e <= g.s)
			continue;
		if (g.added >= 0) {
			if (tok_ids_push(out, t->added[g.added].id))
				return fi_fail(FI_ENOMEM, "encode");
			continue;
		}
		if ((e = tok_pre_run(c, t->pre, s + g.s, g.e - g.s, first && g.s == 0)))
			return e;
		for (size_t k = 0; k < c->pa.n; k++) {
			const struct tok_piece *q = &c->pa.v[k];
			if ((e = tok_model_encode(c, &t->bpe, c->pa.b.p + q->off, q->len, out)))
				return e;
		}
	}
	return FI_OK;
}

fi_err fi_tok_encode(const struct fi_tok *t, const char *text, size_t len, unsigned flags,
		     struct fi_tok_ids *out)
{
	struct tok_ctx *c;
	struct tok_asplit *s1 = NULL, *s2 = NULL;
	size_t n1 = 0, cap1 = 0, cap2 = 0, bad;
	fi_err e = FI_OK;
	if (len > (size_t)INT32_MAX)
		return fi_fail(FI_ERANGE, "encode: text of %zu bytes is too long", len);
	if (!(c = tok_ctx_get(t)))
		return fi_fail(FI_ENOMEM, "encode");
	if ((bad = tok_utf8_check(text, len)) != len) {
		if (!(flags & FI_TOK_REPLACE_INVALID)) {
			tok_ctx_put(t, c);
			return fi_fail(FI_EINVAL, "encode: invalid UTF-8 at byte %zu", bad);
		}
		c->text.n = 0;
		if (tok_utf8_lossy(text, len, &c->text)) {
			tok_ctx_put(t, c);
			return fi_fail(FI_ENOMEM, "encode");
		}
		text = c->text.p;
		len = c->text.n;
	}
	if ((flags & FI_TOK_ADD_SPECIAL) && t->post && post_prefix(t->post, out)) {
		e = fi_fail(FI_ENOMEM, "encode");
		goto out;
	}
	if ((e = tok_added_find(t, &t->trie_raw, flags & FI_TOK_PARSE_SPECIAL, text, len, &s1, &n1, &cap1)))
		goto out;
	for (size_t i = 0; i < n1 && !e; i++) {
		struct tok_asplit g = s1[i];
		if (g.e <= g.s)
			continue;
		if (g.added >= 0) {
			if (tok_ids_push(out, t->added[g.added].id))
				e = fi_fail(FI_ENOMEM, "encode");
			continue;
		}
		if (t->norm) {
			if ((e = tok_norm_apply(c, t->norm, text + g.s, g.e - g.s, &c->norm)))
				break;
			e = encode_plain(t, c, c->norm.p, c->norm.n, g.s == 0, flags, &s2, &cap2, out);
		} else
			e = encode_plain(t, c, text + g.s, g.e - g.s, g.s == 0, flags, &s2, &cap2, out);
	}
	if (!e && (flags & FI_TOK_ADD_SPECIAL) && t->post && post_suffix(t->post, out))
		e = fi_fail(FI_ENOMEM, "encode");
out:
	free(s1);
	free(s2);
	tok_ctx_put(t, c);
	return e;
}
