/* The CUDA backend's decode fusions against the CPU ops they stand for (backend.h):
 *   norm_qkv_rope  rmsnorm, matmul q/k/v (+ bias), rope, kv_write   q and both caches
 *   matmul_add     matmul, then the residual add (rmsnorm's add)    x
 *   norm_glu       rmsnorm, matmul gate/up, silu_mul (gelu_mul)     out
 *   add_norm       rmsnorm of y (or none), then rmsnorm's add       x; exact (same rounding)
 * Same bf16-exact random inputs to both backends, outputs poisoned with NaN (the caches
 * zeroed: a slot written in the wrong place, or not at all, differs from the CPU's).
 * Tolerances as test_kernels' matmul and matmul_glu; the fused norm does not round the
 * normalised x to bf16, which the slack covers. Shapes: the Llama-3-8B and 3.2-1B layers,
 * Qwen2-style biases, odd widths, 1 to 4 tokens, a padding token (slot -1). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "gpu_util.h"
#include "../unit/util.h"

static struct pair P;
static uint64_t seed = 0x2545f4914f6cdd1dull;

static void check(const char *what, const void *gd, const void *cd, size_t n, float rtol,
		  float atol, float max_rel)
{
	float *a = get_act(P.gpu, gd, n), *b = get_act(P.cpu, cd, n);
	int ok = close_enough(what, a, b, n, rtol, atol, max_rel);
	free(a);
	free(b);
	ck_assert_msg(ok, "%s differs from the CPU ops", what);
}

static void *ints(struct fi_backend *be, const int32_t *v, size_t n)
{
	void *d = put_bytes(be, v, n * sizeof(int32_t));
	be->ops->sync(be);
	return d;
}

static void freeb(struct fi_backend *be, void *p) { be->ops->free(be, p); }

static void weights(const float *w, int64_t rows, int64_t cols, struct fi_weight *c,
		    struct fi_weight *g)
{
	make_weight(P.cpu, w, rows, cols, c);
	make_weight(P.gpu, w, rows, cols, g);
}

START_TEST(test_norm_qkv_rope)
{
	/* T, D, Hq, Hk, hd, bias (the last: Gemma-2-9B's heads of 256) */
	static const int sh[][6] = {{1, 4096, 32, 8, 128, 0}, {3, 2048, 32, 8, 64, 1},
				    {4, 72, 4, 2, 16, 1},     {2, 256, 8, 8, 32, 0},
				    {1, 3584, 16, 8, 256, 0}};
	for (int k = 0; k < 5; k++) {
		int T = sh[k][0], D = sh[k][1], Hq = sh[k][2], Hk = sh[k][3], hd = sh[k][4];
		int hb = sh[k][5], Nq = Hq * hd, Nk = Hk * hd;
		struct fi_kv_cache kc = {.n_layers = 2, .n_blocks = 4, .block_size = 4, .n_kv_heads = Hk,
				    .head_dim = hd}, kg = kc;
		size_t ncache = (size_t)4 * 4 * Nk;
		float inv[256];
		int32_t pos[4], slot[4];
		char name[96];
		for (int i = 0; i < hd / 2; i++)
			inv[i] = (float)pow(500000.0, -2.0 * i / hd);
		for (int t = 0; t < T; t++) {
			pos[t] = (t * 2654435761u + 77u * k) % 9000;
			slot[t] = T > 1 && t == 1 ? -1 : (t * 5 + 3 + k) % 16;
		}
		float *x = rand_bf16((size_t)T * D, 1, &seed), *g = rand_bf16(D, 1, &seed);
		float *wq = rand_bf16((size_t)Nq * D, 1, &seed), *wk = rand_bf16((size_t)Nk * D, 1, &seed);
		float *wv = rand_bf16((size_t)Nk * D, 1, &seed), *bq = rand_bf16(Nq, 4, &seed);
		float *bk = rand_bf16(Nk, 4, &seed), *bv = rand_bf16(Nk, 4, &seed);
		struct fi_weight gc, gg, qc, qg, kwc, kwg, vc, vg, bqc, bqg, bkc, bkg, bvc, bvg;
		weights(g, 1, D, &gc, &gg);
		weights(wq, Nq, D, &qc, &qg), weights(wk, Nk, D, &kwc, &kwg), weights(wv, Nk, D, &vc, &vg);
		weights(bq, 1, Nq, &bqc, &bqg), weights(bk, 1, Nk, &bkc, &bkg), weights(bv, 1, Nk, &bvc, &bvg);
		ck_assert(!P.cpu->ops->kv_alloc(P.cpu, &kc) && !P.gpu->ops->kv_alloc(P.gpu, &kg));
		zero_cache(P.cpu, &kc, 1, ncache), zero_cache(P.gpu, &kg, 1, ncache);
		void *ic = put_bytes(P.cpu, inv, hd * 2), *ig = put_bytes(P.gpu, inv, hd * 2);
		void *pc = ints(P.cpu, pos, T), *pg = ints(P.gpu, pos, T);
		void *sc = ints(P.cpu, slot, T), *sg = ints(P.gpu, slot, T);
		struct fi_rope rc = {.head_dim = hd, .inv_freq_d = ic};
		struct fi_rope rg = {.head_dim = hd, .inv_freq_d = ig};
		struct fi_attn_batch bg = {.n_tokens = T, .tok_pos_d = pg, .slot_d = sg};
		void *xc = put_act(P.cpu, x, (size_t)T * D), *xg = put_act(P.gpu, x, (size_t)T * D);
		void *xb = poisoned(P.cpu, (size_t)T * D);
		void *q_c = poisoned(P.cpu, (size_t)T * Nq), *k_c = poisoned(P.cpu, (size_t)T * Nk);
		void *v_c = poisoned(P.cpu, (size_t)T * Nk), *q_g = poisoned(P.gpu, (size_t)T * Nq);
		/* the CPU reference, op by op */
		ck_assert(!P.cpu->ops->rmsnorm(P.cpu, xb, xc, NULL, &gc, T, D, 1e-5f));
		ck_assert(!P.cpu->ops->matmul(P.cpu, q_c, xb, &qc, hb ? &bqc : NULL, T));
		ck_assert(!P.cpu->ops->matmul(P.cpu, k_c, xb, &kwc, hb ? &bkc : NULL, T));
		ck_assert(!P.cpu->ops->matmul(P.cpu, v_c, xb, &vc, hb ? &bvc : NULL, T));
		ck_assert(!P.cpu->ops->rope(P.cpu, q_c, k_c, pc, &rc, T, Hq, Hk));
		for (int t = 0; t < T; t++) { /* the CPU kv_write refuses slot -1: token by token */
			struct fi_attn_batch b1 = {.n_tokens = 1, .slot_d = (int32_t *)sc + t};
			if (slot[t] >= 0)
				ck_assert(!P.cpu->ops->kv_write(P.cpu, &kc, 1, (float *)k_c + (size_t)t * Nk,
								(float *)v_c + (size_t)t * Nk, &b1));
		}
		const struct fi_weight *const w3[] = {&qg, &kwg, &vg}, *const b3[] = {&bqg, &bkg, &bvg};
		ck_assert_msg(P.gpu->ops->norm_qkv_rope(P.gpu, q_g, xg, &gg, 1e-5f, w3, hb ? b3 : NULL,
							&rg, &kg, 1, Hq, &bg) == FI_OK,
			      "%s", fi_errmsg());
		ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
		float tol = 2e-2f * sqrtf(D) / 3;
		snprintf(name, sizeof name, "norm_qkv_rope q T=%d D=%d hd=%d bias=%d", T, D, hd, hb);
		check(name, q_g, q_c, (size_t)T * Nq, 1.f / 64, tol, 8e-3f);
		snprintf(name, sizeof name, "norm_qkv_rope K cache T=%d D=%d", T, D);
		check(name, kg.k_d[1], kc.k_d[1], ncache, 1.f / 64, tol, 8e-3f);
		snprintf(name, sizeof name, "norm_qkv_rope V cache T=%d D=%d", T, D);
		check(name, kg.v_d[1], kc.v_d[1], ncache, 1.f / 64, tol, 8e-3f);
		P.cpu->ops->kv_free(P.cpu, &kc), P.gpu->ops->kv_free(P.gpu, &kg);
		struct fi_weight *wl[] = {&gc, &qc, &kwc, &vc, &bqc, &bkc, &bvc};
		struct fi_weight *wlg[] = {&gg, &qg, &kwg, &vg, &bqg, &bkg, &bvg};
		for (int i = 0; i < 7; i++)
			P.cpu->ops->weight_free(P.cpu, wl[i]), P.gpu->ops->weight_free(P.gpu, wlg[i]);
		void *bc[] = {ic, pc, sc, xc, xb, q_c, k_c, v_c}, *bgp[] = {ig, pg, sg, xg, q_g};
		for (int i = 0; i < 8; i++)
			freeb(P.cpu, bc[i]);
		for (int i = 0; i < 5; i++)
			freeb(P.gpu, bgp[i]);
		free(x), free(g), free(wq), free(wk), free(wv), free(bq), free(bk), free(bv);
	}
}
END_TEST

