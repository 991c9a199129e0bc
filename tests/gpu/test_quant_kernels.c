/* Quantized weights on the GPU against the CPU twin (which dequantizes to f32 and, for W8A8
 * weights, rounds its input in f32): matmul through every path (the weight-streaming GEMV
 * for T <= 4, cuBLASLt's FP8 GEMM for W8A8 prompts, dequantize + bf16 GEMM for the rest,
 * then the same shapes once more with FI_GEMV=0 FI_FP8_GEMM=0: everything dequantized),
 * matmul_f32out (a quantized LM head), and embed from a quantized table; and the gated
 * activation that also writes the down product's W8A8 codes (FI_FP8_FOLD) against the
 * activation and the quantizer apart, and the RMSNorm that does the same against the norm
 * and the quantizer apart: outputs, codes and scales equal bit for bit.
 * Weights: random valid layouts of every type (GGML blocks with sane scales, FP8 per-row
 * and 128x128 blocks with and without activation rounding, INT4 with groups of 32 and 128,
 * with and without an act-order permutation). Tolerances are the bf16 matmul's (outputs
 * rounded to bf16, f32 accumulation in another order): |d| <= 2e-2 rms + 2^-6 |r|,
 * rel <= 8e-3; embed rows |d| <= 2^-8 |r| (one bf16 rounding). INT4 and Q4_K at one token and
 * K >= 4096 take two outliers in x (1504, -896), the range the half products must hold;
 * its absolute slack is then 2e-2 of the output's rms.
 * Run on a GPU machine; SKIPPED (exit 77) without. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_be.h"
#include "base/quant.h"
#include "gpu_util.h"
#include "qweights.h"
#include "../unit/util.h"

static struct pair P;
static struct fi_backend *G2; /* the GPU backend with the fast paths off */
static uint64_t seed = 0x243f6a8885a308d3ull;

static void load(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *w)
{
	ck_assert_msg(be->ops->weight(be, t, w) == FI_OK && be->ops->sync(be) == FI_OK, "%s: %s",
		      be->ops->name, fi_errmsg());
}

static void check(const char *what, struct fi_backend *g, const void *gd, const void *cd,
		  size_t n, float atol)
{
	float *a = get_act(g, gd, n), *b = get_act(P.cpu, cd, n);
	int ok = close_enough(what, a, b, n, 1.f / 64, atol, 8e-3f);
	free(a);
	free(b);
	ck_assert_msg(ok, "%s differs from the CPU twin", what);
}

