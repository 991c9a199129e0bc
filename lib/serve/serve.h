/* serve (lib/serve/): requests as frames and text over the scheduler, which works in token
 * ids only. fi-decode runs its requests through it; fi-tokenize -d can use fi_text_out for
 * the same decoding of token frames.
 *
 * Text. Each token event gets the text it releases: complete UTF-8 from the tokenizer's
 * streaming decode (fi_tok_stream), less what is held back because it may begin a stop
 * string. When the request ends, the text still held back (an incomplete character, a
 * stop-string prefix) is in the done event (text + text_sent); the token pieces followed by
 * that tail are the output text.
 *
 * Stop strings (HF semantics): generation ends, finish "stop", when the output text contains
 * one; the token that completes it is emitted, the text is cut just before the stop string
 * (it and anything after it never appear in text pieces); a stop string split over several
 * tokens or inside one is found. */
#ifndef FI_SERVE_H
#define FI_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "frame/frame.h"
#include "sched/scheduler.h"
#include "text/tokenizer.h"

/* ---- the text of one request (serve_text.c) ---- */

struct fi_text_out;
/* A decoder for one request's tokens with stop strings stop[nstop] (copied; FI_EINVAL for an
 * empty one). flags: fi_tok_stream's (FI_TOK_SKIP_SPECIAL). */
fi_err fi_text_out_new(const struct fi_tok *tok, unsigned flags, char *const *stop,
		       uint32_t nstop, struct fi_text_out **out);
void fi_text_out_free(struct fi_text_out *t);
/* Feeds a generated token. last: nothing follows it (its text is flushed). Sets piece, n to
 * the text released now and *stopped when the text now holds a stop string (cut before it). */
fi_err fi_text_out_push(struct fi_text_out *t, uint32_t tok, int last, const char **piece,
			size_t *n, int *stopped);
/* The request ends without a last token (stop id, cancel): releases what the decoder holds. */
fi_err fi_text_out_end(struct fi_text_out *t);
/* The output text so far (cut before a stop string) and how much of it was released. */
const char *fi_text_out_text(const struct fi_text_out *t, size_t *len, size_t *sent);

/* ---- text over a scheduler (serve_text.c) ---- */

struct fi_serve;
struct fi_serve_opts {
	const struct fi_tok *tok; /* NULL: no text, stop strings refused (borrowed) */
	unsigned tok_flags;       /* decode flags (FI_TOK_SKIP_SPECIAL) */
	fi_sched_cb cb;           /* gets the scheduler's events with their text */
	void *cb_user;
};
fi_err fi_serve_new(const struct fi_serve_opts *o, struct fi_serve **out);
/* Frees the text state of every request (after fi_sched_destroy, which reports none). */
void fi_serve_free(struct fi_serve *v);
/* The callback to give fi_sched_create, with cb_user the fi_serve: fills in the text of
 * token and done events, ends requests at their stop strings, calls o->cb. */
fi_err fi_serve_event(void *serve, const struct fi_sched_event *ev);
/* fi_sched_add with stop strings stop[nstop] (r->user is passed on to events). Refusals
 * besides fi_sched_add's: FI_EINVAL an empty stop string, FI_EUNSUPPORTED stop strings
 * without a tokenizer. Every request of a scheduler that reports to fi_serve_event must
 * come in this way. */
fi_err fi_serve_add(struct fi_serve *v, struct fi_sched *s, const struct fi_sched_req *r,
		    char *const *stop, uint32_t nstop);

/* ---- frames (sched_frame.c) ---- */

/* Text prompts are encoded as fi-tokenize encodes a line by default: the post-processor's
 * special tokens added, special-token text not parsed, invalid UTF-8 replaced by U+FFFD. */
#define FI_SCHED_ENCODE_FLAGS (FI_TOK_ADD_SPECIAL | FI_TOK_REPLACE_INVALID)

/* A request frame whose prompt is text only gets its tokens (owned by the frame, the text
 * kept): FI_EUNSUPPORTED naming the request when tok is NULL, FI_EINVAL for a text that
 * encodes to nothing. A frame with tokens is left as it is. */
fi_err fi_sched_encode_prompt(const struct fi_tok *tok, struct fi_frame *f);

/* A request frame (with tokens) as a scheduler request borrowing the frame's memory: keys
 * the frame leaves unset come from dflt (sampling) and are 0 otherwise (max_tokens,
 * ignore_eos unless dflt_flags has FI_SCHED_IGNORE_EOS). Its stop strings are
 * f->req.stop[f->req.nstop] (for fi_serve_add). */
void fi_sched_req_from_frame(const struct fi_frame *f, const struct fi_sample_params *dflt,
			     unsigned dflt_flags, struct fi_sched_req *r);

/* The frame of a token or done event (borrowing the event's memory; not to be freed): a
 * token frame with its text piece and log-probabilities; a done frame with the text not
 * sent in token frames, or, for a request with stream false, the whole output (tokens and
 * text). Returns 0 when the event makes no frame (a token of a non-streaming request, warn
 * and error events). top is scratch for the alternatives [FI_SCHED_MAX_TOP]. */
int fi_sched_event_frame(const struct fi_sched_event *ev, struct fi_frame *f,
			 struct fi_token_top *top);

#endif
