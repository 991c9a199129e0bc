/* scheduler (lib/sched/): continuous batching of generation requests over one model, in
 * token ids (text is the business of lib/serve/, above it).
 *
 * A scheduler holds requests (a prompt of token ids, sampling parameters, a token budget,
 * stop ids, optional KV hints) and runs them in steps. Each fi_sched_step() builds one
 * forward pass under a token budget (max_step_tokens) and a sequence limit (max_batch):
 *   1. the decode token of every running request whose prompt is done, oldest first;
 *   2. prompt chunks of running requests still in their prompt, oldest first, as far as the
 *      budget goes (chunked prefill: a long prompt never stalls the running streams);
 *   3. new requests, admitted in arrival order (requests preempted earlier first, then new
 *      ones) while the batch has room, the budget lasts and the KV pool keeps more than a
 *      watermark of free blocks once their prompt is in: admission by present need, not by
 *      prompt + max_tokens, so the cache fills.
 * When a running request needs a block and none is left, the most recently admitted request
 * is preempted: its blocks are released (its full blocks stay in the prefix cache) and it
 * resumes later, before any new request, by computing its prompt and the tokens it generated
 * again (recompute). A request is refused at fi_sched_add only when its prompt alone cannot
 * fit the pool; generation that would outgrow the pool ends with finish "length".
 *
 * Prefix cache (on by default): full blocks are keyed by the KV arena's hash chain (the
 * same keys as the arena, arena.h), kept after their request ends until evicted least
 * recently used first, and attached by any later request whose tokens begin with the same
 * blocks, so a shared system prompt is computed once and a conversation's next turn
 * computes only its new message (prompt and generated blocks are both kept). A request
 * whose prefix is being computed by a running request waits for those blocks instead of
 * computing them again. The KV arena (kvxfer.h) is the second tier: with prefix_cache (or a
 * request's kv reference) a prompt's blocks missing here are fetched from it, and the
 * blocks of computed prompts are published to it after the step that completed them.
 *
 * Sampling happens for the rows of the step that end a request's known tokens (on the
 * device where the backend can); a request's tokens (greedy or seeded) never depend on the
 * batch around it, on chunking, on preemption or on where its prefix came from.
 *
 * Overlap (opts.overlap): on an asynchronous backend fi_sched_step launches step n+1 before
 * reporting the events of step n, so the host's event work (frames, text) runs while the
 * device computes. A request a callback stops (FI_SCHED_STOP) may then have one more token
 * computed, which is dropped.
 *
 * Stops. Generation ends, with FI_FINISH_STOP, at a stop id (the model's end-of-generation
 * ids unless ignore_eos, the request's stop ids and its sampling stop ids), which is not
 * emitted, or when a token event's callback returns FI_SCHED_STOP (after that token); with
 * FI_FINISH_LENGTH after max_tokens tokens, at the model's context or at the pool's size;
 * FI_FINISH_CANCEL through fi_sched_cancel*.
 *
 * The library never prints: warnings (the arena cannot be attached, a block fetch failed or
 * a fetched block failed its checksum: the prompt is then computed) are FI_SCHED_EV_WARN
 * events. An arena whose lock times out is dropped for the rest of the run. A callback returning an error
 * stops the step and fi_sched_step() returns it (a broken output stream). */
#ifndef FI_SCHEDULER_H
#define FI_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "backend/sample.h"
#include "base/err.h"
#include "frame/frame.h"
#include "kv/kvxfer.h"
#include "model/model.h"

struct fi_sched;

enum fi_sched_ev_type {
	FI_SCHED_EV_TOKEN, /* one generated token */
	FI_SCHED_EV_DONE,  /* the last event of a request */
	FI_SCHED_EV_ERROR, /* a request failed after admission (a done with FI_FINISH_ERROR follows) */
	FI_SCHED_EV_WARN,  /* something degraded, the request goes on (id may be NULL) */
};

#define FI_SCHED_MAX_TOP FI_SAMPLE_MAX_TOP /* top_logprobs at most (20) */

