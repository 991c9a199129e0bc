/* upload: weights from the mapped model image to the GPU through pinned staging buffers.
 *
 * Pageable memory cannot be DMA'd directly, so each tensor is cut into pieces that a pool of
 * threads copies (or converts to bf16) into pinned buffers of their own, each thread queuing
 * the DMA of its piece as soon as it is staged and staging its next piece into its other
 * buffer meanwhile. Measured on the H100 host (tools/cuda_start.c, 16 cores): the link takes
 * 55 GB/s from pinned memory; one thread copies 10 GB/s out of a mapping, 8 threads 32, 16
 * threads 43; staging whole pieces per thread with 8-15 threads moves a 16 GB image at 45
 * GB/s, page faults of a fresh mapping included (so no prefault is needed), where all
 * threads sharing each 64 MiB chunk and waiting for each other gave 27-30. pread() into the
 * buffers was slower (30-38 GB/s), and pinning the image's own pages (cudaHostRegister of
 * the mapping, then DMA from it) far slower (10-19 GB/s).
 *
 * Each thread makes its buffers when it starts, so backend creation does not wait for the
 * pinning; the first upload waits for them instead.
 * download_big's two buffers are allocated on first use. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cuda_be.h"
#include "base/tensor.h"

#define UP_BUF (4u << 20)       /* bytes of bf16 per staging buffer, two per thread */
#define UP_MAX_THREADS 16
#define UP_MIN_PIECE (256u << 10) /* below this a piece is not split further */
#define UP_SMALL (256u << 10)   /* tensors below this go through the driver's own staging */
#define DL_PIECE (8u << 20)     /* download_big: bytes per piece, two pinned buffers */

enum { JOB_UPLOAD = 1, JOB_COPY };

struct up_thread {
	struct fi_upload *u;
	pthread_t th;
	void *buf[2];
	cudaEvent_t ev[2]; /* recorded after the DMA out of buf[i] */
	int cur;
	int mapped[2]; /* buf[i] is mmap'd and registered (else from cudaHostAlloc) */
};

struct fi_upload {
	struct fi_cuda *c;
	int n_threads;
	int use_alloc; /* FI_UPLOAD_PIN=alloc: cudaHostAlloc for the staging buffers */
	struct up_thread t[UP_MAX_THREADS];
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint64_t gen;
	int pending, quit, ready;
	cudaError_t err;    /* first failure of a thread (setup or job), reported by the caller */
	const char *err_at; /* what failed */
	/* The current job. UPLOAD: n elements of src (dtype sdt) -> device dst as bf16, in
	 * n_pieces pieces of per elements. COPY: n bytes host src -> host dst, in pieces. */
	int kind;
	unsigned char *dst;
	const unsigned char *src;
	enum fi_dtype sdt;
	size_t n, per, n_pieces;
	atomic_size_t next;
	/* download_big */
	void *dl[2];
	cudaEvent_t dl_ev[2];
};

static void set_err(struct fi_upload *u, cudaError_t e, const char *at)
{
	pthread_mutex_lock(&u->mu);
	if (u->err == cudaSuccess) {
		u->err = e;
		u->err_at = at;
	}
	pthread_mutex_unlock(&u->mu);
}

/* Pinned memory for a thread: anonymous memory asked for in huge pages, touched, then
 * registered; cudaHostAlloc where that fails or with FI_UPLOAD_PIN=alloc. Measured on the
 * H100 host, 8B image, 15 threads: 0.40 s (40.5 GB/s) with registered buffers, 0.72-0.87 s
 * with cudaHostAlloc'd ones (allocated by the threads at once; 0.58 s with 8 threads). */
static cudaError_t pin_alloc(struct up_thread *t, int i)
{
	void *m = MAP_FAILED;
	if (!t->u->use_alloc)
		m = mmap(NULL, UP_BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m != MAP_FAILED) {
#ifdef MADV_HUGEPAGE
		madvise(m, UP_BUF, MADV_HUGEPAGE);
#endif
		memset(m, 0, UP_BUF);
		if (cudaHostRegister(m, UP_BUF, cudaHostRegisterDefault) == cudaSuccess) {
			t->buf[i] = m;
			t->mapped[i] = 1;
			return cudaSuccess;
		}
		cudaGetLastError();
		munmap(m, UP_BUF);
	}
	return cudaHostAlloc(&t->buf[i], UP_BUF, cudaHostAllocDefault);
}

static void pin_free(struct up_thread *t, int i)
{
	if (!t->buf[i])
		return;
	if (t->mapped[i]) {
		cudaHostUnregister(t->buf[i]);
		munmap(t->buf[i], UP_BUF);
	} else {
		cudaFreeHost(t->buf[i]);
	}
}

