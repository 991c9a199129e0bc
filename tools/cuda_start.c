/* cuda_start: where the time goes between exec and a model's weights on the GPU.
 *
 *   cuda_start init            time each step of CUDA start-up, one process, as fi does it
 *   cuda_start init-pf IMAGE   the same while another thread maps IMAGE's pages in
 *   cuda_start hold SECS       hold a context for SECS seconds (shows how much of init is
 *                              the device's own initialisation, paid when no process has it)
 *   cuda_start upload IMAGE    host copy, pread, pinning and link rates; whole-image pipelines
 *
 * Not part of fi: a measuring tool. Build (on a machine with the CUDA toolkit):
 *   gcc -O2 -pthread -o cuda_start tools/cuda_start.c -I/usr/local/cuda/include \
 *       -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib64/stubs -Wl,-rpath,/usr/local/cuda/lib64 \
 *       -lcublasLt -lcudart -lcuda
 */
#define _GNU_SOURCE
#include <cublasLt.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Seconds since this process was exec'd, from /proc (10 ms ticks). */
static double since_exec(void)
{
	FILE *f = fopen("/proc/self/stat", "r");
	unsigned long long st = 0;
	double up = -1;
	char buf[1024], *p;
	if (!f)
		return -1;
	p = fgets(buf, sizeof buf, f) ? strrchr(buf, ')') : NULL;
	fclose(f);
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
			 "%*d %*d %*d %llu", &st) != 1)
		return -1;
	if ((f = fopen("/proc/uptime", "r"))) {
		if (fscanf(f, "%lf", &up) != 1)
			up = -1;
		fclose(f);
	}
	return up < 0 ? -1 : up - (double)st / (double)sysconf(_SC_CLK_TCK);
}

#define CK(x)                                                                             \
	do {                                                                              \
		cudaError_t e_ = (x);                                                     \
		if (e_ != cudaSuccess) {                                                  \
			fprintf(stderr, "%s: %s (line %d)\n", #x, cudaGetErrorString(e_), \
				__LINE__);                                                \
			exit(1);                                                          \
		}                                                                         \
	} while (0)
#define DK(x)                                                                  \
	do {                                                                   \
		CUresult r_ = (x);                                             \
		if (r_ != CUDA_SUCCESS) {                                      \
			fprintf(stderr, "%s: %d (line %d)\n", #x, r_, __LINE__); \
			exit(1);                                               \
		}                                                              \
	} while (0)

static double T0;
static void mark(const char *what, double *t)
{
	double n = now();
	printf("  %-40s %8.1f ms   (at %7.1f ms)\n", what, (n - *t) * 1e3, (n - T0) * 1e3);
	fflush(stdout);
	*t = n;
}

/* --- image mapping --- */
struct img {
	int fd;
	const unsigned char *map;
	size_t size;
};

static void img_open(const char *path, struct img *im)
{
	struct stat st;
	im->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (im->fd < 0 || fstat(im->fd, &st)) {
		perror(path);
		exit(1);
	}
	im->size = (size_t)st.st_size;
	im->map = mmap(NULL, im->size, PROT_READ, MAP_SHARED, im->fd, 0);
	if (im->map == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
}

static void img_remap(struct img *im)
{
	munmap((void *)im->map, im->size);
	im->map = mmap(NULL, im->size, PROT_READ, MAP_SHARED, im->fd, 0);
	if (im->map == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
}

static double pf_secs;
static void *prefault(void *arg)
{
	struct img *im = arg;
	double t = now();
	size_t step = (size_t)64 << 20;
	for (size_t o = 0; o < im->size; o += step)
		madvise((void *)(im->map + o), im->size - o < step ? im->size - o : step,
			MADV_POPULATE_READ);
	pf_secs = now() - t;
	return NULL;
}

/* --- init --- */
static void do_init(const char *pf_image)
{
	double t, t_ex = since_exec();
	struct img im;
	pthread_t pt;
	CUdevice dev;
	CUcontext ctx;
	struct cudaDeviceProp prop;
	cudaStream_t st;
	cublasLtHandle_t lt;
	void *p, *h;
	int v;
	T0 = t = now();
	printf("init%s: exec to main %.3f s (10 ms ticks: dynamic loading of cudart, cublasLt)\n",
	       pf_image ? " with a concurrent prefault" : "", t_ex);
	if (pf_image) {
		img_open(pf_image, &im);
		pthread_create(&pt, NULL, prefault, &im);
	}
	DK(cuInit(0));
	mark("cuInit", &t);
	DK(cuDeviceGet(&dev, 0));
	DK(cuDevicePrimaryCtxRetain(&ctx, dev));
	mark("cuDevicePrimaryCtxRetain (context)", &t);
	DK(cuCtxSetCurrent(ctx));
	CK(cudaSetDevice(0));
	CK(cudaFree(0));
	mark("cudaSetDevice + cudaFree(0) (runtime)", &t);
	CK(cudaGetDeviceProperties(&prop, 0));
	mark("cudaGetDeviceProperties", &t);
	CK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0));
	CK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
	CK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, 0));
	mark("3 x cudaDeviceGetAttribute", &t);
	CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
	mark("cudaStreamCreate", &t);
	if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS)
		exit(1);
	mark("cublasLtCreate", &t);
	CK(cudaMalloc(&p, 32 << 20));
	CK(cudaMalloc(&p, 16 << 20));
	CK(cudaMalloc(&p, 16 << 20));
	CK(cudaMalloc(&p, 256 << 10));
	CK(cudaMemset(p, 0, 256 << 10));
	mark("cudaMalloc x4 (64 MiB) + memset", &t);
	CK(cudaHostAlloc(&h, 64 << 20, cudaHostAllocDefault));
	mark("cudaHostAlloc 64 MiB (1st)", &t);
	CK(cudaHostAlloc(&h, 64 << 20, cudaHostAllocDefault));
	mark("cudaHostAlloc 64 MiB (2nd)", &t);
	CK(cudaHostAlloc(&h, 256 << 20, cudaHostAllocDefault));
	mark("cudaHostAlloc 256 MiB", &t);
	{
		size_t fr, tot;
		CK(cudaMemGetInfo(&fr, &tot));
	}
	mark("cudaMemGetInfo", &t);
	if (pf_image) {
		pthread_join(pt, NULL);
		printf("  prefault of %.2f GB took %.3f s (%.1f GB/s)\n", im.size / 1e9, pf_secs,
		       im.size / 1e9 / pf_secs);
	}
	printf("init total since exec: %.3f s\n", since_exec());
}

