/* nccl: the NCCL communicator (backend/comm.h) over the CUDA backends of one process, one
 * rank per device, each driven by its own thread. Collectives are queued on the rank
 * backend's stream, so they order with its kernels and a CUDA graph captured on that stream
 * records them (NCCL supports stream capture). The communicators come from ncclCommInitAll,
 * which needs no bootstrap between processes: the ranks are threads.
 *
 * NVLink multicast (NVLS) stays off unless NCCL_NVLS_ENABLE=1 (settings.h: the machines fi
 * targets run without the fabric manager's multicast objects, and NCCL would fail to init). */
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/comm.h"
#include "base/settings.h"
#include "cuda_be.h"

#define NC_CHECK(expr) FI_CHECK(expr, ncclSuccess, ncclGetErrorString)

struct nccl_rank {
	ncclComm_t comm;
	struct fi_backend *be;
};

static cudaStream_t stream_of(struct fi_comm *c)
{
	struct nccl_rank *r = c->priv;
	return ((struct fi_cuda *)r->be->priv)->stream;
}

static int nccl_type(enum fi_dtype dt, ncclDataType_t *t)
{
	switch (dt) {
	case FI_DT_F32: *t = ncclFloat32; return 1;
	case FI_DT_BF16: *t = ncclBfloat16; return 1;
	case FI_DT_F16: *t = ncclFloat16; return 1;
	default: return 0;
	}
}

static fi_err nc_all_reduce(struct fi_comm *c, void *buf_d, size_t n, enum fi_dtype dt)
{
	struct nccl_rank *r = c->priv;
	ncclDataType_t t;
	if (!nccl_type(dt, &t))
		return fi_fail(FI_EUNSUPPORTED, "comm (nccl): all-reduce of %s", fi_dtype_lname(dt));
	NC_CHECK(ncclAllReduce(buf_d, buf_d, n, t, ncclSum, r->comm, stream_of(c)));
	return FI_OK;
}

static fi_err nc_all_gather(struct fi_comm *c, void *out_d, const void *in_d, size_t bytes)
{
	struct nccl_rank *r = c->priv;
	NC_CHECK(ncclAllGather(in_d, out_d, bytes, ncclUint8, r->comm, stream_of(c)));
	return FI_OK;
}

static fi_err nc_broadcast(struct fi_comm *c, void *buf_d, size_t bytes, int root)
{
	struct nccl_rank *r = c->priv;
	NC_CHECK(ncclBroadcast(buf_d, buf_d, bytes, ncclUint8, root, r->comm, stream_of(c)));
	return FI_OK;
}

static void nc_destroy(struct fi_comm *c)
{
	struct nccl_rank *r = c->priv;
	if (r && r->comm)
		ncclCommDestroy(r->comm);
	free(r);
	free(c);
}

static const struct fi_comm_ops nccl_ops = {
	.name = "nccl",
	.all_reduce = nc_all_reduce,
	.all_gather = nc_all_gather,
	.broadcast = nc_broadcast,
	.destroy = nc_destroy,
};

fi_err fi_comm_nccl_create(struct fi_backend *const *bes, int n, struct fi_comm **comms)
{
	ncclComm_t nc[FI_COMM_MAX];
	int dev[FI_COMM_MAX];
	ncclResult_t rc;
	if (n < 1 || n > FI_COMM_MAX)
		return fi_fail(FI_EINVAL, "comm (nccl): %d ranks (1 to %d)", n, FI_COMM_MAX);
	for (int i = 0; i < n; i++) {
		if (strcmp(bes[i]->ops->name, "cuda"))
			return fi_fail(FI_EINVAL, "comm (nccl): rank %d is on the %s backend", i,
				       bes[i]->ops->name);
		dev[i] = ((struct fi_cuda *)bes[i]->priv)->device;
	}
	/* NCCL reads its environment at init: NVLS as the settings say (off by default) */
	setenv("NCCL_NVLS_ENABLE", fi_settings()->nccl_nvls ? "1" : "0", 1);
	if ((rc = ncclCommInitAll(nc, n, dev)) != ncclSuccess)
		return fi_fail(FI_EDEVICE, "comm (nccl): ncclCommInitAll over %d GPUs failed: %s", n,
			       ncclGetErrorString(rc));
	for (int i = 0; i < n; i++) {
		struct nccl_rank *r = calloc(1, sizeof *r);
		if (r)
			comms[i] = calloc(1, sizeof **comms);
		if (!r || !comms[i]) {
			free(r);
			for (int k = 0; k < i; k++)
				nc_destroy(comms[k]);
			for (int k = i; k < n; k++)
				ncclCommDestroy(nc[k]);
			return fi_fail(FI_ENOMEM, "comm (nccl): out of memory");
		}
		*r = (struct nccl_rank){nc[i], bes[i]};
		*comms[i] = (struct fi_comm){&nccl_ops, i, n, r};
	}
	return FI_OK;
}
