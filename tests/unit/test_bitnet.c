/* BitNet b1.58 on the CPU engine: the TQ2 layout, the ternary x int8 kernels against their
 * scalar reference, and whole models against transformers (tests/fixtures/bitnet, made by
 * tools/make_bitnet_fixtures.py with BitNetForCausalLM).
 *
 * Tolerance: fi computes the same int8 activations and exact integer sums as transformers'
 * BitLinear; what differs is float rounding (the norms, 1/s applied after the sum rather than
 * to each q). A value that lands within an ulp of a .5 boundary of x s rounds to the other
 * int8 step in one of them: one input moves by 1/s (under 1% of the row's largest), so a
 * row's logits may move by about 1e-3 of their range. The fixtures have no such value
 * (measured: 8.5e-7 worst row), and the integer paths make the result the same on every
 * CPU, so rows must agree within 1e-4 (max abs error over max abs value: a wrong scale or
 * a misplaced code is far above it), and the 24 greedy tokens must be identical. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "base/quant.h"
#include "model/image.h"
#include "model/model.h"
#include "util.h"

#define TOL 1e-4

static struct fi_backend *be;
static char tmpdir[256];

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* ---- layout and kernels ---- */

START_TEST(test_pack_roundtrip)
{
	const int64_t N = 3, K = 256;
	struct fi_qlayout l, l2;
	int8_t w[3][256];
	uint8_t *b;
	float *deq = malloc(sizeof(float) * N * K);
	fi_quant_layout_tq2(N, K, &l);
	b = calloc(1, l.nbytes);
	fi_quant_write_header(&l, b);
	for (int n = 0; n < N; n++) {
		for (int k = 0; k < K; k++)
			w[n][k] = (int8_t)(next() % 3) - 1;
		fi_tq2_pack_row(&l, b, n, w[n], 0.5f + n);
	}
	ck_assert_int_eq(fi_quant_layout(FI_DT_TQ2, N, K, b, l.nbytes, &l2), FI_OK);
	ck_assert_int_eq(fi_quant_check_scales(&l2, b), FI_OK);
	fi_quant_dequant_rows(&l2, b, 0, N, deq);
	for (int n = 0; n < N; n++)
		for (int k = 0; k < K; k++) {
			ck_assert_int_eq(fi_tq2_get(&l2, b, n, k), w[n][k]);
			ck_assert(deq[n * K + k] == w[n][k] * (0.5f + n));
		}
	/* column 1 + 32 of row 0 is bits 2..3 of byte 1 of the first block */
	ck_assert_int_eq((b[l.off_q + 1] >> 2 & 3) - 1, w[0][33]);
	/* malformed: short, bad header, columns off the block, code 3, bad scale */
	ck_assert_int_eq(fi_quant_layout(FI_DT_TQ2, N, K, b, l.nbytes - 1, &l2), FI_EFORMAT);
	ck_assert_int_eq(fi_quant_layout(FI_DT_TQ2, N, 200, b, l.nbytes, &l2), FI_EFORMAT);
	b[5] = 0;
	ck_assert_int_eq(fi_quant_layout(FI_DT_TQ2, N, K, b, l.nbytes, &l2), FI_EFORMAT);
	b[5] = FI_AQ_I8;
	b[l.off_q + 7] |= 0x30;
	ck_assert_int_eq(fi_quant_check_scales(&l, b), FI_EFORMAT);
	ck_assert_msg(strstr(fi_errmsg(), "code 3"), "%s", fi_errmsg());
	b[l.off_q + 7] &= 0x0f;
	{
		float nan = NAN;
		memcpy(b + l.off_scale + 4, &nan, 4);
		ck_assert_int_eq(fi_quant_check_scales(&l, b), FI_EFORMAT);
	}
	free(b);
	free(deq);
}
END_TEST

START_TEST(test_act_quant)
{
	float x[5] = {0.5f, -1.0f, 0.25f, 0.0f, 0.994f}, r[5];
	int8_t q[5];
	int32_t s;
	float inv = fi_tq2_quant_act(x, 5, q, &s);
	/* s = 127 / 1: 63.5 rounds to even (64), -127, 31.75 -> 32, 0, 126.238 -> 126 */
	ck_assert_int_eq(q[0], 64);
	ck_assert_int_eq(q[1], -127);
	ck_assert_int_eq(q[2], 32);
	ck_assert_int_eq(q[3], 0);
	ck_assert_int_eq(q[4], 126);
	ck_assert_int_eq(s, 64 - 127 + 32 + 126);
	ck_assert(fabsf(inv - 1.0f / 127) < 1e-9f);
	memcpy(r, x, sizeof r);
	fi_tq2_round_act(r, 5);
	for (int i = 0; i < 5; i++)
		ck_assert(r[i] == q[i] / (127.0f / 1.0f));
	/* all zeros: the 1e-5 floor, no division by zero */
	memset(x, 0, sizeof x);
	fi_tq2_quant_act(x, 5, q, &s);
	ck_assert_int_eq(s, 0);
}
END_TEST