struct fi_sched_event {
	enum fi_sched_ev_type type;
	const char *id; /* the request's id */
	void *user;     /* the request's user pointer */
	int stream;     /* the request's stream flag */
	/* token */
	uint32_t token, index;
	int last;        /* the request ends after this token whatever comes (length) */
	int has_logprob; /* the request asked for logprobs: */
	float logprob;   /* log-probability of token under the model's distribution */
	int n_top;       /* top_logprobs alternatives, most likely first */
	const uint32_t *top_ids;
	const float *top_logprobs;
	/* token: the new text piece; done: the whole output text, of which the first text_sent
	 * bytes went in token events. The scheduler leaves them empty: lib/serve fills them. */
	const char *text;
	size_t text_len, text_sent;
	/* done */
	enum fi_finish finish;
	uint32_t prompt_tokens, gen_tokens, cached_tokens;
	double queue_ms, ttft_ms, tpot_ms, total_ms; /* negative: not measured */
	const uint32_t *tokens; /* the generated tokens [gen_tokens] (stop ids excluded) */
	size_t stored_blocks;   /* prompt blocks this request published in the arena */
	uint32_t preemptions;   /* times it was preempted and recomputed */
	/* error, warn */
	fi_err code;
	const char *message;
};

/* Returned by a token event's callback: end the request after this token, finish "stop"
 * (a stop string found in its text). Not an error. */
#define FI_SCHED_STOP ((fi_err)0x5709)
/* Returned by a token event's callback that reported an error event for the request: end
 * it there with finish "error". */
#define FI_SCHED_FAIL ((fi_err)0x570a)

/* Called for every event, from inside fi_sched_step / fi_sched_cancel*; it must not call
 * back into the scheduler. The event's memory is valid only during the call. */
typedef fi_err (*fi_sched_cb)(void *user, const struct fi_sched_event *ev);

/* What the prefix cache holds, as it changes (fi-kv-events(5)): blocks stored (newly
 * reusable under their keys), removed (evicted or rewritten), all cleared (a new, empty
 * cache: reported once at creation). Called from inside the scheduler; it must not call
 * back into it, and the memory is valid only during the call. */
enum fi_kv_ev_type { FI_KV_EV_STORED, FI_KV_EV_REMOVED, FI_KV_EV_CLEARED };
struct fi_kv_event {
	enum fi_kv_ev_type type;
	const fi_arena_key *keys;   /* [n] consecutive blocks of one chain (stored) */
	int n;
	const fi_arena_key *parent; /* stored: the key before keys[0]; NULL for a first block */
	const uint32_t *tokens;     /* stored: their token ids [n * block_tokens] */
	uint32_t block_tokens;
};
typedef void (*fi_sched_kv_cb)(void *user, const struct fi_kv_event *ev);

/* Default max_batch: on a GPU, where a step of 1024 sequences gave 11% more output than 256
 * for the 8B shape and 16% for the 1B (tests/gpu/NOTES.md), and on the CPU. */
#define FI_SCHED_MAX_BATCH 256
#define FI_SCHED_MAX_BATCH_DEVICE 1024
#define FI_SCHED_MAX_STEP_TOKENS 8192 /* default max_step_tokens */

struct fi_backend;
/* The default max_batch for a model on be. */
int fi_sched_default_batch(const struct fi_backend *be);

struct fi_sched_opts {
	int max_batch;          /* sequences in one forward (default FI_SCHED_MAX_BATCH; callers
				 * that know the backend set fi_sched_default_batch) */
	int max_requests;       /* admitted and waiting (default max_batch + 1024) */
	int max_step_tokens;    /* tokens in one forward, decode and prompt (default
				 * FI_SCHED_MAX_STEP_TOKENS, at least max_batch) */
	int max_prefill_tokens; /* prompt tokens of one request in one step; 0: up to the budget */
	uint32_t max_tokens;    /* tokens per request when it does not say (default 256) */
	double watermark;       /* fraction of the pool kept free at admission (default 0.01) */
	int prefix_reuse;       /* the in-process prefix cache (default 1) */
	int overlap;            /* -1 (default): when the backend is asynchronous; 0 off; 1 on */
	/* The KV arena (kvxfer.h); fingerprint NULL: never used. */
	const uint8_t *fingerprint; /* the model image's fingerprint [32] */
	int prefix_cache;       /* every prompt: look its prefix up in the arena, publish its blocks */
	int arena_sync;         /* publish in the step that completes a prompt, before its first
				 * token's event (fi-prefill); default: in the next step */
	uint64_t arena_size;    /* when this process creates the arena (0: default) */
	fi_sched_cb cb;
	void *cb_user;
	fi_sched_kv_cb kv_cb;   /* the prefix cache's changes, or NULL */
	void *kv_user;
};

