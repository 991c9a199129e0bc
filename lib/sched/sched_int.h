/* sched internals shared by sched.c (the API: create, add, cancel, stats), sched_step.c
 * (steps: collect, tokens, events, a request's end), sched_plan.c (admission, preemption,
 * the batch and its launch), sched_prefix.c (block keys, the prefix cache, the arena tier)
 * and sched_req.c (queues, the id table, freeing). Calls run in that order, down. */
#ifndef FI_SCHED_INT_H
#define FI_SCHED_INT_H

#include "scheduler.h"

#define SCHED_MAX_PENDING 256 /* first tokens waiting for their request */

enum rstate {
	R_WAITING,   /* never admitted */
	R_PREEMPTED, /* admitted once, its KV released */
	R_RUNNING,   /* holds a sequence */
	R_DONE,      /* its done event is out; dropped once no step in flight holds it */
};

/* Requests in a doubly linked list (the waiting and the preempted queues). */
struct rlist {
	struct sreq *head, *tail;
	int n;
};

struct sreq {
	char *id;
	void *user;
	uint64_t arrival;  /* order of fi_sched_add */
	enum rstate state;
	int stream, logprobs, top_logprobs;
	unsigned flags;
	int seq;           /* KV sequence while running, else -1 */
	uint32_t n_prompt, max_new, n_gen;
	int32_t *hist;     /* prompt then generated tokens [cap_hist] */
	uint32_t cap_hist;
	uint32_t filled;   /* tokens of hist whose KV the sequence holds (committed) */
	uint32_t chunk;    /* tokens of hist in the step being planned or in flight */
	int row;           /* its row of logits in that step, -1 none */
	int32_t *stop;     /* stop ids [n_stop] */
	int n_stop;
	struct fi_sampler smp;
	int has_first;
	int32_t first;
	/* prefix cache (sched_prefix.c) */
	fi_arena_key *keys; /* chain keys of hist's full blocks [n_keys], room for cap_keys */
	int n_keys, cap_keys;
	int published;     /* leading blocks of the sequence published in the process cache */
	int fly_from, fly_to; /* keys [fly_from, fly_to) registered as being computed by it */
	/* arena tier */
	int arena;         /* may fetch its prompt's prefix from the arena */
	int arena_max;     /* at most this many blocks from it */
	struct fi_kvx_fetch *fetch; /* its fetch while the step that uses it is in flight */
	uint32_t fetch_from;        /* filled before that fetch */
	int fetch_got;              /* the tokens it brought, checksums not yet known */
	int store;         /* publish its prompt's blocks in the arena */
	int stored_q;      /* its prompt's blocks were queued for the arena */
	size_t stored;     /* blocks it published in the arena */
	uint32_t cached;   /* prompt tokens not computed at its first admission */
	int admitted_once;
	uint32_t n_preempt;
	int queued;        /* its events waiting to be reported */
	double t_arrive, t_admit, t_first, t_last;
	struct sreq *prev, *next; /* its queue */
	struct sreq *hnext;       /* the id table's chain */
};

struct pending {
	char *id;
	int32_t token;
};

/* An event waiting for the end of the step (sched_step.c emits them in order). */
struct qev {
	struct sreq *q;
	int done;          /* 0: token event, 1: done event */
	uint32_t token, index;
	int last;
	enum fi_finish finish;
	float logprob;
	int n_top;
	uint32_t top_ids[FI_SCHED_MAX_TOP];
	float top_lp[FI_SCHED_MAX_TOP];
};

/* Arena publications waiting for the next step (sched_prefix.c). */
struct store_job {
	struct sreq *q;     /* NULL once its request is gone (the blocks are held here) */
	int32_t *blocks;    /* cache blocks, one reference each held */
	uint32_t *toks;     /* the tokens they hold [n * block_size] */
	int n;
};

