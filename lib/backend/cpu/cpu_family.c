/* cpu_family: the CPU ops the model families of arch.h add (backend.h): scale, GeGLU with
 * the tanh GELU, logit soft-capping, mixture of experts, and weight_cat (which stacks the
 * experts' weights). Each computes in f32 in the order transformers does, so that it is the
 * reference the CUDA kernels are tested against. */
#include "cpu.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

fi_err fi_cpu_scale(struct fi_backend *be, void *x_d, int64_t n, float s)
{
	float *x = x_d;
	for (int64_t i = 0; i < n; i++)
		x[i] *= s;
	return FI_OK;
}

/* PyTorch's gelu(approximate="tanh"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
static inline float gelu_tanh(float x)
{
	const float beta = 0.7978845608028654f, kappa = 0.044715f;
	float inner = beta * (x + kappa * (x * x * x));
	return 0.5f * x * (1.0f + tanhf(inner));
}

struct gelu_job {
	float *out;
	const float *g, *u;
};

static void gelu_range(void *ctx, int64_t b, int64_t e)
{
	struct gelu_job *j = ctx;
	for (int64_t i = b; i < e; i++)
		j->out[i] = gelu_tanh(j->g[i]) * j->u[i];
}

fi_err fi_cpu_gelu_mul(struct fi_backend *be, void *out_d, const void *gate_d,
		       const void *up_d, int T, int F)
{
	struct gelu_job j = {out_d, gate_d, up_d};
	fi_cpu_parallel_for(be, (int64_t)T * F, 16384, gelu_range, &j);
	return FI_OK;
}

static void relu2_range(void *ctx, int64_t b, int64_t e)
{
	struct gelu_job *j = ctx;
	for (int64_t i = b; i < e; i++) {
		float r = j->g[i] > 0 ? j->g[i] : 0;
		j->out[i] = r * r * j->u[i];
	}
}

fi_err fi_cpu_relu2_mul(struct fi_backend *be, void *out_d, const void *gate_d,
			const void *up_d, int T, int F)
{
	struct gelu_job j = {out_d, gate_d, up_d};
	fi_cpu_parallel_for(be, (int64_t)T * F, 16384, relu2_range, &j);
	return FI_OK;
}

fi_err fi_cpu_softcap(struct fi_backend *be, float *x_d, int64_t n, float cap)
{
	if (!(cap > 0))
		return fi_fail(FI_EINVAL, "softcap: cap %g", cap);
	for (int64_t i = 0; i < n; i++) /* as transformers: x / cap, tanh, times cap */
		x_d[i] = tanhf(x_d[i] / cap) * cap;
	return FI_OK;
}

/* n tensors of equal columns in one f32 allocation, rows in order; parts are views. */
fi_err fi_cpu_weight_cat(struct fi_backend *be, const struct fi_tensor *const *t, int n,
			 struct fi_weight *cat, struct fi_weight *parts)
{
	int64_t rows = 0, cols = 0, off = 0;
	float *p;
	memset(cat, 0, sizeof *cat);
	for (int i = 0; i < n; i++) {
		int64_t k = fi_tensor_numel(t[i]);
		const char *nm = t[i]->name ? t[i]->name : "?";
		int64_t c = t[i]->ndim ? t[i]->shape[t[i]->ndim - 1] : 0;
		if (k < 0 || t[i]->ndim < 1 || t[i]->ndim > 2 || !fi_dtype_is_compute(t[i]->dtype) ||
		    (uint64_t)k * fi_dtype_size(t[i]->dtype) > t[i]->nbytes)
			return fi_fail(FI_EINVAL, "weight_cat: tensor '%s' is not a float matrix", nm);
		if (i && c != cols)
			return fi_fail(FI_EMISMATCH, "weight_cat: tensor '%s' has %lld columns, not %lld",
				       nm, (long long)c, (long long)cols);
		cols = c;
		rows += c ? k / c : 0;
	}
	if (n < 1 || !rows || !cols)
		return fi_fail(FI_EINVAL, "weight_cat: nothing to join");
	if (!(p = aligned_alloc(64, ((size_t)(rows * cols) * sizeof(float) + 63) & ~(size_t)63)))
		return fi_fail(FI_ENOMEM, "weight_cat: cannot allocate %lld x %lld", (long long)rows,
			       (long long)cols);
	for (int i = 0; i < n; i++) {
		int64_t k = fi_tensor_numel(t[i]);
		fi_err e = FI_OK;
		if (!t[i]->data && be->random_weights) /* random weights (backend.h) */
			fi_random_fill_f32(p + off, fi_random_name_hash(be->random_seed, t[i]->name),
					   (uint64_t)k, cols, t[i]->ndim);
		else if (!t[i]->data)
			e = fi_fail(FI_EINVAL, "tensor '%s' has no data", t[i]->name ? t[i]->name : "?");
		else
			e = fi_convert(p + off, FI_DT_F32, t[i]->data, t[i]->dtype, (size_t)k);
		if (e) {
			free(p);
			return fi_fail_ctx(e, "tensor '%s'", t[i]->name ? t[i]->name : "?");
		}
		parts[i] = (struct fi_weight){.p = p + off, .dtype = FI_DT_F32, .rows = k / cols, .cols = cols};
		off += k;
	}
	*cat = (struct fi_weight){.p = p, .dtype = FI_DT_F32, .rows = rows, .cols = cols};
	return FI_OK;
}

