/* gemm: out[T,N] = in[T,K] @ w[N,K]^T (+ bias[N]) through cuBLASLt; bf16 operands, fp32
 * accumulation, bf16 or f32 output.
 *
 * cuBLASLt is column-major: the row-major out[T,N] is the column-major N x T matrix
 * D = op(A) * B with A = w seen as K x N (ld K, transposed) and B = in seen as K x T (ld K).
 * Descriptors, layouts and the heuristic's algorithm are cached per shape (N, K, T, output
 * type, bias, pointer alignment), so that a cached call costs only the launch. The heuristic
 * query costs 1-4 ms of host time on the H100 hosts (tests/gpu/NOTES.md), and a serving run
 * meets a new T at most steps (decode rows plus prompt chunks; five shapes a step), so it is
 * asked once per bucket of T (fi_cuda_t_bucket: 9..16, ..., 65..128, then 64 wide, 256
 * wide from 1024, 1024 wide from 4096) and its algorithm reused for every T of the bucket, checked
 * by cublasLtMatmulAlgoCheck (17 us; a failed check asks the heuristic). The
 * cache is a hash table (a lookup per GEMM, ~7 a layer) that drops its least recently used
 * quarter when full. The workspace is fixed, so calls are safe inside graph capture. */
#include <stdlib.h>
#include <string.h>

#include "cuda_be.h"

#define FI_MAX_PLANS 2048
#define FI_PLAN_SLOTS 4096 /* hash slots: twice the plans, a power of two */
#define FI_GEMM_CANDS 12

struct fi_gemm_plan {
	int N, K, T, out_f32, bias, align;
	uint64_t used; /* the call count at its last use */
	cublasLtMatmulDesc_t desc;
	cublasLtMatrixLayout_t a, b, d;
	cublasLtMatmulAlgo_t algo;
	cublasLtMatmulAlgo_t cand[FI_GEMM_CANDS]; /* the heuristic's candidates, best first */
	int n_cand, tuned;
};

static void plan_destroy(struct fi_gemm_plan *p)
{
	if (p->desc)
		cublasLtMatmulDescDestroy(p->desc);
	if (p->a)
		cublasLtMatrixLayoutDestroy(p->a);
	if (p->b)
		cublasLtMatrixLayoutDestroy(p->b);
	if (p->d)
		cublasLtMatrixLayoutDestroy(p->d);
	memset(p, 0, sizeof(*p));
}

void fi_cuda_gemm_free(struct fi_cuda *c)
{
	for (int i = 0; i < c->n_plans; i++)
		plan_destroy(&c->plans[i]);
	free(c->plans);
	free(c->plan_slot);
	c->plans = NULL;
	c->plan_slot = NULL;
	c->n_plans = c->cap_plans = 0;
}

static uint32_t plan_hash(int N, int K, int T, int out_f32, int bias, int align)
{
	uint64_t h = 1469598103934665603ull;
	const int v[6] = {N, K, T, out_f32, bias, align};
	for (int i = 0; i < 6; i++)
		h = (h ^ (uint32_t)v[i]) * 1099511628211ull;
	return (uint32_t)(h ^ h >> 32);
}

/* Slot table rebuilt from the plans (after an eviction). */
static void plan_rehash(struct fi_cuda *c)
{
	for (int i = 0; i < FI_PLAN_SLOTS; i++)
		c->plan_slot[i] = -1;
	for (int i = 0; i < c->n_plans; i++) {
		struct fi_gemm_plan *p = &c->plans[i];
		uint32_t h = plan_hash(p->N, p->K, p->T, p->out_f32, p->bias, p->align);
		while (c->plan_slot[h & (FI_PLAN_SLOTS - 1)] >= 0)
			h++;
		c->plan_slot[h & (FI_PLAN_SLOTS - 1)] = i;
	}
}

static int cmp_used(const void *a, const void *b)
{
	uint64_t x = ((const struct fi_gemm_plan *)a)->used, y = ((const struct fi_gemm_plan *)b)->used;
	return x < y ? 1 : x > y ? -1 : 0; /* most recent first */
}

/* Full: keeps the three quarters used most recently. */
static void plan_evict(struct fi_cuda *c)
{
	int keep = FI_MAX_PLANS * 3 / 4;
	qsort(c->plans, (size_t)c->n_plans, sizeof *c->plans, cmp_used);
	for (int i = keep; i < c->n_plans; i++)
		plan_destroy(&c->plans[i]);
	c->n_plans = keep;
	plan_rehash(c);
}

static int ptr_align(const void *p)
{
	uintptr_t u = (uintptr_t)p;
	int a = 256;
	while (a > 2 && (u & (uintptr_t)(a - 1)))
		a >>= 1;
	return a;
}

int fi_cuda_t_bucket(int T)
{
	int b = 8;
	if (T <= 8)
		return T;
	if (T <= 128) {
		while (b < T)
			b *= 2;
		return b;
	}
	b = T <= 1024 ? 64 : T <= 4096 ? 256 : 1024;
	return (T + b - 1) / b * b;
}

/* A plan's descriptor and layouts; from->algo (the bucket's plan) when it passes the
 * check, else the heuristic's (from NULL: always). */