/* Every SIMD path against the scalar reference: exact int32 sums, random codes and extreme
 * activations (-128 and 127 everywhere: the largest 16-bit partial sums), K from one block
 * to an odd number of blocks (the AVX-512 path's tail). */
START_TEST(test_dot_paths)
{
	static const char *const isa[] = {"avx2", "avx512-vnni"};
	int32_t (*const fn[])(const uint8_t *, const int8_t *, int64_t) = {
		fi_cpu_tq2_dot_avx2, fi_cpu_tq2_dot_avx512};
	const int64_t Ks[] = {128, 256, 384, 2560, 6912};
	int ran = 0;
	printf("tq2 dot: products take the %s path\n", fi_cpu_tq2_isa());
	for (size_t p = 0; p < 2; p++) {
		if (!fi_cpu_tq2_has(isa[p])) {
			printf("tq2 dot: this CPU has no %s; that path is not checked here\n", isa[p]);
			continue;
		}
		for (size_t i = 0; i < sizeof Ks / sizeof Ks[0]; i++) {
			int64_t K = Ks[i];
			uint8_t *w = malloc((size_t)K / 4);
			int8_t *x = malloc((size_t)K);
			for (int trial = 0; trial < 4; trial++) {
				for (int64_t k = 0; k < K / 4; k++) {
					uint8_t v = 0;
					for (int s = 0; s < 4; s++)
						v |= (uint8_t)((trial == 1 ? 2 : next() % 3) << 2 * s);
					w[k] = v;
				}
				for (int64_t k = 0; k < K; k++)
					x[k] = trial == 1 ? -128 : trial == 2 ? 127 : (int8_t)(next() & 0xff);
				ck_assert_msg(fn[p](w, x, K) == fi_cpu_tq2_dot_scalar(w, x, K),
					      "%s K %lld trial %d: %d, scalar %d", isa[p], (long long)K,
					      trial, fn[p](w, x, K), fi_cpu_tq2_dot_scalar(w, x, K));
			}
			free(w);
			free(x);
		}
		ran++;
	}
	ck_assert_msg(ran > 0 || !strcmp(fi_cpu_tq2_isa(), "scalar"), "no SIMD path checked");
}
END_TEST

/* The backend's product on a packed weight against f32 math on the dequantized weight with
 * the activations rounded as FI_AQ_I8 says: the same up to float summation order. */
START_TEST(test_matmul)
{
	const int64_t N = 40, K = 384;
	const int T = 3;
	struct fi_qlayout l;
	struct fi_tensor t = {0};
	struct fi_weight w;
	int8_t row[384];
	uint8_t *b;
	float *x = malloc(sizeof(float) * T * K), *xr = malloc(sizeof(float) * T * K);
	float *deq = malloc(sizeof(float) * N * K), *out = malloc(sizeof(float) * T * N);
	fi_quant_layout_tq2(N, K, &l);
	b = calloc(1, l.nbytes);
	fi_quant_write_header(&l, b);
	for (int n = 0; n < N; n++) {
		for (int k = 0; k < K; k++)
			row[k] = (int8_t)(next() % 3) - 1;
		fi_tq2_pack_row(&l, b, n, row, 0.01f * (n + 1));
	}
	for (int i = 0; i < T * K; i++)
		x[i] = (float)((int64_t)(next() % 2001) - 1000) / 300.0f;
	t.name = "w";
	t.dtype = FI_DT_TQ2;
	t.ndim = 2;
	t.shape[0] = N;
	t.shape[1] = K;
	t.data = b;
	t.nbytes = l.nbytes;
	ck_assert_msg(!be->ops->weight(be, &t, &w), "%s", fi_errmsg());
	ck_assert_int_eq(w.dtype, FI_DT_TQ2);
	ck_assert_msg(!be->ops->matmul(be, out, x, &w, NULL, T), "%s", fi_errmsg());
	fi_quant_dequant_rows(&l, b, 0, N, deq);
	memcpy(xr, x, sizeof(float) * T * K);
	fi_quant_act_round(xr, T, K, FI_AQ_I8);
	for (int t2 = 0; t2 < T; t2++)
		for (int n = 0; n < N; n++) {
			double ref = 0;
			for (int k = 0; k < K; k++)
				ref += (double)xr[t2 * K + k] * deq[n * K + k];
			ck_assert_msg(fabs(out[t2 * N + n] - ref) <= 1e-4 * (1 + fabs(ref)),
				      "row %d token %d: %g, reference %g", n, t2, out[t2 * N + n], ref);
		}
	be->ops->weight_free(be, &w);
	free(b);
	free(x);
	free(xr);
	free(deq);
	free(out);
}
END_TEST