/* --- upload experiments --- */
struct cp_job {
	unsigned char *dst;
	const unsigned char *src;
	int fd;
	size_t off, len; /* of src / file */
};

static void *cp_thread(void *arg)
{
	struct cp_job *j = arg;
	if (j->src) {
		memcpy(j->dst, j->src + j->off, j->len);
	} else {
		size_t done = 0;
		while (done < j->len) {
			ssize_t r = pread(j->fd, j->dst + done, j->len - done, (off_t)(j->off + done));
			if (r <= 0)
				break;
			done += (size_t)r;
		}
	}
	return NULL;
}

/* Copies `total` bytes from the image (mapping or file) into a pinned buffer of `blen`
 * bytes with n threads, in rounds of blen; returns GB/s. */
static double host_rate(struct img *im, int use_pread, unsigned char *pin, size_t blen,
			size_t total, int n)
{
	pthread_t th[64];
	struct cp_job j[64];
	double t = now();
	for (size_t base = 0; base < total; base += blen) {
		for (int i = 0; i < n; i++) {
			size_t a = blen * i / n, b = blen * (i + 1) / n;
			j[i] = (struct cp_job){pin + a, use_pread ? NULL : im->map, im->fd,
					       (base + a) % (im->size - blen), b - a};
			pthread_create(&th[i], NULL, cp_thread, &j[i]);
		}
		for (int i = 0; i < n; i++)
			pthread_join(th[i], NULL);
	}
	return total / 1e9 / (now() - t);
}

/* Whole-image pipeline: n workers, each with its own stream and nb pinned buffers of S
 * bytes; a worker takes the next S-byte piece, waits for its buffer, fills it (memcpy from
 * the mapping or pread from the file) and queues the DMA. */
struct pipe {
	struct img *im;
	unsigned char *dev;
	size_t S, n_pieces;
	int nb, use_pread;
	atomic_size_t next;
};
struct pworker {
	struct pipe *p;
	cudaStream_t st;
	unsigned char *buf[4];
	cudaEvent_t ev[4];
};