START_TEST(test_matmul_add)
{
	/* T, N, K */
	static const int sh[][3] = {{1, 4096, 14336}, {4, 2048, 2048}, {3, 40, 72}, {2, 4096, 4096}};
	for (int k = 0; k < 4; k++) {
		int T = sh[k][0], N = sh[k][1], K = sh[k][2];
		size_t n = (size_t)T * N;
		float *x = rand_bf16(n, 4, &seed), *in = rand_bf16((size_t)T * K, 1, &seed);
		float *w = rand_bf16((size_t)N * K, 1, &seed), *one = malloc(N * sizeof(float));
		struct fi_weight wc, wg, oc, og;
		char name[96];
		for (int i = 0; i < N; i++)
			one[i] = 1.f;
		weights(w, N, K, &wc, &wg);
		weights(one, 1, N, &oc, &og);
		void *xc = put_act(P.cpu, x, n), *xg = put_act(P.gpu, x, n);
		void *ic = put_act(P.cpu, in, (size_t)T * K), *ig = put_act(P.gpu, in, (size_t)T * K);
		void *yc = poisoned(P.cpu, n), *nc = poisoned(P.cpu, n);
		ck_assert(!P.cpu->ops->matmul(P.cpu, yc, ic, &wc, NULL, T));
		ck_assert(!P.cpu->ops->rmsnorm(P.cpu, nc, xc, yc, &oc, T, N, 1e-5f)); /* x += y */
		ck_assert_msg(P.gpu->ops->matmul_add(P.gpu, xg, ig, &wg, T) == FI_OK, "%s",
			      fi_errmsg());
		ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
		snprintf(name, sizeof name, "matmul_add T=%d N=%d K=%d", T, N, K);
		check(name, xg, xc, n, 1.f / 64, 2e-2f * sqrtf(K) / 3, 8e-3f);
		P.cpu->ops->weight_free(P.cpu, &wc), P.gpu->ops->weight_free(P.gpu, &wg);
		P.cpu->ops->weight_free(P.cpu, &oc), P.gpu->ops->weight_free(P.gpu, &og);
		freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.cpu, ic), freeb(P.gpu, ig);
		freeb(P.cpu, yc), freeb(P.cpu, nc);
		free(x), free(in), free(w), free(one);
	}
}
END_TEST

