/* route: fi-route's core, a ZeroMQ router between clients and registered workers, and its
 * OpenAI-compatible HTTP front (fi-route(1); the worker side is in fi-frame(5)).
 *
 * One thread owns every ZeroMQ socket and all routing state (route_core.c): a client-facing
 * ROUTER, a worker-facing ROUTER that workers connect a DEALER to (hello, load, bye frames),
 * and one SUB per worker that publishes KV events. The HTTP front (route_http.c, libmicrohttpd,
 * one thread per connection) hands requests to that thread through a locked queue and an
 * eventfd, and gets each request's frames back through the request's own locked event list.
 *
 * Ids: a client's request id is only unique per client; the router gives each request its
 * own number, sent to the worker as the id in hex, so ids are unique per worker, and puts the
 * client's id back on every reply. */
#ifndef FI_ROUTE_H
#define FI_ROUTE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "frame/frame.h"
#include "kv/arena.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "text/tok_ident.h"

enum fi_route_policy { FI_ROUTE_COST = 0, FI_ROUTE_RR = 1 };

/* The model fi-route tokenizes with (-m): tokenizer, chat template, its name. Weights are never
 * read. The tokenizer and template are used under mu (the HTTP threads share them). */
struct fi_route_model {
	char name[128];
	struct fi_tok *tok;
	struct fi_chat *chat; /* NULL: the model has no chat template */
	struct fi_tok_ident ident;
	struct fi_image *im;
	char *cfg_json, *tmpl;
	pthread_mutex_t mu;
};
fi_err fi_route_model_open(const char *arg, struct fi_route_model **out);
void fi_route_model_close(struct fi_route_model *m);

struct fi_route_opts {
	const char *client_ep;  /* -i: the client-facing ROUTER (bound), or NULL */
	const char *worker_ep;  /* --workers: the worker-facing ROUTER (bound) */
	const char *http;       /* --http [HOST:]PORT, or NULL */
	const char *api_key_file; /* --api-key-file, or NULL */
	const char *curve_key;  /* --curve-key: CURVE server keys for both ZeroMQ sockets */
	enum fi_route_policy policy;
	int http_queue;         /* HTTP requests waiting for a worker before 429 (default 256) */
	int max_pending;        /* frame requests held before clients are pushed back (1024) */
	int dead_ms;            /* a worker silent this long is dead (1000) */
	struct fi_route_model *model; /* NULL: no tokenizing, no prefix keys, no HTTP text */
	int verbose;
};
void fi_route_opts_default(struct fi_route_opts *o);

struct fi_route;
fi_err fi_route_new(struct fi_route **out, const struct fi_route_opts *o);
/* Serves until fi_stream_interrupted(). */
fi_err fi_route_run(struct fi_route *r);
void fi_route_free(struct fi_route *r);
/* A one-line summary (requests, retries, errors) for the command's closing message. */
void fi_route_summary(const struct fi_route *r, char *buf, size_t cap);

/* ---- between the HTTP front and the core ---- */

/* One reply event of an HTTP request, in arrival order. */
struct hevent {
	enum fi_frame_type type; /* TOKEN, DONE or ERROR */
	uint32_t token;
	float logprob;
	int has_logprob;
	struct fi_token_top top[FI_FRAME_MAX_TOP];
	uint32_t ntop;
	uint32_t prompt_tokens, gen_tokens, cached_tokens; /* DONE */
	enum fi_finish finish;
	fi_err code;  /* ERROR */
	char *message;
	struct hevent *next;
};

/* An HTTP request in flight: built by the front, owned jointly (refs) by the front and the
 * core; the last to drop it frees it. */
struct hreq {
	struct fi_frame f;       /* the request frame (tokens set); the core gives it its id */
	char session[128];       /* "user": stickiness key, or "" */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct hevent *head, *tail;
	int ended;               /* a DONE or ERROR event was queued */
	int cancelled;           /* the front gave up on it (client gone, stop string) */
	int refs;
	uint64_t rid;            /* the core's number (0 until taken) */
	struct hreq *next;       /* the submit queue */
};
struct hreq *hreq_new(void);
void hreq_put(struct hreq *h);
/* Next event, waiting at most ms; NULL when none came. The caller frees it (hevent_free). */
struct hevent *hreq_wait(struct hreq *h, int ms);
void hevent_free(struct hevent *e);

/* Hands h to the core (takes a reference). FI_EFULL when the HTTP queue is full (429). */
fi_err route_submit(struct fi_route *r, struct hreq *h);
/* The front no longer wants h's events: the core cancels it on its worker. */
void route_cancel(struct fi_route *r, struct hreq *h);
/* Prometheus text (malloc'd) and whether any worker is alive. */
char *route_metrics(struct fi_route *r);
int route_workers_alive(struct fi_route *r);

/* ---- the HTTP front (route_http.c) ---- */
struct route_http;
fi_err route_http_start(struct route_http **out, struct fi_route *r, const struct fi_route_opts *o);
void route_http_stop(struct route_http *h);

/* ---- the null worker (route_null.c): the worker side of the protocol, no model ---- */
struct fi_null_worker_opts {
	const char *router;  /* endpoint of fi-route's --workers socket */
	const char *curve_key; /* CURVE client keys with the router's server-key (fi-frame(5)), or NULL */
	const char *name;    /* NULL: HOSTNAME:PID */
	uint32_t tokens;     /* tokens per request (default 16) */
	uint32_t kv_blocks;  /* simulated prefix cache, blocks (default 4096) */
	uint32_t block_tokens; /* default 16 */
	uint32_t max_batch;  /* default 256 */
	double token_ms;     /* time per token, 0: none */
	/* out: requests taken, prefix blocks looked up and found in the simulated cache */
	uint64_t n_req, lookups, hits;
};
fi_err fi_null_worker_run(struct fi_null_worker_opts *o);

/* Block keys of a prompt (route_keys.c): the scheduler's chain (fi_arena_chain_keys) from
 * root, n / block_tokens keys into a malloc'd *keys. */
fi_err route_prefix_keys(const char *root_hex, const uint32_t *toks, uint32_t n, uint32_t block_tokens,
			 fi_arena_key **keys, uint32_t *nkeys);

#endif
