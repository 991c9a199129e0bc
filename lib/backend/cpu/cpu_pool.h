/* cpu_pool: the CPU backend's thread pool, which every op file splits its work over (not a
 * public header). */
#ifndef FI_CPU_POOL_H
#define FI_CPU_POOL_H

#include <pthread.h>
#include <stdint.h>

#include "backend/backend.h"

/* fn(ctx, begin, end) processes items [begin, end) of a range. */
typedef void (*fi_cpu_task)(void *ctx, int64_t begin, int64_t end);

struct fi_cpu_pool {
	int n;                 /* threads including the caller */
	pthread_t *tid;        /* n - 1 workers */
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint64_t gen;          /* bumped for every job; workers wait for a change */
	int pending;           /* workers still running the current job */
	int quit;
	/* the current job */
	fi_cpu_task fn;
	void *ctx;
	int64_t total;
};

struct fi_cpu {
	struct fi_cpu_pool pool;
};

/* Runs fn over [0, n) split into contiguous chunks, one per thread; ranges shorter than
 * 2 * grain run on the caller alone (a pool wake-up costs more than tiny work). */
void fi_cpu_parallel_for(struct fi_backend *be, int64_t n, int64_t grain, fi_cpu_task fn,
			 void *ctx);
/* Starts n - 1 workers (n <= 1: none; the caller is always one of the n); -1 when a thread
 * cannot start (those started are counted in p->n, and fi_cpu_pool_stop ends them). */
int fi_cpu_pool_start(struct fi_cpu_pool *p, int n);
void fi_cpu_pool_stop(struct fi_cpu_pool *p);

#endif