void fi_sched_opts_default(struct fi_sched_opts *o);

/* Request flags. */
enum {
	/* Stop ids (the model's end-of-generation ids included) do not end the request:
	 * fi-prefill's first token is passed on whatever it is. */
	FI_SCHED_NO_STOP = 1,
	/* The model's end-of-generation ids do not end the request (benchmarks of fixed
	 * lengths); its own stop ids still do. */
	FI_SCHED_IGNORE_EOS = 2,
};

struct fi_sched_req {
	const char *id;           /* copied; unique among the requests held */
	const uint32_t *tokens;   /* the prompt [ntokens], copied */
	uint32_t ntokens;
	struct fi_sample_params sp; /* its stop ids end generation too */
	uint32_t max_tokens;      /* 0: opts.max_tokens; cut to the context and the pool */
	const uint32_t *stop_ids; /* [nstop_ids] */
	uint32_t nstop_ids;
	const struct fi_kv_ref *kv; /* optional: the prompt's blocks in the arena (a hint) */
	int has_first;            /* first_token was drawn by another process (fi-prefill): */
	uint32_t first_token;     /* it is kept, the sampler advanced as if drawn here */
	int logprobs;             /* token events carry the token's log-probability, */
	int top_logprobs;         /* and this many alternatives (0..FI_SCHED_MAX_TOP) */
	int stream;               /* passed to events */
	unsigned flags;           /* FI_SCHED_* */
	void *user;               /* passed to events */
};

/* A scheduler over model m (creating its KV cache with the defaults if it has none). The
 * model must outlive it; while it exists it alone runs the model. */
fi_err fi_sched_create(struct fi_model *m, const struct fi_sched_opts *o, struct fi_sched **out);
/* Drops every request without events (a step in flight is waited for); closes the arena
 * handle. NULL is a no-op. */
void fi_sched_destroy(struct fi_sched *s);

/* Queues a request. Refusals (nothing is queued; the detail names the request):
 * FI_EEXIST a request with this id is held, FI_EBUSY max_requests are held, FI_EINVAL no
 * prompt / bad sampling / top_logprobs out of range, FI_ERANGE a token outside the
 * vocabulary or a prompt that fills the context, FI_EFULL a prompt that alone needs more KV
 * than the whole pool (the detail says both sizes), FI_EMISMATCH a kv reference for another
 * model or prompt. */
fi_err fi_sched_add(struct fi_sched *s, const struct fi_sched_req *r);
/* Requests that fi_sched_add would take now before FI_EBUSY (max_requests - held): a reader
 * of a stream takes at most this many. */
int fi_sched_room(const struct fi_sched *s);

/* Runs one step (see above; nothing when no request is held). Events are reported before
 * it returns. Returns a model failure or the callback's error. */
fi_err fi_sched_step(struct fi_sched *s);
/* Steps until no request is held. */
fi_err fi_sched_run(struct fi_sched *s);

/* Ends request id with finish "cancel" (its done event is reported now); FI_ENOTFOUND
 * when no such request is held. */
fi_err fi_sched_cancel(struct fi_sched *s, const char *id);
/* Ends every request with finish "cancel", in arrival order, whatever the callback returns
 * (its first error is returned). */
fi_err fi_sched_cancel_all(struct fi_sched *s);

/* Requests held (running, preempted and waiting); of them, those running; 1 if request id
 * is held. */
int fi_sched_pending(const struct fi_sched *s);
int fi_sched_running(const struct fi_sched *s);
/* Requests that can still be added (max_requests less those held). A reader of request
 * frames takes at most this many before stepping, so fi_sched_add never refuses one with
 * FI_EBUSY and a full queue pushes back on the input instead (a pipe or socket that is not
 * read stops its writer). */
int fi_sched_room(const struct fi_sched *s);
int fi_sched_has(const struct fi_sched *s, const char *id);

/* A first token drawn elsewhere for a request that has not arrived yet (fi-prefill sends it
 * ahead of its request): the request of that id takes it when added. Up to 256 are kept,
 * the oldest forgotten first. */
void fi_sched_first_token(struct fi_sched *s, const char *id, uint32_t token);