START_TEST(test_norm_glu)
{
	/* T, F, K, act (1: tanh GELU, Gemma's GeGLU; Gemma-2-9B's widths) */
	static const int sh[][4] = {{1, 14336, 4096, 0}, {2, 8192, 2048, 0}, {4, 40, 72, 0},
				    {3, 1000, 256, 0}, {1, 14336, 3584, 1}, {4, 1000, 256, 1}};
	for (int k = 0; k < 6; k++) {
		int T = sh[k][0], F = sh[k][1], K = sh[k][2], act = sh[k][3];
		size_t n = (size_t)T * F;
		float *x = rand_bf16((size_t)T * K, 3, &seed), *g = rand_bf16(K, 1, &seed);
		float *wg = rand_bf16((size_t)F * K, 1, &seed), *wu = rand_bf16((size_t)F * K, 1, &seed);
		struct fi_weight nc_, ng, gc, gg, uc, ug;
		char name[96];
		weights(g, 1, K, &nc_, &ng), weights(wg, F, K, &gc, &gg), weights(wu, F, K, &uc, &ug);
		void *xc = put_act(P.cpu, x, (size_t)T * K), *xg = put_act(P.gpu, x, (size_t)T * K);
		void *xb = poisoned(P.cpu, (size_t)T * K), *ac = poisoned(P.cpu, n);
		void *bc = poisoned(P.cpu, n), *oc = poisoned(P.cpu, n), *og = poisoned(P.gpu, n);
		ck_assert(!P.cpu->ops->rmsnorm(P.cpu, xb, xc, NULL, &nc_, T, K, 1e-5f));
		ck_assert(!P.cpu->ops->matmul(P.cpu, ac, xb, &gc, NULL, T));
		ck_assert(!P.cpu->ops->matmul(P.cpu, bc, xb, &uc, NULL, T));
		if (act)
			ck_assert(!P.cpu->ops->gelu_mul(P.cpu, oc, ac, bc, T, F));
		else
			ck_assert(!P.cpu->ops->silu_mul(P.cpu, oc, ac, bc, T, F));
		ck_assert_msg(P.gpu->ops->norm_glu(P.gpu, og, xg, &ng, 1e-5f, &gg, &ug,
						   act ? FI_GLU_GELU_TANH : FI_GLU_SILU, T) == FI_OK,
			      "%s", fi_errmsg());
		ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
		snprintf(name, sizeof name, "norm_glu T=%d F=%d K=%d %s", T, F, K,
			 act ? "gelu" : "silu");
		check(name, og, oc, n, 1.f / 32, 4e-2f * K / 9, 1.6e-2f);
		P.cpu->ops->weight_free(P.cpu, &nc_), P.gpu->ops->weight_free(P.gpu, &ng);
		P.cpu->ops->weight_free(P.cpu, &gc), P.gpu->ops->weight_free(P.gpu, &gg);
		P.cpu->ops->weight_free(P.cpu, &uc), P.gpu->ops->weight_free(P.gpu, &ug);
		freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.cpu, xb), freeb(P.cpu, ac);
		freeb(P.cpu, bc), freeb(P.cpu, oc), freeb(P.gpu, og);
		free(x), free(g), free(wg), free(wu);
	}
}
END_TEST

