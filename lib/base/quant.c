/* quant: quantized weight layouts (format in quant.h). The GGML dequantizations follow
 * ggml's dequantize_row_* (ggml-quants.c) operation for operation, so that the f32 results
 * equal theirs and gguf-py's. */
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN16(x) (((x) + 15) & ~(uint64_t)15)

static const struct {
	int block, bytes;
} ggml[] = {
	[FI_DT_Q8_0 - FI_DT_Q8_0] = {32, 34},
	[FI_DT_Q4_0 - FI_DT_Q8_0] = {32, 18},
	[FI_DT_Q4_K - FI_DT_Q8_0] = {256, 144},
	[FI_DT_Q5_K - FI_DT_Q8_0] = {256, 176},
	[FI_DT_Q6_K - FI_DT_Q8_0] = {256, 210},
};

static int is_ggml(enum fi_dtype dt) { return dt >= FI_DT_Q8_0 && dt <= FI_DT_Q6_K; }

int fi_quant_block(enum fi_dtype dt) { return is_ggml(dt) ? ggml[dt - FI_DT_Q8_0].block : 0; }

uint64_t fi_quant_row_bytes(enum fi_dtype dt, int64_t cols)
{
	int b = fi_quant_block(dt);
	if (!b || cols <= 0 || cols % b)
		return 0;
	return (uint64_t)(cols / b) * (uint64_t)ggml[dt - FI_DT_Q8_0].bytes;
}

static float h2f(const uint8_t *p)
{
	uint16_t h;
	memcpy(&h, p, 2);
	return fi_f16_to_f32(h);
}

/* ---- e4m3 ---- */

float fi_e4m3_to_f32(uint8_t v)
{
	int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
	float f;
	if (e == 15 && m == 7)
		return NAN;
	f = e ? ldexpf(1.0f + m / 8.0f, e - 7) : ldexpf((float)m, -9);
	return s ? -f : f;
}

uint8_t fi_f32_to_e4m3(float x)
{
	uint32_t u, r, code;
	uint8_t s;
	memcpy(&u, &x, 4);
	s = (uint8_t)(u >> 24 & 0x80);
	u &= 0x7fffffffu;
	if (u > 0x7f800000u) /* NaN */
		return 0x7f;
	if (u >= 0x43e00000u) /* 448 and above (infinity included): saturate */
		return s | 0x7e;
	if (u < 0x3c800000u) { /* below 2^-6: subnormal steps of 2^-9 (8 rounds up to 2^-6) */
		float f;
		memcpy(&f, &u, 4);
		return s | (uint8_t)rintf(f * 512.0f);
	}
	/* Normal: keep the exponent and 3 mantissa bits, rounding the other 20 to nearest even
	 * (a carry moves into the exponent, as it should), then rebias 127 -> 7. */
	r = u + 0x7ffffu + ((u >> 20) & 1);
	code = (r >> 20) - (120u << 3);
	return s | (uint8_t)(code > 0x7e ? 0x7e : code);
}

static void round_span(float *x, int64_t n)
{
	float amax = 0, s;
	for (int64_t i = 0; i < n; i++)
		if (fabsf(x[i]) > amax)
			amax = fabsf(x[i]);
	s = amax > 0 ? amax / FI_FP8_MAX : 1.0f;
	for (int64_t i = 0; i < n; i++)
		x[i] = fi_e4m3_to_f32(fi_f32_to_e4m3(x[i] / s)) * s;
}

void fi_quant_act_round(float *x, int64_t T, int64_t K, int aq)
{
	if (aq == FI_AQ_NONE)
		return;
	for (int64_t t = 0; t < T; t++) {
		float *r = x + t * K;
		if (aq == FI_AQ_I8) {
			fi_tq2_round_act(r, K);
			continue;
		}
		if (aq == FI_AQ_TOKEN) {
			round_span(r, K);
			continue;
		}
		for (int64_t k = 0; k < K; k += 128)
			round_span(r + k, K - k < 128 ? K - k : 128);
	}
}

/* ---- layouts ---- */

