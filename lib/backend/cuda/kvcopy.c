/* kvcopy: whole KV blocks between the cache and host memory (the KV arena) in few calls.
 *
 * A block's layers are 2 x n_layers pieces of part = block_size x Hk x hd x 2 bytes (K, V)
 * in the cache, one per layer allocation, and consecutive in the host block. Blocks that are
 * consecutive in the cache and evenly spaced in host memory (a prefix published or fetched in
 * one go usually is, both allocators handing out ascending blocks) form a run, and a run
 * moves with one strided copy per piece: 2 x n_layers cudaMemcpy2DAsync calls whatever its
 * length, instead of 2 x n_layers per block. From registered (pinned) host memory the copies
 * are DMA at link speed.
 *
 * Copies into the cache run on a stream of their own, layer by layer over all the blocks
 * of the call (one call for a whole fetch: runs break where seg changes), an event after each
 * layer: the next forward's attention on layer l waits for event l only (fi_cuda_xfer_wait),
 * so a 4096-token prefix (510 MB for the 8B shape, ~10 ms over the link) arrives under the
 * compute of the prompt's remainder instead of before it. Copies out of the cache stay on the
 * compute stream, after what wrote the blocks. */
#include <stdlib.h>

#include "cuda_be.h"

/* The copy stream and one event a layer, made on first use. */
static fi_err xfer_init(struct fi_cuda *c, int n_layers)
{
	if (c->xfer && c->n_xfer_ev >= n_layers)
		return FI_OK;
	if (!c->xfer) {
		CU_CHECK(cudaStreamCreateWithFlags(&c->xfer, cudaStreamNonBlocking));
		CU_CHECK(cudaEventCreateWithFlags(&c->xfer_start, cudaEventDisableTiming));
	}
	cudaEvent_t *ev = realloc(c->xfer_ev, sizeof *ev * (size_t)n_layers);
	if (!ev)
		return fi_fail(FI_ENOMEM, "kv copy: out of memory");
	c->xfer_ev = ev;
	for (; c->n_xfer_ev < n_layers; c->n_xfer_ev++)
		CU_CHECK(cudaEventCreateWithFlags(&ev[c->n_xfer_ev], cudaEventDisableTiming));
	return FI_OK;
}

fi_err fi_cuda_xfer_wait(struct fi_cuda *c, int layer)
{
	if (!c->xfer_layers)
		return FI_OK;
	if (layer < 0 || layer >= c->xfer_layers)
		layer = c->xfer_layers - 1;
	CU_CHECK(cudaStreamWaitEvent(c->stream, c->xfer_ev[layer], 0));
	if (layer == c->xfer_layers - 1) /* the compute stream is after every copy now */
		c->xfer_layers = 0;
	return FI_OK;
}

void fi_cuda_xfer_free(struct fi_cuda *c)
{
	if (c->xfer)
		cudaStreamSynchronize(c->xfer);
	for (int i = 0; i < c->n_xfer_ev; i++)
		cudaEventDestroy(c->xfer_ev[i]);
	free(c->xfer_ev);
	if (c->xfer_start)
		cudaEventDestroy(c->xfer_start);
	if (c->xfer)
		cudaStreamDestroy(c->xfer);
	c->xfer_ev = NULL;
	c->n_xfer_ev = c->xfer_layers = 0;
	c->xfer = NULL;
	c->xfer_start = NULL;
}

/* One strided copy of a run of r blocks' piece (layer l, K or V). */
static fi_err copy_piece(const struct fi_kv_cache *kv, int to_cache, int l, int k, int32_t b,
			 char *host, size_t stride, int r, size_t part, cudaStream_t st)
{
	char *c = (char *)(k ? kv->v_d[l] : kv->k_d[l]) + (size_t)b * part;
	char *h = host + (size_t)(2 * l + k) * part;
	if (to_cache)
		CU_CHECK(cudaMemcpy2DAsync(c, part, h, stride, part, (size_t)r, cudaMemcpyHostToDevice,
					   st));
	else
		CU_CHECK(cudaMemcpy2DAsync(h, stride, c, part, part, (size_t)r, cudaMemcpyDeviceToHost,
					   st));
	return FI_OK;
}

