/* Core: error recording, dtype conversion, engine tensor names. */
#include <math.h>
#include <string.h>

#include "base/err.h"
#include "model/names.h"
#include "base/tensor.h"
#include "util.h"

START_TEST(test_err_detail)
{
	fi_clear_error();
	ck_assert_int_eq(fi_fail(FI_EFORMAT, "bad '%s'", "x"), FI_EFORMAT);
	ck_assert_str_eq(fi_errmsg(), "bad 'x'");
	fi_fail_ctx(FI_EFORMAT, "loading %s", "m");
	ck_assert_str_eq(fi_errmsg(), "loading m: bad 'x'");
	ck_assert_int_eq(fi_errcode(), FI_EFORMAT);
	ck_assert_str_eq(fi_strerror(FI_ENOMEM), "out of memory");
	ck_assert_str_eq(fi_strerror((fi_err)999), "unknown error");
}
END_TEST

START_TEST(test_bf16_f16_roundtrip)
{
	/* Every bf16 and f16 bit pattern survives f32 and back (NaNs stay NaN). */
	for (uint32_t h = 0; h < 65536; h++) {
		float f = fi_bf16_to_f32((uint16_t)h);
		if (isnan(f))
			ck_assert(isnan(fi_bf16_to_f32(fi_f32_to_bf16(f))));
		else
			ck_assert_uint_eq(fi_f32_to_bf16(f), h);
		f = fi_f16_to_f32((uint16_t)h);
		if (isnan(f))
			ck_assert(isnan(fi_f16_to_f32(fi_f32_to_f16(f))));
		else
			ck_assert_uint_eq(fi_f32_to_f16(f), h);
	}
	/* Round to nearest even. */
	ck_assert_uint_eq(fi_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
	ck_assert_uint_eq(fi_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
	ck_assert_uint_eq(fi_f32_to_f16(65520.0f), 0x7c00);
	ck_assert_uint_eq(fi_f32_to_f16(1e-8f), 0);
}
END_TEST

START_TEST(test_names)
{
	char out[64];
	ck_assert_int_eq(fi_name_from_hf("model.layers.12.self_attn.k_proj.weight", out, sizeof out), 1);
	ck_assert_str_eq(out, "blk.12.attn_k");
	ck_assert_int_eq(fi_name_from_hf("lm_head.weight", out, sizeof out), 1);
	ck_assert_str_eq(out, "output");
	ck_assert_int_eq(fi_name_from_hf("model.layers.0.self_attn.rotary_emb.inv_freq", out, sizeof out), 0);
	ck_assert_int_eq(fi_name_from_hf("model.layers.x.mlp.up_proj.weight", out, sizeof out), -1);
	ck_assert_int_eq(fi_name_from_hf("vision_tower.x", out, sizeof out), -1);
}
END_TEST

START_TEST(test_expected)
{
	struct fi_config c = {.hidden = 64, .n_layers = 2, .n_heads = 8, .n_kv_heads = 4,
			      .head_dim = 8, .ffn = 172, .vocab = 512, .tie_embeddings = 1};
	struct fi_expected e;
	int n = 0;
	while (fi_expected_tensor(&c, n, &e))
		n++;
	ck_assert_int_eq(n, 1 + 2 * 9 + 1);
	fi_expected_tensor(&c, 2, &e);
	ck_assert_str_eq(e.name, "blk.0.attn_q");
	ck_assert_int_eq(e.shape[0], 64);
	c.tie_embeddings = 0;
	c.qkv_bias = 1;
	n = 0;
	while (fi_expected_tensor(&c, n, &e))
		n++;
	ck_assert_int_eq(n, 1 + 2 * 12 + 2);
	ck_assert_str_eq(e.name, "output");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("core");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_err_detail);
	tcase_add_test(tc, test_bf16_f16_roundtrip);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_expected);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
