/* family: the CUDA ops of the model families (arch.h): scale, gelu_mul, softcap, random
 * weights and the mixture-of-experts op.
 *
 * moe: routing, the grouping of tokens by expert and the products all run on the device
 * (kernels/moe.cu). Up to FI_MOE_SMALL pairs (token, chosen expert) -- decode steps, short
 * prompts -- the experts' rows kernels read each chosen expert's weights once for all its
 * pairs and skip the others; nothing waits for the host, so a decode step can be captured
 * in a CUDA graph. Above it (prefill), the pairs are gathered in expert order and each
 * expert's block of tokens goes through cuBLAS grouped GEMMs, one call for gate, one for
 * up, one for down over all experts: the per-expert counts are read back once per layer
 * to size the groups (never one GEMM per expert per token). */
#include <cublas_v2.h>
#include <stdlib.h>
#include <string.h>

#include "base/settings.h"
#include "cuda_be.h"

#define FI_MOE_SMALL 256 /* pairs up to which the rows kernels run (graph-safe) */

struct fi_moe_ws {
	int cap_pairs, cap_e;
	size_t cap_h, cap_d;  /* elements of h (pairs x Fm) and of yd/xs (pairs x D) */
	int32_t *ints;        /* idx, order, pos_of [cap_pairs each]; cnt, cur [cap_e]; off, chosen
			       * [cap_e+1 each] */
	float *wgt;
	void *h, *yd, *xs, *g, *u;
	cublasHandle_t blas;
	/* grouped GEMM arguments: device pointer arrays [3][cap_e], host staging */
	void **ptr_d, **ptr_h;
	int32_t *cnt_h;       /* pinned counts read back */
};

void fi_cuda_family_free(struct fi_cuda *c)
{
	struct fi_moe_ws *w = c->moe;
	if (!w)
		return;
	cudaFree(w->ints);
	cudaFree(w->wgt);
	cudaFree(w->h);
	cudaFree(w->yd);
	cudaFree(w->xs);
	cudaFree(w->g);
	cudaFree(w->u);
	cudaFree(w->ptr_d);
	cudaFreeHost(w->ptr_h);
	cudaFreeHost(w->cnt_h);
	if (w->blas)
		cublasDestroy(w->blas);
	free(w);
	c->moe = NULL;
}

fi_err fi_cuda_scale(struct fi_backend *be, void *x_d, int64_t n, float s)
{
	return fi_cu_scale(fi_cuda_of(be)->stream, x_d, n, s);
}

fi_err fi_cuda_relu2_mul(struct fi_backend *be, void *out_d, const void *gate_d,
			 const void *up_d, int T, int F)
{
	return fi_cu_relu2_mul(fi_cuda_of(be)->stream, out_d, gate_d, up_d, T, F);
}

/* The fused launch where it applies (ternary weights, decode), else the three ops apart. */
fi_err fi_cuda_norm_matmul(struct fi_backend *be, int n, void *const *out_d, const void *in_d,
			   const void *up_d, void *tmp_d, const struct fi_weight *norm, float eps,
			   const struct fi_weight *const *w, int add, int T)
{
	struct fi_cuda *c = fi_cuda_of(be);
	int K = (int)w[0]->cols;
	const void *u = in_d;
	fi_err e;
	if (n < 1 || n > 4 || (add && n != 1))
		return fi_fail(FI_EINVAL, "norm_matmul: %d products%s", n, add ? " added" : "");
	for (int i = 0; i < n; i++)
		if (w[i]->cols != w[0]->cols || w[i]->cols > INT32_MAX)
			return fi_fail(FI_EMISMATCH, "norm_matmul: weights of %lld and %lld columns",
				       (long long)w[0]->cols, (long long)w[i]->cols);
	if (norm->dtype != FI_DT_BF16 || norm->rows * norm->cols != w[0]->cols)
		return fi_fail(FI_EMISMATCH, "norm_matmul: a norm of %lld values for %lld columns",
			       (long long)(norm->rows * norm->cols), (long long)w[0]->cols);
	if (T <= 0)
		return FI_OK;
	e = fi_cuda_tq2_norm_products(be, n, out_d, in_d, up_d, norm->p, eps, w, add, T);
	if (e != FI_EUNSUPPORTED)
		return e;
	/* the ops apart */
	if (up_d) {
		if ((e = fi_cu_relu2_mul(c->stream, tmp_d, in_d, up_d, T, K)))
			return e;
		u = tmp_d;
	}
	if ((e = fi_cu_rmsnorm(c->stream, tmp_d, (void *)u, NULL, norm->p, T, K, eps)))
		return e;
	if (!add)
		return n == 1 ? be->ops->matmul(be, out_d[0], tmp_d, w[0], NULL, T)
			      : be->ops->matmul_multi(be, n, out_d, tmp_d, w, NULL, T);
	/* the product in matmul_multi's scratch (a quantized product may dequantize its weight
	 * into c->deq), then added */
	{
		size_t bytes = (size_t)T * (size_t)w[0]->rows * 2;
		if (bytes > FI_MULTI_WS_BYTES)
			return fi_fail(FI_ESTATE, "norm_matmul: no scratch for %d x %lld products", T,
				       (long long)w[0]->rows);
		if ((e = be->ops->matmul(be, c->multi_ws, tmp_d, w[0], NULL, T)))
			return e;
		return fi_cu_add(c->stream, out_d[0], c->multi_ws, (int64_t)T * w[0]->rows);
	}
}

