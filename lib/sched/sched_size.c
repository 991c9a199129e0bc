/* sched_size: how big the KV pool is (scheduler.h, struct fi_kv_sizing). */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "sched_int.h"

/* Device memory kept out of the pool beyond gpu_mem's share: CUDA graphs of the decode
 * ladder, cuBLAS workspaces and allocations that come later. */
#define DEVICE_MARGIN (256ull << 20)

static int on_device(const struct fi_backend *be)
{
	return be && strcmp(be->ops->name, "cpu") != 0;
}

int fi_sched_default_batch(const struct fi_backend *be)
{
	return on_device(be) ? FI_SCHED_MAX_BATCH_DEVICE : FI_SCHED_MAX_BATCH;
}

void fi_kv_sizing_default(struct fi_kv_sizing *z)
{
	memset(z, 0, sizeof *z);
	z->gpu_mem = 0.9;
	z->block_size = 16;
}

fi_err fi_sched_cache_init(struct fi_model *m, const struct fi_kv_sizing *z, int *n_blocks)
{
	const struct fi_config *c = fi_model_config(m);
	struct fi_backend *be = fi_model_backend(m);
	int bs = z->block_size > 0 ? z->block_size : 16;
	int max_batch = z->max_batch > 0 ? z->max_batch : fi_sched_default_batch(be);
	int step = z->max_step_tokens > 0 ? z->max_step_tokens : FI_SCHED_MAX_STEP_TOKENS;
	int ctx = c->max_pos > 0 ? c->max_pos : 4096;
	uint64_t tb = fi_kvcache_token_bytes(c->n_layers, c->n_kv_heads, c->head_dim, be->act);
	uint64_t block = tb * (uint64_t)bs, n;
	int device = on_device(be);
	size_t fr = 0, tot = 0;
	fi_err e;
	if (n_blocks)
		*n_blocks = 0;
	if (!(z->gpu_mem > 0 && z->gpu_mem <= 1))
		return fi_fail(FI_EINVAL, "kv cache: gpu memory fraction %g is not in (0, 1]", z->gpu_mem);
	if (z->kv_tokens) {
		n = (z->kv_tokens + (uint64_t)bs - 1) / (uint64_t)bs;
	} else if (z->kv_bytes) {
		n = z->kv_bytes / block;
		if (!n)
			return fi_fail(FI_EINVAL, "kv cache: %llu bytes hold no block of %llu bytes "
				       "(%d tokens)", (unsigned long long)z->kv_bytes,
				       (unsigned long long)block, bs);
	} else if (device) {
		/* what the weights and a full step's scratch leave of gpu_mem x total */
		double share;
		uint64_t used;
		if ((e = fi_model_reserve_scratch(m, step, max_batch)))
			return e;
		if (!be->ops->mem_info || (e = be->ops->mem_info(be, &fr, &tot)))
			return fi_fail(FI_EUNSUPPORTED, "kv cache: the %s backend cannot say its memory: "
				       "give --kv-size", be->ops->name);
		share = z->gpu_mem * (double)tot;
		used = (uint64_t)(tot - fr) + DEVICE_MARGIN;
		if (share < (double)used + (double)block)
			return fi_fail(FI_EFULL, "kv cache: %s: %.2f of %.1f GiB is %.1f GiB, and "
				       "%.1f GiB are in use with the weights and the scratch of %d-token "
				       "steps: no room for KV blocks (raise --gpu-mem, lower "
				       "--max-step-tokens, or give --kv-size)", be->device, z->gpu_mem,
				       tot / 1073741824.0, share / 1073741824.0,
				       used / 1073741824.0, step);
		n = (uint64_t)((share - (double)used) / (double)block);
	} else {
		/* max_batch sequences of the whole context, at most a quarter of the memory */
		uint64_t cap;
		n = (uint64_t)max_batch * (uint64_t)((ctx + bs - 1) / bs);
		if (be->ops->mem_info && !be->ops->mem_info(be, &fr, &tot) && tot) {
			cap = (uint64_t)tot / 4 / block;
			if (n > cap)
				n = cap ? cap : 1;
		}
	}
	if (n > (uint64_t)(1 << 30) / (uint64_t)bs)
		n = (uint64_t)(1 << 30) / (uint64_t)bs;
	if ((e = fi_model_cache_init(m, (int)n, bs)))
		return e;
	fi_info("kv cache: %llu blocks of %d tokens (%llu tokens, %.2f GiB)", (unsigned long long)n,
		bs, (unsigned long long)n * bs, (double)n * (double)block / 1073741824.0);
	if (n_blocks)
		*n_blocks = (int)n;
	return FI_OK;
}