/* transformers' routers: softmax over all experts in f32, the top k (torch.topk: largest
 * first, the lower index on a tie), optionally divided by their sum. */
static void route(const float *logit, int E, int k, int norm, int *idx, float *w, float *prob)
{
	float mx = -INFINITY, sum = 0;
	for (int e = 0; e < E; e++)
		mx = logit[e] > mx ? logit[e] : mx;
	for (int e = 0; e < E; e++)
		sum += prob[e] = expf(logit[e] - mx);
	for (int e = 0; e < E; e++)
		prob[e] /= sum;
	for (int j = 0; j < k; j++) {
		int b = -1;
		for (int e = 0; e < E; e++) {
			int used = 0;
			for (int i = 0; i < j && !used; i++)
				used = idx[i] == e;
			if (!used && (b < 0 || prob[e] > prob[b]))
				b = e;
		}
		idx[j] = b;
		w[j] = prob[b];
	}
	if (norm) {
		float s = 0;
		for (int j = 0; j < k; j++)
			s += w[j];
		for (int j = 0; j < k; j++)
			w[j] /= s;
	}
}

fi_err fi_cpu_moe(struct fi_backend *be, void *out_d, const void *in_d, const float *router_d,
		  const struct fi_moe *mo, int T)
{
	const int E = mo->n_experts, k = mo->top_k, Fm = mo->ffn;
	const int D = mo->gate->cols > 0 ? (int)mo->gate->cols : 0;
	const float *in = in_d;
	float *out = out_d, *prob = NULL, *w = NULL, *x = NULL, *g = NULL, *u = NULL, *y = NULL;
	int *idx = NULL, *tok = NULL, *slot = NULL;
	fi_err err = FI_OK;
	if (E < 1 || k < 1 || k > E || Fm < 1 || D < 1 || mo->gate->rows != (int64_t)E * Fm ||
	    mo->up->rows != (int64_t)E * Fm || mo->up->cols != D ||
	    mo->down->rows != (int64_t)E * D || mo->down->cols != Fm)
		return fi_fail(FI_EMISMATCH, "moe: %d experts of %d, weights %lld x %lld, %lld x %lld, "
			       "%lld x %lld", E, Fm, (long long)mo->gate->rows, (long long)mo->gate->cols,
			       (long long)mo->up->rows, (long long)mo->up->cols,
			       (long long)mo->down->rows, (long long)mo->down->cols);
	if (T <= 0)
		return FI_OK;
	prob = malloc(sizeof(float) * (size_t)E);
	w = malloc(sizeof(float) * (size_t)T * k);
	idx = malloc(sizeof(int) * (size_t)T * k);
	tok = malloc(sizeof(int) * (size_t)T);
	slot = malloc(sizeof(int) * (size_t)T);
	x = malloc(sizeof(float) * (size_t)T * D);
	g = malloc(sizeof(float) * (size_t)T * Fm);
	u = malloc(sizeof(float) * (size_t)T * Fm);
	y = malloc(sizeof(float) * (size_t)T * D);
	if (!prob || !w || !idx || !tok || !slot || !x || !g || !u || !y) {
		err = fi_fail(FI_ENOMEM, "moe: out of memory for %d tokens", T);
		goto out;
	}
	for (int t = 0; t < T; t++)
		route(router_d + (size_t)t * E, E, k, mo->norm_topk, idx + (size_t)t * k,
		      w + (size_t)t * k, prob);
	memset(out, 0, sizeof(float) * (size_t)T * D);
	/* Expert by expert (ascending, as transformers adds them): its tokens gathered, three
	 * GEMMs, each token's row added with its weight. */
	for (int e = 0; e < E; e++) {
		const float *wg = (const float *)mo->gate->p + (size_t)e * Fm * D;
		const float *wu = (const float *)mo->up->p + (size_t)e * Fm * D;
		const float *wd = (const float *)mo->down->p + (size_t)e * D * Fm;
		int n = 0;
		for (int t = 0; t < T; t++)
			for (int j = 0; j < k; j++)
				if (idx[(size_t)t * k + j] == e) {
					tok[n] = t;
					slot[n] = j;
					memcpy(x + (size_t)n * D, in + (size_t)t * D, sizeof(float) * D);
					n++;
				}
		if (!n)
			continue;
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, Fm, D, 1.0f, x, D, wg, D, 0.0f,
			    g, Fm);
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, Fm, D, 1.0f, x, D, wu, D, 0.0f,
			    u, Fm);
		for (size_t i = 0; i < (size_t)n * Fm; i++) {
			float a = g[i];
			g[i] = (mo->act == FI_GLU_GELU_TANH ? gelu_tanh(a) : a / (1.0f + expf(-a))) * u[i];
		}
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, D, Fm, 1.0f, g, Fm, wd, Fm, 0.0f,
			    y, D);
		for (int r = 0; r < n; r++) {
			float wt = w[(size_t)tok[r] * k + slot[r]];
			float *o = out + (size_t)tok[r] * D;
			const float *yr = y + (size_t)r * D;
			for (int i = 0; i < D; i++)
				o[i] += yr[i] * wt;
		}
	}
out:
	free(prob);
	free(w);
	free(idx);
	free(tok);
	free(slot);
	free(x);
	free(g);
	free(u);
	free(y);
	return err;
}