static void one(const struct qt *q, int64_t N, int64_t K)
{
	static const int Ts[] = {1, 2, 4, 5, 33, 300};
	uint64_t nb;
	uint8_t *data = make_q(q, N, K, &nb, &seed);
	struct fi_tensor t = {.name = "w", .dtype = q->dt, .ndim = 2, .shape = {N, K},
			      .data = data, .nbytes = nb};
	struct fi_weight wc, wg, w2;
	load(P.cpu, &t, &wc);
	load(P.gpu, &t, &wg);
	load(G2, &t, &w2);
	for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) {
		int T = Ts[i];
		float *x = rand_bf16((size_t)T * K, 1, &seed);
		const int outl = (q->dt == FI_DT_INT4 || q->dt == FI_DT_Q4_K) && T == 1 && K >= 4096;
		if (outl) { /* outliers, as in a down projection's input */
			x[7] = 1504.f;
			x[K - 3] = -896.f;
		}
		void *xc = put_act(P.cpu, x, (size_t)T * K), *xg = put_act(P.gpu, x, (size_t)T * K);
		void *x2 = put_act(G2, x, (size_t)T * K);
		void *oc = poisoned(P.cpu, (size_t)T * N), *og = poisoned(P.gpu, (size_t)T * N);
		void *o2 = poisoned(G2, (size_t)T * N);
		/* outputs of about unit scale: absolute slack as the bf16 matmul's */
		float atol = 2e-2f;
		char name[96];
		ck_assert_msg(!P.cpu->ops->matmul(P.cpu, oc, xc, &wc, NULL, T), "%s", fi_errmsg());
		ck_assert_msg(!P.gpu->ops->matmul(P.gpu, og, xg, &wg, NULL, T), "%s", fi_errmsg());
		ck_assert_msg(!G2->ops->matmul(G2, o2, x2, &w2, NULL, T), "%s", fi_errmsg());
		ck_assert(!P.gpu->ops->sync(P.gpu) && !G2->ops->sync(G2));
		if (outl) { /* the slack scales with the output (bf16 weights, half sums) */
			float *r = get_act(P.cpu, oc, (size_t)N);
			double ss = 0;
			for (int64_t j = 0; j < N; j++)
				ss += (double)r[j] * r[j];
			atol = fmaxf(atol, 2e-2f * (float)sqrt(ss / (double)N));
			free(r);
		}
		snprintf(name, sizeof name, "%s T=%d N=%lld K=%lld", q->what, T, (long long)N,
			 (long long)K);
		check(name, P.gpu, og, oc, (size_t)T * N, atol);
		snprintf(name, sizeof name, "%s T=%d dequantized", q->what, T);
		check(name, G2, o2, oc, (size_t)T * N, atol);
		if (T == 1) { /* the LM head: f32 out */
			float *fg = NULL, *fc = NULL, *hg = malloc(4 * (size_t)N), *hc = malloc(4 * (size_t)N);
			ck_assert(!P.gpu->ops->alloc(P.gpu, 4 * (size_t)N, (void **)&fg));
			ck_assert(!P.cpu->ops->alloc(P.cpu, 4 * (size_t)N, (void **)&fc));
			ck_assert(!P.cpu->ops->matmul_f32out(P.cpu, fc, xc, &wc, 1));
			ck_assert(!P.gpu->ops->matmul_f32out(P.gpu, fg, xg, &wg, 1));
			P.gpu->ops->download(P.gpu, hg, fg, 4 * (size_t)N);
			P.cpu->ops->download(P.cpu, hc, fc, 4 * (size_t)N);
			snprintf(name, sizeof name, "%s f32out N=%lld", q->what, (long long)N);
			ck_assert(close_enough(name, hg, hc, (size_t)N, 1e-3f, 1e-3f * sqrtf((float)K),
					       4e-3f));
			free(hg), free(hc);
			P.gpu->ops->free(P.gpu, fg);
			P.cpu->ops->free(P.cpu, fc);
		}
		P.cpu->ops->free(P.cpu, xc), P.cpu->ops->free(P.cpu, oc);
		P.gpu->ops->free(P.gpu, xg), P.gpu->ops->free(P.gpu, og);
		G2->ops->free(G2, x2), G2->ops->free(G2, o2);
		free(x);
	}
	if (!q->aq) { /* embed rows from the same table */
		int32_t tok[5] = {0, (int32_t)N - 1, 3, 3, (int32_t)N / 2};
		void *tc = put_bytes(P.cpu, tok, sizeof tok), *tg = put_bytes(P.gpu, tok, sizeof tok);
		void *ec = poisoned(P.cpu, 5 * (size_t)K), *eg = poisoned(P.gpu, 5 * (size_t)K);
		float *a, *r;
		char name[96];
		ck_assert(!P.cpu->ops->embed(P.cpu, ec, &wc, tc, 5));
		ck_assert_msg(!P.gpu->ops->embed(P.gpu, eg, &wg, tg, 5), "%s", fi_errmsg());
		a = get_act(P.gpu, eg, 5 * (size_t)K);
		r = get_act(P.cpu, ec, 5 * (size_t)K);
		snprintf(name, sizeof name, "%s embed", q->what);
		ck_assert(close_enough(name, a, r, 5 * (size_t)K, 1.f / 256, 0, 4e-3f));
		free(a), free(r);
		P.cpu->ops->free(P.cpu, tc), P.cpu->ops->free(P.cpu, ec);
		P.gpu->ops->free(P.gpu, tg), P.gpu->ops->free(P.gpu, eg);
	}
	P.cpu->ops->weight_free(P.cpu, &wc);
	P.gpu->ops->weight_free(P.gpu, &wg);
	G2->ops->weight_free(G2, &w2);
	free(data);
}


START_TEST(test_quant_matmul)
{
	const struct qt *q = &qtypes[_i];
	one(q, 1000, 512);  /* rows not a multiple of the warps per block */
	one(q, 4096, 4096); /* Llama-3-8B q/o */
	if (!strcmp(q->what, "q4_k") || !strcmp(q->what, "q6_k") || !strcmp(q->what, "fp8 row w8a8") ||
	    !strcmp(q->what, "int4 g128"))
		one(q, 14336 / 4, 14336); /* the down projection's width */
}
END_TEST