fi_err fi_cuda_gelu_mul(struct fi_backend *be, void *out_d, const void *gate_d, const void *up_d,
			int T, int F)
{
	return fi_cu_gelu_mul(fi_cuda_of(be)->stream, out_d, gate_d, up_d, T, F);
}

fi_err fi_cuda_softcap(struct fi_backend *be, float *x_d, int64_t n, float cap)
{
	if (!(cap > 0))
		return fi_fail(FI_EINVAL, "softcap: cap %g", cap);
	return fi_cu_softcap(fi_cuda_of(be)->stream, x_d, n, cap);
}

fi_err fi_cuda_random_weight(struct fi_cuda *c, void *dst_d, const struct fi_tensor *t, uint64_t seed)
{
	int64_t n = fi_tensor_numel(t);
	return fi_cu_random_fill(c->stream, dst_d, fi_random_name_hash(seed, t->name), n,
				 t->shape[t->ndim - 1], t->ndim);
}

/* Buffers for P pairs of E experts (grown, never while a graph is being captured: the
 * first eager step of a batch size grows them). */
static fi_err moe_ws(struct fi_cuda *c, int P, int E, int Fm, int D, int big)
{
	struct fi_moe_ws *w = c->moe;
	size_t nh = (size_t)P * Fm, nd = (size_t)P * D;
	if (!w) {
		if (!(w = c->moe = calloc(1, sizeof *w)))
			return fi_fail(FI_ENOMEM, "moe: out of host memory");
	}
	if (P <= w->cap_pairs && E <= w->cap_e && nh <= w->cap_h && nd <= w->cap_d &&
	    (!big || (w->xs && w->blas)))
		return FI_OK;
	if (c->capturing)
		return fi_fail(FI_ESTATE, "moe: buffers too small inside a graph capture");
	CU_CHECK(cudaStreamSynchronize(c->stream));
	if (P > w->cap_pairs || E > w->cap_e) {
		int p2 = P > w->cap_pairs ? P : w->cap_pairs, e2 = E > w->cap_e ? E : w->cap_e;
		cudaFree(w->ints);
		cudaFree(w->wgt);
		cudaFree(w->ptr_d);
		cudaFreeHost(w->ptr_h);
		cudaFreeHost(w->cnt_h);
		w->ints = NULL, w->wgt = NULL, w->ptr_d = NULL, w->ptr_h = NULL, w->cnt_h = NULL;
		w->cap_pairs = w->cap_e = 0;
		CU_CHECK(cudaMalloc((void **)&w->ints, sizeof(int32_t) * ((size_t)3 * p2 + 4 * (size_t)e2 + 2)));
		CU_CHECK(cudaMalloc((void **)&w->wgt, sizeof(float) * (size_t)p2));
		CU_CHECK(cudaMalloc((void **)&w->ptr_d, sizeof(void *) * 3 * (size_t)e2));
		CU_CHECK(cudaMallocHost((void **)&w->ptr_h, sizeof(void *) * 3 * (size_t)e2));
		CU_CHECK(cudaMallocHost((void **)&w->cnt_h, sizeof(int32_t) * (size_t)e2));
		w->cap_pairs = p2;
		w->cap_e = e2;
	}
	if (nh > w->cap_h || nd > w->cap_d || (big && !w->xs)) {
		size_t h2 = nh > w->cap_h ? nh : w->cap_h, d2 = nd > w->cap_d ? nd : w->cap_d;
		void **bufs[] = {&w->h, &w->yd, &w->xs, &w->g, &w->u};
		for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
			cudaFree(*bufs[i]);
			*bufs[i] = NULL;
		}
		w->cap_h = w->cap_d = 0;
		CU_CHECK(cudaMalloc(&w->h, 2 * h2));
		CU_CHECK(cudaMalloc(&w->yd, 2 * d2));
		if (big || w->xs) { /* the prefill path's gathered inputs and GEMM outputs */
			CU_CHECK(cudaMalloc(&w->xs, 2 * d2));
			CU_CHECK(cudaMalloc(&w->g, 2 * h2));
			CU_CHECK(cudaMalloc(&w->u, 2 * h2));
		}
		w->cap_h = h2;
		w->cap_d = d2;
	}
	if (big && !w->blas) {
		FI_CHECK(cublasCreate(&w->blas), CUBLAS_STATUS_SUCCESS, cublasGetStatusString);
		FI_CHECK(cublasSetMathMode(w->blas, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS,
			 cublasGetStatusString);
	}
	return FI_OK;
}

