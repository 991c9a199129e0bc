/* ring: the per-step uploads (a step's token ids, positions, slots, block tables, sampling
 * rows) staged through pinned memory.
 *
 * A copy from pageable memory may synchronize with the stream before it starts (CUDA's API
 * synchronization rules: "if pageable memory must first be staged to pinned memory, the
 * driver may synchronize with the stream"), which would stall a host preparing step n+1
 * until step n is done. Copied into a pinned ring first, the upload is an asynchronous DMA
 * and the caller may reuse its buffer at once. The ring is RING_SEGS segments; leaving a
 * segment records an event after its last copy, and coming back to it (RING_SEGS - 1
 * segments later, several steps on) waits for that event, which has long passed. Uploads
 * larger than a segment, and those during graph capture, go as plain copies. */
#include <string.h>

#include "cuda_be.h"

static fi_err ring_init(struct fi_cuda *c)
{
	CU_CHECK(cudaHostAlloc((void **)&c->ring, (size_t)FI_RING_SEGS * FI_RING_SEG_BYTES,
			       cudaHostAllocDefault));
	for (int i = 0; i < FI_RING_SEGS; i++) {
		CU_CHECK(cudaEventCreateWithFlags(&c->ring_ev[i], cudaEventDisableTiming));
		c->ring_ev_set[i] = 0;
	}
	c->ring_seg = 0;
	c->ring_off = 0;
	return FI_OK;
}

void fi_cuda_ring_free(struct fi_cuda *c)
{
	for (int i = 0; i < FI_RING_SEGS; i++)
		if (c->ring_ev[i])
			cudaEventDestroy(c->ring_ev[i]);
	if (c->ring)
		cudaFreeHost(c->ring);
	c->ring = NULL;
}

fi_err fi_cuda_ring_upload(struct fi_cuda *c, void *dst_d, const void *src, size_t bytes)
{
	unsigned char *p;
	fi_err e;
	if (!bytes)
		return FI_OK;
	if (c->capturing || bytes > FI_RING_SEG_BYTES) {
		CU_CHECK(cudaMemcpyAsync(dst_d, src, bytes, cudaMemcpyHostToDevice, c->stream));
		return FI_OK;
	}
	if (!c->ring && (e = ring_init(c))) {
		fi_cuda_ring_free(c);
		return e;
	}
	if (c->ring_off + bytes > FI_RING_SEG_BYTES) { /* on to the next segment */
		CU_CHECK(cudaEventRecord(c->ring_ev[c->ring_seg], c->stream));
		c->ring_ev_set[c->ring_seg] = 1;
		c->ring_seg = (c->ring_seg + 1) % FI_RING_SEGS;
		if (c->ring_ev_set[c->ring_seg])
			CU_CHECK(cudaEventSynchronize(c->ring_ev[c->ring_seg]));
		c->ring_off = 0;
	}
	p = c->ring + (size_t)c->ring_seg * FI_RING_SEG_BYTES + c->ring_off;
	memcpy(p, src, bytes);
	CU_CHECK(cudaMemcpyAsync(dst_d, p, bytes, cudaMemcpyHostToDevice, c->stream));
	c->ring_off += (bytes + 255) & ~(size_t)255;
	return FI_OK;
}
