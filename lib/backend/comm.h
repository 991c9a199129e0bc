/* comm: collectives between the ranks of a tensor-parallel group (model/tp.h), one rank per
 * device, each rank driven by a thread of its own in one process.
 *
 * Every call is collective: all ranks of the group make it, in the same order, with the same
 * sizes, each on its own buffers (backend memory of its own device). Ops are queued like the
 * backend's (on CUDA, on the rank's stream, so CUDA graphs capture them); a later backend op
 * of the rank sees their result.
 *
 *   all_reduce  buf[n] = the sum over ranks of every rank's buf[n], in place; every rank gets
 *               the same values (the CPU sums in rank order; NCCL as it chooses)
 *   all_gather  out[size, bytes] = every rank's in[bytes], rank r's at out + r * bytes
 *   broadcast   buf[bytes] = root's buf[bytes]
 *
 * Two implementations: the CPU one (threads meeting at barriers, summing through shared
 * memory: the reference, in `make check`) and NCCL's (backend/cuda/nccl.c). */
#ifndef FI_COMM_H
#define FI_COMM_H

#include <stddef.h>

#include "base/err.h"
#include "base/tensor.h"

struct fi_comm;

struct fi_comm_ops {
	const char *name; /* "cpu", "nccl" */
	fi_err (*all_reduce)(struct fi_comm *c, void *buf_d, size_t n, enum fi_dtype dt);
	fi_err (*all_gather)(struct fi_comm *c, void *out_d, const void *in_d, size_t bytes);
	fi_err (*broadcast)(struct fi_comm *c, void *buf_d, size_t bytes, int root);
	/* One rank's handle; the group goes with the last. Not collective. */
	void (*destroy)(struct fi_comm *c);
};

struct fi_comm {
	const struct fi_comm_ops *ops;
	int rank, size;
	void *priv;
};

/* n handles (comms[r] for rank r) of one CPU group of n ranks (1 <= n <= FI_COMM_MAX),
 * summing f32 buffers. Each rank calls from its own thread. */
#define FI_COMM_MAX 16
fi_err fi_comm_cpu_create(int n, struct fi_comm **comms);

#ifdef FI_HAVE_CUDA
struct fi_backend;
/* n handles of one NCCL group over CUDA backends bes[n] (rank r on bes[r]'s device and
 * stream; one device per rank). Rank r's calls must come from a thread whose current device
 * is bes[r]'s (the thread that created it). */
fi_err fi_comm_nccl_create(struct fi_backend *const *bes, int n, struct fi_comm **comms);
#endif

/* Shorthands that accept a NULL comm (no group: nothing to do). */
static inline fi_err fi_comm_all_reduce(struct fi_comm *c, void *buf_d, size_t n,
					enum fi_dtype dt)
{
	return c ? c->ops->all_reduce(c, buf_d, n, dt) : FI_OK;
}
static inline void fi_comm_destroy(struct fi_comm *c)
{
	if (c)
		c->ops->destroy(c);
}

#endif