/* C_e[n_e, N] = A_e[n_e, K] W_e[N, K]^T for every expert with tokens, one cuBLAS call:
 * A rows at a + off[e] K, W_e at w + e N K, C rows at c + off[e] N (all bf16, f32 sums). In
 * cuBLAS's column-major terms C^T = W_e^T' A^T: transa T, m N, n n_e, k K. */
static fi_err grouped(struct fi_cuda *c, struct fi_moe_ws *ws, const int32_t *cnt, int E,
		      const void *a, const void *wt, void *out, int N, int K)
{
	static const float one = 1.f, zero = 0.f;
	int ng = 0, row = 0;
	cublasOperation_t *ta = malloc(sizeof *ta * (size_t)E), *tb = malloc(sizeof *tb * (size_t)E);
	int *m = malloc(sizeof(int) * 6 * (size_t)E);
	float *al = malloc(sizeof(float) * 2 * (size_t)E);
	fi_err e = FI_OK;
	if (!ta || !tb || !m || !al) {
		e = fi_fail(FI_ENOMEM, "moe: out of host memory");
		goto out;
	}
	int *n = m + E, *k = n + E, *ld_a = k + E, *ld_b = ld_a + E, *gs = ld_b + E;
	for (int x = 0; x < E; x++) {
		if (cnt[x] > 0) {
			ta[ng] = CUBLAS_OP_T;
			tb[ng] = CUBLAS_OP_N;
			m[ng] = N;
			n[ng] = cnt[x];
			k[ng] = K;
			ld_a[ng] = K;
			ld_b[ng] = K;
			gs[ng] = 1;
			al[ng] = one;
			al[E + ng] = zero;
			ws->ptr_h[ng] = (char *)wt + (size_t)x * N * K * 2;
			ws->ptr_h[E + ng] = (char *)a + (size_t)row * K * 2;
			ws->ptr_h[2 * E + ng] = (char *)out + (size_t)row * N * 2;
			ng++;
		}
		row += cnt[x];
	}
	if (!ng)
		goto out;
	/* the pointer arrays go up in order on the stream, before the GEMM reads them */
	if (cudaMemcpyAsync(ws->ptr_d, ws->ptr_h, sizeof(void *) * 3 * (size_t)E,
			    cudaMemcpyHostToDevice, c->stream) != cudaSuccess) {
		e = fi_fail(FI_EDEVICE, "moe: pointer upload failed");
		goto out;
	}
	{
		cublasStatus_t s = cublasGemmGroupedBatchedEx(
			ws->blas, ta, tb, m, n, k, al, (const void *const *)ws->ptr_d, CUDA_R_16BF, ld_a,
			(const void *const *)(ws->ptr_d + E), CUDA_R_16BF, ld_b, al + E,
			ws->ptr_d + 2 * E, CUDA_R_16BF, m, ng, gs, CUBLAS_COMPUTE_32F);
		if (s != CUBLAS_STATUS_SUCCESS)
			e = fi_fail(FI_EDEVICE, "cuda: cublasGemmGroupedBatchedEx failed: %s",
				    cublasGetStatusString(s));
	}
	/* the staging is rewritten by the next call: wait for the copy */
	if (!e && cudaStreamSynchronize(c->stream) != cudaSuccess)
		e = fi_fail(FI_EDEVICE, "moe: stream failed");
out:
	free(ta);
	free(tb);
	free(m);
	free(al);
	return e;
}