/* ---- whole models against transformers ---- */

static float *run(const struct fi_image *im, const int32_t *ids, int n, int one_by_one)
{
	struct fi_model *m;
	int s;
	float *lg;
	ck_assert_msg(!fi_model_load(&im->config, &im->set, be, &m), "%s", fi_errmsg());
	ck_assert_int_eq(fi_model_seq_new(m, &s), FI_OK);
	lg = fi_test_rows(m, s, ids, n, im->config.vocab, one_by_one);
	fi_model_close(m);
	return lg;
}

static void check_fixture(const char *name)
{
	char p[512], img[512];
	json_error_t je;
	json_t *o, *pr, *gr;
	struct fi_image *im;
	int n_prompt, rows, V;
	int32_t *ids;
	float *ref;
	size_t len;
	snprintf(p, sizeof p, "%s/ref.json", fi_test_fixture(name));
	ck_assert_msg((o = json_load_file(p, 0, &je)), "%s: %s", p, je.text);
	pr = json_object_get(o, "prompt");
	gr = json_object_get(o, "greedy");
	n_prompt = (int)json_array_size(pr);
	rows = (int)json_integer_value(json_object_get(o, "rows"));
	V = (int)json_integer_value(json_object_get(o, "vocab"));
	ck_assert_int_eq(rows, n_prompt + (int)json_array_size(gr));
	ids = malloc(sizeof(int32_t) * (size_t)rows);
	for (int i = 0; i < rows; i++)
		ids[i] = (int32_t)json_integer_value(i < n_prompt ? json_array_get(pr, (size_t)i)
			 : json_array_get(gr, (size_t)(i - n_prompt)));
	json_decref(o);
	snprintf(p, sizeof p, "%s/logits.bin", fi_test_fixture(name));
	ref = (float *)fi_test_slurp(p, &len);
	ck_assert_msg(ref && len == sizeof(float) * (size_t)rows * V, "cannot read %s", p);
	snprintf(img, sizeof img, "%s/bitnet.fim", tmpdir);
	ck_assert_msg(!fi_image_convert(fi_test_fixture(name), img, FI_DT_F32, FI_IMAGE_OVERWRITE),
		      "%s", fi_errmsg());
	ck_assert_msg(!fi_image_open(img, &im), "%s", fi_errmsg());
	unlink(img);
	ck_assert_int_eq(im->config.family, FI_FAM_BITNET);
	for (int way = 0; way < 2; way++) {
		float *lg = run(im, ids, rows, way);
		double worst = 0;
		for (int i = 0; i < rows; i++) {
			const float *a = ref + (size_t)i * V, *b = lg + (size_t)i * V;
			double d = 0, m = 0;
			for (int k = 0; k < V; k++) {
				d = fmax(d, fabs((double)a[k] - b[k]));
				m = fmax(m, fabs(a[k]));
			}
			worst = fmax(worst, d / m);
		}
		printf("%-10s %-6s worst row error %.2e (tolerance %.0e)\n", name,
		       way ? "decode" : "full", worst, TOL);
		ck_assert_msg(worst <= TOL, "%s: row error %g", name, worst);
		for (int i = n_prompt - 1; i < rows - 1; i++)
			ck_assert_msg(fi_test_argmax(lg + (size_t)i * V, V) == ids[i + 1],
				      "%s: greedy token %d differs", name, i + 1 - n_prompt);
		free(lg);
	}
	fi_image_close(im);
	free(ids);
	free(ref);
}

START_TEST(test_autobitlinear) { check_fixture("bitnet/bitnet"); }
END_TEST
START_TEST(test_bitlinear) { check_fixture("bitnet/bitlinear"); }
END_TEST

int main(void)
{
	Suite *s = suite_create("bitnet");
	TCase *tc = tcase_create("bitnet");
	snprintf(tmpdir, sizeof tmpdir, "/tmp/fi-bitnet-test.XXXXXX");
	if (!mkdtemp(tmpdir) || fi_backend_create("cpu", 2, &be))
		return 1;
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_pack_roundtrip);
	tcase_add_test(tc, test_act_quant);
	tcase_add_test(tc, test_dot_paths);
	tcase_add_test(tc, test_matmul);
	tcase_add_test(tc, test_autobitlinear);
	tcase_add_test(tc, test_bitlinear);
	suite_add_tcase(s, tc);
	int rc = fi_test_run(s);
	fi_backend_destroy(be);
	rmdir(tmpdir);
	return rc;
}