fi_err fi_cuda_kv_copy(struct fi_backend *be, struct fi_kv_cache *kv, int to_cache, int n,
		       const int32_t *blocks, void *const *host, const int32_t *seg)
{
	struct fi_cuda *c = fi_cuda_of(be);
	size_t part = (size_t)kv->block_size * kv->n_kv_heads * kv->head_dim * 2; /* bf16 */
	int *run = malloc(sizeof *run * (size_t)(n > 0 ? n : 1)); /* run[i]: length, from i */
	size_t *stride = malloc(sizeof *stride * (size_t)(n > 0 ? n : 1));
	fi_err e = FI_OK;
	if (!run || !stride) {
		free(run);
		free(stride);
		return fi_fail(FI_ENOMEM, "kv copy: out of memory");
	}
	for (int i = 0; i < n; i += run[i]) {
		int r = 1;
		size_t sd = 2 * (size_t)kv->n_layers * part;
		if (blocks[i] < 0 || blocks[i] >= kv->n_blocks) {
			e = fi_fail(FI_ERANGE, "kv copy: block %d of %d", blocks[i], kv->n_blocks);
			goto out;
		}
		if (i + 1 < n && (char *)host[i + 1] > (char *)host[i] &&
		    (size_t)((char *)host[i + 1] - (char *)host[i]) >= sd)
			sd = (size_t)((char *)host[i + 1] - (char *)host[i]);
		while (i + r < n && blocks[i + r] == blocks[i] + r &&
		       (char *)host[i + r] == (char *)host[i] + (size_t)r * sd &&
		       (!seg || seg[i + r] == seg[i]))
			r++;
		run[i] = r;
		stride[i] = sd;
	}
	if (!to_cache) {
		/* after any copy into the cache still under way, then on the compute stream */
		if ((e = fi_cuda_xfer_wait(c, -1)))
			goto out;
		for (int l = 0; l < kv->n_layers; l++)
			for (int k = 0; k < 2; k++)
				for (int i = 0; !e && i < n; i += run[i])
					e = copy_piece(kv, 0, l, k, blocks[i], host[i], stride[i], run[i],
						       part, c->stream);
		goto out;
	}
	if ((e = xfer_init(c, kv->n_layers)))
		goto out;
	/* The blocks may have been read or written by work still queued on the compute
	 * stream (a request that held them before): the copies start after it. */
	if (cudaEventRecord(c->xfer_start, c->stream) != cudaSuccess ||
	    cudaStreamWaitEvent(c->xfer, c->xfer_start, 0) != cudaSuccess) {
		e = fi_fail(FI_EDEVICE, "kv copy: %s", cudaGetErrorString(cudaGetLastError()));
		goto out;
	}
	for (int l = 0; !e && l < kv->n_layers; l++) {
		for (int k = 0; k < 2; k++)
			for (int i = 0; !e && i < n; i += run[i])
				e = copy_piece(kv, 1, l, k, blocks[i], host[i], stride[i], run[i], part,
					       c->xfer);
		if (!e && cudaEventRecord(c->xfer_ev[l], c->xfer) != cudaSuccess)
			e = fi_fail(FI_EDEVICE, "kv copy: %s", cudaGetErrorString(cudaGetLastError()));
	}
	if (e) { /* some layers' events not recorded: nothing left in flight instead */
		cudaStreamSynchronize(c->xfer);
		goto out;
	}
	/* Layers before n_layers - 1 waited for already stay in order: each event follows
	 * every earlier copy of the stream. */
	c->xfer_layers = kv->n_layers;
out:
	free(run);
	free(stride);
	return e;
}
