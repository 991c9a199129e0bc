/* route_int: fi-route's internal tables and state, shared by route_*.c only. */
#ifndef FI_ROUTE_INT_H
#define FI_ROUTE_INT_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "route.h"

/* ---- route_map.c ---- */
struct rmap_slot {
	uint8_t *key; /* NULL: empty */
	size_t len;
	uint64_t hash;
	void *val;
};
struct rmap {
	struct rmap_slot *slot;
	size_t cap, n; /* cap a power of two */
};
void *rmap_get(const struct rmap *m, const void *key, size_t len);
int rmap_put(struct rmap *m, const void *key, size_t len, void *val); /* -1: no memory */
void *rmap_del(struct rmap *m, const void *key, size_t len);         /* the value, or NULL */
void rmap_free(struct rmap *m);

struct knode;
struct kset {
	struct rmap map; /* key -> struct knode */
	struct knode *head, *tail;
	size_t cap;
};
void kset_init(struct kset *s, size_t cap);
int kset_has(const struct kset *s, const fi_arena_key *k);
void kset_touch(struct kset *s, const fi_arena_key *k); /* insert or refresh; evicts the LRU */
void kset_remove(struct kset *s, const fi_arena_key *k);
void kset_clear(struct kset *s);

/* ---- addresses (route_addr.c) ---- */
struct sockaddr_storage;
/* A tcp:// endpoint to bind: 1 when loopback (127.0.0.0/8, localhost, [::1], an empty host
 * or *, which bind 127.0.0.1), the address to bind in out, *v6 when its host is IPv6 (in
 * brackets: ZMQ_IPV6 needed). */
int route_tcp_loopback(const char *ep, char *out, size_t cap, int *v6);
/* --http [ADDR:]PORT (ADDR IPv4, or IPv6 in brackets; default 127.0.0.1) as a socket
 * address (sin or sin6), and whether it is loopback. */
fi_err route_http_addr(const char *spec, struct sockaddr_storage *sa, int *loopback);

/* ---- msgpack helpers (route_mp.c) ---- */
const msgpack_object *mp_get(const msgpack_object *map, const char *key);
int mp_str(const msgpack_object *map, const char *key, char *out, size_t cap); /* 0 ok */
int mp_u64(const msgpack_object *map, const char *key, uint64_t *out);         /* 0 ok */
/* Unpacks one bounded msgpack object (fi_frame_scan's limits) that fills buf. 0 ok. */
int mp_unpack(const void *buf, size_t len, msgpack_unpacked *u);

/* ---- the core ---- */

/* What a worker said in its last load frame. */
struct rload {
	uint64_t queued, queued_tokens, running, running_tokens, kv_used, kv_total;
	uint64_t prefix_hits, prefix_lookups;
};

struct rreq;
struct rworker {
	char name[128];
	uint8_t ident[256];
	size_t ilen;
	int fd;                 /* its connection (ZMQ_SRCFD), for disconnect events; -1 */
	double last_seen;       /* ms */
	char role[16];
	uint8_t fp[32];
	uint8_t kroot[32];      /* its hello's kv_root, else its fingerprint */
	char root[65];          /* the block-key chain root: the hex of kroot */
	int own_keys;           /* kv_root given: its KV event hashes are our block keys */
	uint32_t block_tokens, kv_blocks, max_batch;
	struct rload load;
	uint32_t inflight;      /* requests sent and not ended */
	uint64_t inflight_tokens; /* their prompt tokens not cached there */
	double recent;          /* tokens of work given lately (route_workers.c), decayed ... */
	uint64_t recent_at;     /* ... to the dispatch count r->n_sent */
	struct kset held;       /* prefix blocks it is believed to hold */
	int events;             /* KV events arrived: held follows them, not what was sent */
	void *sub;              /* SUB on its kv_events endpoint, or NULL */
	uint64_t ev_seq;        /* the next batch expected */
	uint64_t ev_batches, ev_replayed, ev_recv;
	void *rep;              /* DEALER on its kv_events_replay endpoint, or NULL */
	int replaying;          /* a replay asked, its end (seq -1) not come */
	uint64_t replay_to;     /* the batch that showed the gap: replayed ones stop before */
	double replay_t;        /* when asked (ms): a replay unanswered for a second is dropped */
	struct rmap hmap;       /* its block hash -> our key (KV events) */
	struct rreq *reqs;      /* requests on it (list through rreq.prev/next) */
	uint64_t n_sent, n_done, n_failed, hit_blocks, lookup_blocks;
};

