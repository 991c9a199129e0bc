/* gemm_fp8: W8A8 products through cuBLASLt's FP8 GEMM (Hopper): e4m3 weights and e4m3
 * activations with their scales applied inside the GEMM, bf16 out, f32 accumulation.
 *
 * As gemm.c: the row-major out[T,N] is the column-major N x T D = op(A) B with A the weight
 * (K x N, ld K, transposed: the TN layout FP8 needs) and B the activations (K x T). Scales:
 *   per-row weights, per-token activations: A and B CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F
 *     (vectors of N and T floats);
 *   128x128-block weights, per-token-and-128-column activations: A BLK128x128_32F (the
 *     weight's [ceil(N/128), ceil(K/128)] scales, K-blocks innermost), B VEC128_32F
 *     ([T, ceil(K/128)]), as DeepSeek-style FP8 checkpoints are computed.
 * Where cuBLASLt has no kernel for the per-row and per-token scales (the H100's cuBLAS 13 has
 * none for OUTER_VEC at any shape, tests/gpu/NOTES.md), FI_FP8_UNIT (on unless 0) runs the
 * per-row case with unit scales (the plain Hopper FP8 GEMM) into bf16 and fi_cu_scale_outer
 * applies ws[n] xs[t] after: one more pass over out[T, N] (4 bytes an element), against the
 * dequantize path's pass over the whole weight and a bf16 GEMM at half the FP8 rate (the 8B's
 * pp2048 on an H100: 20.4k -> 43.5k tok/s). A caller that passes defer does that pass itself
 * as it reads the outputs (cu_matmul_glu, gate and up: 51.1k). Block scales vary along K and have no such route.
 * Sums stay in the tensor cores' accumulators (CUBLASLT_MATMUL_DESC_FAST_ACCUM, FI_FP8_FAST=0
 * turns it off): cuBLASLt otherwise moves them into f32 registers at intervals along K, which
 * cost 6% of the 8B's W8A8 pp2048 on an H100; test_quant_model holds both to the same bounds.
 * Plans are cached per shape. A serving run meets a new T at most steps, and a heuristic
 * query costs 1-4 ms of host time, so as in gemm.c it is asked once per bucket of T
 * (fi_cuda_t_bucket) and its algorithm reused for the other T of the bucket once
 * cublasLtMatmulAlgoCheck accepts it (~20 us for a new T). When cuBLASLt has no algorithm
 * (or does not know the scale modes), FI_EUNSUPPORTED is returned without recording an
 * error and the caller dequantizes instead; FI_FP8_GEMM=0 forces that path. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "cuda_be.h"

#define MAX_FP8_PLANS 256
#define KIND_UNIT 0 /* unit scales: the per-row case's fallback */

struct fi_fp8_plan {
	int N, K, T, kind, ok;
	cublasLtMatmulDesc_t desc;
	cublasLtMatrixLayout_t a, b, d;
	cublasLtMatmulAlgo_t algo;
};

static void plan_destroy(struct fi_fp8_plan *p)
{
	if (p->desc)
		cublasLtMatmulDescDestroy(p->desc);
	if (p->a)
		cublasLtMatrixLayoutDestroy(p->a);
	if (p->b)
		cublasLtMatrixLayoutDestroy(p->b);
	if (p->d)
		cublasLtMatrixLayoutDestroy(p->d);
	p->desc = NULL;
	p->a = p->b = p->d = NULL;
}

void fi_cuda_gemm_fp8_free(struct fi_cuda *c)
{
	for (int i = 0; i < c->n_fp8_plans; i++)
		plan_destroy(&c->fp8_plans[i]);
	free(c->fp8_plans);
	c->fp8_plans = NULL;
	c->n_fp8_plans = 0;
}

/* 1 when a plan with an algorithm was made: *from (the bucket's) when the check passes,
 * else the heuristic's (from NULL: always). */
static int plan_make(struct fi_cuda *c, struct fi_fp8_plan *p, const cublasLtMatmulAlgo_t *from)
{
	cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
	int32_t am = p->kind == FI_Q8_ROW    ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F
		     : p->kind == FI_Q8_B128 ? CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F
					     : CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
	int32_t bm = p->kind == FI_Q8_ROW    ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F
		     : p->kind == FI_Q8_B128 ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
					     : CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
	cublasLtMatmulPreference_t pref = NULL;
	cublasLtMatmulHeuristicResult_t res;
	uint64_t ws = FI_LT_WS_BYTES;
	int8_t fast = (int8_t)(c->fp8_fast != 0);
	int n_res = 0;
	if (cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) ||
	    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)) ||
	    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)) ||
	    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am,
					   sizeof(am)) ||
	    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm,
					   sizeof(bm)) ||
	    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast,
					   sizeof(fast)) ||
	    cublasLtMatrixLayoutCreate(&p->a, CUDA_R_8F_E4M3, p->K, p->N, p->K) ||
	    cublasLtMatrixLayoutCreate(&p->b, CUDA_R_8F_E4M3, p->K, p->T, p->K) ||
	    cublasLtMatrixLayoutCreate(&p->d, CUDA_R_16BF, p->N, p->T, p->N) ||
	    cublasLtMatmulPreferenceCreate(&pref))
		goto fail;
	if (from) {
		memset(&res, 0, sizeof res);
		if (cublasLtMatmulAlgoCheck(c->lt, p->desc, p->a, p->b, p->d, p->d, from, &res) ==
			    CUBLAS_STATUS_SUCCESS &&
		    res.workspaceSize <= FI_LT_WS_BYTES) {
			cublasLtMatmulPreferenceDestroy(pref);
			p->algo = *from;
			return 1;
		}
	}
	if (cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
						 sizeof(ws)) ||
	    cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res,
					   &n_res) ||
	    n_res < 1)
		goto fail;
	cublasLtMatmulPreferenceDestroy(pref);
	p->algo = res.algo;
	return 1;