/* add_norm against the GPU's own rmsnorm of y then rmsnorm's residual add (the two launches
 * it replaces: equal to the bit), and against the CPU ops within rmsnorm's tolerance. */
START_TEST(test_add_norm)
{
	static const int sh[][2] = {{1, 3584}, {4, 4096}, {2, 68}, {3, 2304}};
	for (int k = 0; k < 8; k++) {
		int T = sh[k % 4][0], D = sh[k % 4][1], nrm = k < 4;
		size_t n = (size_t)T * D;
		float *x = rand_bf16(n, 3, &seed), *y = rand_bf16(n, 2, &seed);
		float *g = rand_bf16(D, 1.5f, &seed);
		struct fi_weight nc_, ng;
		char name[96];
		weights(g, 1, D, &nc_, &ng);
		void *xc = put_act(P.cpu, x, n), *xg = put_act(P.gpu, x, n);
		void *x2 = put_act(P.gpu, x, n), *yg = put_act(P.gpu, y, n);
		void *yc = put_act(P.cpu, y, n), *y2 = put_act(P.gpu, y, n);
		void *scratch = poisoned(P.gpu, n);
		ck_assert(!P.cpu->ops->add_norm(P.cpu, xc, yc, nrm ? &nc_ : NULL, 1e-6f, T, D));
		ck_assert_msg(!P.gpu->ops->add_norm(P.gpu, xg, yg, nrm ? &ng : NULL, 1e-6f, T, D),
			      "%s", fi_errmsg());
		/* the two launches: y normalised in place, then x += y inside an rmsnorm */
		if (nrm)
			ck_assert(!P.gpu->ops->rmsnorm(P.gpu, y2, y2, NULL, &ng, T, D, 1e-6f));
		ck_assert(!P.gpu->ops->rmsnorm(P.gpu, scratch, x2, y2, &ng, T, D, 1e-6f));
		ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
		snprintf(name, sizeof name, "add_norm T=%d D=%d norm=%d", T, D, nrm);
		/* the normalised y is rounded to bf16 before the add, as rmsnorm writes it: half an
		 * ulp of |y| (up to ~6 here, 1.6e-2) where x + y cancels; the CPU adds in f32 */
		check(name, xg, xc, n, 1.f / 64, nrm ? 2e-2f : 1e-2f, 8e-3f);
		{
			float *a = get_act(P.gpu, xg, n), *b = get_act(P.gpu, x2, n);
			ck_assert_msg(!memcmp(a, b, n * sizeof(float)),
				      "%s: differs from rmsnorm + add on the GPU", name);
			printf("%-44s equal to the two launches\n", name);
			free(a), free(b);
		}
		P.cpu->ops->weight_free(P.cpu, &nc_), P.gpu->ops->weight_free(P.gpu, &ng);
		freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.gpu, x2), freeb(P.gpu, yg);
		freeb(P.cpu, yc), freeb(P.gpu, y2), freeb(P.gpu, scratch);
		free(x), free(y), free(g);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("gpu_decode_fused");
	TCase *tc = tcase_create("ops");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_norm_qkv_rope);
	tcase_add_test(tc, test_matmul_add);
	tcase_add_test(tc, test_norm_glu);
	tcase_add_test(tc, test_add_norm);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (!pair_open(&P))
		return 77;
	if (!P.gpu->ops->norm_qkv_rope) {
		printf("FAIL: the CUDA backend has no decode fusions\n");
		return 1;
	}
	int rc = fi_test_run(suite());
	pair_close(&P);
	return rc;
}
