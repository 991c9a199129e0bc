/* Core: error recording, dtype conversion, engine tensor names. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "base/settings.h"
#include "backend/backend.h"
#include "model/store.h"
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

/* Every variable of fi(7) ENVIRONMENT read into the settings, defaults without them, a
 * reload after setenv, fi_settings_set, and the readers that take them (store, log, a
 * backend's pointer). */
static const char *const vars[] = {
	"FI_HOME", "TMPDIR", "FI_LOG", "FI_CHAT_NOW", "FI_ARENA_CRASH", "FI_LIVE_DELAY", "FI_GRAPHS",
	"FI_DECODE_FUSE", "FI_GEMV", "FI_GLU", "FI_FUSE", "FI_PF_WGMMA", "FI_DEVICE_SAMPLE",
	"FI_DEC_PLAN", "FI_DEC_ASYNC", "FI_DEC_TC", "FI_GEMM_BUCKET",
	"FI_GEMM_TUNE", "FI_DEC_MERGE", "FI_UPLOAD_PIN", "FI_UPLOAD_THREADS", "FI_DEC_MIN_CHUNK",
	"FI_DEC_WAVES", "FI_FG_SLICES", "FI_PF_BR", "FI_MOE_ONE", "FI_INT4_HALF", "FI_FP8_UNIT",
	"FI_FP8_HALF", "FI_Q4K_HALF", "FI_HALF_PARTS", "FI_HALF_STAY", "FI_INT4_MMA", "FI_FP8_FAST",
	"FI_FP8_FOLD", "FI_HALF_STAGE", "FI_QKV_CAT_T", "FI_HALF_AHEAD",
	"FI_HALF_BALANCE",
};

