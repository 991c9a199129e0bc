/* upload: weights from the mapped model image to the GPU in large pinned chunks.
 *
 * Pageable memory cannot be DMA'd directly, so each chunk is copied (or converted to bf16)
 * into one of two pinned staging buffers by a small pool of threads, then sent with
 * cudaMemcpyAsync while the next chunk is being staged: the host copy and the link transfer
 * overlap, and several threads keep the host side (page faults of a fresh mapping included)
 * ahead of the ~50 GB/s link. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda_be.h"
#include "tensor.h"

#define UP_CHUNK (64u << 20)   /* bytes of bf16 per staging buffer */
#define UP_MAX_THREADS 16
#define UP_SMALL (1u << 20)    /* below this one thread does the staging */

struct fi_upload {
	void *stage[2];
	cudaEvent_t ev[2];
	int cur;
	int n_threads;
	pthread_t th[UP_MAX_THREADS];
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint64_t gen;
	int pending, quit;
	/* the current job: n elements of src (dtype sdt) -> dst as bf16; sdt U8: n raw bytes */
	unsigned char *dst;
	const unsigned char *src;
	enum fi_dtype sdt;
	size_t n;
};

static void stage_part(struct fi_upload *u, int part, int parts)
{
	size_t a = u->n * (size_t)part / (size_t)parts, b = u->n * (size_t)(part + 1) / (size_t)parts;
	size_t es = fi_dtype_size(u->sdt);
	if (b <= a)
		return;
	if (u->sdt == FI_DT_BF16 || u->sdt == FI_DT_U8)
		memcpy(u->dst + a * es, u->src + a * es, (b - a) * es);
	else
		fi_convert(u->dst + a * 2, FI_DT_BF16, u->src + a * es, u->sdt, b - a);
}

static void *worker(void *arg)
{
	struct fi_upload *u = arg;
	uint64_t seen = 0;
	int me;
	pthread_mutex_lock(&u->mu);
	for (me = 0; me < u->n_threads && !pthread_equal(u->th[me], pthread_self()); me++)
		;
	for (;;) {
		while (u->gen == seen && !u->quit)
			pthread_cond_wait(&u->go, &u->mu);
		if (u->quit)
			break;
		seen = u->gen;
		pthread_mutex_unlock(&u->mu);
		stage_part(u, me + 1, u->n_threads + 1);
		pthread_mutex_lock(&u->mu);
		if (--u->pending == 0)
			pthread_cond_signal(&u->done);
	}
	pthread_mutex_unlock(&u->mu);
	return NULL;
}

fi_err fi_cuda_upload_init(struct fi_cuda *c)
{
	struct fi_upload *u = calloc(1, sizeof(*u));
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	if (!u)
		return fi_fail(FI_ENOMEM, "cuda: no memory for the upload state");
	c->up = u;
	pthread_mutex_init(&u->mu, NULL);
	pthread_cond_init(&u->go, NULL);
	pthread_cond_init(&u->done, NULL);
	for (int i = 0; i < 2; i++) {
		CU_CHECK(cudaHostAlloc(&u->stage[i], UP_CHUNK, cudaHostAllocDefault));
		CU_CHECK(cudaEventCreateWithFlags(&u->ev[i], cudaEventDisableTiming));
	}
	/* Helpers besides the calling thread; memcpy bandwidth stops growing near 8. */
	int n = (int)(ncpu > 8 ? 8 : ncpu) - 1;
	pthread_mutex_lock(&u->mu);
	for (int i = 0; i < n && i < UP_MAX_THREADS; i++) {
		if (pthread_create(&u->th[i], NULL, worker, u))
			break;
		u->n_threads++;
	}
	pthread_mutex_unlock(&u->mu);
	return FI_OK;
}

