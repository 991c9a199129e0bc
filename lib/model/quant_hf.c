/* quant_hf: quantized Hugging Face checkpoints -> fi's quantized layouts (see quant_hf.h). */
#include "quant_hf.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/log.h"
#include "base/quant.h"
#include "names.h"

enum { M_NONE, M_FP8_BLOCK, M_CT_FP8, M_AWQ, M_GPTQ, M_QUANTIZE, M_BITNET };

struct qcfg {
	int method, group, aq, gptq_v2;
	int scale_divides; /* bitnet linear_class "bitlinear": y = x W / weight_scale */
	const char *dir;
};

/* ---- quantization_config ---- */

static fi_err cfg_int(json_t *o, const char *key, int def, int *out, const char *dir)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return FI_OK;
	}
	if (!json_is_integer(v) || json_integer_value(v) < INT_MIN / 2 ||
	    json_integer_value(v) > INT_MAX / 2)
		return fi_fail(FI_EFORMAT, "'%s/config.json': quantization_config.%s is not an "
			       "integer", dir, key);
	*out = (int)json_integer_value(v);
	return FI_OK;
}

static const char *cfg_str(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

#define UNSUP(...) fi_fail(FI_EUNSUPPORTED, __VA_ARGS__)

/* compressed-tensors: every config group must be 8-bit float weights (channel or tensor
 * strategy) with no input quantization or dynamic per-token input quantization; all groups
 * alike, since a tensor does not say which group it belongs to. */
static fi_err parse_ct(json_t *q, struct qcfg *c)
{
	const char *fmt = cfg_str(q, "format");
	json_t *groups = json_object_get(q, "config_groups"), *g;
	const char *k;
	int first = 1;
	if (!fmt || strcmp(fmt, "float-quantized"))
		return UNSUP("'%s': compressed-tensors format '%s' is not supported (fi reads "
			     "float-quantized FP8)", c->dir, fmt ? fmt : "(none)");
	if (!json_is_object(groups) || !json_object_size(groups))
		return fi_fail(FI_EFORMAT, "'%s/config.json': quantization_config.config_groups "
			       "is missing", c->dir);
	json_object_foreach(groups, k, g) {
		json_t *w = json_object_get(g, "weights"), *a = json_object_get(g, "input_activations");
		const char *ty = cfg_str(w, "type"), *st = cfg_str(w, "strategy");
		int bits = 0, aq = FI_AQ_NONE;
		if (!json_is_object(w) || cfg_int(w, "num_bits", 0, &bits, c->dir))
			return fi_fail(FI_EFORMAT, "'%s/config.json': config group '%s' has no "
				       "valid weights entry", c->dir, k);
		if (bits != 8 || !ty || strcmp(ty, "float") || !st ||
		    (strcmp(st, "channel") && strcmp(st, "tensor")))
			return UNSUP("'%s': config group '%s': %d-bit %s weights with strategy '%s' "
				     "are not supported (fi reads 8-bit float, channel or tensor)",
				     c->dir, k, bits, ty ? ty : "?", st ? st : "?");
		if (a && !json_is_null(a)) {
			const char *as = cfg_str(a, "strategy"), *at = cfg_str(a, "type");
			int ab = 0;
			cfg_int(a, "num_bits", 0, &ab, c->dir);
			if (!json_is_true(json_object_get(a, "dynamic")) || ab != 8 || !at ||
			    strcmp(at, "float") || !as || strcmp(as, "token"))
				return UNSUP("'%s': config group '%s': input activations other than "
					     "dynamic 8-bit float per token are not supported "
					     "(static activation scales)", c->dir, k);
			aq = FI_AQ_TOKEN;
		}
		if (!first && aq != c->aq)
			return UNSUP("'%s': config groups with different activation schemes",
				     c->dir);
		c->aq = aq;
		first = 0;
	}
	c->method = M_CT_FP8;
	return FI_OK;
}

static fi_err parse_config(const char *dir, unsigned flags, struct qcfg *c, char *method,
			   size_t msz)
{
	char p[PATH_MAX];
	json_error_t je;
	json_t *root, *q;
	const char *m;
	fi_err e = FI_OK;
	memset(c, 0, sizeof *c);
	c->dir = dir;
	snprintf(p, sizeof p, "%s/config.json", dir);
	if (!(root = json_load_file(p, 0, &je)))
		return fi_fail(FI_EFORMAT, "'%s': %s", p, je.text);
	q = json_object_get(root, "quantization_config");
	if (!q || json_is_null(q)) {
		json_decref(root);
		if (flags & FI_QHF_FP8) {
			c->method = M_QUANTIZE;
			snprintf(method, msz, "fp8 (fi-load --quantize)");
		}
		return FI_OK;
	}
	if (!json_is_object(q) || !(m = cfg_str(q, "quant_method"))) {
		json_decref(root);
		return fi_fail(FI_EFORMAT, "'%s': quantization_config has no quant_method", p);
	}
	snprintf(method, msz, "%s", m);
	if (flags & FI_QHF_FP8) {
		e = UNSUP("'%s' is already quantized (%s): --quantize takes a float checkpoint", dir,
			  m);
	} else if (!strcmp(m, "fp8")) {
		json_t *bs = json_object_get(q, "weight_block_size");
		const char *sch = cfg_str(q, "activation_scheme");
		if (!json_is_array(bs) || json_array_size(bs) != 2 ||
		    json_integer_value(json_array_get(bs, 0)) != 128 ||
		    json_integer_value(json_array_get(bs, 1)) != 128)
			e = UNSUP("'%s': fp8 weight_block_size other than [128, 128] is not "
				  "supported", dir);
		else if (sch && strcmp(sch, "dynamic"))
			e = UNSUP("'%s': fp8 activation_scheme '%s' is not supported (dynamic)", dir,
				  sch);
		c->method = M_FP8_BLOCK;
		c->aq = FI_AQ_GROUP;
	} else if (!strcmp(m, "compressed-tensors")) {
		e = parse_ct(q, c);
	} else if (!strcmp(m, "awq") || !strcmp(m, "gptq")) {
		int bits = 0;
		const char *ver = cfg_str(q, "version"), *fmt = cfg_str(q, "checkpoint_format");
		if ((e = cfg_int(q, "bits", 0, &bits, dir)) ||
		    (e = cfg_int(q, "group_size", 0, &c->group, dir)))
			goto out;
		if (bits != 4)
			e = UNSUP("'%s': %s with %d bits is not supported (4)", dir, m, bits);
		else if (!strcmp(m, "awq") && ver && strcasecmp(ver, "gemm"))
			e = UNSUP("'%s': AWQ version '%s' is not supported (gemm)", dir, ver);
		else if (!strcmp(m, "awq") &&
			 json_is_false(json_object_get(q, "zero_point")))
			e = UNSUP("'%s': AWQ without zero points is not supported", dir);
		else if (fmt && strcmp(fmt, "gptq") && strcmp(fmt, "gptq_v2"))
			e = UNSUP("'%s': GPTQ checkpoint_format '%s' is not supported", dir, fmt);
		else if (c->group != -1 && (c->group < 32 || c->group % 32))
			e = UNSUP("'%s': %s group_size %d is not supported (a multiple of 32, or -1)",
				  dir, m, c->group);
		c->method = !strcmp(m, "awq") ? M_AWQ : M_GPTQ;
		c->gptq_v2 = fmt && !strcmp(fmt, "gptq_v2");
	} else if (!strcmp(m, "bitnet")) {
		const char *lc = cfg_str(q, "linear_class"), *mode = cfg_str(q, "quantization_mode");
		if (lc && strcmp(lc, "bitlinear") && strcmp(lc, "autobitlinear"))
			e = UNSUP("'%s': bitnet linear_class '%s' is not supported (bitlinear, "
				  "autobitlinear)", dir, lc);
		else if (mode && strcmp(mode, "offline"))
			e = UNSUP("'%s': bitnet quantization_mode '%s' is not supported (offline: "
				  "packed ternary weights)", dir, mode);
		else if (json_is_true(json_object_get(q, "use_rms_norm")))
			e = UNSUP("'%s': bitnet use_rms_norm true is not supported", dir);
		c->method = M_BITNET;
		c->aq = FI_AQ_I8;
		c->scale_divides = !lc || !strcmp(lc, "bitlinear");
	} else {
		e = UNSUP("'%s': quant_method '%s' is not supported (fi reads fp8, "
			  "compressed-tensors FP8, awq, gptq and bitnet)", dir, m);
	}
out:
	json_decref(root);
	return e;
}

/* ---- tensors ---- */

static const struct fi_tensor *find(const struct fi_st_model *m, const char *prefix,
				    const char *suffix)
{
	char n[512];
	snprintf(n, sizeof n, "%s%s", prefix, suffix);
	return fi_tensor_find(&m->set, n);
}

static int ends(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

static float getf(const struct fi_tensor *t, int64_t i)
{
	const uint8_t *p = t->data;
	float f;
	uint16_t h;
	switch (t->dtype) {
	case FI_DT_F32: memcpy(&f, p + 4 * i, 4); return f;
	case FI_DT_F16: memcpy(&h, p + 2 * i, 2); return fi_f16_to_f32(h);
	default: memcpy(&h, p + 2 * i, 2); return fi_bf16_to_f32(h);
	}
}

static int32_t geti(const struct fi_tensor *t, int64_t i)
{
	int32_t v;
	memcpy(&v, (const uint8_t *)t->data + 4 * i, 4);
	return v;
}

#define BAD(...) fi_fail(FI_EFORMAT, __VA_ARGS__)

/* A companion tensor of module prefix (e.g. "...q_proj."), of the given dtypes and shape
 * (a dim of -1 matches anything; nd 0 with want_n accepts any shape of want_n values). */
static fi_err need(const struct fi_st_model *m, const char *prefix, const char *suffix,
		   const char *method, int fdt, int nd, int64_t d0, int64_t d1,
		   const struct fi_tensor **out)
{
	const struct fi_tensor *t = find(m, prefix, suffix);
	int ok;
	if (!t)
		return BAD("tensor '%s%s' is missing (%s)", prefix, suffix, method);
	ok = fdt ? fi_dtype_is_compute(t->dtype) : t->dtype == FI_DT_I32;
	if (!ok)
		return BAD("tensor '%s%s': dtype %s, expected %s", prefix, suffix,
			   fi_dtype_name(t->dtype), fdt ? "a float type" : "I32");
	if (nd == 0) { /* a vector of d0 values, in any shape */
		if (fi_tensor_numel(t) != d0)
			return BAD("tensor '%s%s' has %lld values, expected %lld", prefix, suffix,
				   (long long)fi_tensor_numel(t), (long long)d0);
	} else if (t->ndim != nd || (d0 >= 0 && t->shape[0] != d0) ||
		   (nd > 1 && d1 >= 0 && t->shape[1] != d1)) {
		return BAD("tensor '%s%s': shape [%lld%s%lld] does not fit the weight (expected "
			   "[%lld, %lld]%s)", prefix, suffix, (long long)t->shape[0],
			   t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->shape[1] : 0,
			   (long long)d0, (long long)d1, ", group size consistent with the weight");
	}
	*out = t;
	return FI_OK;
}

struct out {
	struct fi_qhf *q;
	int cap;
};

static fi_err add(struct out *o, const struct fi_tensor *src, const char *name, enum fi_dtype dt,
		  int64_t rows, int64_t cols, void *buf, uint64_t nbytes)
{
	struct fi_qhf *q = o->q;
	struct fi_tensor *t = &q->t[q->set.n];
	if (q->set.n >= o->cap)
		return fi_fail(FI_ERANGE, "quantized checkpoint: too many tensors");
	if (!(q->names[q->set.n] = strdup(name)))
		return fi_fail(FI_ENOMEM, "quantized checkpoint");
	if (!buf) {
		*t = *src;
		t->name = q->names[q->set.n++];
		return FI_OK;
	}
	q->bufs[q->n_bufs++] = buf;
	memset(t, 0, sizeof *t);
	t->name = q->names[q->set.n++];
	t->dtype = dt;
	t->ndim = 2;
	t->shape[0] = rows;
	t->shape[1] = cols;
	t->data = buf;
	t->nbytes = nbytes;
	return FI_OK;
}

/* FP8 weights as the checkpoint stores them, with their scales. */
static fi_err conv_fp8(const struct fi_st_model *m, const struct qcfg *c, const char *pre,
		       const struct fi_tensor *w, struct out *o, const char *name)
{
	int64_t N = w->shape[0], K = w->shape[1];
	const struct fi_tensor *s;
	struct fi_qlayout l;
	uint8_t *b;
	fi_err e;
	if (w->ndim != 2)
		return BAD("tensor '%s': FP8 weight of %d dimensions", name, w->ndim);
	if (c->method == M_FP8_BLOCK) {
		if ((e = need(m, pre, "weight_scale_inv", "fp8 block scales", 1, 2, (N + 127) / 128,
			      (K + 127) / 128, &s)))
			return e;
		fi_quant_layout_fp8(N, K, FI_Q8_B128, c->aq, &l);
	} else {
		if (!(s = find(m, pre, "weight_scale")))
			return BAD("tensor '%sweight_scale' is missing (compressed-tensors FP8)", pre);
		if (fi_tensor_numel(s) != 1 && (e = need(m, pre, "weight_scale", "per-channel scales",
							 1, 0, N, 0, &s)))
			return e;
		if (!fi_dtype_is_compute(s->dtype))
			return BAD("tensor '%sweight_scale': dtype %s", pre, fi_dtype_name(s->dtype));
		if (find(m, pre, "input_scale"))
			return UNSUP("tensor '%sinput_scale': static activation scales are not "
				     "supported", pre);
		fi_quant_layout_fp8(N, K, FI_Q8_ROW, c->aq, &l);
	}
	if (!(b = calloc(1, l.nbytes)))
		return fi_fail(FI_ENOMEM, "tensor '%s'", name);
	fi_quant_write_header(&l, b);
	memcpy(b + l.off_q, w->data, (size_t)(N * K));
	for (uint64_t i = 0; i < (l.nbytes - l.off_scale) / 4; i++) {
		float v = getf(s, fi_tensor_numel(s) == 1 ? 0 : (int64_t)i);
		memcpy(b + l.off_scale + 4 * i, &v, 4);
	}
	if ((e = fi_quant_check_scales(&l, b))) {
		free(b);
		return fi_fail_ctx(e, "tensor '%s'", name);
	}
	return add(o, NULL, name, FI_DT_FP8, N, K, b, l.nbytes);
}

static int nib(uint32_t w, int i) { return (int)((w >> (4 * i)) & 0xF); }

static fi_err conv_int4(const struct fi_st_model *m, const struct qcfg *c, const char *pre,
			const struct fi_tensor *qw, struct out *o, const char *name)
{
	static const int awq_pos[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* column j is nibble awq_pos[j] */
	const struct fi_tensor *qz, *sc, *gi = NULL;
	int awq = c->method == M_AWQ, perm = 0;
	int64_t K, N, G, NG;
	int32_t *pm = NULL, *cnt = NULL;
	struct fi_qlayout l;
	uint8_t *b;
	fi_err e;
	if (qw->ndim != 2 || qw->dtype != FI_DT_I32)
		return BAD("tensor '%sqweight': expected 2-D I32, found %d-D %s", pre, qw->ndim,
			   fi_dtype_name(qw->dtype));
	K = awq ? qw->shape[0] : qw->shape[0] * 8;
	N = awq ? qw->shape[1] * 8 : qw->shape[1];
	G = c->group == -1 ? K : c->group;
	if (K <= 0 || N <= 0 || K % G)
		return BAD("tensor '%sqweight': %lld input columns are not a whole number of groups "
			   "of %lld", pre, (long long)K, (long long)G);
	NG = K / G;
	if ((e = need(m, pre, "scales", c->method == M_AWQ ? "awq" : "gptq", 1, 2, NG, N, &sc)) ||
	    (e = need(m, pre, "qzeros", awq ? "awq" : "gptq", 0, 2, NG, N / 8, &qz)))
		return e;
	if (qz->dtype != FI_DT_I32)
		return BAD("tensor '%sqzeros': dtype %s, expected I32", pre, fi_dtype_name(qz->dtype));
	if (N % 8)
		return BAD("tensor '%sqweight': %lld outputs are not a multiple of 8", pre, (long long)N);
	if (!awq && (gi = find(m, pre, "g_idx"))) {
		if ((e = need(m, pre, "g_idx", "gptq", 0, 1, K, 0, &gi)))
			return e;
		for (int64_t k = 0; k < K; k++) {
			int32_t g = geti(gi, k);
			if (g < 0 || g >= NG)
				return BAD("tensor '%sg_idx': entry %lld is group %d of %lld", pre,
					   (long long)k, g, (long long)NG);
			if (g != k / G)
				perm = 1;
		}
	}
	if (perm) {
		/* Act-order: columns regrouped by g_idx, stable; each group must hold exactly G
		 * columns, as GPTQ makes them. */
		pm = malloc(sizeof *pm * (size_t)K);
		cnt = calloc((size_t)NG, sizeof *cnt);
		if (!pm || !cnt) {
			free(pm);
			free(cnt);
			return fi_fail(FI_ENOMEM, "tensor '%s'", name);
		}
		for (int64_t k = 0; k < K; k++)
			cnt[geti(gi, k)]++;
		for (int64_t g = 0; g < NG; g++)
			if (cnt[g] != G) {
				e = BAD("tensor '%sg_idx': group %lld has %d columns, the group size is "
					"%lld", pre, (long long)g, cnt[g], (long long)G);
				free(pm);
				free(cnt);
				return e;
			}
		memset(cnt, 0, sizeof *cnt * (size_t)NG);
		for (int64_t k = 0; k < K; k++) {
			int32_t g = geti(gi, k);
			pm[g * G + cnt[g]++] = (int32_t)k;
		}
		free(cnt);
	}
	fi_quant_layout_int4(N, K, (int)G, perm, &l);
	if (!(b = calloc(1, l.nbytes))) {
		free(pm);
		return fi_fail(FI_ENOMEM, "tensor '%s'", name);
	}
	fi_quant_write_header(&l, b);
	for (int64_t n = 0; n < N; n++) {
		uint8_t *qr = b + l.off_q + (uint64_t)n * (uint64_t)(K / 2);
		for (int64_t j = 0; j < K; j++) {
			int64_t k = pm ? pm[j] : j;
			int v = awq ? nib((uint32_t)geti(qw, k * (N / 8) + n / 8), awq_pos[n % 8])
				    : nib((uint32_t)geti(qw, (k / 8) * N + n), (int)(k % 8));
			qr[j / 2] |= (uint8_t)(j & 1 ? v << 4 : v);
		}
		for (int64_t g = 0; g < NG; g++) {
			uint32_t zw = (uint32_t)geti(qz, g * (N / 8) + n / 8);
			int z = awq ? nib(zw, awq_pos[n % 8]) : nib(zw, (int)(n % 8)) + !c->gptq_v2;
			uint16_t h = fi_f32_to_f16(getf(sc, g * N + n));
			memcpy(b + l.off_scale + 2 * ((uint64_t)n * NG + g), &h, 2);
			b[l.off_zero + (uint64_t)n * NG + g] = (uint8_t)z;
		}
	}
	if (pm)
		memcpy(b + l.off_perm, pm, 4 * (size_t)K);
	free(pm);
	if (sc->dtype != FI_DT_F16)
		fi_warn("tensor '%sscales': %s scales rounded to f16", pre, fi_dtype_name(sc->dtype));
	if ((e = fi_quant_check_scales(&l, b))) {
		free(b);
		return fi_fail_ctx(e, "tensor '%s'", name);
	}
	return add(o, NULL, name, FI_DT_INT4, N, K, b, l.nbytes);
}

/* BitNet: X.weight U8 [N/4, K], transformers' pack_weights (row r holds rows r + i N/4 at
 * bits 2i, as value + 1), and X.weight_scale, one float: TQ2 with the scale as a
 * multiplier (its inverse for linear_class bitlinear). */
static fi_err conv_tq2(const struct fi_st_model *m, const struct qcfg *c, const char *pre,
		       const struct fi_tensor *w, struct out *o, const char *name)
{
	const struct fi_tensor *s = find(m, pre, "weight_scale");
	const uint8_t *p = w->data;
	int64_t R, K, N;
	struct fi_qlayout l;
	int8_t *row;
	uint8_t *b;
	float ws, mul;
	if (w->ndim != 2 || w->dtype != FI_DT_U8)
		return BAD("tensor '%s': a packed ternary weight is U8 of 2 dimensions, not %s of "
			   "%d", name, fi_dtype_name(w->dtype), w->ndim);
	R = w->shape[0];
	K = w->shape[1];
	N = 4 * R;
	if (K % 128)
		return UNSUP("tensor '%s': %lld input columns are not a multiple of 128 (fi's "
			     "ternary blocks)", name, (long long)K);
	if (!s)
		return BAD("tensor '%sweight_scale' is missing (bitnet)", pre);
	if (!fi_dtype_is_compute(s->dtype) || fi_tensor_numel(s) != 1)
		return BAD("tensor '%sweight_scale': %s with %lld values, expected one float per "
			   "tensor", pre, fi_dtype_name(s->dtype), (long long)fi_tensor_numel(s));
	ws = getf(s, 0);
	if (!(ws > 0) || !isfinite(ws))
		return BAD("tensor '%sweight_scale' is %g (a positive number is needed)", pre, ws);
	mul = c->scale_divides ? 1.0f / ws : ws;
	fi_quant_layout_tq2(N, K, &l);
	b = calloc(1, l.nbytes);
	row = malloc((size_t)K);
	if (!b || !row) {
		free(b);
		free(row);
		return fi_fail(FI_ENOMEM, "tensor '%s'", name);
	}
	fi_quant_write_header(&l, b);
	for (int64_t n = 0; n < N; n++) {
		const uint8_t *src = p + (uint64_t)(n % R) * (uint64_t)K;
		int sh = (int)(n / R) * 2;
		for (int64_t k = 0; k < K; k++) {
			int v = src[k] >> sh & 3;
			if (v == 3) {
				free(b);
				free(row);
				return BAD("tensor '%s': packed row %lld, column %lld holds the code 3 "
					   "(not a ternary value)", name, (long long)(n % R),
					   (long long)k);
			}
			row[k] = (int8_t)(v - 1);
		}
		fi_tq2_pack_row(&l, b, n, row, mul);
	}
	free(row);
	return add(o, NULL, name, FI_DT_TQ2, N, K, b, l.nbytes);
}

/* fi-load --quantize fp8: per-row scales, per-token activation rounding. */
static fi_err conv_quantize(const struct fi_tensor *w, struct out *o, const char *name)
{
	int64_t N = w->shape[0], K = w->shape[1];
	size_t es = fi_dtype_size(w->dtype);
	struct fi_qlayout l;
	float *row = malloc(sizeof *row * (size_t)K);
	uint8_t *b;
	fi_quant_layout_fp8(N, K, FI_Q8_ROW, FI_AQ_TOKEN, &l);
	b = calloc(1, l.nbytes);
	if (!row || !b) {
		free(row);
		free(b);
		return fi_fail(FI_ENOMEM, "tensor '%s'", name);
	}
	fi_quant_write_header(&l, b);
	for (int64_t n = 0; n < N; n++) {
		fi_convert(row, FI_DT_F32, (const uint8_t *)w->data + (size_t)(n * K) * es, w->dtype,
			   (size_t)K);
		fi_quant_fp8_rows(row, n, 1, &l, b);
	}
	free(row);
	return add(o, NULL, name, FI_DT_FP8, N, K, b, l.nbytes);
}

/* Linear layers fi quantizes: everything but embeddings, norms, biases and the LM head. */
static int is_linear(const char *hf)
{
	char eng[64];
	static const char *const lin[] = {"attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate",
					  "ffn_up", "ffn_down"};
	const char *dot;
	if (fi_name_from_hf(hf, eng, sizeof eng) != 1 || strncmp(eng, "blk.", 4) ||
	    !(dot = strchr(eng + 4, '.')))
		return 0;
	for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++)
		if (!strcmp(dot + 1, lin[i]))
			return 1;
	return 0;
}

/* Companions consumed by their module's conversion. */
static int companion(const struct qcfg *c, const char *n)
{
	if (c->method == M_FP8_BLOCK)
		return ends(n, ".weight_scale_inv");
	if (c->method == M_CT_FP8)
		return ends(n, ".weight_scale") || ends(n, ".input_scale");
	if (c->method == M_AWQ || c->method == M_GPTQ)
		return ends(n, ".qzeros") || ends(n, ".scales") || ends(n, ".g_idx");
	if (c->method == M_BITNET)
		return ends(n, ".weight_scale");
	return 0;
}

static fi_err convert_all(const struct fi_st_model *m, const struct qcfg *c, struct out *o)
{
	fi_err e;
	for (int i = 0; i < m->set.n; i++) {
		const struct fi_tensor *t = &m->set.t[i];
		char pre[512], name[512];
		size_t len = strlen(t->name);
		if (len >= sizeof pre - 16)
			return BAD("tensor name '%.64s...' is too long", t->name);
		if (companion(c, t->name)) {
			/* Its module must exist, or the tensor is a stray. */
			const char *dot = strrchr(t->name, '.');
			snprintf(pre, sizeof pre, "%.*s.", (int)(dot - t->name), t->name);
			if (!find(m, pre, c->method == M_AWQ || c->method == M_GPTQ ? "qweight" : "weight"))
				return BAD("tensor '%s' has no '%s%s' to belong to", t->name, pre,
					   c->method == M_AWQ || c->method == M_GPTQ ? "qweight" : "weight");
			continue;
		}
		if ((c->method == M_FP8_BLOCK || c->method == M_CT_FP8) && ends(t->name, ".weight") &&
		    t->dtype == FI_DT_F8_E4M3) {
			snprintf(pre, sizeof pre, "%.*s", (int)(len - 6), t->name);
			e = conv_fp8(m, c, pre, t, o, t->name);
		} else if ((c->method == M_AWQ || c->method == M_GPTQ) && ends(t->name, ".qweight")) {
			snprintf(pre, sizeof pre, "%.*s", (int)(len - 7), t->name);
			snprintf(name, sizeof name, "%sweight", pre);
			if (find(m, pre, "weight"))
				return BAD("module '%s' has both qweight and weight", pre);
			e = conv_int4(m, c, pre, t, o, name);
		} else if (c->method == M_BITNET && ends(t->name, ".weight") &&
			   (t->dtype == FI_DT_U8 || find(m, t->name, "_scale"))) {
			snprintf(pre, sizeof pre, "%.*s", (int)(len - 6), t->name);
			e = conv_tq2(m, c, pre, t, o, t->name);
		} else if (c->method == M_QUANTIZE && t->ndim == 2 &&
			   fi_dtype_is_compute(t->dtype) && is_linear(t->name)) {
			e = conv_quantize(t, o, t->name);
		} else {
			e = add(o, t, t->name, t->dtype, 0, 0, NULL, 0);
		}
		if (e)
			return e;
	}
	return FI_OK;
}

void fi_qhf_free(struct fi_qhf *q)
{
	if (!q)
		return;
	for (int i = 0; i < q->n_bufs; i++)
		free(q->bufs[i]);
	for (int i = 0; i < q->set.n; i++)
		free(q->names[i]);
	free(q->bufs);
	free(q->names);
	free(q->t);
	free(q);
}

fi_err fi_qhf_convert(const char *dir, const struct fi_st_model *m, unsigned flags,
		      struct fi_qhf **out)
{
	struct fi_qhf *q = calloc(1, sizeof *q);
	struct qcfg c;
	struct out o;
	size_t n = (size_t)m->set.n + 1;
	fi_err e;
	*out = NULL;
	if (!q || !(q->t = calloc(n, sizeof *q->t)) || !(q->names = calloc(n, sizeof *q->names)) ||
	    !(q->bufs = calloc(n, sizeof *q->bufs))) {
		fi_qhf_free(q);
		return fi_fail(FI_ENOMEM, "'%s'", dir);
	}
	q->set.t = q->t;
	o = (struct out){q, (int)n};
	if ((e = parse_config(dir, flags, &c, q->method, sizeof q->method))) {
		fi_qhf_free(q);
		return e;
	}
	if ((e = convert_all(m, &c, &o))) {
		fi_qhf_free(q);
		return fi_fail_ctx(e, "'%s'", dir);
	}
	*out = q;
	return FI_OK;
}
