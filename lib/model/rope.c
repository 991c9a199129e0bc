/* rope: the RoPE inverse frequencies of a config and the softmax scale, as transformers
 * computes them (modeling_rope_utils: default, linear, llama3; _compute_yarn_parameters and
 * _compute_longrope_parameters in f32 where it works in f32). */
#include <math.h>

#include "model.h"

fi_err fi_rope_inv_freq(const struct fi_config *c, float *out)
{
	int hd = c->head_dim, half = hd / 2;
	double theta = c->rope_theta > 0 ? c->rope_theta : 10000.0;
	if (hd <= 0 || hd % 2)
		return fi_fail(FI_EUNSUPPORTED, "rope: head_dim %d is not even", hd);
	for (int i = 0; i < half; i++) {
		/* HF: 1 / base^(arange(0, hd, 2) / hd) */
		double f = 1.0 / pow(theta, (double)(2 * i) / hd);
		switch (c->rope_type) {
		case FI_ROPE_DEFAULT:
			break;
		case FI_ROPE_LINEAR:
			if (!(c->rope_factor > 0))
				return fi_fail(FI_EFORMAT, "rope_scaling.factor %g", c->rope_factor);
			f /= c->rope_factor;
			break;
		case FI_ROPE_LLAMA3: {
			/* transformers' _compute_llama3_parameters: keep high frequencies, divide
			 * low ones by factor, interpolate smoothly in between. */
			double factor = c->rope_factor, lo = c->rope_low_freq_factor,
			       hi = c->rope_high_freq_factor, old = c->rope_orig_max_pos;
			double lo_wl = old / lo, hi_wl = old / hi, wl = 2 * M_PI / f;
			if (!(factor > 0) || !(lo > 0) || !(hi > lo) || !(old > 0))
				return fi_fail(FI_EFORMAT, "rope_scaling (llama3): invalid factors");
			if (wl > lo_wl) {
				f /= factor;
			} else if (wl >= hi_wl) {
				double sm = (old / wl - lo) / (hi - lo);
				f = (1 - sm) * f / factor + sm * f;
			}
			break;
		}
		case FI_ROPE_DYNAMIC: /* within max_position_embeddings: the default (arch.h) */
			break;
		case FI_ROPE_YARN:
		case FI_ROPE_LONGROPE:
			return fi_rope_inv_freq_ext(c, out);
		default:
			return fi_fail(FI_EUNSUPPORTED, "rope_scaling type %d is not supported",
				       (int)c->rope_type);
		}
		out[i] = (float)f;
	}
	return FI_OK;
}

static double correction_dim(double rot, int dim, double base, double max_pos)
{
	return dim * log(max_pos / (rot * 2 * M_PI)) / (2 * log(base));
}

fi_err fi_rope_inv_freq_ext(const struct fi_config *c, float *out)
{
	int dim = c->head_dim, half = dim / 2;
	double base = c->rope_theta > 0 ? c->rope_theta : 10000.0;
	if (dim <= 0 || dim % 2)
		return fi_fail(FI_EUNSUPPORTED, "rope: head_dim %d is not even", dim);
	if (c->rope_type == FI_ROPE_LONGROPE) {
		const float *ext = c->rope_long ? c->rope_long_f : c->rope_short;
		if (c->n_rope_factors != half)
			return fi_fail(FI_EFORMAT, "rope_scaling (longrope): %d factors for head_dim %d",
				       c->n_rope_factors, dim);
		for (int i = 0; i < half; i++) {
			float p = powf((float)base, (float)(2 * i) / (float)dim);
			out[i] = 1.0f / (ext[i] * p);
		}
		return FI_OK;
	}
	if (c->rope_type == FI_ROPE_YARN) {
		double f = c->rope_factor, orig = c->rope_orig_max_pos > 0 ? c->rope_orig_max_pos : c->max_pos;
		double lo = correction_dim(c->rope_beta_fast > 0 ? c->rope_beta_fast : 32, dim, base, orig);
		double hi = correction_dim(c->rope_beta_slow > 0 ? c->rope_beta_slow : 1, dim, base, orig);
		if (!(f > 0))
			return fi_fail(FI_EFORMAT, "rope_scaling (yarn): factor %g", f);
		if (c->rope_truncate) {
			lo = floor(lo);
			hi = ceil(hi);
		}
		lo = lo > 0 ? lo : 0;
		hi = hi < dim - 1 ? hi : dim - 1;
		if (lo == hi)
			hi += 0.001; /* as transformers: no singular ramp */
		for (int i = 0; i < half; i++) {
			float p = powf((float)base, (float)(2 * i) / (float)dim);
			float extra = 1.0f / p, inter = 1.0f / ((float)f * p);
			float ramp = (float)((i - lo) / (hi - lo));
			float ef;
			ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
			ef = 1 - ramp; /* the extrapolation share */
			out[i] = inter * (1 - ef) + extra * ef;
		}
		return FI_OK;
	}
	return fi_fail(FI_EUNSUPPORTED, "rope: type %d has no extended frequencies", (int)c->rope_type);
}

float fi_attn_scale(const struct fi_config *c)
{
	double af = c->rope_type == FI_ROPE_YARN || c->rope_type == FI_ROPE_LONGROPE ?
			    c->rope_attn_factor : 1.0;
	if (!(af > 0))
		af = 1.0;
	return (float)(pow(c->query_scalar > 0 ? c->query_scalar : c->head_dim, -0.5) * af * af);
}