void fi_cuda_upload_free(struct fi_cuda *c)
{
	struct fi_upload *u = c->up;
	if (!u)
		return;
	pthread_mutex_lock(&u->mu);
	u->quit = 1;
	pthread_cond_broadcast(&u->go);
	pthread_mutex_unlock(&u->mu);
	for (int i = 0; i < u->n_threads; i++)
		pthread_join(u->th[i], NULL);
	for (int i = 0; i < 2; i++) {
		if (u->ev[i]) {
			cudaEventSynchronize(u->ev[i]);
			cudaEventDestroy(u->ev[i]);
		}
		if (u->stage[i])
			cudaFreeHost(u->stage[i]);
	}
	pthread_mutex_destroy(&u->mu);
	pthread_cond_destroy(&u->go);
	pthread_cond_destroy(&u->done);
	free(u);
	c->up = NULL;
}

/* Copies (converts) n elements of src to dst using the pool (or this thread for small ones). */
static void pool_copy(struct fi_upload *u, void *dst, const void *src, enum fi_dtype sdt, size_t n)
{
	u->dst = dst;
	u->src = src;
	u->sdt = sdt;
	u->n = n;
	if (n * fi_dtype_size(sdt) < UP_SMALL || u->n_threads == 0) {
		stage_part(u, 0, 1);
		return;
	}
	pthread_mutex_lock(&u->mu);
	u->pending = u->n_threads;
	u->gen++;
	pthread_cond_broadcast(&u->go);
	pthread_mutex_unlock(&u->mu);
	stage_part(u, 0, u->n_threads + 1);
	pthread_mutex_lock(&u->mu);
	while (u->pending)
		pthread_cond_wait(&u->done, &u->mu);
	pthread_mutex_unlock(&u->mu);
}

fi_err fi_cuda_upload_bf16(struct fi_cuda *c, void *dst_d, const void *src, enum fi_dtype sdt,
			   size_t n)
{
	struct fi_upload *u = c->up;
	size_t es = fi_dtype_size(sdt), per = UP_CHUNK / 2;
	if (!fi_dtype_is_compute(sdt))
		return fi_fail(FI_EUNSUPPORTED, "cuda: cannot upload %s as bf16", fi_dtype_name(sdt));
	for (size_t off = 0; off < n; off += per) {
		size_t k = n - off < per ? n - off : per;
		/* The buffer is free once its previous transfer has finished. */
		CU_CHECK(cudaEventSynchronize(u->ev[u->cur]));
		pool_copy(u, u->stage[u->cur], (const unsigned char *)src + off * es, sdt, k);
		CU_CHECK(cudaMemcpyAsync((uint16_t *)dst_d + off, u->stage[u->cur], k * 2,
					 cudaMemcpyHostToDevice, c->stream));
		CU_CHECK(cudaEventRecord(u->ev[u->cur], c->stream));
		u->cur ^= 1;
	}
	return FI_OK;
}

/* Device to pageable host memory, for large results (the logits of a batch): DMA into the
 * pinned buffers at link speed and copy out with the pool, chunk k+1 in flight while chunk
 * k is copied, instead of the driver's slower pageable path. Synchronous. */
fi_err fi_cuda_download_big(struct fi_cuda *c, void *dst, const void *src_d, size_t bytes)
{
	struct fi_upload *u = c->up;
	/* 8 MiB pieces: small enough that the copy-out of one overlaps the DMA of the next */
	size_t per = 8u << 20, n_chunks = (bytes + per - 1) / per;
	for (size_t k = 0; k <= n_chunks; k++) {
		int b = (int)(k & 1);
		if (k < n_chunks) {
			size_t off = k * per, len = bytes - off < per ? bytes - off : per;
			CU_CHECK(cudaEventSynchronize(u->ev[b]));
			CU_CHECK(cudaMemcpyAsync(u->stage[b], (const char *)src_d + off, len,
						 cudaMemcpyDeviceToHost, c->stream));
			CU_CHECK(cudaEventRecord(u->ev[b], c->stream));
		}
		if (k > 0) {
			size_t off = (k - 1) * per, len = bytes - off < per ? bytes - off : per;
			CU_CHECK(cudaEventSynchronize(u->ev[b ^ 1]));
			pool_copy(u, (char *)dst + off, u->stage[b ^ 1], FI_DT_U8, len);
		}
	}
	u->cur = 0;
	CU_CHECK(cudaStreamSynchronize(c->stream));
	return FI_OK;
}