struct rclient {
	uint8_t ident[256];
	size_t ilen;
	int fd;
	uint32_t active;
};

struct rreq {
	uint64_t rid;
	struct rclient *client; /* a frame client, or NULL */
	struct hreq *http;      /* an HTTP request, or NULL */
	char *cid;              /* the client's id */
	uint8_t *frame;         /* the request as workers get it (id = rid in hex) */
	size_t flen;
	fi_arena_key *keys;
	uint32_t nkeys, ntokens;
	uint32_t miss_tokens;   /* prompt tokens its worker had to compute (load) */
	char session[128];
	struct rworker *w;      /* NULL: pending */
	uint32_t ntok_out;
	int cancelled;
	double t_arrive, t_last;
	struct rreq *prev, *next; /* the pending list, or its worker's list */
};

#define ROUTE_MAX_WORKERS 256
#define ROUTE_NBUCKET 14
struct rhist {
	uint64_t b[ROUTE_NBUCKET + 1]; /* the last: +Inf */
	double sum;
	uint64_t n;
};
void rhist_add(struct rhist *h, double sec); /* route_time.c */
extern const double route_buckets[ROUTE_NBUCKET];

struct fi_route {
	struct fi_route_opts o;
	void *ctx, *csock, *wsock, *cmon, *wmon;
	int efd;                 /* eventfd: the HTTP front has news */
	pthread_mutex_t mu;      /* everything below that the HTTP threads read or write */
	struct rworker *w[ROUTE_MAX_WORKERS];
	int nw;
	unsigned rr;             /* round-robin cursor */
	struct rmap by_rid, by_cid, clients, sessions, by_ident;
	struct rreq *pend_head, *pend_tail;
	int npend, http_waiting;
	struct hreq *sub_head, *sub_tail; /* submitted by the front */
	uint64_t *cancels;       /* rids the front gave up on */
	size_t ncancel, capcancel;
	uint64_t next_rid;
	uint64_t n_sent;         /* requests dispatched: the clock of rworker.recent */
	struct fi_buf buf;
	/* counters and histograms (/metrics) */
	uint64_t n_req, n_done, n_err, n_retry, n_cancel, n_http, n_429, n_badframe;
	struct rhist ttft, itl;
};

/* route_time.c: the clock (ms, monotonic); rhist_add and route_buckets above. */
double route_now_ms(void);
/* route_workers.c: the worker registry, the choice of a worker, KV events. */
void route_worker_hello(struct fi_route *r, const uint8_t *ident, size_t ilen, int fd,
			const msgpack_object *m); /* none registered under ident */
void route_worker_load(struct rworker *w, const msgpack_object *m);
void route_worker_remove(struct fi_route *r, struct rworker *w); /* its requests gone */
void route_kv_event(struct fi_route *r, struct rworker *w);
void route_kv_replay(struct fi_route *r, struct rworker *w);
struct rworker *route_pick(struct fi_route *r, struct rreq *q);
void route_note_sent(struct fi_route *r, struct rworker *w, struct rreq *q);
void route_note_work(struct fi_route *r, struct rworker *w, double tokens); /* tokens generated */
/* route_req.c: a request's way through the router, called by route_core.c's loop */
void route_req_free(struct rreq *q);
void route_to_http(struct hreq *h, const struct fi_frame *f);
fi_err route_admit(struct fi_route *r, struct rreq *q, struct fi_frame *f);
void route_req_cancel(struct fi_route *r, struct rreq *q, int tell);
void route_client_gone(struct fi_route *r, struct rclient *c);
int route_client_msg(struct fi_route *r);  /* 1: a message was read */
int route_worker_msg(struct fi_route *r);  /* 1: a message was read */
void route_dispatch(struct fi_route *r);
/* A worker leaves: its requests are retried or fail, then the registry forgets it. */
void route_worker_dead(struct fi_route *r, struct rworker *w, const char *why);

#endif