START_TEST(test_settings)
{
	const struct fi_settings *s;
	struct fi_settings d, t;
	struct fi_backend *be;
	char home_default[64];
	snprintf(home_default, sizeof home_default, "/dev/shm/fi-%u", (unsigned)geteuid());
	for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
		unsetenv(vars[i]);
	fi_settings_reload();
	s = fi_settings();
	fi_settings_defaults(&d);
	ck_assert_mem_eq(s, &d, sizeof d);
	ck_assert_str_eq(s->home, home_default);
	ck_assert_str_eq(s->tmpdir, "/tmp");
	ck_assert_int_eq(s->graphs + s->decode_fuse + s->gemv + s->glu + s->fuse + s->pf_wgmma +
			 s->device_sample, 7);
	ck_assert_int_eq(s->gemm_tune + s->dec_merge + s->upload_alloc + s->upload_threads +
			 s->dec_min_chunk + s->dec_waves + s->fg_slices + s->qkv_cat_t + s->half_ahead +
			 s->half_balance, 0);
	ck_assert_int_eq(s->dec_plan, -1);
	ck_assert_int_eq(s->dec_async, 1);
	ck_assert_int_eq(s->dec_tc, 1);
	ck_assert_int_eq(s->gemm_bucket, 1);
	/* the one-token half2 products and their launch shapes: on unless 0 */
	ck_assert_int_eq(s->moe_one + s->int4_half + s->fp8_unit + s->fp8_half + s->q4k_half +
			 s->half_parts + s->half_stay + s->int4_mma + s->fp8_fast + s->fp8_fold +
			 s->half_stage, 11);
	ck_assert_int_eq(fi_log_get_level(), FI_LOG_WARN);

	setenv("FI_HOME", "/tmp/fi-settings-home", 1);
	setenv("TMPDIR", "/tmp/t", 1);
	setenv("FI_LOG", "Debug", 1);
	setenv("FI_CHAT_NOW", "2024-05-06", 1);
	setenv("FI_ARENA_CRASH", "copy:3", 1);
	setenv("FI_LIVE_DELAY", "0.5", 1);
	for (size_t i = 6; i < 13; i++)
		setenv(vars[i], "0", 1);
	setenv("FI_GEMM_TUNE", "1", 1);
	setenv("FI_DEC_MERGE", "1", 1);
	setenv("FI_UPLOAD_PIN", "alloc", 1);
	setenv("FI_UPLOAD_THREADS", "6", 1);
	setenv("FI_DEC_MIN_CHUNK", "96", 1);
	setenv("FI_DEC_WAVES", "3", 1);
	setenv("FI_FG_SLICES", "4", 1);
	setenv("FI_PF_BR", "128w8", 1);
	setenv("FI_DEC_PLAN", "0", 1);
	setenv("FI_DEC_ASYNC", "0", 1);
	setenv("FI_DEC_TC", "0", 1);
	setenv("FI_GEMM_BUCKET", "0", 1);
	for (size_t i = 25; i < sizeof vars / sizeof *vars; i++)
		setenv(vars[i], "0", 1);
	setenv("FI_QKV_CAT_T", "1024", 1);
	setenv("FI_HALF_AHEAD", "1", 1);
	setenv("FI_HALF_BALANCE", "1", 1);
	/* read once: nothing changes until a reload */
	ck_assert_str_eq(s->home, home_default);
	fi_settings_reload();
	ck_assert_ptr_eq(fi_settings(), s);
	ck_assert_str_eq(s->home, "/tmp/fi-settings-home");
	ck_assert_str_eq(fi_home(), "/tmp/fi-settings-home");
	ck_assert_str_eq(s->tmpdir, "/tmp/t");
	ck_assert_int_eq(s->log_level, FI_LOG_DEBUG);
	ck_assert_int_eq(fi_log_get_level(), FI_LOG_DEBUG);
	ck_assert_str_eq(s->chat_now, "2024-05-06");
	ck_assert_str_eq(s->arena_crash, "copy:3");
	ck_assert(s->live_delay == 0.5);
	ck_assert_int_eq(s->graphs + s->decode_fuse + s->gemv + s->glu + s->fuse + s->pf_wgmma +
			 s->device_sample, 0);
	ck_assert_int_eq(s->gemm_tune + s->dec_merge + s->upload_alloc, 3);
	ck_assert_int_eq(s->upload_threads, 6);
	ck_assert_int_eq(s->dec_min_chunk, 96);
	ck_assert_int_eq(s->dec_waves, 3);
	ck_assert_int_eq(s->fg_slices, 4);
	ck_assert_int_eq(s->qkv_cat_t, 1024);
	ck_assert_int_eq(s->half_ahead, 1);
	ck_assert_int_eq(s->half_balance, 1);
	ck_assert_str_eq(s->pf_br, "128w8");
	ck_assert_int_eq(s->dec_plan, 0);
	ck_assert_int_eq(s->dec_async, 0);
	ck_assert_int_eq(s->dec_tc, 0);
	ck_assert_int_eq(s->gemm_bucket, 0);
	ck_assert_int_eq(s->moe_one + s->int4_half + s->fp8_unit + s->fp8_half + s->q4k_half +
			 s->half_parts + s->half_stay + s->int4_mma + s->fp8_fast + s->fp8_fold +
			 s->half_stage, 0);
	/* FI_FUSE=kv, bad counts and slices fall back to the defaults */
	setenv("FI_FUSE", "kv", 1);
	setenv("FI_FG_SLICES", "3", 1);
	setenv("FI_DEC_WAVES", "-2", 1);
	setenv("FI_LOG", "loud", 1);
	setenv("FI_HOME", "", 1);
	setenv("FI_LIVE_DELAY", "soon", 1);
	fi_settings_reload();
	ck_assert(s->live_delay == -1);
	ck_assert_int_eq(s->fuse, 2);
	ck_assert_int_eq(s->fg_slices, 0);
	ck_assert_int_eq(s->dec_waves, 0);
	ck_assert_int_eq(s->log_level, -1);
	ck_assert_str_eq(s->home, home_default);
	/* a backend sees the settings it was made with, and a change of them */
	ck_assert_int_eq(fi_backend_cpu_create(1, &be), FI_OK);
	ck_assert_ptr_eq(be->settings, s);
	t = *s;
	t.device_sample = 1;
	t.graphs = 1;
	fi_settings_set(&t);
	ck_assert_int_eq(be->settings->device_sample + be->settings->graphs, 2);
	fi_backend_destroy(be);
	for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
		unsetenv(vars[i]);
	fi_settings_reload();
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
	tcase_add_test(tc, test_settings);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
