/* fi_sched: generation with continuous batching over an opened model (libfi(3)).
 *
 * Requests are added at any time; each fi_scheduler_step() runs one forward pass over
 * every running request (new prompts and one token of each running one) and queues
 * events: a "token" event per generated token (with its text piece when the model has a
 * tokenizer), one "done" event when a request ends, "error" and "warning" events.
 * fi_scheduler_event() hands them out, oldest first:
 *
 *   struct fi_gen_request r;
 *   struct fi_gen_event ev;
 *   fi_gen_request_init(&r);
 *   r.id = "1"; r.prompt = "Once upon a time"; r.temperature = 0; r.max_tokens = 32;
 *   fi_scheduler_add(s, &r);
 *   while (fi_scheduler_pending(s) && !fi_scheduler_step(s))
 *           while (fi_scheduler_event(s, &ev))
 *                   if (!strcmp(ev.kind, "token")) fwrite(ev.text, 1, ev.text_len, stdout);
 *
 * A request's tokens do not depend on the others in the batch: greedy or seeded requests
 * give the same tokens alone or together. This is a thin layer over the scheduler of the
 * fi commands (fi-decode(1)). */
#ifndef FI_FI_SCHED_H
#define FI_FI_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "fi_err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fi_llm;
struct fi_frame;
struct fi_scheduler;

struct fi_scheduler_opts {
	int max_batch;       /* sequences in one forward pass (0, the default: 1024 on a GPU, 256
			      * on the CPU) */
	uint32_t max_tokens; /* tokens per request that does not say (default 256) */
	int prefix_cache;    /* look prompts up in the shared KV arena and store theirs (0) */
};
void fi_scheduler_opts_default(struct fi_scheduler_opts *o);

/* A scheduler over m (which must outlive it), with its KV cache; o NULL: the defaults. One
 * scheduler per model at a time. */
fi_err fi_scheduler_new(struct fi_llm *m, const struct fi_scheduler_opts *o,
			struct fi_scheduler **out);
void fi_scheduler_free(struct fi_scheduler *s);

struct fi_gen_request {
	const char *id;           /* unique among the requests held */
	const uint32_t *tokens;   /* the prompt as ids [n_tokens], or NULL and: */
	size_t n_tokens;
	const char *prompt;       /* the prompt as text (BOS and the like added) */
	float temperature;        /* 1; 0 is greedy */
	int top_k;                /* 0: off */
	float top_p;              /* 1: off */
	float min_p;              /* 0: off */
	float repeat_penalty;     /* 1: off */
	uint64_t seed;            /* 0 */
	uint32_t max_tokens;      /* 0: the scheduler's */
	const char *const *stop;  /* stop strings [n_stop] (need the model's tokenizer) */
	size_t n_stop;
};
/* The defaults above (those of a request frame without sampling keys). */
void fi_gen_request_init(struct fi_gen_request *r);

/* Queues a request; the refusal names it (an id in use, an empty prompt, a prompt longer
 * than the context, bad sampling values). */
fi_err fi_scheduler_add(struct fi_scheduler *s, const struct fi_gen_request *r);
/* Queues a request frame (fi_frame_request, or read from a stream); keys it leaves unset
 * take the defaults above. */
fi_err fi_scheduler_add_frame(struct fi_scheduler *s, const struct fi_frame *request);
/* Ends request id now (its done event, finish "cancel", is queued). */
fi_err fi_scheduler_cancel(struct fi_scheduler *s, const char *id);

/* One forward pass (nothing when no request is held); events are queued. */
fi_err fi_scheduler_step(struct fi_scheduler *s);
/* Requests held, running or waiting. */
int fi_scheduler_pending(const struct fi_scheduler *s);

struct fi_gen_event {
	const char *kind;       /* "token", "done", "error" or "warning" */
	const char *id;         /* the request's id ("" for a warning about none) */
	/* token: the id, its index among the generated tokens, and the text it releases.
	 * done: text is what token events did not carry (a held-back tail) */
	uint32_t token, index;
	const char *text;
	size_t text_len;
	/* done */
	const char *finish;     /* "stop", "length", "cancel" or "error" */
	uint32_t prompt_tokens, gen_tokens, cached_tokens;
	double ttft_ms, total_ms; /* negative: not measured */
	/* error, warning */
	fi_err code;
	const char *message;
};
/* The oldest queued event: 1 and *ev (its strings valid until the next call), or 0. */
int fi_scheduler_event(struct fi_scheduler *s, struct fi_gen_event *ev);
/* An event as the frame fi-decode writes for it (token, done, error); FI_EINVAL for a
 * warning. */
fi_err fi_gen_event_frame(const struct fi_gen_event *ev, struct fi_frame **out);

#ifdef __cplusplus
}
#endif

#endif