static void *pipe_worker(void *arg)
{
	struct pworker *w = arg;
	struct pipe *p = w->p;
	int k = 0;
	CK(cudaSetDevice(0));
	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->n_pieces)
			break;
		size_t off = i * p->S, len = p->im->size - off < p->S ? p->im->size - off : p->S;
		CK(cudaEventSynchronize(w->ev[k]));
		struct cp_job j = {w->buf[k], p->use_pread ? NULL : p->im->map, p->im->fd, off, len};
		cp_thread(&j);
		CK(cudaMemcpyAsync(p->dev + off, w->buf[k], len, cudaMemcpyHostToDevice, w->st));
		CK(cudaEventRecord(w->ev[k], w->st));
		k = (k + 1) % p->nb;
	}
	CK(cudaStreamSynchronize(w->st));
	return NULL;
}

static void run_pipe(struct img *im, unsigned char *dev, int use_pread, int n, size_t S, int nb)
{
	struct pipe p = {im, dev, S, (im->size + S - 1) / S, nb, use_pread, 0};
	struct pworker w[64];
	pthread_t th[64];
	double t = now();
	for (int i = 0; i < n; i++) {
		w[i].p = &p;
		CK(cudaStreamCreateWithFlags(&w[i].st, cudaStreamNonBlocking));
		for (int b = 0; b < nb; b++) {
			CK(cudaHostAlloc((void **)&w[i].buf[b], S, cudaHostAllocDefault));
			CK(cudaEventCreateWithFlags(&w[i].ev[b], cudaEventDisableTiming));
		}
	}
	double ta = now() - t;
	t = now();
	for (int i = 0; i < n; i++)
		pthread_create(&th[i], NULL, pipe_worker, &w[i]);
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	double tp = now() - t;
	printf("  pipe %-6s %2d threads x %d x %3zu MiB: %.3f s = %.1f GB/s (pinned alloc %.0f ms)\n",
	       use_pread ? "pread" : "memcpy", n, nb, S >> 20, tp, im->size / 1e9 / tp, ta * 1e3);
	fflush(stdout);
	for (int i = 0; i < n; i++) {
		for (int b = 0; b < nb; b++) {
			cudaFreeHost(w[i].buf[b]);
			cudaEventDestroy(w[i].ev[b]);
		}
		cudaStreamDestroy(w[i].st);
	}
}

/* Pin the mapping itself in pieces of S bytes (a thread registers ahead), DMA straight from
 * it; unregistering is timed apart. */
