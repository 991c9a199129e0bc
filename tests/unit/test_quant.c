/* base/quant: e4m3 conversion, W8A8 activation rounding, layout validation. The
 * dequantizations are checked end to end against gguf-py and numpy in test_quant_model. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/quant.h"
#include "util.h"

/* e4m3fn: every code decodes to what its bits say, and encoding a decoded value gives the
 * code back (one NaN code per sign; -0 stays -0). */
START_TEST(test_e4m3_codes)
{
	for (int c = 0; c < 256; c++) {
		float f = fi_e4m3_to_f32((uint8_t)c);
		int e = (c >> 3) & 15, m = c & 7;
		if (e == 15 && m == 7) {
			ck_assert(isnan(f));
			ck_assert_uint_eq(fi_f32_to_e4m3(f) & 0x7f, 0x7f);
			continue;
		}
		float want = e ? ldexpf(1 + m / 8.0f, e - 7) : ldexpf((float)m, -9);
		ck_assert_float_eq(fabsf(f), want);
		ck_assert_int_eq(signbit(f) != 0, c >= 128);
		ck_assert_uint_eq(fi_f32_to_e4m3(f), (uint8_t)c);
	}
	ck_assert_float_eq(fi_e4m3_to_f32(0x7e), 448.0f);
}
END_TEST

/* Rounding: nearest, ties to even, saturation at 448, subnormals in steps of 2^-9. */
START_TEST(test_e4m3_rounding)
{
	ck_assert_uint_eq(fi_f32_to_e4m3(1e9f), 0x7e);
	ck_assert_uint_eq(fi_f32_to_e4m3(-1e9f), 0xfe);
	ck_assert_uint_eq(fi_f32_to_e4m3(INFINITY), 0x7e);
	ck_assert_uint_eq(fi_f32_to_e4m3(449.0f), 0x7e);
	/* 1 + 1/16 lies halfway between 1 (0x38) and 1.125 (0x39): to even, 1 */
	ck_assert_uint_eq(fi_f32_to_e4m3(1.0625f), 0x38);
	/* 1.1875 halfway between 1.125 (odd) and 1.25 (even) */
	ck_assert_uint_eq(fi_f32_to_e4m3(1.1875f), 0x3a);
	ck_assert_uint_eq(fi_f32_to_e4m3(1.07f), 0x39);
	ck_assert_uint_eq(fi_f32_to_e4m3(ldexpf(1, -9)), 0x01);
	ck_assert_uint_eq(fi_f32_to_e4m3(ldexpf(1, -10)), 0x00);      /* tie to even: 0 */
	ck_assert_uint_eq(fi_f32_to_e4m3(ldexpf(3, -10)), 0x02);      /* 1.5 steps: to 2 */
	ck_assert_uint_eq(fi_f32_to_e4m3(ldexpf(15, -10)), 0x08);     /* 7.5 steps: 2^-6 */
	ck_assert_uint_eq(fi_f32_to_e4m3(-0.0f), 0x80);
	/* monotonic over a sweep */
	for (float x = -500, prev = -1e9f; x < 500; x += 0.37f) {
		float r = fi_e4m3_to_f32(fi_f32_to_e4m3(x));
		ck_assert(r >= prev);
		ck_assert(fabsf(r - x) <= fmaxf(fabsf(x) / 16, ldexpf(1, -10)) || fabsf(x) > 448);
		prev = r;
	}
}
END_TEST