/* Stages piece i of the upload job in this thread's next buffer and queues its DMA. */
static void up_piece(struct up_thread *t, size_t i)
{
	struct fi_upload *u = t->u;
	size_t a = i * u->per, k = u->n - a < u->per ? u->n - a : u->per;
	size_t es = fi_dtype_size(u->sdt);
	cudaError_t e;
	/* The buffer is free once its previous transfer has finished. */
	if ((e = cudaEventSynchronize(t->ev[t->cur])) != cudaSuccess) {
		set_err(u, e, "cudaEventSynchronize");
		return;
	}
	if (u->sdt == FI_DT_BF16)
		memcpy(t->buf[t->cur], u->src + a * es, k * 2);
	else
		fi_convert(t->buf[t->cur], FI_DT_BF16, u->src + a * es, u->sdt, k);
	if ((e = cudaMemcpyAsync(u->dst + a * 2, t->buf[t->cur], k * 2, cudaMemcpyHostToDevice,
				 u->c->stream)) != cudaSuccess ||
	    (e = cudaEventRecord(t->ev[t->cur], u->c->stream)) != cudaSuccess) {
		set_err(u, e, "cudaMemcpyAsync");
		return;
	}
	t->cur ^= 1;
}

static void copy_piece(struct fi_upload *u, size_t i)
{
	size_t a = i * u->per, k = u->n - a < u->per ? u->n - a : u->per;
	memcpy(u->dst + a, u->src + a, k);
}