static void freeb(struct fi_backend *be, void *p) { be->ops->free(be, p); }

/* Elements of es bytes in which GPU buffers a and b (n elements each) differ, bit for bit. */
static size_t differ(const void *a, const void *b, size_t n, size_t es)
{
	uint8_t *ha = malloc(n * es), *hb = malloc(n * es);
	size_t bad = 0;
	ck_assert(ha && hb && !P.gpu->ops->download(P.gpu, ha, a, n * es) &&
		  !P.gpu->ops->download(P.gpu, hb, b, n * es));
	for (size_t i = 0; i < n; i++)
		bad += memcmp(ha + i * es, hb + i * es, es) != 0;
	free(ha);
	free(hb);
	return bad;
}

/* fi_cu_silu_mul_scaled_q against fi_cu_silu_mul_scaled then fi_cu_act_quant: the joined
 * gate/up layout (rows 2F apart) with aligned scales, and the separate one (rows F apart)
 * with the weight scales one float off alignment. */
START_TEST(test_glu_codes)
{
	static const int sz[][2] = {{5, 14336}, {33, 512}, {300, 1024}, {7, 2056}};
	struct fi_cuda *c = fi_cuda_of(P.gpu);
	for (int k = 0; k < 4; k++)
		for (int cat = 0; cat < 2; cat++) {
			const int T = sz[k][0], F = sz[k][1];
			const size_t n = (size_t)T * F;
			const int64_t ld = cat ? 2 * (int64_t)F : F;
			float *gu = rand_bf16(2 * n, 6, &seed), *sc = malloc(sizeof(float) * (2 * F + 1));
			float xs[300];
			void *gd = put_act(P.gpu, gu, 2 * n), *od1 = poisoned(P.gpu, n),
			     *od2 = poisoned(P.gpu, n), *cd1, *cd2, *sd, *sd1, *sd2, *xd;
			for (int i = 0; i < 2 * F + 1; i++)
				sc[i] = 0.002f + 0.001f * (float)(i % 7);
			for (int t = 0; t < T; t++)
				xs[t] = 0.01f + 0.003f * (float)(t % 5);
			ck_assert(!P.gpu->ops->alloc(P.gpu, n, &cd1) && !P.gpu->ops->alloc(P.gpu, n, &cd2) &&
				  !P.gpu->ops->alloc(P.gpu, sizeof(float) * (2 * F + 1), &sd) &&
				  !P.gpu->ops->alloc(P.gpu, 4 * T, &sd1) &&
				  !P.gpu->ops->alloc(P.gpu, 4 * T, &sd2) &&
				  !P.gpu->ops->alloc(P.gpu, 4 * T, &xd));
			ck_assert(!P.gpu->ops->upload(P.gpu, sd, sc, sizeof(float) * (2 * F + 1)) &&
				  !P.gpu->ops->upload(P.gpu, xd, xs, 4 * T));
			const uint16_t *g = gd, *u = (const uint16_t *)gd + (cat ? (size_t)F : n);
			const float *wg = (const float *)sd + (cat ? 0 : 1), *wu = wg + F;
			ck_assert_msg(!fi_cu_silu_mul_scaled_q(c->stream, od1, g, u, wg, wu, xd, T, F, ld,
							       cd1, sd1), "%s", fi_errmsg());
			ck_assert_msg(!fi_cu_silu_mul_scaled(c->stream, od2, g, u, wg, wu, xd, T, F, ld) &&
				      !fi_cu_act_quant(c->stream, cd2, sd2, od2, NULL, 0.f, T, F,
						       FI_AQ_TOKEN), "%s", fi_errmsg());
			const size_t bo = differ(od1, od2, n, 2), bc = differ(cd1, cd2, n, 1),
				     bs = differ(sd1, sd2, T, 4);
			printf("glu codes T=%d F=%d %s: %zu outputs, %zu codes, %zu scales differ\n", T,
			       F, cat ? "joined" : "apart", bo, bc, bs);
			ck_assert_msg(!bo && !bc && !bs, "glu codes T=%d F=%d differ", T, F);
			freeb(P.gpu, gd), freeb(P.gpu, od1), freeb(P.gpu, od2), freeb(P.gpu, cd1);
			freeb(P.gpu, cd2), freeb(P.gpu, sd), freeb(P.gpu, sd1), freeb(P.gpu, sd2);
			freeb(P.gpu, xd);
			free(gu), free(sc);
		}
}
END_TEST