fi_err fi_cuda_moe(struct fi_backend *be, void *out_d, const void *in_d, const float *router_d,
		   const struct fi_moe *mo, int T)
{
	struct fi_cuda *c = fi_cuda_of(be);
	const int E = mo->n_experts, k = mo->top_k, Fm = mo->ffn;
	const int D = (int)mo->gate->cols, P = T * k;
	struct fi_cu_moe a;
	struct fi_moe_ws *w;
	int big;
	fi_err e;
	if (E < 1 || k < 1 || k > E || Fm < 1 || D < 1 || mo->gate->rows != (int64_t)E * Fm ||
	    mo->up->rows != (int64_t)E * Fm || mo->up->cols != D || mo->down->rows != (int64_t)E * D ||
	    mo->down->cols != Fm || mo->gate->dtype != FI_DT_BF16 || mo->up->dtype != FI_DT_BF16 ||
	    mo->down->dtype != FI_DT_BF16)
		return fi_fail(FI_EMISMATCH, "moe: %d experts of %d, weights %lld x %lld, %lld x %lld, "
			       "%lld x %lld", E, Fm, (long long)mo->gate->rows, (long long)mo->gate->cols,
			       (long long)mo->up->rows, (long long)mo->up->cols,
			       (long long)mo->down->rows, (long long)mo->down->cols);
	if (T <= 0)
		return FI_OK;
	/* FI_MOE_GROUPED=0: the rows kernels for every size (for timing) */
	big = P > FI_MOE_SMALL && !c->capturing && fi_settings()->moe_grouped;
	if ((e = moe_ws(c, P, E, Fm, D, big)))
		return e;
	w = c->moe;
	memset(&a, 0, sizeof a);
	a.x = in_d;
	a.router = router_d;
	a.out = out_d;
	a.wg = mo->gate->p;
	a.wu = mo->up->p;
	a.wd = mo->down->p;
	a.T = T, a.E = E, a.k = k, a.Fm = Fm, a.D = D;
	a.norm = mo->norm_topk;
	a.one = T == 1 && fi_settings()->moe_one;
	a.act = mo->act == FI_GLU_GELU_TANH;
	a.idx = w->ints;
	a.order = a.idx + w->cap_pairs;
	a.pos_of = a.order + w->cap_pairs;
	a.cnt = a.pos_of + w->cap_pairs;
	a.cur = a.cnt + w->cap_e;
	a.off = a.cur + w->cap_e;
	a.chosen = a.off + w->cap_e + 1;
	a.wgt = w->wgt;
	a.h = w->h;
	a.yd = w->yd;
	if ((e = fi_cu_moe_route(c->stream, &a)))
		return e;
	if (!big) {
		if ((e = fi_cu_moe_experts(c->stream, &a)))
			return e;
		return fi_cu_moe_combine(c->stream, &a);
	}
	/* prefill: inputs in expert order, grouped GEMMs sized by the counts */
	CU_CHECK(cudaMemcpyAsync(w->cnt_h, a.cnt, sizeof(int32_t) * (size_t)E, cudaMemcpyDeviceToHost,
				 c->stream));
	if ((e = fi_cu_moe_gather(c->stream, &a, w->xs)))
		return e;
	CU_CHECK(cudaStreamSynchronize(c->stream));
	FI_CHECK(cublasSetStream(w->blas, c->stream), CUBLAS_STATUS_SUCCESS, cublasGetStatusString);
	if ((e = grouped(c, w, w->cnt_h, E, w->xs, mo->gate->p, w->g, Fm, D)) ||
	    (e = grouped(c, w, w->cnt_h, E, w->xs, mo->up->p, w->u, Fm, D)))
		return e;
	e = mo->act == FI_GLU_GELU_TANH ? fi_cu_gelu_mul(c->stream, w->h, w->g, w->u, P, Fm)
					 : fi_cu_silu_mul(c->stream, w->h, w->g, w->u, P, Fm);
	if (e || (e = grouped(c, w, w->cnt_h, E, w->h, mo->down->p, w->yd, D, Fm)))
		return e;
	return fi_cu_moe_combine(c->stream, &a);
}
