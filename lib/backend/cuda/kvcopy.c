/* kvcopy: whole KV blocks between the cache and host memory (the KV arena) in few calls.
 *
 * A block's layers are 2 x n_layers pieces of part = block_size x Hk x hd x 2 bytes (K, V)
 * in the cache, one per layer allocation, and consecutive in the host block. Blocks that are
 * consecutive in the cache and evenly spaced in host memory (a prefix published or fetched in
 * one go usually is, both allocators handing out ascending blocks) form a run, and a run
 * moves with one strided copy per piece: 2 x n_layers cudaMemcpy2DAsync calls whatever its
 * length, instead of 2 x n_layers per block. Everything is queued on the backend's stream;
 * from registered (pinned) host memory the copies are DMA at link speed. */
#include "cuda_be.h"

fi_err fi_cuda_kv_copy(struct fi_backend *be, struct fi_kv_cache *kv, int to_cache, int n,
		       const int32_t *blocks, void *const *host)
{
	cudaStream_t st = fi_cuda_of(be)->stream;
	size_t part = (size_t)kv->block_size * kv->n_kv_heads * kv->head_dim * 2; /* bf16 */
	for (int i = 0; i < n;) {
		int r = 1;
		size_t stride = 2 * (size_t)kv->n_layers * part;
		if (blocks[i] < 0 || blocks[i] >= kv->n_blocks)
			return fi_fail(FI_ERANGE, "kv copy: block %d of %d", blocks[i], kv->n_blocks);
		if (i + 1 < n && (char *)host[i + 1] > (char *)host[i] &&
		    (size_t)((char *)host[i + 1] - (char *)host[i]) >= stride)
			stride = (size_t)((char *)host[i + 1] - (char *)host[i]);
		while (i + r < n && blocks[i + r] == blocks[i] + r &&
		       (char *)host[i + r] == (char *)host[i] + (size_t)r * stride)
			r++;
		for (int l = 0; l < kv->n_layers; l++)
			for (int k = 0; k < 2; k++) {
				char *c = (char *)(k ? kv->v_d[l] : kv->k_d[l]) + (size_t)blocks[i] * part;
				char *h = (char *)host[i] + (size_t)(2 * l + k) * part;
				if (to_cache)
					CU_CHECK(cudaMemcpy2DAsync(c, part, h, stride, part, (size_t)r,
								   cudaMemcpyHostToDevice, st));
				else
					CU_CHECK(cudaMemcpy2DAsync(h, stride, c, part, part, (size_t)r,
								   cudaMemcpyDeviceToHost, st));
			}
		i += r;
	}
	return FI_OK;
}