static fi_err plan_make(struct fi_cuda *c, struct fi_gemm_plan *p, const struct fi_gemm_plan *from)
{
	cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
	cudaDataType_t dt = p->out_f32 ? CUDA_R_32F : CUDA_R_16BF;
	cublasLtMatmulPreference_t pref = NULL;
	cublasLtMatmulHeuristicResult_t res[FI_GEMM_CANDS];
	int n_res = 0;
	uint64_t ws = FI_LT_WS_BYTES;
	uint32_t al = (uint32_t)p->align;

	LT_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
	LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
	if (p->bias) {
		cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
		cudaDataType_t bt = CUDA_R_16BF;
		LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep,
							sizeof(ep)));
		LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
							&bt, sizeof(bt)));
	}
	LT_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, p->K, p->N, p->K));
	LT_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, p->K, p->T, p->K));
	LT_CHECK(cublasLtMatrixLayoutCreate(&p->d, dt, p->N, p->T, p->N));
	if (from) {
		cublasLtMatmulHeuristicResult_t r;
		memset(&r, 0, sizeof r);
		if (cublasLtMatmulAlgoCheck(c->lt, p->desc, p->a, p->b, p->d, p->d, &from->algo, &r) ==
			    CUBLAS_STATUS_SUCCESS &&
		    r.workspaceSize <= FI_LT_WS_BYTES) {
			p->algo = from->algo;
			memcpy(p->cand, from->cand, sizeof p->cand);
			p->n_cand = from->n_cand;
			return FI_OK;
		}
	}
	LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
	cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
		pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
	const cublasLtMatmulPreferenceAttributes_t aligns[] = {
		CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
		CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
	for (int i = 0; i < 4 && st == CUBLAS_STATUS_SUCCESS; i++)
		st = cublasLtMatmulPreferenceSetAttribute(pref, aligns[i], &al, sizeof(al));
	/* the candidates are timed only under FI_GEMM_TUNE=1; else the first is all we use */
	if (st == CUBLAS_STATUS_SUCCESS)
		st = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->d, p->d, pref,
						    fi_settings()->gemm_tune ? FI_GEMM_CANDS : 1,
						    res, &n_res);
	cublasLtMatmulPreferenceDestroy(pref);
	LT_CHECK(st);
	if (n_res < 1)
		return fi_fail(FI_EDEVICE, "cublasLt: no algorithm for %d x %d x %d (%s out)", p->T,
			       p->N, p->K, p->out_f32 ? "f32" : "bf16");
	p->algo = res[0].algo;
	for (int i = 0; i < n_res; i++)
		p->cand[i] = res[i].algo;
	p->n_cand = n_res;
	return FI_OK;
}

/* Small-batch shapes (5..256 rows: decode of a batch, short prefill chunks): FI_GEMM_TUNE=1
 * times each candidate on the real operands once and keeps the fastest. Off by default: on
 * the H100 it gained nothing measurable over the first pick, which streams a layer's weights
 * at 2.3-2.5 TB/s (80% of the card) at 8-128 rows (tests/gpu/NOTES.md). Never during graph
 * capture (timing needs a sync). */
static void plan_tune(struct fi_cuda *c, struct fi_gemm_plan *p, void *out_d, const void *in_d,
		      const void *w_d)
{
	const float one = 1.f, zero = 0.f;
	cudaEvent_t e0, e1;
	float best = 1e30f;
	int bi = 0;
	p->tuned = 1;
	if (!fi_settings()->gemm_tune)
		return;
	if (p->n_cand < 2 || p->T <= 4 || p->T > 256)
		return;
	if (cudaEventCreate(&e0) != cudaSuccess)
		return;
	if (cudaEventCreate(&e1) != cudaSuccess) {
		cudaEventDestroy(e0);
		return;
	}
	for (int i = 0; i < p->n_cand; i++) {
		float ms = 0;
		int ok = 1;
		for (int r = 0; r < 4 && ok; r++) {
			if (r == 1)
				ok = cudaEventRecord(e0, c->stream) == cudaSuccess;
			ok = ok && cublasLtMatmul(c->lt, p->desc, &one, w_d, p->a, in_d, p->b, &zero, out_d,
						  p->d, out_d, p->d, &p->cand[i], c->lt_ws, FI_LT_WS_BYTES,
						  c->stream) == CUBLAS_STATUS_SUCCESS;
		}
		ok = ok && cudaEventRecord(e1, c->stream) == cudaSuccess &&
		     cudaEventSynchronize(e1) == cudaSuccess &&
		     cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess;
		if (ok && ms < best) {
			best = ms;
			bi = i;
		}
	}
	cudaGetLastError();
	cudaEventDestroy(e0);
	cudaEventDestroy(e1);
	p->algo = p->cand[bi];
}

