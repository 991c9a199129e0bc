/* cpu_pool: the CPU backend's persistent thread pool (cpu_pool.h), below every op file. */
#include "cpu_pool.h"

#include <stdlib.h>
#include <string.h>

static void run_chunk(struct fi_cpu_pool *p, int i)
{
	int64_t per = (p->total + p->n - 1) / p->n;
	int64_t b = per * i, e = b + per;
	if (e > p->total)
		e = p->total;
	if (b < e)
		p->fn(p->ctx, b, e);
}

/* Each worker gets its index through this small record. */
struct wctx {
	struct fi_cpu_pool *p;
	int idx;
};

static void *worker_main(void *arg)
{
	struct wctx w = *(struct wctx *)arg;
	struct fi_cpu_pool *p = w.p;
	uint64_t seen = 0;
	free(arg);
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->gen == seen && !p->quit)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->quit)
			break;
		seen = p->gen;
		pthread_mutex_unlock(&p->mu);
		run_chunk(p, w.idx);
		pthread_mutex_lock(&p->mu);
		if (--p->pending == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int fi_cpu_pool_start(struct fi_cpu_pool *p, int n)
{
	memset(p, 0, sizeof *p);
	p->n = 1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	if (n <= 1)
		return 0;
	p->tid = calloc((size_t)n - 1, sizeof *p->tid);
	if (!p->tid)
		return -1;
	for (int i = 1; i < n; i++) {
		struct wctx *w = malloc(sizeof *w);
		if (!w)
			return -1;
		w->p = p;
		w->idx = i;
		if (pthread_create(&p->tid[i - 1], NULL, worker_main, w)) {
			free(w);
			return -1;
		}
		p->n = i + 1;
	}
	return 0;
}

void fi_cpu_pool_stop(struct fi_cpu_pool *p)
{
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->n - 1; i++)
		pthread_join(p->tid[i], NULL);
	free(p->tid);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->go);
	pthread_cond_destroy(&p->done);
}

void fi_cpu_parallel_for(struct fi_backend *be, int64_t n, int64_t grain, fi_cpu_task fn,
			 void *ctx)
{
	struct fi_cpu_pool *p = &((struct fi_cpu *)be->priv)->pool;
	if (n <= 0)
		return;
	if (p->n <= 1 || n < 2 * (grain > 0 ? grain : 1)) {
		fn(ctx, 0, n);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->ctx = ctx;
	p->total = n;
	p->pending = p->n - 1;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	run_chunk(p, 0);
	pthread_mutex_lock(&p->mu);
	while (p->pending)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}
