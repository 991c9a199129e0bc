/* scheduler (lib/sched*.c): continuous batching of generation requests over one model.
 *
 * A scheduler holds requests (a prompt of token ids, sampling parameters, a token budget,
 * stop ids and stop strings, optional KV hints) in arrival order. Each fi_sched_step():
 *   1. admits waiting requests, oldest first, while the batch has room (max_batch) and the
 *      KV cache has free blocks for the whole prompt plus every token the request may
 *      generate, so a running batch never runs out of cache; a request copies the cached
 *      prefix of its prompt from the KV arena when it may (a kv reference, prefix_cache);
 *   2. runs one forward pass mixing the prompt tokens of new requests (whole prompts, or
 *      chunks of at most max_prefill_tokens per step) and the last token of every running
 *      one (model.h: a batch mixes sequences at different stages);
 *   3. samples one token per request whose prompt is complete, detects its stops and
 *      reports events through the callback: a token event per generated token, then one
 *      done event (finish reason, counts, timings) when the request ends.
 * Requests never see each other: a request's tokens (greedy or seeded) do not depend on the
 * batch around it, only on its prompt and parameters.
 *
 * Stops. Generation ends, with finish FI_FINISH_STOP, at a stop id (the model's
 * end-of-generation ids, the request's stop ids and its sampling stop ids), which is not
 * emitted; or when the output text contains a stop string (HF semantics): the token that
 * completes it is emitted, the text is cut just before the stop string (it and anything
 * after it never appear in text pieces). Ends with FI_FINISH_LENGTH after max_tokens tokens
 * or at the model's context; FI_FINISH_CANCEL through fi_sched_cancel*.
 *
 * Text. With a tokenizer (opts.tok), every token event carries the text it releases:
 * complete UTF-8 (fi_tok_stream), less what is held back because it may begin a stop
 * string. When the request ends, the text still held back (an incomplete character, a
 * stop-string prefix) is in the done event (text + text_sent); the token pieces followed
 * by that tail are the output text. Without a tokenizer, events carry no text and requests
 * with stop strings are refused (FI_EUNSUPPORTED).
 *
 * The library never prints: warnings (the arena cannot be attached, a block fetch failed:
 * the prompt is then computed) are FI_SCHED_EV_WARN events. A callback returning an error
 * stops the step and fi_sched_step() returns it (a broken output stream). */
#ifndef FI_SCHEDULER_H
#define FI_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "frame/frame.h"
#include "model/image.h"
#include "kv/kvxfer.h"
#include "model/model.h"
#include "backend/sample.h"
#include "text/tokenizer.h"

struct fi_sched;

enum fi_sched_ev_type {
	FI_SCHED_EV_TOKEN, /* one generated token */
	FI_SCHED_EV_DONE,  /* the last event of a request */
	FI_SCHED_EV_ERROR, /* a request failed after admission (a done with FI_FINISH_ERROR follows) */
	FI_SCHED_EV_WARN,  /* something degraded, the request goes on (id may be NULL) */
};

struct fi_sched_event {
	enum fi_sched_ev_type type;
	const char *id; /* the request's id */
	void *user;     /* the request's user pointer */
	int stream;     /* the request's stream flag */
	/* token */
	uint32_t token, index;
	/* token: the new text piece (text_len 0: none). done: the whole output text (cut
	 * before a stop string), of which the first text_sent bytes went in token events. */
	const char *text;
	size_t text_len, text_sent;
	/* done */
	enum fi_finish finish;
	uint32_t prompt_tokens, gen_tokens, cached_tokens;
	double queue_ms, ttft_ms, tpot_ms, total_ms; /* negative: not measured */
	const uint32_t *tokens; /* the generated tokens [gen_tokens] (stop ids excluded) */
	size_t stored_blocks;   /* prompt blocks this request published in the arena */
	/* error, warn */
	fi_err code;
	const char *message;
};

/* Called for every event, from inside fi_sched_step / fi_sched_cancel*; it must not call
 * back into the scheduler. The event's memory is valid only during the call. */
typedef fi_err (*fi_sched_cb)(void *user, const struct fi_sched_event *ev);

struct fi_sched_opts {
	int max_batch;          /* sequences in one forward (default 64) */
	int max_requests;       /* admitted and waiting (default max_batch + 1024) */
	int max_prefill_tokens; /* prompt tokens per forward; 0: whole prompts (default) */
	uint32_t max_tokens;    /* tokens per request when it does not say (default 256) */
	const struct fi_tok *tok; /* text pieces and stop strings; NULL: neither (borrowed) */
	unsigned tok_flags;       /* decode flags (FI_TOK_SKIP_SPECIAL) */
	/* The KV arena (kvxfer.h); fingerprint NULL: never used. */
	const uint8_t *fingerprint; /* the model image's fingerprint [32] */
	int prefix_cache;       /* every prompt: look its prefix up, publish its blocks */
	uint64_t arena_size;    /* when this process creates the arena (0: default) */
	fi_sched_cb cb;
	void *cb_user;
};

void fi_sched_opts_default(struct fi_sched_opts *o);