static fi_err plan_get(struct fi_cuda *c, int N, int K, int T, int out_f32, int bias, int align,
		       struct fi_gemm_plan **out)
{
	struct fi_gemm_plan from, *fp = NULL;
	uint32_t h = plan_hash(N, K, T, out_f32, bias, align);
	int32_t i;
	if (!c->plans) {
		c->plans = calloc(FI_MAX_PLANS, sizeof(*c->plans));
		c->plan_slot = malloc(FI_PLAN_SLOTS * sizeof(*c->plan_slot));
		if (!c->plans || !c->plan_slot) {
			free(c->plans);
			free(c->plan_slot);
			c->plans = NULL;
			c->plan_slot = NULL;
			return fi_fail(FI_ENOMEM, "cublasLt: no memory for plans");
		}
		c->cap_plans = FI_MAX_PLANS;
		for (int k = 0; k < FI_PLAN_SLOTS; k++)
			c->plan_slot[k] = -1;
	}
	c->plan_clock++;
	for (uint32_t k = h;; k++) { /* open addressing; the table is never more than half full */
		i = c->plan_slot[k & (FI_PLAN_SLOTS - 1)];
		if (i < 0)
			break;
		struct fi_gemm_plan *p = &c->plans[i];
		if (p->N == N && p->K == K && p->T == T && p->out_f32 == out_f32 && p->bias == bias &&
		    p->align == align) {
			p->used = c->plan_clock;
			*out = p;
			return FI_OK;
		}
	}
	/* The bucket's plan first (made if missing), copied: making this one may evict it.
	 * Its candidates are checked again here only through the chosen one. */
	if (fi_cuda_t_bucket(T) != T && fi_settings()->gemm_bucket) {
		fi_err be = plan_get(c, N, K, fi_cuda_t_bucket(T), out_f32, bias, align, &fp);
		if (be)
			return be;
		from = *fp;
		fp = &from;
	}
	if (c->n_plans == FI_MAX_PLANS)
		plan_evict(c);
	struct fi_gemm_plan *p = &c->plans[c->n_plans];
	memset(p, 0, sizeof(*p));
	p->N = N;
	p->K = K;
	p->T = T;
	p->out_f32 = out_f32;
	p->bias = bias;
	p->align = align;
	p->used = c->plan_clock;
	fi_err e = plan_make(c, p, fp);
	if (e) {
		plan_destroy(p);
		return e;
	}
	for (uint32_t k = h;; k++)
		if (c->plan_slot[k & (FI_PLAN_SLOTS - 1)] < 0) {
			c->plan_slot[k & (FI_PLAN_SLOTS - 1)] = c->n_plans;
			break;
		}
	c->n_plans++;
	*out = p;
	return FI_OK;
}

/* FI_GEMV=0 (cuBLASLt at T <= 4, for timing): the settings are looked at per call, since
 * bench_kernels sets it between calls (and reloads them); the T > 4 path never looks. */
static int gemv_off(const struct fi_backend *be)
{
	return fi_cuda_of((struct fi_backend *)be)->no_gemv || !be->settings->gemv;
}

fi_err fi_cuda_gemm(struct fi_backend *be, void *out_d, int out_f32, const void *in_d,
		    const struct fi_weight *w, const struct fi_weight *bias, int T)
{
	struct fi_cuda *c = fi_cuda_of(be);
	struct fi_gemm_plan *p = NULL;
	const float one = 1.f, zero = 0.f;
	if (T <= 0)
		return FI_OK;
	if (w->dtype != FI_DT_BF16)
		return fi_fail(FI_EUNSUPPORTED, "matmul: weight dtype %s", fi_dtype_name(w->dtype));
	if (w->rows > INT32_MAX || w->cols > INT32_MAX)
		return fi_fail(FI_ERANGE, "matmul: weight %lld x %lld too large",
			       (long long)w->rows, (long long)w->cols);
	if (bias && (bias->rows * bias->cols != w->rows || bias->dtype != FI_DT_BF16))
		return fi_fail(FI_EMISMATCH, "matmul: bias of %lld values for %lld outputs",
			       (long long)(bias->rows * bias->cols), (long long)w->rows);
	/* Decode-sized batches: the weight-streaming kernel (FI_GEMV=0 turns it off, to time
	 * cuBLASLt instead). */
	if (T <= 4 && !gemv_off(be)) {
		fi_err ge = fi_cu_gemv(c->stream, out_d, out_f32, in_d, w->p, bias ? bias->p : NULL, T,
				       (int)w->rows, (int)w->cols);
		if (ge != FI_EUNSUPPORTED)
			return ge;
	}
	int align = ptr_align(out_d);
	int ai = ptr_align(in_d), aw = ptr_align(w->p);
	if (ai < align)
		align = ai;
	if (aw < align)
		align = aw;
	fi_err e = plan_get(c, (int)w->rows, (int)w->cols, T, out_f32, bias != NULL, align, &p);
	if (e)
		return e;
	if (bias)
		LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
							&bias->p, sizeof(bias->p)));
	if (!p->tuned && !c->capturing)
		plan_tune(c, p, out_d, in_d, w->p);
	LT_CHECK(cublasLtMatmul(c->lt, p->desc, &one, w->p, p->a, in_d, p->b, &zero, out_d, p->d,
				out_d, p->d, &p->algo, c->lt_ws, FI_LT_WS_BYTES, c->stream));
	return FI_OK;
}
