/* comm: the CPU communicator (comm.h). The ranks are threads of one process, so a collective
 * is a meeting: each rank posts its buffer's address, all wait at a barrier, then read one
 * another's buffers directly. The all-reduce splits the vector into one slice per rank; each
 * rank sums its slice over all ranks, always in rank order, into the group's scratch, and
 * every rank copies the whole result back, so all ranks hold bit-identical sums (as the
 * sharded forward needs: each rank's residual stream must stay the same). */
#include "comm.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct group {
	int n, left; /* ranks; handles not yet destroyed */
	pthread_mutex_t mu;
	pthread_barrier_t bar;
	const void *post[FI_COMM_MAX]; /* each rank's buffer in the current collective */
	float *tmp;  /* all-reduce result [cap] */
	size_t cap;
	int failed;  /* rank 0 could not grow tmp: every rank fails the call */
};

static struct group *grp(struct fi_comm *c) { return c->priv; }

static void meet(struct group *g) { pthread_barrier_wait(&g->bar); }

static fi_err cpu_all_reduce(struct fi_comm *c, void *buf_d, size_t n, enum fi_dtype dt)
{
	struct group *g = grp(c);
	int r = c->rank, N = g->n;
	float *x = buf_d;
	if (dt != FI_DT_F32)
		return fi_fail(FI_EUNSUPPORTED, "comm (cpu): all-reduce of %s", fi_dtype_lname(dt));
	if (N == 1)
		return FI_OK;
	g->post[r] = buf_d;
	if (r == 0) { /* before the first barrier: nobody touches tmp yet */
		g->failed = 0;
		if (n > g->cap) {
			float *p = realloc(g->tmp, n * sizeof *p);
			if (p) {
				g->tmp = p;
				g->cap = n;
			} else {
				g->failed = 1;
			}
		}
	}
	meet(g);
	if (!g->failed) {
		size_t lo = n * (size_t)r / (size_t)N, hi = n * (size_t)(r + 1) / (size_t)N;
		for (size_t i = lo; i < hi; i++) {
			float s = 0;
			for (int k = 0; k < N; k++)
				s += ((const float *)g->post[k])[i];
			g->tmp[i] = s;
		}
	}
	meet(g);
	if (!g->failed)
		memcpy(x, g->tmp, n * sizeof *x);
	meet(g); /* tmp is reused (and may move) by the next call */
	return g->failed ? fi_fail(FI_ENOMEM, "comm (cpu): out of memory") : FI_OK;
}

static fi_err cpu_all_gather(struct fi_comm *c, void *out_d, const void *in_d, size_t bytes)
{
	struct group *g = grp(c);
	g->post[c->rank] = in_d;
	meet(g);
	for (int k = 0; k < g->n; k++)
		memcpy((uint8_t *)out_d + (size_t)k * bytes, g->post[k], bytes);
	meet(g);
	return FI_OK;
}

static fi_err cpu_broadcast(struct fi_comm *c, void *buf_d, size_t bytes, int root)
{
	struct group *g = grp(c);
	if (root < 0 || root >= g->n)
		return fi_fail(FI_EINVAL, "comm (cpu): broadcast from rank %d of %d", root, g->n);
	g->post[c->rank] = buf_d;
	meet(g);
	if (c->rank != root)
		memcpy(buf_d, g->post[root], bytes);
	meet(g);
	return FI_OK;
}

static void cpu_destroy(struct fi_comm *c)
{
	struct group *g = grp(c);
	int last;
	pthread_mutex_lock(&g->mu);
	last = --g->left == 0;
	pthread_mutex_unlock(&g->mu);
	if (last) {
		pthread_barrier_destroy(&g->bar);
		pthread_mutex_destroy(&g->mu);
		free(g->tmp);
		free(g);
	}
	free(c);
}

static const struct fi_comm_ops cpu_ops = {
	.name = "cpu",
	.all_reduce = cpu_all_reduce,
	.all_gather = cpu_all_gather,
	.broadcast = cpu_broadcast,
	.destroy = cpu_destroy,
};

fi_err fi_comm_cpu_create(int n, struct fi_comm **comms)
{
	struct group *g;
	if (n < 1 || n > FI_COMM_MAX)
		return fi_fail(FI_EINVAL, "comm (cpu): %d ranks (1 to %d)", n, FI_COMM_MAX);
	if (!(g = calloc(1, sizeof *g)))
		return fi_fail(FI_ENOMEM, "comm (cpu): out of memory");
	g->n = g->left = n;
	pthread_mutex_init(&g->mu, NULL);
	pthread_barrier_init(&g->bar, NULL, (unsigned)n);
	for (int r = 0; r < n; r++) {
		if (!(comms[r] = calloc(1, sizeof **comms))) {
			for (int k = 0; k < r; k++)
				free(comms[k]);
			g->left = 1;
			pthread_barrier_destroy(&g->bar);
			pthread_mutex_destroy(&g->mu);
			free(g);
			return fi_fail(FI_ENOMEM, "comm (cpu): out of memory");
		}
		*comms[r] = (struct fi_comm){&cpu_ops, r, n, g};
	}
	return FI_OK;
}