void fi_quant_layout_fp8(int64_t rows, int64_t cols, int kind, int aq, struct fi_qlayout *l)
{
	uint64_t ns = kind == FI_Q8_ROW ? (uint64_t)rows
					: (uint64_t)((rows + 127) / 128) * (uint64_t)((cols + 127) / 128);
	memset(l, 0, sizeof *l);
	l->dtype = FI_DT_FP8;
	l->rows = rows;
	l->cols = cols;
	l->kind = kind;
	l->aq = aq;
	l->off_q = FI_QHDR_BYTES;
	l->off_scale = ALIGN16(l->off_q + (uint64_t)rows * (uint64_t)cols);
	l->nbytes = l->off_scale + 4 * ns;
}

void fi_quant_layout_int4(int64_t rows, int64_t cols, int group, int perm, struct fi_qlayout *l)
{
	uint64_t ng = (uint64_t)rows * (uint64_t)(cols / group);
	memset(l, 0, sizeof *l);
	l->dtype = FI_DT_INT4;
	l->rows = rows;
	l->cols = cols;
	l->group = group;
	l->perm = perm;
	l->off_q = FI_QHDR_BYTES;
	l->off_scale = ALIGN16(l->off_q + (uint64_t)rows * (uint64_t)(cols / 2));
	l->off_zero = ALIGN16(l->off_scale + 2 * ng);
	l->off_perm = ALIGN16(l->off_zero + ng);
	l->nbytes = l->off_perm + (perm ? 4 * (uint64_t)cols : 0);
}

void fi_quant_write_header(const struct fi_qlayout *l, void *dst)
{
	uint8_t h[FI_QHDR_BYTES] = {0};
	uint32_t g = (uint32_t)l->group;
	if (l->dtype == FI_DT_TQ2) {
		memcpy(h, "FIT2", 4);
		h[5] = FI_AQ_I8;
	} else if (l->dtype == FI_DT_FP8) {
		memcpy(h, "FIF8", 4);
		h[4] = (uint8_t)l->kind;
		h[5] = (uint8_t)l->aq;
	} else {
		memcpy(h, "FII4", 4);
		h[5] = (uint8_t)l->perm;
		memcpy(h + 8, &g, 4);
	}
	memcpy(dst, h, sizeof h);
}

#define BAD(...) fi_fail(FI_EFORMAT, __VA_ARGS__)