/* Attaches the model's arena now (create: make it if absent) and returns it; an attached
 * one is returned as it is. Needs opts.fingerprint. */
fi_err fi_sched_arena(struct fi_sched *s, int create, struct fi_kvx **x);
/* The arena in use now, or NULL: not attached, or dropped after its lock timed out (a
 * stuck process holds it; requests are then computed). Valid until the next step. */
struct fi_kvx *fi_sched_kvx(const struct fi_sched *s);

/* Counters since creation, and the state now: for progress lines and benchmarks. */
struct fi_sched_stats {
	uint64_t steps;
	uint64_t prompt_tokens;   /* prompt (and recomputed) tokens run through the model */
	uint64_t decode_tokens;   /* one-token decode rows run */
	uint64_t cached_tokens;   /* prompt tokens attached from the process cache */
	uint64_t arena_tokens;    /* prompt tokens fetched from the arena */
	uint64_t preemptions;
	uint64_t prefix_waits;    /* admissions put off because a running request was computing
				   * the prefix */
	uint64_t done;            /* requests ended */
	double host_ms;           /* in fi_sched_step outside the model: scheduling, sampling
				   * bookkeeping, events (the callbacks' frame I/O included) */
	double model_ms;          /* in the model's launch and collect (on CUDA mostly the wait
				   * for the device) */
	double plan_ms;           /* of host_ms, building the step between collecting the last
				   * one and launching it: the part the device waits for */
	double last_host_ms, last_model_ms, last_plan_ms; /* of the last step */
	int last_tokens, last_rows; /* the step launched last: tokens run, rows sampled (0 0
				     * when the step launched nothing) */
	int running, waiting, preempted;    /* now */
	int max_running;          /* the most requests in one step */
	int kv_blocks, kv_block_size, kv_available; /* the pool: blocks, tokens each, free + idle */
	int kv_cached;            /* blocks in the prefix cache (in use or idle) */
	uint64_t prefix_lookups;  /* full prompt blocks looked up at first admissions */
	uint64_t prefix_hits;     /* of them, found in the prefix cache */
	uint64_t queued_tokens;   /* now: tokens of waiting and preempted requests */
	uint64_t running_tokens;  /* now: tokens (prompt and generated) of running requests */
};
void fi_sched_stats(const struct fi_sched *s, struct fi_sched_stats *st);

/* ---- block keys (fi-kv-events(5)) ---- */

/* The root of this scheduler's block-key chains: 64 hex digits, the SHA-256 of the model
 * image's fingerprint, the KV dtype and geometry (fi_kvx_id). */
const char *fi_sched_kv_root(const struct fi_sched *s);
/* The keys of the full blocks of tokens[0..n): key i = SHA-256 over the root, key i-1 (none
 * for the first) and block i's token ids (fi_arena_chain_keys), exactly the keys the
 * scheduler's prefix cache and the KV arena use. keys holds n / block_tokens entries. */
fi_err fi_prefix_block_keys(const char *root, const uint32_t *tokens, size_t n,
			    uint32_t block_tokens, fi_arena_key *keys);

/* ---- the KV pool: how big (sched_size.c) ---- */

/* How the pool is sized: kv_bytes or kv_tokens when given, else on a device the fraction
 * gpu_mem of its TOTAL memory less what is in use once the weights and the scratch of a
 * step of max_step_tokens tokens and max_batch rows are allocated (vLLM's
 * gpu-memory-utilization), else (the CPU) what max_batch sequences of the full context
 * need, capped at a quarter of the memory. */
struct fi_kv_sizing {
	double gpu_mem;        /* default 0.9 */
	uint64_t kv_bytes;     /* 0: not given */
	uint64_t kv_tokens;    /* 0: not given */
	int max_batch, max_step_tokens; /* 0: the scheduler's defaults */
	int block_size;        /* 0: 16 (the arena's) */
};
void fi_kv_sizing_default(struct fi_kv_sizing *z);
/* Creates m's KV cache as z says. The pool must hold at least one block; FI_EFULL (with
 * the sizes) when the device has no room left for it. *n_blocks (may be NULL) gets its
 * size. */
fi_err fi_sched_cache_init(struct fi_model *m, const struct fi_kv_sizing *z, int *n_blocks);

#endif