struct reg {
	struct img *im;
	size_t S, n;
	int nthr, id;
	volatile int *ready;
	double *secs;
};
static void *reg_thread(void *arg)
{
	struct reg *r = arg;
	CK(cudaSetDevice(0));
	for (size_t i = (size_t)r->id; i < r->n; i += (size_t)r->nthr) {
		size_t off = i * r->S, len = r->im->size - off < r->S ? r->im->size - off : r->S;
		double t = now();
		CK(cudaHostRegister((void *)(r->im->map + off), len, cudaHostRegisterReadOnly));
		r->secs[i] = now() - t;
		__atomic_store_n(&r->ready[i], 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void run_reg(struct img *im, unsigned char *dev, cudaStream_t st, size_t S, int nthr)
{
	size_t n = (im->size + S - 1) / S;
	volatile int *ready = calloc(n, sizeof(int));
	double *secs = calloc(n, sizeof(double)), sum = 0;
	struct reg r[16];
	pthread_t th[16];
	double t = now();
	for (int i = 0; i < nthr; i++) {
		r[i] = (struct reg){im, S, n, nthr, i, ready, secs};
		pthread_create(&th[i], NULL, reg_thread, &r[i]);
	}
	for (size_t i = 0; i < n; i++) {
		size_t off = i * S, len = im->size - off < S ? im->size - off : S;
		while (!__atomic_load_n(&ready[i], __ATOMIC_ACQUIRE))
			;
		CK(cudaMemcpyAsync(dev + off, im->map + off, len, cudaMemcpyHostToDevice, st));
	}
	CK(cudaStreamSynchronize(st));
	double tp = now() - t;
	for (int i = 0; i < nthr; i++)
		pthread_join(th[i], NULL);
	for (size_t i = 0; i < n; i++)
		sum += secs[i];
	t = now();
	for (size_t i = 0; i < n; i++)
		CK(cudaHostUnregister((void *)(im->map + i * S)));
	printf("  register %d thr x %4zu MiB: %.3f s = %.1f GB/s (register %.3f s of thread "
	       "time = %.1f GB/s per thread; unregister %.3f s)\n",
	       nthr, S >> 20, tp, im->size / 1e9 / tp, sum, im->size / 1e9 / sum, now() - t);
	fflush(stdout);
	free((void *)ready);
	free(secs);
}

static void do_upload(const char *path)
{
	struct img im;
	unsigned char *pin, *dev;
	cudaStream_t st;
	cudaEvent_t a, b;
	float ms;
	double t;
	CK(cudaSetDevice(0));
	CK(cudaFree(0));
	CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
	CK(cudaEventCreate(&a));
	CK(cudaEventCreate(&b));
	img_open(path, &im);
	printf("upload: image %.2f GB\n", im.size / 1e9);
	CK(cudaMalloc((void **)&dev, im.size));
	CK(cudaHostAlloc((void **)&pin, 256 << 20, cudaHostAllocDefault));

	/* link: pinned to device, 64 MiB and 8 MiB pieces */
	for (size_t S = 8 << 20; S <= (64 << 20); S *= 8) {
		int n = (int)((2048u << 20) / S);
		CK(cudaEventRecord(a, st));
		for (int i = 0; i < n; i++)
			CK(cudaMemcpyAsync(dev + (size_t)i * S, pin + (i * S) % (256 << 20), S,
					   cudaMemcpyHostToDevice, st));
		CK(cudaEventRecord(b, st));
		CK(cudaEventSynchronize(b));
		CK(cudaEventElapsedTime(&ms, a, b));
		printf("  link H2D pinned, %2zu MiB pieces: %.1f GB/s\n", S >> 20,
		       2048.0 * 1048576 / 1e9 / (ms / 1e3));
	}
	/* fresh mapping: page faults included */
	img_remap(&im);
	printf("  memcpy fresh mapping (faults), 8 thr: %.1f GB/s\n",
	       host_rate(&im, 0, pin, 256 << 20, (size_t)4 << 30, 8));
	t = now();
	{
		struct img tmp = im;
		img_remap(&tmp);
		prefault(&tmp);
		im = tmp;
	}
	printf("  prefault (MADV_POPULATE_READ, 64 MiB steps): %.3f s = %.1f GB/s\n", now() - t,
	       im.size / 1e9 / (now() - t));
	int thr[] = {1, 2, 4, 8, 12, 16};
	for (int k = 0; k < 6; k++)
		printf("  host memcpy mapped->pinned %2d thr: %5.1f GB/s   pread->pinned: %5.1f GB/s\n",
		       thr[k], host_rate(&im, 0, pin, 256 << 20, (size_t)4 << 30, thr[k]),
		       host_rate(&im, 1, pin, 256 << 20, (size_t)4 << 30, thr[k]));
	fflush(stdout);
	cudaFreeHost(pin);

	/* whole image, prefaulted mapping */
	run_pipe(&im, dev, 0, 8, 8 << 20, 2);
	run_pipe(&im, dev, 0, 12, 8 << 20, 2);
	run_pipe(&im, dev, 0, 15, 8 << 20, 2);
	run_pipe(&im, dev, 0, 15, 4 << 20, 3);
	run_pipe(&im, dev, 1, 8, 8 << 20, 2);
	run_pipe(&im, dev, 1, 15, 8 << 20, 2);
	run_pipe(&im, dev, 1, 15, 16 << 20, 2);
	/* fresh mapping, faults taken by the copy threads (what a plain open gets) */
	img_remap(&im);
	run_pipe(&im, dev, 0, 15, 8 << 20, 2);
	/* pinning the mapping: fresh, then prefaulted */
	img_remap(&im);
	run_reg(&im, dev, st, 256 << 20, 1);
	img_remap(&im);
	run_reg(&im, dev, st, 64 << 20, 4);
	img_remap(&im);
	run_reg(&im, dev, st, 256 << 20, 4);
	prefault(&im);
	run_reg(&im, dev, st, 256 << 20, 4);
	cudaFree(dev);
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "init")) {
		do_init(NULL);
	} else if (argc >= 3 && !strcmp(argv[1], "init-pf")) {
		do_init(argv[2]);
	} else if (argc >= 3 && !strcmp(argv[1], "hold")) {
		CK(cudaFree(0));
		printf("hold: context up, %.3f s since exec\n", since_exec());
		fflush(stdout);
		sleep((unsigned)atoi(argv[2]));
	} else if (argc >= 3 && !strcmp(argv[1], "upload")) {
		do_upload(argv[2]);
	} else {
		fprintf(stderr, "usage: cuda_start init | init-pf IMAGE | hold SECS | upload IMAGE\n");
		return 2;
	}
	return 0;
}