fi_err fi_quant_layout(enum fi_dtype dt, int64_t rows, int64_t cols, const void *data,
		       uint64_t avail, struct fi_qlayout *out)
{
	const uint8_t *h = data;
	memset(out, 0, sizeof *out);
	if (rows <= 0 || cols <= 0 || rows > ((int64_t)1 << 31) || cols > ((int64_t)1 << 31))
		return BAD("%s weight of %lld x %lld", fi_dtype_name(dt), (long long)rows,
			   (long long)cols);
	if (is_ggml(dt)) {
		uint64_t rb = fi_quant_row_bytes(dt, cols);
		if (!rb)
			return BAD("%s: %lld columns are not a whole number of %d-value blocks",
				   fi_dtype_name(dt), (long long)cols, fi_quant_block(dt));
		out->dtype = dt;
		out->rows = rows;
		out->cols = cols;
		out->block = fi_quant_block(dt);
		out->block_bytes = ggml[dt - FI_DT_Q8_0].bytes;
		out->nbytes = rb * (uint64_t)rows; /* < 2^31 x 2^31 x 2: no overflow */
	} else if (dt == FI_DT_TQ2) {
		uint32_t w1, w2, w3;
		if (!h || avail < FI_QHDR_BYTES)
			return BAD("TQ2 weight: no room for its %d-byte header", FI_QHDR_BYTES);
		memcpy(&w1, h + 4, 4);
		memcpy(&w2, h + 8, 4);
		memcpy(&w3, h + 12, 4);
		if (memcmp(h, "FIT2", 4) || w1 != FI_AQ_I8 << 8 || w2 || w3)
			return BAD("TQ2 weight: bad header");
		if (cols % 128)
			return BAD("TQ2 weight: %lld columns are not a whole number of 128-value "
				   "blocks", (long long)cols);
		fi_quant_layout_tq2(rows, cols, out);
	} else if (dt == FI_DT_FP8 || dt == FI_DT_INT4) {
		uint32_t g, res;
		if (!h || avail < FI_QHDR_BYTES)
			return BAD("%s weight: no room for its %d-byte header", fi_dtype_name(dt),
				   FI_QHDR_BYTES);
		memcpy(&g, h + 8, 4);
		memcpy(&res, h + 12, 4);
		if (memcmp(h, dt == FI_DT_FP8 ? "FIF8" : "FII4", 4) || res || h[6] || h[7])
			return BAD("%s weight: bad header", fi_dtype_name(dt));
		if (dt == FI_DT_FP8) {
			if ((h[4] != FI_Q8_ROW && h[4] != FI_Q8_B128) || h[5] > FI_AQ_GROUP || g)
				return BAD("FP8 weight: bad header (scale kind %u, activations %u)",
					   h[4], h[5]);
			fi_quant_layout_fp8(rows, cols, h[4], h[5], out);
		} else {
			if (h[4] || h[5] > 1)
				return BAD("INT4 weight: bad header flags");
			if (g < 32 || g % 32 || cols % g)
				return BAD("INT4 weight: group size %u does not divide %lld columns "
					   "into groups of a multiple of 32", g, (long long)cols);
			fi_quant_layout_int4(rows, cols, (int)g, h[5], out);
		}
	} else {
		return BAD("dtype %s is not a quantized layout", fi_dtype_name(dt));
	}
	if (out->nbytes > avail)
		return BAD("%s weight of %lld x %lld needs %llu bytes, has %llu", fi_dtype_name(dt),
			   (long long)rows, (long long)cols, (unsigned long long)out->nbytes,
			   (unsigned long long)avail);
	if (out->perm) {
		/* A permutation: every index exactly once. */
		const uint8_t *p = h + out->off_perm;
		uint8_t *seen = calloc((size_t)(cols + 7) / 8, 1);
		if (!seen)
			return fi_fail(FI_ENOMEM, "INT4 weight: permutation check");
		for (int64_t j = 0; j < cols; j++) {
			int32_t v;
			memcpy(&v, p + 4 * j, 4);
			if (v < 0 || v >= cols || (seen[v / 8] >> (v % 8) & 1)) {
				free(seen);
				return BAD("INT4 weight: input permutation entry %lld (%d) is out of "
					   "range or repeated", (long long)j, v);
			}
			seen[v / 8] |= (uint8_t)(1 << (v % 8));
		}
		free(seen);
	}
	return FI_OK;
}

/* ---- dequantization ---- */

static void get_scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
	if (j < 4) {
		*d = q[j] & 63;
		*m = q[j + 4] & 63;
	} else {
		*d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
		*m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
	}
}

static void deq_q8_0(const uint8_t *b, float *y)
{
	float d = h2f(b);
	for (int j = 0; j < 32; j++)
		y[j] = d * (float)(int8_t)b[2 + j];
}

static void deq_q4_0(const uint8_t *b, float *y)
{
	float d = h2f(b);
	for (int j = 0; j < 16; j++) {
		y[j] = (float)((b[2 + j] & 0x0F) - 8) * d;
		y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
	}
}

static void deq_q4_k(const uint8_t *b, float *y)
{
	float d = h2f(b), mn = h2f(b + 2);
	const uint8_t *sc = b + 4, *q = b + 16;
	int is = 0;
	for (int j = 0; j < 256; j += 64) {
		uint8_t s, m;
		get_scale_min_k4(is, sc, &s, &m);
		float d1 = d * s, m1 = mn * m;
		get_scale_min_k4(is + 1, sc, &s, &m);
		float d2 = d * s, m2 = mn * m;
		for (int l = 0; l < 32; l++)
			*y++ = d1 * (q[l] & 0xF) - m1;
		for (int l = 0; l < 32; l++)
			*y++ = d2 * (q[l] >> 4) - m2;
		q += 32;
		is += 2;
	}
}