/* fi_cu_rmsnorm_q against fi_cu_rmsnorm then fi_cu_act_quant, with and without the residual
 * add, at widths of one to four vectors a thread. */
START_TEST(test_norm_codes)
{
	static const int sz[][2] = {{5, 4096}, {33, 2048}, {300, 512}, {3, 14336}, {2, 32768}};
	struct fi_cuda *c = fi_cuda_of(P.gpu);
	for (int k = 0; k < 5; k++)
		for (int add = 0; add < 2; add++) {
			const int T = sz[k][0], D = sz[k][1];
			const size_t n = (size_t)T * D;
			float *x = rand_bf16(n, 4, &seed), *y = rand_bf16(n, 2, &seed);
			float *w = rand_bf16((size_t)D, 1.5f, &seed);
			void *xd1 = put_act(P.gpu, x, n), *xd2 = put_act(P.gpu, x, n),
			     *yd = put_act(P.gpu, y, n), *wd = put_act(P.gpu, w, (size_t)D),
			     *od1 = poisoned(P.gpu, n), *od2 = poisoned(P.gpu, n), *cd1, *cd2, *sd1, *sd2;
			ck_assert(!P.gpu->ops->alloc(P.gpu, n, &cd1) && !P.gpu->ops->alloc(P.gpu, n, &cd2) &&
				  !P.gpu->ops->alloc(P.gpu, 4 * T, &sd1) &&
				  !P.gpu->ops->alloc(P.gpu, 4 * T, &sd2));
			ck_assert_msg(!fi_cu_rmsnorm_q(c->stream, od1, xd1, add ? yd : NULL, wd, T, D,
						       1e-5f, cd1, sd1), "%s", fi_errmsg());
			ck_assert_msg(!fi_cu_rmsnorm(c->stream, od2, xd2, add ? yd : NULL, wd, T, D,
						     1e-5f) &&
				      !fi_cu_act_quant(c->stream, cd2, sd2, od2, NULL, 0.f, T, D,
						       FI_AQ_TOKEN), "%s", fi_errmsg());
			const size_t bo = differ(od1, od2, n, 2) + differ(xd1, xd2, n, 2),
				     bc = differ(cd1, cd2, n, 1), bs = differ(sd1, sd2, T, 4);
			printf("norm codes T=%d D=%d add %d: %zu outputs, %zu codes, %zu scales "
			       "differ\n", T, D, add, bo, bc, bs);
			ck_assert_msg(!bo && !bc && !bs, "norm codes T=%d D=%d differ", T, D);
			freeb(P.gpu, xd1), freeb(P.gpu, xd2), freeb(P.gpu, yd), freeb(P.gpu, wd);
			freeb(P.gpu, od1), freeb(P.gpu, od2), freeb(P.gpu, cd1), freeb(P.gpu, cd2);
			freeb(P.gpu, sd1), freeb(P.gpu, sd2);
			free(x), free(y), free(w);
		}
}
END_TEST

int main(void)
{
	if (!pair_open(&P))
		return 77;
	setenv("FI_GEMV", "0", 1);
	setenv("FI_FP8_GEMM", "0", 1);
	if (fi_backend_cuda_create(0, &G2)) {
		printf("cannot create the second CUDA backend: %s\n", fi_errmsg());
		return 1;
	}
	unsetenv("FI_GEMV");
	unsetenv("FI_FP8_GEMM");
	printf("cpu: %s; gpu: %s\n", P.cpu->device, P.gpu->device);
	Suite *s = suite_create("quant_kernels");
	TCase *tc = tcase_create("quant");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, test_quant_matmul, 0, N_QTYPES);
	tcase_add_test(tc, test_glu_codes);
	tcase_add_test(tc, test_norm_codes);
	suite_add_tcase(s, tc);
	int rc = fi_test_run(s);
	fi_backend_destroy(G2);
	pair_close(&P);
	return rc;
}