fail:
	if (pref)
		cublasLtMatmulPreferenceDestroy(pref);
	plan_destroy(p);
	return 0;
}

/* The plan of (N, K, T, kind), made if missing (its bucket's first); NULL when none can be
 * made now (inside a graph capture, or out of memory: FI_ENOMEM recorded). */
static struct fi_fp8_plan *plan_get(struct fi_cuda *c, int N, int K, int T, int kind)
{
	struct fi_fp8_plan *p;
	cublasLtMatmulAlgo_t from;
	int has_from = 0, none = 0, tb = fi_cuda_t_bucket(T);
	/* newest first: a decode step meets the plans its previous step made */
	for (int i = c->n_fp8_plans - 1; i >= 0; i--) {
		p = &c->fp8_plans[i];
		if (p->N == N && p->K == K && p->T == T && p->kind == kind)
			return p;
	}
	if (c->capturing)
		return NULL; /* heuristics are not queried inside a capture */
	if (tb != T && fi_settings()->gemm_bucket) {
		/* copied: making this plan may start the table over */
		if ((p = plan_get(c, N, K, tb, kind)) && p->ok) {
			from = p->algo;
			has_from = 1;
		}
		none = p && !p->ok; /* no algorithm for the bucket: none asked for again */
	}
	if (c->n_fp8_plans == MAX_FP8_PLANS)
		fi_cuda_gemm_fp8_free(c); /* many prompt lengths: start over */
	if (!c->fp8_plans && !(c->fp8_plans = calloc(MAX_FP8_PLANS, sizeof(*c->fp8_plans)))) {
		fi_fail(FI_ENOMEM, "cublasLt: FP8 plans");
		return NULL;
	}
	p = &c->fp8_plans[c->n_fp8_plans++];
	memset(p, 0, sizeof(*p));
	p->N = N;
	p->K = K;
	p->T = T;
	p->kind = kind;
	if (none)
		return p; /* p->ok = 0: the caller's other route, without a query */
	p->ok = plan_make(c, p, has_from ? &from : NULL);
	cudaGetLastError();
	if (!p->ok)
		fi_debug("cublasLt: no FP8 algorithm for %d x %d x %d (%s scales)", T, N, K,
			 kind == FI_Q8_ROW ? "per-row" : kind == FI_Q8_B128 ? "128x128-block" : "unit");
	return p;
}

fi_err fi_cuda_gemm_fp8(struct fi_cuda *c, void *out_d, const void *wq, const float *ws,
			const void *xq, const float *xs, int kind, int N, int K, int T,
			struct fi_fp8_deferred *defer)
{
	struct fi_fp8_plan *p = plan_get(c, N, K, T, kind);
	const float one = 1.f, zero = 0.f;
	int unit = 0;
	if (!p)
		return c->capturing ? FI_EUNSUPPORTED : fi_errcode();
	if (!p->ok && kind == FI_Q8_ROW && c->fp8_unit) {
		if (!(p = plan_get(c, N, K, T, KIND_UNIT)))
			return c->capturing ? FI_EUNSUPPORTED : fi_errcode();
		unit = 1;
	}
	if (!p->ok)
		return FI_EUNSUPPORTED;
	if (!unit) {
		LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
							&ws, sizeof(ws)));
		LT_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
							&xs, sizeof(xs)));
	}
	{
		cublasStatus_t st = cublasLtMatmul(c->lt, p->desc, &one, wq, p->a, xq, p->b, &zero,
						   out_d, p->d, out_d, p->d, &p->algo, c->lt_ws,
						   FI_LT_WS_BYTES, c->stream);
		/* A scale mode the heuristic accepted but the kernel refuses: the caller
		 * dequantizes, now and for this shape from now on. */
		if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
			cudaGetLastError();
			fi_debug("cublasLt: FP8 product %d x %d x %d refused (%s): dequantized to bf16 "
				 "from now on", T, N, K, cublasGetStatusString(st));
			p->ok = 0;
			return FI_EUNSUPPORTED;
		}
		LT_CHECK(st);
	}
	if (unit && defer) {
		*defer = (struct fi_fp8_deferred){out_d, ws, xs, N};
		return FI_OK;
	}
	return unit ? fi_cu_scale_outer(c->stream, out_d, ws, xs, T, N) : FI_OK;
}