START_TEST(test_act_round)
{
	float x[2 * 256], y[2 * 256];
	for (int i = 0; i < 2 * 256; i++)
		x[i] = sinf((float)i * 0.7f) * (i % 256 == 5 ? 40.0f : 1.0f);
	x[256 + 7] = 0; /* a zero stays zero */
	memcpy(y, x, sizeof x);
	fi_quant_act_round(y, 2, 256, FI_AQ_TOKEN);
	for (int t = 0; t < 2; t++) {
		float amax = 0;
		for (int k = 0; k < 256; k++)
			amax = fmaxf(amax, fabsf(x[t * 256 + k]));
		for (int k = 0; k < 256; k++) {
			float s = amax / 448, v = x[t * 256 + k];
			float want = fi_e4m3_to_f32(fi_f32_to_e4m3(v / s)) * s;
			ck_assert_float_eq(y[t * 256 + k], want);
		}
		/* the largest value is exact (448 s) */
		ck_assert_float_eq(y[t * 256 + 5], x[t * 256 + 5]);
	}
	ck_assert_float_eq(y[256 + 7], 0);
	/* per group of 128: the outlier at 5 does not coarsen the second group */
	memcpy(y, x, sizeof x);
	fi_quant_act_round(y, 2, 256, FI_AQ_GROUP);
	for (int k = 128; k < 256; k++) {
		float amax = 0, s, v = x[k];
		for (int j = 128; j < 256; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		s = amax / 448;
		ck_assert_float_eq(y[k], fi_e4m3_to_f32(fi_f32_to_e4m3(v / s)) * s);
	}
	/* an all-zero row stays zero (no division by a zero scale) */
	memset(y, 0, sizeof y);
	fi_quant_act_round(y, 2, 256, FI_AQ_TOKEN);
	for (int i = 0; i < 512; i++)
		ck_assert_float_eq(y[i], 0);
}
END_TEST

START_TEST(test_layouts)
{
	struct fi_qlayout l;
	uint8_t *b;
	/* GGML: rows of whole blocks */
	ck_assert_int_eq(fi_quant_layout(FI_DT_Q4_K, 3, 512, NULL, 3 * 288, &l), FI_OK);
	ck_assert_uint_eq(l.nbytes, 3 * 2 * 144);
	ck_assert_int_eq(fi_quant_layout(FI_DT_Q4_K, 3, 500, NULL, 1 << 20, &l), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "whole number"));
	ck_assert_int_eq(fi_quant_layout(FI_DT_Q6_K, 3, 512, NULL, 3 * 420 - 1, &l), FI_EFORMAT);
	ck_assert_int_eq(fi_quant_layout(FI_DT_Q8_0, 0, 32, NULL, 1 << 20, &l), FI_EFORMAT);
	ck_assert_int_eq(fi_quant_layout(FI_DT_Q8_0, (int64_t)1 << 40, 32, NULL, UINT64_MAX, &l),
			 FI_EFORMAT);
	ck_assert_int_eq(fi_quant_layout(FI_DT_F32, 3, 32, NULL, 1 << 20, &l), FI_EFORMAT);
	/* FP8: header fields and size */
	fi_quant_layout_fp8(4, 256, FI_Q8_B128, FI_AQ_GROUP, &l);
	ck_assert_uint_eq(l.nbytes, 16 + 4 * 256 + 4 * 2);
	b = calloc(1, l.nbytes);
	fi_quant_write_header(&l, b);
	ck_assert_int_eq(fi_quant_layout(FI_DT_FP8, 4, 256, b, l.nbytes, &l), FI_OK);
	ck_assert_int_eq(l.kind, FI_Q8_B128);
	ck_assert_int_eq(l.aq, FI_AQ_GROUP);
	ck_assert_int_eq(fi_quant_layout(FI_DT_FP8, 4, 256, b, l.nbytes - 1, &l), FI_EFORMAT);
	ck_assert_int_eq(fi_quant_layout(FI_DT_FP8, 4, 256, b, 8, &l), FI_EFORMAT);
	b[5] = 7; /* activation rounding kind */
	ck_assert_int_eq(fi_quant_layout(FI_DT_FP8, 4, 256, b, 1 << 20, &l), FI_EFORMAT);
	b[5] = 2;
	b[0] = 'X';
	ck_assert_int_eq(fi_quant_layout(FI_DT_FP8, 4, 256, b, 1 << 20, &l), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "bad header"));
	free(b);
	/* INT4: group size, permutation */
	fi_quant_layout_int4(2, 256, 128, 1, &l);
	b = calloc(1, l.nbytes);
	fi_quant_write_header(&l, b);
	for (int32_t j = 0; j < 256; j++)
		memcpy(b + l.off_perm + 4 * j, &j, 4);
	ck_assert_int_eq(fi_quant_layout(FI_DT_INT4, 2, 256, b, l.nbytes, &l), FI_OK);
	ck_assert_int_eq(l.perm, 1);
	ck_assert_int_eq(fi_quant_layout(FI_DT_INT4, 2, 320, b, 1 << 20, &l), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "group size"));
	fi_quant_layout_int4(2, 256, 128, 1, &l);
	{
		int32_t bad = 256;
		memcpy(b + l.off_perm + 4 * 9, &bad, 4);
		ck_assert_int_eq(fi_quant_layout(FI_DT_INT4, 2, 256, b, l.nbytes, &l), FI_EFORMAT);
		ck_assert_ptr_nonnull(strstr(fi_errmsg(), "entry 9"));
		bad = 3;
		fi_quant_layout_int4(2, 256, 128, 1, &l);
		memcpy(b + l.off_perm + 4 * 9, &bad, 4);
		ck_assert_int_eq(fi_quant_layout(FI_DT_INT4, 2, 256, b, l.nbytes, &l), FI_EFORMAT);
	}
	/* zero points above 16 and NaN scales are refused at conversion */
	fi_quant_layout_int4(2, 256, 128, 0, &l);
	memset(b, 0, l.nbytes);
	fi_quant_write_header(&l, b);
	ck_assert_int_eq(fi_quant_check_scales(&l, b), FI_OK);
	b[l.off_zero + 1] = 17;
	ck_assert_int_eq(fi_quant_check_scales(&l, b), FI_EFORMAT);
	b[l.off_zero + 1] = 0;
	b[l.off_scale + 1] = 0x7e; /* f16 NaN */
	ck_assert_int_eq(fi_quant_check_scales(&l, b), FI_EFORMAT);
	free(b);
}
END_TEST

/* INT4 dequantization with a permutation: stored column j lands at input column perm[j]. */
START_TEST(test_int4_perm)
{
	struct fi_qlayout l;
	uint8_t *b;
	float out[64];
	uint16_t one = 0x3c00, half = 0x3800;
	fi_quant_layout_int4(1, 64, 32, 1, &l);
	b = calloc(1, l.nbytes);
	fi_quant_write_header(&l, b);
	for (int j = 0; j < 64; j++) {
		int32_t p = 63 - j;
		b[l.off_q + j / 2] |= (uint8_t)((j % 16) << (4 * (j & 1)));
		memcpy(b + l.off_perm + 4 * j, &p, 4);
	}
	memcpy(b + l.off_scale, &one, 2);
	memcpy(b + l.off_scale + 2, &half, 2);
	b[l.off_zero] = 8;
	b[l.off_zero + 1] = 3;
	ck_assert_int_eq(fi_quant_layout(FI_DT_INT4, 1, 64, b, l.nbytes, &l), FI_OK);
	fi_quant_dequant_rows(&l, b, 0, 1, out);
	for (int j = 0; j < 64; j++)
		ck_assert_float_eq(out[63 - j], j < 32 ? (float)(j % 16 - 8) : (j % 16 - 3) * 0.5f);
	free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("quant");
	TCase *tc = tcase_create("quant");
	tcase_add_test(tc, test_e4m3_codes);
	tcase_add_test(tc, test_e4m3_rounding);
	tcase_add_test(tc, test_act_round);
	tcase_add_test(tc, test_layouts);
	tcase_add_test(tc, test_int4_perm);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