static void deq_q5_k(const uint8_t *b, float *y)
{
	float d = h2f(b), mn = h2f(b + 2);
	const uint8_t *sc = b + 4, *qh = b + 16, *ql = b + 48;
	int is = 0;
	uint8_t u1 = 1, u2 = 2;
	for (int j = 0; j < 256; j += 64) {
		uint8_t s, m;
		get_scale_min_k4(is, sc, &s, &m);
		float d1 = d * s, m1 = mn * m;
		get_scale_min_k4(is + 1, sc, &s, &m);
		float d2 = d * s, m2 = mn * m;
		for (int l = 0; l < 32; l++)
			*y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
		for (int l = 0; l < 32; l++)
			*y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
		ql += 32;
		is += 2;
		u1 <<= 2;
		u2 <<= 2;
	}
}

static void deq_q6_k(const uint8_t *b, float *y)
{
	const uint8_t *ql = b, *qh = b + 128;
	const int8_t *sc = (const int8_t *)(b + 192);
	float d = h2f(b + 208);
	for (int n = 0; n < 256; n += 128) {
		for (int l = 0; l < 32; l++) {
			int is = l / 16;
			int q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
			int q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
			int q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
			int q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
			y[l] = d * sc[is] * q1;
			y[l + 32] = d * sc[is + 2] * q2;
			y[l + 64] = d * sc[is + 4] * q3;
			y[l + 96] = d * sc[is + 6] * q4;
		}
		y += 128;
		ql += 64;
		qh += 32;
		sc += 8;
	}
}

static float fp8_scale(const struct fi_qlayout *l, const uint8_t *base, int64_t r, int64_t c)
{
	float s;
	uint64_t i = l->kind == FI_Q8_ROW ? (uint64_t)r
					  : (uint64_t)(r / 128) * (uint64_t)((l->cols + 127) / 128) +
						    (uint64_t)(c / 128);
	memcpy(&s, base + l->off_scale + 4 * i, 4);
	return s;
}

void fi_quant_dequant_rows(const struct fi_qlayout *l, const void *data, int64_t r0, int64_t n,
			   float *out)
{
	const uint8_t *base = data;
	int64_t K = l->cols;
	for (int64_t r = r0; r < r0 + n; r++) {
		float *y = out + (r - r0) * K;
		if (is_ggml(l->dtype)) {
			const uint8_t *b = base + (uint64_t)r * fi_quant_row_bytes(l->dtype, K);
			for (int64_t k = 0; k < K; k += l->block, b += l->block_bytes) {
				switch (l->dtype) {
				case FI_DT_Q8_0: deq_q8_0(b, y + k); break;
				case FI_DT_Q4_0: deq_q4_0(b, y + k); break;
				case FI_DT_Q4_K: deq_q4_k(b, y + k); break;
				case FI_DT_Q5_K: deq_q5_k(b, y + k); break;
				default: deq_q6_k(b, y + k); break;
				}
			}
		} else if (l->dtype == FI_DT_TQ2) {
			float s;
			memcpy(&s, base + l->off_scale + 4 * (uint64_t)r, 4);
			for (int64_t k = 0; k < K; k++)
				y[k] = (float)fi_tq2_get(l, data, r, k) * s;
		} else if (l->dtype == FI_DT_FP8) {
			const uint8_t *q = base + l->off_q + (uint64_t)r * (uint64_t)K;
			for (int64_t k = 0; k < K; k++)
				y[k] = fi_e4m3_to_f32(q[k]) * fp8_scale(l, base, r, k);
		} else {
			const uint8_t *q = base + l->off_q + (uint64_t)r * (uint64_t)(K / 2);
			int64_t ng = K / l->group;
			const uint8_t *zp = base + l->off_zero + (uint64_t)r * (uint64_t)ng;
			const uint8_t *sp = base + l->off_scale + 2 * (uint64_t)r * (uint64_t)ng;
			const uint8_t *pp = base + l->off_perm;
			for (int64_t j = 0; j < K; j++) {
				int v = j & 1 ? q[j / 2] >> 4 : q[j / 2] & 0xF;
				int64_t g = j / l->group;
				int32_t dst = (int32_t)j;
				float w = (float)(v - zp[g]) * h2f(sp + 2 * g);
				if (l->perm)
					memcpy(&dst, pp + 4 * j, 4);
				y[dst] = w;
			}
		}
	}
}