struct fi_sched {
	struct fi_sched_opts o;
	struct fi_model *m;
	const struct fi_config *c;
	struct fi_kvcache *kc;
	struct fi_kvx *x;
	int x_tried;
	char kv_id[2 * FI_ARENA_KEY_BYTES + 1]; /* the root of the block key chains */
	int block_size, ctx, pool_tokens, overlap, watermark_blocks;
	uint64_t n_arrived;
	/* requests */
	struct sreq **run;  /* running, in admission order [max_batch] */
	int n_run;
	struct rlist waiting, preempted;
	int n_held;         /* requests not done */
	struct sreq **htab; /* id table [hcap] */
	uint32_t hcap;
	struct pending pend[SCHED_MAX_PENDING]; /* oldest first */
	int npend;
	/* requests whose done event is out but a step in flight still holds them */
	struct sreq **dead;
	int n_dead, cap_dead;
	/* keys of blocks running requests are computing, and who (open addressing; owner NULL:
	 * an empty slot) */
	fi_arena_key *fly;
	struct sreq **fly_owner;
	uint32_t fly_mask;
	int n_fly;
	/* the step */
	int inflight;       /* a step launched and not collected */
	unsigned out;       /* what it returns (FI_STEP_*) */
	struct sreq **bq;   /* its requests in batch order [n_bq] (a request once) */
	int n_bq;
	int n_rows;
	int32_t *btok, *bseq; /* batch [cap_tok] */
	int8_t *bwant;
	int cap_tok;
	float *logits;       /* [cap_rows, vocab] when the host samples */
	int32_t *rtok, *rkept; /* [max_batch] tokens, survivor counts of rows */
	struct fi_sample_row *srow; /* [max_batch] */
	float *rlp;          /* [max_batch] log-probabilities of sampled rows */
	struct fi_sample_top *rtop; /* [max_batch, FI_SAMPLE_MAX_TOP] their alternatives */
	int32_t *win;        /* the penalty windows of sampled rows [cap_win] */
	size_t cap_win;
	struct fi_sample_io io; /* the sampled step's rows and results */
	int cap_rows;
	/* events of the step */
	struct qev *ev;
	int n_ev, cap_ev;
	/* arena jobs */
	struct store_job *jobs;
	int n_jobs, cap_jobs;
	/* counters */
	struct fi_sched_stats st;
	double t_model;     /* model time of the step running */
	char msg[1024];     /* warn and error event text */
};

/* sched_step.c */
/* Queues the done event of q and marks it done (its sequence is freed by sched_reap). */
fi_err sched_finish(struct fi_sched *s, struct sreq *q, enum fi_finish why);
fi_err sched_collect(struct fi_sched *s);
fi_err sched_emit(struct fi_sched *s);
fi_err sched_qev(struct fi_sched *s, struct qev **e);

/* sched_plan.c: builds and launches the next step (nothing when no request can run). */
fi_err sched_plan_launch(struct fi_sched *s);
/* Preempts running request q: its sequence is freed, it waits among the preempted. */
void sched_preempt(struct fi_sched *s, struct sreq *q);

/* sched_prefix.c (fi_sched_arena and fi_sched_kvx of scheduler.h are there too) */
fi_err prefix_init(struct fi_sched *s);
void prefix_free(struct fi_sched *s);
/* Keys of hist's full blocks up to n tokens. */
fi_err prefix_keys(struct fi_sched *s, struct sreq *q, uint32_t n);
/* For admission: blocks of q's context (n tokens) already in the process cache, at most
 * limit; *idle of them idle; 1 in *wait when the next block is being computed by another
 * request. */
int prefix_match(struct fi_sched *s, struct sreq *q, uint32_t n, int limit, int *idle, int *wait);
/* q is admitted with seq holding its first m cached blocks: registers the keys it will
 * compute up to n tokens as in flight. */
void prefix_fly_add(struct fi_sched *s, struct sreq *q, uint32_t n);
/* Unregisters every key q has in flight (it is preempted or done). */
void prefix_fly_drop(struct fi_sched *s, struct sreq *q);
/* After a step: publishes q's new full committed blocks in the process cache. */
void prefix_publish(struct fi_sched *s, struct sreq *q);
/* Arena: the model's arena, attached on first use (NULL when it cannot be had). */
struct fi_kvx *prefix_arena(struct fi_sched *s);
/* Copies what the arena has after q's sequence's cached blocks (up to limit blocks in all);
 * returns the tokens fetched. */
int prefix_fetch(struct fi_sched *s, struct sreq *q, int limit);
/* Ends q's fetch, if any (after its step, or before its sequence goes): 1 when blocks failed
 * their checksums, and the sequence and q->filled are cut back to the good ones. */
int prefix_fetch_end(struct fi_sched *s, struct sreq *q);
/* q's prompt is complete: publish its prompt blocks in the arena now (arena_sync) or queue
 * them for the next step. */
fi_err prefix_store(struct fi_sched *s, struct sreq *q);
/* Runs the queued arena publications. */
fi_err prefix_run_jobs(struct fi_sched *s);
/* q goes away: its queued jobs keep their blocks but forget it. */
void prefix_forget(struct fi_sched *s, struct sreq *q);

/* sched_req.c: below every other sched_*.c */
void rlist_push(struct rlist *l, struct sreq *q);
void rlist_insert_by_arrival(struct rlist *l, struct sreq *q);
void rlist_del(struct rlist *l, struct sreq *q);
/* Removes q from the running list (its sequence stays). */
void sched_unrun(struct fi_sched *s, struct sreq *q);
/* The id table: the request of id not done, or NULL; q in; q out. */
struct sreq *sched_find(const struct fi_sched *s, const char *id);
void sched_id_put(struct fi_sched *s, struct sreq *q);
void sched_id_del(struct fi_sched *s, struct sreq *q);
void sched_req_free(struct sreq *q);
fi_err sched_hist_room(struct sreq *q, uint32_t n);
/* Frees the sequences of done requests that no step in flight holds, and the requests. */
void sched_reap(struct fi_sched *s);
fi_err sched_warn(struct fi_sched *s, const char *id, void *user);

#endif