static void *worker(void *arg)
{
	struct up_thread *t = arg;
	struct fi_upload *u = t->u;
	uint64_t seen = 0;
	cudaError_t e = cudaSetDevice(u->c->device);
	for (int i = 0; i < 2 && e == cudaSuccess; i++)
		if ((e = pin_alloc(t, i)) == cudaSuccess)
			e = cudaEventCreateWithFlags(&t->ev[i], cudaEventDisableTiming);
	if (e != cudaSuccess)
		set_err(u, e, "pinned staging buffers");
	pthread_mutex_lock(&u->mu);
	u->ready++;
	pthread_cond_broadcast(&u->done);
	for (;;) {
		while (u->gen == seen && !u->quit)
			pthread_cond_wait(&u->go, &u->mu);
		if (u->quit)
			break;
		seen = u->gen;
		pthread_mutex_unlock(&u->mu);
		for (;;) {
			size_t i = atomic_fetch_add(&u->next, 1);
			if (i >= u->n_pieces)
				break;
			if (u->kind == JOB_COPY)
				copy_piece(u, i);
			else if (e == cudaSuccess)
				up_piece(t, i);
		}
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
	const struct fi_settings *set = fi_settings();
	if (!u)
		return fi_fail(FI_ENOMEM, "cuda: no memory for the upload state");
	c->up = u;
	u->c = c;
	u->use_alloc = set->upload_alloc;
	pthread_mutex_init(&u->mu, NULL);
	pthread_cond_init(&u->go, NULL);
	pthread_cond_init(&u->done, NULL);
	/* One thread per core but the caller's (which waits): 15 on the 16-core H100 host, where
	 * 8 already reach 45 GB/s from a prefaulted mapping and more take its page faults. */
	int n = (int)(ncpu > UP_MAX_THREADS + 1 ? UP_MAX_THREADS : ncpu > 2 ? ncpu - 1 : 1);
	if (set->upload_threads)
		n = set->upload_threads < UP_MAX_THREADS ? set->upload_threads : UP_MAX_THREADS;
	pthread_mutex_lock(&u->mu);
	for (int i = 0; i < n; i++) {
		u->t[i].u = u;
		if (pthread_create(&u->t[i].th, NULL, worker, &u->t[i]))
			break;
		u->n_threads++;
	}
	pthread_mutex_unlock(&u->mu);
	if (!u->n_threads)
		return fi_fail(FI_ENOMEM, "cuda: cannot start the upload threads");
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
	for (int i = 0; i < u->n_threads; i++) {
		struct up_thread *t = &u->t[i];
		pthread_join(t->th, NULL);
		for (int b = 0; b < 2; b++) {
			if (t->ev[b]) {
				cudaEventSynchronize(t->ev[b]);
				cudaEventDestroy(t->ev[b]);
			}
			pin_free(t, b);
		}
	}
	for (int b = 0; b < 2; b++) {
		if (u->dl_ev[b]) {
			cudaEventSynchronize(u->dl_ev[b]);
			cudaEventDestroy(u->dl_ev[b]);
		}
		if (u->dl[b])
			cudaFreeHost(u->dl[b]);
	}
	pthread_mutex_destroy(&u->mu);
	pthread_cond_destroy(&u->go);
	pthread_cond_destroy(&u->done);
	free(u);
	c->up = NULL;
}

/* Runs the job set up in u on every thread and waits until each piece is staged (UPLOAD:
 * its DMA queued on c->stream) or copied (COPY). */
static fi_err run_job(struct fi_upload *u)
{
	pthread_mutex_lock(&u->mu);
	while (u->ready < u->n_threads)
		pthread_cond_wait(&u->done, &u->mu);
	if (u->err == cudaSuccess || u->kind == JOB_COPY) {
		atomic_store(&u->next, 0);
		u->pending = u->n_threads;
		u->gen++;
		pthread_cond_broadcast(&u->go);
		while (u->pending)
			pthread_cond_wait(&u->done, &u->mu);
	}
	cudaError_t e = u->err;
	const char *at = u->err_at;
	pthread_mutex_unlock(&u->mu);
	if (e != cudaSuccess && u->kind == JOB_UPLOAD)
		return fi_fail(FI_EDEVICE, "cuda: weight upload: %s failed: %s", at,
			       cudaGetErrorString(e));
	return FI_OK;
}

fi_err fi_cuda_upload_bf16(struct fi_cuda *c, void *dst_d, const void *src, enum fi_dtype sdt,
			   size_t n)
{
	struct fi_upload *u = c->up;
	size_t W = (size_t)u->n_threads, np;
	if (!fi_dtype_is_compute(sdt))
		return fi_fail(FI_EUNSUPPORTED, "cuda: cannot upload %s as bf16", fi_dtype_name(sdt));
	if (!n)
		return FI_OK;
	if (n * 2 < UP_SMALL) {
		/* norms and biases: the driver stages pageable memory before returning */
		if (sdt == FI_DT_BF16) {
			CU_CHECK(cudaMemcpyAsync(dst_d, src, n * 2, cudaMemcpyHostToDevice, c->stream));
			return FI_OK;
		}
		uint16_t *tmp = malloc(n * 2);
		cudaError_t e;
		if (!tmp)
			return fi_fail(FI_ENOMEM, "cuda: weight upload: no memory");
		fi_convert(tmp, FI_DT_BF16, src, sdt, n);
		e = cudaMemcpyAsync(dst_d, tmp, n * 2, cudaMemcpyHostToDevice, c->stream);
		free(tmp);
		CU_CHECK(e);
		return FI_OK;
	}
	/* Pieces that fit a buffer, at least one per thread where the tensor allows, and a
	 * whole number of rounds over the threads so that none waits long for the others. */
	np = (n * 2 + UP_BUF - 1) / UP_BUF;
	if (np < W) {
		size_t most = n * 2 / UP_MIN_PIECE;
		np = most < W ? (most ? most : 1) : W;
	} else {
		np = (np + W - 1) / W * W;
	}
	u->kind = JOB_UPLOAD;
	u->dst = dst_d;
	u->src = src;
	u->sdt = sdt;
	u->n = n;
	u->per = (n + np - 1) / np;
	u->n_pieces = (n + u->per - 1) / u->per;
	return run_job(u);
}

/* Device to pageable host memory, for large results (the logits of a batch): DMA into the
 * pinned buffers at link speed and copy out with the pool, piece k+1 in flight while piece
 * k is copied, instead of the driver's slower pageable path. Synchronous. */
fi_err fi_cuda_download_big(struct fi_cuda *c, void *dst, const void *src_d, size_t bytes)
{
	struct fi_upload *u = c->up;
	size_t per = DL_PIECE, n_chunks = (bytes + per - 1) / per;
	fi_err fe;
	for (int b = 0; b < 2; b++)
		if (!u->dl[b]) {
			CU_CHECK(cudaHostAlloc(&u->dl[b], DL_PIECE, cudaHostAllocDefault));
			CU_CHECK(cudaEventCreateWithFlags(&u->dl_ev[b], cudaEventDisableTiming));
		}
	for (size_t k = 0; k <= n_chunks; k++) {
		int b = (int)(k & 1);
		if (k < n_chunks) {
			size_t off = k * per, len = bytes - off < per ? bytes - off : per;
			CU_CHECK(cudaEventSynchronize(u->dl_ev[b]));
			CU_CHECK(cudaMemcpyAsync(u->dl[b], (const char *)src_d + off, len,
						 cudaMemcpyDeviceToHost, c->stream));
			CU_CHECK(cudaEventRecord(u->dl_ev[b], c->stream));
		}
		if (k > 0) {
			size_t off = (k - 1) * per, len = bytes - off < per ? bytes - off : per;
			size_t W = (size_t)u->n_threads;
			CU_CHECK(cudaEventSynchronize(u->dl_ev[b ^ 1]));
			u->kind = JOB_COPY;
			u->dst = (unsigned char *)dst + off;
			u->src = u->dl[b ^ 1];
			u->n = len;
			u->per = (len + W - 1) / W;
			u->n_pieces = (len + u->per - 1) / u->per;
			if ((fe = run_job(u)))
				return fe;
		}
	}
	CU_CHECK(cudaStreamSynchronize(c->stream));
	return FI_OK;
}