fi_err fi_quant_check_scales(const struct fi_qlayout *l, const void *data)
{
	const uint8_t *b = data;
	if (is_ggml(l->dtype)) {
		/* d (and dmin) of every block: where ggml_validate_row_data looks. */
		int off = l->dtype == FI_DT_Q6_K ? 208 : 0, two = l->dtype == FI_DT_Q4_K ||
								l->dtype == FI_DT_Q5_K;
		uint64_t nb = l->nbytes / (uint64_t)l->block_bytes;
		for (uint64_t i = 0; i < nb; i++) {
			const uint8_t *p = b + i * (uint64_t)l->block_bytes + off;
			if (!isfinite(h2f(p)) || (two && !isfinite(h2f(p + 2))))
				return BAD("%s weight: block %llu (row %llu) has a NaN or infinite "
					   "scale", fi_dtype_name(l->dtype), (unsigned long long)i,
					   (unsigned long long)(i / (uint64_t)(l->cols / l->block)));
		}
	} else if (l->dtype == FI_DT_TQ2) {
		/* scales, and no code 3 (a weight of 2, not ternary) */
		const uint8_t *q = b + l->off_q;
		uint64_t nq = (uint64_t)l->rows * (uint64_t)(l->cols / 4);
		for (int64_t r = 0; r < l->rows; r++) {
			float s;
			memcpy(&s, b + l->off_scale + 4 * (uint64_t)r, 4);
			if (!isfinite(s) || s < 0)
				return BAD("TQ2 weight: scale of row %lld is %g", (long long)r, s);
		}
		for (uint64_t i = 0; i < nq; i++) {
			uint8_t v = q[i];
			if ((v & (v >> 1) & 0x55) != 0)
				return BAD("TQ2 weight: row %llu holds the invalid code 3",
					   (unsigned long long)(i / (uint64_t)(l->cols / 4)));
		}
	} else if (l->dtype == FI_DT_FP8) {
		uint64_t ns = (l->nbytes - l->off_scale) / 4;
		for (uint64_t i = 0; i < ns; i++) {
			float s;
			memcpy(&s, b + l->off_scale + 4 * i, 4);
			if (!isfinite(s) || s < 0)
				return BAD("FP8 weight: scale %llu is %g", (unsigned long long)i, s);
		}
	} else if (l->dtype == FI_DT_INT4) {
		uint64_t ng = (uint64_t)l->rows * (uint64_t)(l->cols / l->group);
		for (uint64_t i = 0; i < ng; i++) {
			float s = h2f(b + l->off_scale + 2 * i);
			if (!isfinite(s))
				return BAD("INT4 weight: scale %llu is %g", (unsigned long long)i, s);
			if (b[l->off_zero + i] > 16)
				return BAD("INT4 weight: zero point %llu is %u (above 16)",
					   (unsigned long long)i, b[l->off_zero + i]);
		}
	}
	return FI_OK;
}

void fi_quant_fp8_rows(const float *w, int64_t r0, int64_t n, const struct fi_qlayout *l,
		       void *dst)
{
	uint8_t *base = dst;
	int64_t K = l->cols;
	for (int64_t r = r0; r < r0 + n; r++) {
		const float *x = w + (r - r0) * K;
		uint8_t *q = base + l->off_q + (uint64_t)r * (uint64_t)K;
		float amax = 0, s;
		for (int64_t k = 0; k < K; k++)
			if (fabsf(x[k]) > amax)
				amax = fabsf(x[k]);
		s = amax > 0 ? amax / FI_FP8_MAX : 1.0f;
		for (int64_t k = 0; k < K; k++)
			q[k] = fi_f32_to_e4m3(x[k] / s);
		memcpy(base + l->off_scale + 4 * (uint64_t)r, &s, 4);
	}
}