/* Request flags. */
enum {
	/* Stop ids (the model's end-of-generation ids included) do not end the request:
	 * fi-prefill's first token is passed on whatever it is. */
	FI_SCHED_NO_STOP = 1,
	/* The model's end-of-generation ids do not end the request (its own stop ids and
	 * stop strings still do): benchmarks run every request to max_tokens. */
	FI_SCHED_IGNORE_EOS = 2,
};

struct fi_sched_req {
	const char *id;           /* copied; unique among the requests held */
	const uint32_t *tokens;   /* the prompt [ntokens], copied */
	uint32_t ntokens;
	struct fi_sample_params sp; /* its stop ids end generation too */
	uint32_t max_tokens;      /* 0: opts.max_tokens; cut to the context */
	const uint32_t *stop_ids; /* [nstop_ids] */
	uint32_t nstop_ids;
	char *const *stop;        /* stop strings [nstop], copied */
	uint32_t nstop;
	const struct fi_kv_ref *kv; /* optional: the prompt's blocks in the arena (a hint) */
	int has_first;            /* first_token was drawn by another process (fi-prefill): */
	uint32_t first_token;     /* it is kept, the sampler advanced as if drawn here */
	int stream;               /* passed to events */
	unsigned flags;           /* FI_SCHED_* */
	void *user;               /* passed to events */
};

/* A scheduler over model m (creating its KV cache with the defaults if it has none). The
 * model must outlive it. */
fi_err fi_sched_create(struct fi_model *m, const struct fi_sched_opts *o, struct fi_sched **out);
/* Drops every request without events; closes the arena handle. NULL is a no-op. */
void fi_sched_destroy(struct fi_sched *s);

/* Queues a request. Refusals (nothing is queued; the detail names the request):
 * FI_EEXIST a request with this id is held, FI_EBUSY max_requests are held, FI_EINVAL no
 * prompt / an empty stop string / bad sampling, FI_ERANGE a token outside the vocabulary or
 * a prompt that fills the context, FI_EFULL more KV than the whole cache,
 * FI_EUNSUPPORTED stop strings without a tokenizer, FI_EMISMATCH a kv reference for
 * another model or prompt. */
fi_err fi_sched_add(struct fi_sched *s, const struct fi_sched_req *r);

/* Admits what fits and runs one forward pass (nothing when no request is held). Events
 * are reported before it returns. Returns a model failure or the callback's error. */
fi_err fi_sched_step(struct fi_sched *s);
/* Steps until no request is held. */
fi_err fi_sched_run(struct fi_sched *s);

/* Ends request id with finish "cancel" (its done event is reported now); FI_ENOTFOUND
 * when no such request is held. */
fi_err fi_sched_cancel(struct fi_sched *s, const char *id);
/* Ends every request with finish "cancel", in arrival order, whatever the callback returns
 * (its first error is returned). */
fi_err fi_sched_cancel_all(struct fi_sched *s);

/* Requests held (admitted and waiting); of them, those admitted (running); 1 if request id
 * is held. */
int fi_sched_pending(const struct fi_sched *s);
int fi_sched_running(const struct fi_sched *s);
int fi_sched_has(const struct fi_sched *s, const char *id);

/* A first token drawn elsewhere for a request that has not arrived yet (fi-prefill sends it
 * ahead of its request): the request of that id takes it when added. Up to 256 are kept,
 * the oldest forgotten first. */
void fi_sched_first_token(struct fi_sched *s, const char *id, uint32_t token);

/* Attaches the model's arena now (create: make it if absent) and returns it; an attached
 * one is returned as it is. Needs opts.fingerprint. */
fi_err fi_sched_arena(struct fi_sched *s, int create, struct fi_kvx **x);

/* ---- frames (sched_frame.c) ---- */


/* Text prompts are encoded as fi-tokenize encodes a line by default: the post-processor's
 * special tokens added, special-token text not parsed, invalid UTF-8 replaced by U+FFFD. */
#define FI_SCHED_ENCODE_FLAGS (FI_TOK_ADD_SPECIAL | FI_TOK_REPLACE_INVALID)

/* A request frame whose prompt is text only gets its tokens (owned by the frame, the text
 * kept): FI_EUNSUPPORTED naming the request when tok is NULL, FI_EINVAL for a text that
 * encodes to nothing. A frame with tokens is left as it is. */
fi_err fi_sched_encode_prompt(const struct fi_tok *tok, struct fi_frame *f);

/* A request frame (with tokens) as a scheduler request borrowing the frame's memory: keys
 * the frame leaves unset come from dflt (sampling) and are 0 otherwise (max_tokens). */
void fi_sched_req_from_frame(const struct fi_frame *f, const struct fi_sample_params *dflt,
			     struct fi_sched_req *r);

/* The frame of a token or done event (borrowing the event's memory; not to be freed): a
 * token frame with its text piece; a done frame with the text not sent in token frames, or,
 * for a request with stream false, the whole output (tokens and text). Returns 0 when the
 * event makes no frame (a token of a non-streaming request, warn and error events). */
int fi_sched_event_frame(const struct fi_sched_event *ev, struct fi_frame *f);

#endif
