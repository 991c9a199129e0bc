/* results: the answers in a stream of frames, gathered per request, in the order a reader
 * wants them (fi-tokenize -d).
 *
 * Token, done and error frames are grouped by request id. A request's completion is the text
 * its frames carry (token pieces, then the done frame's text), or, when they carry none, its
 * token ids decoded with the tokenizer as they arrive. A request is finished by its done
 * frame or by an error frame (frames about it after that are ignored); when the input ends
 * first, it is finished as it stands (finished 0). Finished requests come out of
 * fi_results_next in one of three orders:
 *   FI_RESULTS_FIRST   in the order the requests first appeared; the first unfinished one
 *                      is the head, whose text can be taken as it grows (fi_results_stream);
 *   FI_RESULTS_FINISH  as they finish;
 *   FI_RESULTS_SEQ     by "seq" (the producer's numbering from 1: input order), held in a
 *                      window of at most `window` results; when the window is full the
 *                      missing number is given up (fi_results_gaps counts such gaps) and
 *                      the lowest held one goes out. Results without a seq go out at once.
 * Memory: one entry per request id seen (finished ones keep only their id, so late frames
 * about them are recognised) plus the text of the unfinished and held ones. */
#ifndef FI_RESULTS_H
#define FI_RESULTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "frame/frame.h"
#include "text/tokenizer.h"

enum fi_results_order { FI_RESULTS_FIRST, FI_RESULTS_FINISH, FI_RESULTS_SEQ };

/* One finished request; every pointer is valid until the next fi_results_next call. */
struct fi_result {
	const char *id;
	uint64_t seq;
	int has_seq;
	const char *prompt; /* the request's text (a done or error frame's "prompt"), or NULL */
	size_t prompt_len;
	const char *text;   /* the completion */
	size_t text_len;
	size_t streamed;    /* bytes of text already given by fi_results_stream */
	int finished;       /* 1: a done or error frame ended it; 0: the input ended first */
	enum fi_finish finish;
	uint32_t prompt_tokens, gen_tokens, cached_tokens;
	double queue_ms, ttft_ms, tpot_ms, total_ms; /* negative: not measured */
	int failed;         /* an error frame came for it */
	fi_err code;
	const char *message;
};

struct fi_results;

/* tok decodes token ids when frames carry no text (NULL: such requests get no text);
 * tok_flags: FI_TOK_SKIP_SPECIAL. window: FI_RESULTS_SEQ's bound (at least 1). */
fi_err fi_results_new(const struct fi_tok *tok, unsigned tok_flags, enum fi_results_order order,
		      uint32_t window, struct fi_results **out);
void fi_results_free(struct fi_results *R);

/* Takes a token, done or error frame (others are ignored). A failure is out of memory or a
 * token id the tokenizer refuses (that request's text stops there). */
fi_err fi_results_add(struct fi_results *R, const struct fi_frame *f);
/* End of input: unfinished requests are finished as they stand, and everything held is
 * released in order. */
void fi_results_end(struct fi_results *R);

/* FI_RESULTS_FIRST: the head's text not given yet (*text, returns its length; 0: none). */
size_t fi_results_stream(struct fi_results *R, const char **text);
/* The next finished request in order: 1 with *r filled, 0 when none is ready. */
int fi_results_next(struct fi_results *R, struct fi_result *r);
/* FI_RESULTS_SEQ: how many numbers were given up because the window was full, and the first
 * of them (*first, may be NULL). */
uint64_t fi_results_gaps(const struct fi_results *R, uint64_t *first);

/* A result as one JSON object (fi-tokenize(1), --jsonl):
 *   {"id", "seq"?, "prompt"?, "completion", "finish" (null when the input ended first),
 *    "counts": {"prompt_tokens", "gen_tokens", "cached_tokens"},
 *    "timings": {"queue_ms", "ttft_ms", "tpot_ms", "total_ms": those measured},
 *    "error": {"code", "message"} when it failed}
 * Text that is not valid UTF-8 has U+FFFD in place of the bad bytes. */
fi_err fi_result_to_json(const struct fi_result *r, json_t **out);

#endif
