/* tensor: dtype tables and conversions. */
#include "tensor.h"

#include <math.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name, *lname;
	size_t size;
} dt[FI_DT_COUNT] = {
	[FI_DT_F32] = {"F32", "f32", 4},	 [FI_DT_F16] = {"F16", "f16", 2},
	[FI_DT_BF16] = {"BF16", "bf16", 2},	 [FI_DT_F64] = {"F64", "f64", 8},
	[FI_DT_I64] = {"I64", "i64", 8},	 [FI_DT_I32] = {"I32", "i32", 4},
	[FI_DT_I16] = {"I16", "i16", 2},	 [FI_DT_I8] = {"I8", "i8", 1},
	[FI_DT_U8] = {"U8", "u8", 1},		 [FI_DT_BOOL] = {"BOOL", "bool", 1},
	[FI_DT_F8_E4M3] = {"F8_E4M3", "f8_e4m3", 1}, [FI_DT_F8_E5M2] = {"F8_E5M2", "f8_e5m2", 1},
};

static const char *const qnames[FI_DT_Q_END - FI_DT_Q8_0][2] = {
	{"Q8_0", "q8_0"}, {"Q4_0", "q4_0"}, {"Q4_K", "q4_k"}, {"Q5_K", "q5_k"},
	{"Q6_K", "q6_k"}, {"FP8", "fp8"},   {"INT4", "int4"},
	{"TQ2", "tq2"},
};

int fi_dtype_is_quant(enum fi_dtype t) { return t >= FI_DT_Q8_0 && t < FI_DT_Q_END; }
size_t fi_dtype_size(enum fi_dtype t) { return (unsigned)t < FI_DT_COUNT ? dt[t].size : 0; }

const char *fi_dtype_name(enum fi_dtype t)
{
	if (fi_dtype_is_quant(t))
		return qnames[t - FI_DT_Q8_0][0];
	return (unsigned)t < FI_DT_COUNT ? dt[t].name : "?";
}

const char *fi_dtype_lname(enum fi_dtype t)
{
	if (fi_dtype_is_quant(t))
		return qnames[t - FI_DT_Q8_0][1];
	return (unsigned)t < FI_DT_COUNT ? dt[t].lname : "?";
}

int fi_dtype_parse(const char *s)
{
	for (int i = 0; i < FI_DT_COUNT; i++)
		if (!strcmp(s, dt[i].name))
			return i;
	return -1;
}

int fi_dtype_parse_lname(const char *s)
{
	for (int i = 0; i < FI_DT_COUNT; i++)
		if (!strcasecmp(s, dt[i].lname))
			return i;
	return -1;
}

int fi_dtype_is_compute(enum fi_dtype t)
{
	return t == FI_DT_F32 || t == FI_DT_F16 || t == FI_DT_BF16;
}

int64_t fi_tensor_numel(const struct fi_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++) {
		if (t->shape[i] < 0)
			return -1;
		if (t->shape[i] && n > INT64_MAX / t->shape[i])
			return -1;
		n *= t->shape[i];
	}
	return n;
}

float fi_bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

uint16_t fi_f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

float fi_f16_to_f32(uint16_t h)
{
	uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
	float f;
	if (e == 0) {
		if (m == 0) {
			u = s;
		} else { /* subnormal: normalise */
			e = 1;
			while (!(m & 0x400)) {
				m <<= 1;
				e--;
			}
			m &= 0x3ff;
			u = s | ((e + 112) << 23) | (m << 13);
		}
	} else if (e == 31) {
		u = s | 0x7f800000u | (m << 13);
	} else {
		u = s | ((e + 112) << 23) | (m << 13);
	}
	memcpy(&f, &u, 4);
	return f;
}

uint16_t fi_f32_to_f16(float f)
{
	uint32_t u, s, m;
	int e;
	memcpy(&u, &f, 4);
	s = (u >> 16) & 0x8000;
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)(s | 0x7e00);
	e = (int)((u >> 23) & 0xff) - 127 + 15;
	m = u & 0x7fffff;
	if (e >= 31)
		return (uint16_t)(s | 0x7c00);
	if (e <= 0) {
		if (e < -10)
			return (uint16_t)s;
		m |= 0x800000;
		{
			int shift = 14 - e;
			uint32_t half = 1u << (shift - 1), rest = m & ((1u << shift) - 1);
			uint32_t r = m >> shift;
			if (rest > half || (rest == half && (r & 1)))
				r++;
			return (uint16_t)(s | r);
		}
	}
	{
		uint32_t r = ((uint32_t)e << 10) | (m >> 13), rest = m & 0x1fff;
		if (rest > 0x1000 || (rest == 0x1000 && (r & 1)))
			r++; /* may carry into the exponent, which is the correct rounding */
		return (uint16_t)(s | r);
	}
}

fi_err fi_convert(void *dst, enum fi_dtype ddt, const void *src, enum fi_dtype sdt, size_t n)
{
	if (!fi_dtype_is_compute(ddt) || !fi_dtype_is_compute(sdt))
		return fi_fail(FI_EUNSUPPORTED, "cannot convert %s to %s", fi_dtype_name(sdt),
			       fi_dtype_name(ddt));
	if (ddt == sdt) {
		memcpy(dst, src, n * fi_dtype_size(sdt));
		return FI_OK;
	}
	for (size_t i = 0; i < n; i++) {
		float v;
		switch (sdt) {
		case FI_DT_F32: memcpy(&v, (const char *)src + 4 * i, 4); break;
		case FI_DT_F16: v = fi_f16_to_f32(((const uint16_t *)src)[i]); break;
		default: v = fi_bf16_to_f32(((const uint16_t *)src)[i]); break;
		}
		switch (ddt) {
		case FI_DT_F32: memcpy((char *)dst + 4 * i, &v, 4); break;
		case FI_DT_F16: ((uint16_t *)dst)[i] = fi_f32_to_f16(v); break;
		default: ((uint16_t *)dst)[i] = fi_f32_to_bf16(v); break;
		}
	}
	return FI_OK;
}

const struct fi_tensor *fi_tensor_find(const struct fi_tensor_set *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->t[i].name, name))
			return &s->t[i];
	return NULL;
}
