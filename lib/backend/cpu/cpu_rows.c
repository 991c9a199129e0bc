/* cpu_rows: row-wise ops of the CPU backend: embed, gather_rows, rmsnorm, silu_mul,
 * argmax. */
#include "cpu.h"

#include <math.h>
#include <string.h>

/* x[T,D] = emb[tok[t], :] with D = emb->cols. */
fi_err fi_cpu_embed(struct fi_backend *be, void *x_d, const struct fi_weight *emb,
		    const int32_t *tok_d, int T)
{
	const float *e = emb->p;
	float *x = x_d;
	size_t D = (size_t)emb->cols;
	for (int t = 0; t < T; t++)
		if (tok_d[t] < 0 || tok_d[t] >= emb->rows)
			return fi_fail(FI_ERANGE, "embed: token %d out of range [0, %lld)",
				       tok_d[t], (long long)emb->rows);
	for (int t = 0; t < T; t++) {
		if (emb->dtype == FI_DT_BF16)
			fi_cpu_bf16_row(emb, tok_d[t], x + (size_t)t * D);
		else
			memcpy(x + (size_t)t * D, e + (size_t)tok_d[t] * D, D * sizeof(float));
	}
	return FI_OK;
}

/* out[n,D] = x[idx[i], :]; idx is not range-checked against T (the op does not know T),
 * only against being negative. */
fi_err fi_cpu_gather_rows(struct fi_backend *be, void *out_d, const void *x_d,
			  const int32_t *idx_d, int n, int D)
{
	const float *x = x_d;
	float *o = out_d;
	for (int i = 0; i < n; i++) {
		if (idx_d[i] < 0)
			return fi_fail(FI_ERANGE, "gather_rows: negative row %d", idx_d[i]);
		memmove(o + (size_t)i * D, x + (size_t)idx_d[i] * D, (size_t)D * sizeof(float));
	}
	return FI_OK;
}

struct norm_job {
	float *out, *x;
	const float *add, *w;
	int D;
	float eps;
};

static void norm_rows(void *ctx, int64_t b, int64_t e)
{
	struct norm_job *j = ctx;
	for (int64_t t = b; t < e; t++) {
		float *x = j->x + t * j->D, *o = j->out + t * j->D;
		double ss = 0;
		float r;
		if (j->add) {
			const float *a = j->add + t * j->D;
			for (int i = 0; i < j->D; i++)
				x[i] += a[i];
		}
		for (int i = 0; i < j->D; i++)
			ss += (double)x[i] * x[i];
		/* As HF: x * rsqrt(mean(x^2) + eps) in f32, then times the weight. */
		r = (float)(1.0 / sqrt(ss / j->D + j->eps));
		for (int i = 0; i < j->D; i++)
			o[i] = j->w[i] * (x[i] * r);
	}
}

fi_err fi_cpu_rmsnorm(struct fi_backend *be, void *out_d, void *x_d, const void *add_d,
		      const struct fi_weight *w, int T, int D, float eps)
{
	struct norm_job j = {out_d, x_d, add_d, w->p, D, eps};
	if (w->rows * w->cols != D)
		return fi_fail(FI_EMISMATCH, "rmsnorm: weight has %lld elements, rows have %d",
			       (long long)(w->rows * w->cols), D);
	if (add_d && out_d == x_d)
		return fi_fail(FI_EINVAL, "rmsnorm: out may not alias x when adding a residual");
	fi_cpu_parallel_for(be, T, 16, norm_rows, &j);
	return FI_OK;
}

struct silu_job {
	float *out;
	const float *g, *u;
};

static void silu_range(void *ctx, int64_t b, int64_t e)
{
	struct silu_job *j = ctx;
	for (int64_t i = b; i < e; i++) {
		float g = j->g[i];
		j->out[i] = g / (1.0f + expf(-g)) * j->u[i];
	}
}

fi_err fi_cpu_silu_mul(struct fi_backend *be, void *out_d, const void *gate_d,
		       const void *up_d, int T, int F)
{
	struct silu_job j = {out_d, gate_d, up_d};
	fi_cpu_parallel_for(be, (int64_t)T * F, 16384, silu_range, &j);
	return FI_OK;
}

/* tok[i] = argmax logits[i,:]; the lowest index wins a tie (as torch.argmax). */
fi_err fi_cpu_argmax(struct fi_backend *be, int32_t *tok_d, const float *logits_d, int n,
		     int V)
{
	for (int i = 0; i < n; i++) {
		const float *l = logits_d + (size_t)i * V;
		int best = 0;
		for (int v = 1; v < V; v++)
			if (l[v] > l[best])
				best = v;
		tok_d[i] = best;
	}
	return FI_OK;
}
