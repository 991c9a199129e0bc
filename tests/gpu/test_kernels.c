/* Every CUDA op against the CPU op of the same name, through the op table: same bf16-exact
 * random inputs to both backends, the GPU output poisoned with NaN first (an element the
 * kernel does not write fails), tolerances per op:
 *   copies (embed, gather_rows, kv_write)        exact
 *   rmsnorm, silu_mul, rope (bf16 out)           |d| <= 1e-2 + 2^-6 |r|, rel <= 8e-3
 *   matmul (bf16 out, f32 accumulate)            |d| <= 2e-2 rms + 2^-6 |r|, rel <= 8e-3
 *   matmul_f32out                                rel <= 4e-3
 *   matmul_multi (each part against matmul)      as matmul
 *   rope_kv_write (against rope, kv_write; with   as rope; the V cache exact
 *     q/k norms against rmsnorm of each head first)
 *   matmul_glu (against matmul x2, silu_mul)     |d| <= 4e-2 K/9 + 2^-5 |r|, rel <= 1.6e-2
 *   attention (bf16 P and out)                   |d| <= 2e-2 + 2^-5 |r|, rel <= 1.5e-2
 * Sizes include odd ones (scalar fallbacks, partial tiles, rows past T) and real ones
 * (Llama-3-8B and 3.2-1B heads and widths). Run on a GPU machine; SKIPPED (exit 77) without. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "gpu_util.h"
#include "../unit/util.h"

static struct pair P;
static uint64_t seed = 0x9e3779b97f4a7c15ull;

#define BOTH(call_cpu, call_gpu)                                                           \
	do {                                                                               \
		ck_assert_msg((call_cpu) == FI_OK, "cpu: %s", fi_errmsg());                 \
		ck_assert_msg((call_gpu) == FI_OK, "gpu: %s", fi_errmsg());                 \
		ck_assert_msg(P.gpu->ops->sync(P.gpu) == FI_OK, "gpu sync: %s", fi_errmsg()); \
	} while (0)

static void check(const char *what, struct fi_backend *g, const void *gd, struct fi_backend *c,
		  const void *cd, size_t n, float rtol, float atol, float max_rel)
{
	float *a = get_act(g, gd, n), *b = get_act(c, cd, n);
	int ok = close_enough(what, a, b, n, rtol, atol, max_rel);
	free(a);
	free(b);
	ck_assert_msg(ok, "%s differs from the CPU op", what);
}

static void *ints(struct fi_backend *be, const int32_t *v, size_t n)
{
	void *d = put_bytes(be, v, n * sizeof(int32_t));
	be->ops->sync(be);
	return d;
}

static void freeb(struct fi_backend *be, void *p) { be->ops->free(be, p); }

START_TEST(test_embed_gather)
{
	static const int shapes[][3] = {{1000, 4096, 7}, {37, 20, 3}, {129, 64, 1}};
	for (int k = 0; k < 3; k++) {
		int V = shapes[k][0], D = shapes[k][1], T = shapes[k][2];
		float *e = rand_bf16((size_t)V * D, 1, &seed);
		int32_t tok[8], idx[3] = {T - 1, 0, T / 2};
		struct fi_weight wc, wg;
		char name[64];
		for (int t = 0; t < T; t++)
			tok[t] = (int32_t)((t * 7919 + 13) % V);
		make_weight(P.cpu, e, V, D, &wc);
		make_weight(P.gpu, e, V, D, &wg);
		void *tc = ints(P.cpu, tok, T), *tg = ints(P.gpu, tok, T);
		void *xc = poisoned(P.cpu, (size_t)T * D), *xg = poisoned(P.gpu, (size_t)T * D);
		BOTH(P.cpu->ops->embed(P.cpu, xc, &wc, tc, T), P.gpu->ops->embed(P.gpu, xg, &wg, tg, T));
		snprintf(name, sizeof name, "embed V=%d D=%d T=%d", V, D, T);
		check(name, P.gpu, xg, P.cpu, xc, (size_t)T * D, 0, 0, 0);
		void *ic = ints(P.cpu, idx, 3), *ig = ints(P.gpu, idx, 3);
		void *oc = poisoned(P.cpu, 3 * (size_t)D), *og = poisoned(P.gpu, 3 * (size_t)D);
		BOTH(P.cpu->ops->gather_rows(P.cpu, oc, xc, ic, 3, D),
		     P.gpu->ops->gather_rows(P.gpu, og, xg, ig, 3, D));
		snprintf(name, sizeof name, "gather_rows n=3 D=%d", D);
		check(name, P.gpu, og, P.cpu, oc, 3 * (size_t)D, 0, 0, 0);
		P.cpu->ops->weight_free(P.cpu, &wc);
		P.gpu->ops->weight_free(P.gpu, &wg);
		freeb(P.cpu, tc), freeb(P.gpu, tg), freeb(P.cpu, xc), freeb(P.gpu, xg);
		freeb(P.cpu, ic), freeb(P.gpu, ig), freeb(P.cpu, oc), freeb(P.gpu, og);
		free(e);
	}
}
END_TEST

START_TEST(test_rmsnorm)
{
	static const int shapes[][2] = {{1, 4096}, {5, 4096}, {33, 2048}, {3, 68}, {2, 14336},
					{4, 40000}, {7, 128}};
	for (int k = 0; k < 7; k++) {
		int T = shapes[k][0], D = shapes[k][1];
		size_t n = (size_t)T * D;
		for (int add = 0; add < 2; add++) {
			float *x = rand_bf16(n, 2, &seed), *a = rand_bf16(n, 2, &seed);
			float *w = rand_bf16(D, 1.5f, &seed);
			struct fi_weight wc, wg;
			char name[64];
			make_weight(P.cpu, w, 1, D, &wc);
			make_weight(P.gpu, w, 1, D, &wg);
			void *xc = put_act(P.cpu, x, n), *xg = put_act(P.gpu, x, n);
			void *ac = put_act(P.cpu, a, n), *ag = put_act(P.gpu, a, n);
			void *oc = poisoned(P.cpu, n), *og = poisoned(P.gpu, n);
			BOTH(P.cpu->ops->rmsnorm(P.cpu, oc, xc, add ? ac : NULL, &wc, T, D, 1e-5f),
			     P.gpu->ops->rmsnorm(P.gpu, og, xg, add ? ag : NULL, &wg, T, D, 1e-5f));
			snprintf(name, sizeof name, "rmsnorm T=%d D=%d add=%d", T, D, add);
			check(name, P.gpu, og, P.cpu, oc, n, 1.f / 64, 1e-2f, 8e-3f);
			snprintf(name, sizeof name, "rmsnorm residual T=%d D=%d add=%d", T, D, add);
			check(name, P.gpu, xg, P.cpu, xc, n, 1.f / 128, 1e-6f, 4e-3f);
			if (!add) { /* in place: out == x */
				BOTH(P.cpu->ops->rmsnorm(P.cpu, xc, xc, NULL, &wc, T, D, 1e-5f),
				     P.gpu->ops->rmsnorm(P.gpu, xg, xg, NULL, &wg, T, D, 1e-5f));
				snprintf(name, sizeof name, "rmsnorm in place T=%d D=%d", T, D);
				check(name, P.gpu, xg, P.cpu, xc, n, 1.f / 64, 1e-2f, 8e-3f);
			}
			P.cpu->ops->weight_free(P.cpu, &wc);
			P.gpu->ops->weight_free(P.gpu, &wg);
			freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.cpu, ac), freeb(P.gpu, ag);
			freeb(P.cpu, oc), freeb(P.gpu, og);
			free(x), free(a), free(w);
		}
	}
}
END_TEST

START_TEST(test_matmul)
{
	/* T, N, K, bias */
	/* with the serving steps' small batches: 8 to 128 rows, ragged T and N, bias, a
	 * 14336-column K over few rows and a 32000-row LM head */
	static const int shapes[][4] = {
		{1, 4096, 4096, 0}, {7, 1024, 4096, 1},   {64, 1536, 512, 0},   {5, 130, 72, 1},
		{33, 513, 256, 0},  {1, 14336, 4096, 0},  {300, 256, 1024, 1},  {2, 1000, 4104, 1},
		{3, 4096, 1024, 0}, {4, 128256, 256, 0},  {1, 77, 8, 1},        {8, 4096, 4096, 0},
		{16, 1000, 1024, 1}, {40, 4096, 14336, 0}, {128, 6144, 4096, 0}, {97, 130, 128, 1},
		{24, 32000, 2048, 0}, {129, 512, 512, 0},  {61, 4096, 4096, 1},  {12, 17, 64, 0}};
	for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
		int T = shapes[k][0], N = shapes[k][1], K = shapes[k][2], hb = shapes[k][3];
		float *x = rand_bf16((size_t)T * K, 1, &seed), *w = rand_bf16((size_t)N * K, 1, &seed);
		float *b = rand_bf16(N, 4, &seed);
		struct fi_weight wc, wg, bc, bg;
		char name[64];
		make_weight(P.cpu, w, N, K, &wc);
		make_weight(P.gpu, w, N, K, &wg);
		make_weight(P.cpu, b, 1, N, &bc);
		make_weight(P.gpu, b, 1, N, &bg);
		void *xc = put_act(P.cpu, x, (size_t)T * K), *xg = put_act(P.gpu, x, (size_t)T * K);
		void *oc = poisoned(P.cpu, (size_t)T * N), *og = poisoned(P.gpu, (size_t)T * N);
		BOTH(P.cpu->ops->matmul(P.cpu, oc, xc, &wc, hb ? &bc : NULL, T),
		     P.gpu->ops->matmul(P.gpu, og, xg, &wg, hb ? &bg : NULL, T));
		snprintf(name, sizeof name, "matmul T=%d N=%d K=%d bias=%d", T, N, K, hb);
		/* outputs ~ sqrt(K)/3; absolute slack scaled to that */
		check(name, P.gpu, og, P.cpu, oc, (size_t)T * N, 1.f / 64, 2e-2f * sqrtf(K) / 3,
		      8e-3f);
		if (!hb) {
			float *fg = NULL, *fc = NULL, *hg, *hc;
			size_t n = (size_t)T * N;
			ck_assert(!P.gpu->ops->alloc(P.gpu, n * 4, (void **)&fg));
			ck_assert(!P.cpu->ops->alloc(P.cpu, n * 4, (void **)&fc));
			BOTH(P.cpu->ops->matmul_f32out(P.cpu, fc, xc, &wc, T),
			     P.gpu->ops->matmul_f32out(P.gpu, fg, xg, &wg, T));
			hg = malloc(n * 4);
			hc = malloc(n * 4);
			P.gpu->ops->download(P.gpu, hg, fg, n * 4);
			P.cpu->ops->download(P.cpu, hc, fc, n * 4);
			snprintf(name, sizeof name, "matmul_f32out T=%d N=%d K=%d", T, N, K);
			ck_assert(close_enough(name, hg, hc, n, 1e-3f, 1e-3f * sqrtf(K), 4e-3f));
			free(hg), free(hc), freeb(P.gpu, fg), freeb(P.cpu, fc);
		}
		P.cpu->ops->weight_free(P.cpu, &wc), P.gpu->ops->weight_free(P.gpu, &wg);
		P.cpu->ops->weight_free(P.cpu, &bc), P.gpu->ops->weight_free(P.gpu, &bg);
		freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.cpu, oc), freeb(P.gpu, og);
		free(x), free(w), free(b);
	}
}
END_TEST

/* matmul_multi (q/k/v, gate/up in one pass) against the CPU matmul of each part: weights
 * made by weight_cat (the fused GEMM + split for 5..256 rows, one gemv launch for <= 4) and
 * separate ones (the fallback), with and without bias (bias: one matmul each above 4 rows). */
START_TEST(test_matmul_multi)
{
	/* T, K, n, N[0..2], bias */
	static const int shapes[][7] = {
		{1, 4096, 3, 4096, 1024, 1024, 0}, {64, 4096, 3, 4096, 1024, 1024, 0},
		{4, 2048, 2, 8192, 8192, 0, 0},    {33, 2048, 2, 8192, 8192, 0, 0},
		{3, 72, 3, 130, 24, 24, 1},        {7, 256, 3, 256, 64, 64, 1},
		{300, 512, 2, 640, 640, 0, 0},     {5, 136, 3, 40, 13, 13, 0},
		{2, 1024, 3, 2048, 512, 512, 1},
	};
	for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
		int T = shapes[k][0], K = shapes[k][1], n = shapes[k][2], hb = shapes[k][6];
		float *x = rand_bf16((size_t)T * K, 1, &seed), *w[3], *bv[3];
		uint16_t *hw[3];
		struct fi_tensor t[3];
		struct fi_weight wc[3], bc[3], bg[3], sep[3], cat, parts[3];
		const struct fi_weight *pw[3], *ps[3], *pb[3];
		void *oc[3], *og[3], *os[3];
		char name[96];
		void *xc = put_act(P.cpu, x, (size_t)T * K), *xg = put_act(P.gpu, x, (size_t)T * K);
		for (int i = 0; i < n; i++) {
			int N = shapes[k][3 + i];
			w[i] = rand_bf16((size_t)N * K, 1, &seed);
			bv[i] = rand_bf16(N, 4, &seed);
			hw[i] = malloc((size_t)N * K * 2);
			fi_convert(hw[i], FI_DT_BF16, w[i], FI_DT_F32, (size_t)N * K);
			t[i] = (struct fi_tensor){.name = "w", .dtype = FI_DT_BF16, .ndim = 2,
						  .shape = {N, K}, .data = hw[i],
						  .nbytes = (size_t)N * K * 2};
			make_weight(P.cpu, w[i], N, K, &wc[i]);
			make_weight(P.gpu, w[i], N, K, &sep[i]);
			make_weight(P.cpu, bv[i], 1, N, &bc[i]);
			make_weight(P.gpu, bv[i], 1, N, &bg[i]);
			oc[i] = poisoned(P.cpu, (size_t)T * N);
			og[i] = poisoned(P.gpu, (size_t)T * N);
			os[i] = poisoned(P.gpu, (size_t)T * N);
			ck_assert(P.cpu->ops->matmul(P.cpu, oc[i], xc, &wc[i], hb ? &bc[i] : NULL, T) ==
				  FI_OK);
		}
		const struct fi_tensor *tp[3] = {&t[0], &t[1], &t[2]};
		ck_assert_msg(P.gpu->ops->weight_cat(P.gpu, tp, n, &cat, parts) == FI_OK, "%s",
			      fi_errmsg());
		for (int i = 0; i < n; i++)
			pw[i] = &parts[i], ps[i] = &sep[i], pb[i] = &bg[i];
		ck_assert_msg(P.gpu->ops->matmul_multi(P.gpu, n, og, xg, pw, hb ? pb : NULL, T) == FI_OK,
			      "%s", fi_errmsg());
		ck_assert_msg(P.gpu->ops->matmul_multi(P.gpu, n, os, xg, ps, hb ? pb : NULL, T) == FI_OK,
			      "%s", fi_errmsg());
		ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
		for (int i = 0; i < n; i++) {
			int N = shapes[k][3 + i];
			snprintf(name, sizeof name, "matmul_multi cat T=%d K=%d part %d N=%d bias=%d", T,
				 K, i, N, hb);
			check(name, P.gpu, og[i], P.cpu, oc[i], (size_t)T * N, 1.f / 64,
			      2e-2f * sqrtf(K) / 3, 8e-3f);
			snprintf(name, sizeof name, "matmul_multi sep T=%d K=%d part %d N=%d", T, K, i, N);
			check(name, P.gpu, os[i], P.cpu, oc[i], (size_t)T * N, 1.f / 64,
			      2e-2f * sqrtf(K) / 3, 8e-3f);
		}
		P.gpu->ops->weight_free(P.gpu, &cat);
		for (int i = 0; i < n; i++) {
			P.cpu->ops->weight_free(P.cpu, &wc[i]), P.gpu->ops->weight_free(P.gpu, &sep[i]);
			P.cpu->ops->weight_free(P.cpu, &bc[i]), P.gpu->ops->weight_free(P.gpu, &bg[i]);
			freeb(P.cpu, oc[i]), freeb(P.gpu, og[i]), freeb(P.gpu, os[i]);
			free(w[i]), free(bv[i]), free(hw[i]);
		}
		freeb(P.cpu, xc), freeb(P.gpu, xg);
		free(x);
	}
}
END_TEST

START_TEST(test_rope_silu)
{
	/* heads across several blocks (rope.cu takes 128 / (hd/4) heads a block), hd 96, and
	 * hd/2 odd (the 2-byte path) */
	static const int shapes[][4] = {{9, 32, 8, 128}, {3, 8, 2, 64}, {5, 4, 4, 16}, {1, 32, 8, 128},
					{3, 32, 8, 96}, {4, 6, 2, 6}, {2, 40, 8, 16}};
	for (int k = 0; k < 7; k++) {
		int T = shapes[k][0], Hq = shapes[k][1], Hk = shapes[k][2], hd = shapes[k][3];
		size_t nq = (size_t)T * Hq * hd, nk = (size_t)T * Hk * hd;
		float *q = rand_bf16(nq, 2, &seed), *kk = rand_bf16(nk, 2, &seed);
		float inv[128];
		int32_t pos[16];
		char name[64];
		for (int i = 0; i < hd / 2; i++)
			inv[i] = (float)pow(500000.0, -2.0 * i / hd);
		for (int t = 0; t < T; t++)
			pos[t] = (t * 2654435761u) % 9000;
		void *ic = put_bytes(P.cpu, inv, hd * 2), *ig = put_bytes(P.gpu, inv, hd * 2);
		void *pc = ints(P.cpu, pos, T), *pg = ints(P.gpu, pos, T);
		struct fi_rope rc = {.head_dim = hd, .inv_freq_d = ic};
		struct fi_rope rg = {.head_dim = hd, .inv_freq_d = ig};
		void *qc = put_act(P.cpu, q, nq), *qg = put_act(P.gpu, q, nq);
		void *kc = put_act(P.cpu, kk, nk), *kg = put_act(P.gpu, kk, nk);
		BOTH(P.cpu->ops->rope(P.cpu, qc, kc, pc, &rc, T, Hq, Hk),
		     P.gpu->ops->rope(P.gpu, qg, kg, pg, &rg, T, Hq, Hk));
		snprintf(name, sizeof name, "rope q T=%d Hq=%d hd=%d", T, Hq, hd);
		check(name, P.gpu, qg, P.cpu, qc, nq, 1.f / 64, 1e-2f, 8e-3f);
		snprintf(name, sizeof name, "rope k T=%d Hk=%d hd=%d", T, Hk, hd);
		check(name, P.gpu, kg, P.cpu, kc, nk, 1.f / 64, 1e-2f, 8e-3f);
		freeb(P.cpu, ic), freeb(P.gpu, ig), freeb(P.cpu, pc), freeb(P.gpu, pg);
		freeb(P.cpu, qc), freeb(P.gpu, qg), freeb(P.cpu, kc), freeb(P.gpu, kg);
		free(q), free(kk);
	}
	static const int sz[][2] = {{1, 14336}, {3, 37}, {64, 8192}};
	for (int k = 0; k < 3; k++) {
		int T = sz[k][0], F = sz[k][1];
		size_t n = (size_t)T * F;
		float *g = rand_bf16(n, 6, &seed), *u = rand_bf16(n, 3, &seed);
		char name[64];
		void *gc = put_act(P.cpu, g, n), *gg = put_act(P.gpu, g, n);
		void *uc = put_act(P.cpu, u, n), *ug = put_act(P.gpu, u, n);
		void *oc = poisoned(P.cpu, n), *og = poisoned(P.gpu, n);
		BOTH(P.cpu->ops->silu_mul(P.cpu, oc, gc, uc, T, F),
		     P.gpu->ops->silu_mul(P.gpu, og, gg, ug, T, F));
		snprintf(name, sizeof name, "silu_mul T=%d F=%d", T, F);
		check(name, P.gpu, og, P.cpu, oc, n, 1.f / 64, 1e-2f, 8e-3f);
		freeb(P.cpu, gc), freeb(P.gpu, gg), freeb(P.cpu, uc), freeb(P.gpu, ug);
		freeb(P.cpu, oc), freeb(P.gpu, og);
		free(g), free(u);
	}
}
END_TEST

/* rope_kv_write against the CPU's rope then kv_write (q, k in place; the cache), a padding
 * slot (-1) included; matmul_glu against the CPU's two matmuls then silu_mul. */
START_TEST(test_fused_ops)
{
	static const int shapes[][4] = {{1, 32, 8, 128}, {5, 32, 8, 64}, {3, 4, 2, 16},
					{4, 20, 5, 128}, {6, 6, 2, 6}, {8, 12, 4, 96}};
	for (int k = 0; k < 12; k++) { /* each shape without, then with q/k norms */
		int T = shapes[k % 6][0], Hq = shapes[k % 6][1], Hk = shapes[k % 6][2];
		int hd = shapes[k % 6][3], nrm = k >= 6;
		size_t nq = (size_t)T * Hq * hd, nk = (size_t)T * Hk * hd;
		struct fi_kv_cache kc = {.n_layers = 2, .n_blocks = 4, .block_size = 4, .n_kv_heads = Hk,
				    .head_dim = hd}, kg = kc;
		size_t ncache = (size_t)4 * 4 * Hk * hd;
		float *q = rand_bf16(nq, 2, &seed), *kk = rand_bf16(nk, 2, &seed);
		float *v = rand_bf16(nk, 2, &seed), *zero = calloc(ncache, sizeof(float));
		float inv[128];
		int32_t pos[8], slot[8];
		char name[64];
		for (int i = 0; i < hd / 2; i++)
			inv[i] = (float)pow(500000.0, -2.0 * i / hd);
		for (int t = 0; t < T; t++) {
			pos[t] = (t * 2654435761u) % 9000;
			slot[t] = t == 1 ? -1 : (t * 5 + 3) % 16;
		}
		ck_assert(!P.cpu->ops->kv_alloc(P.cpu, &kc) && !P.gpu->ops->kv_alloc(P.gpu, &kg));
		for (int l = 0; l < 2; l++) {
			void *zc = put_act(P.cpu, zero, ncache), *zg = put_act(P.gpu, zero, ncache);
			size_t bytes = ncache * fi_dtype_size(P.gpu->act);
			void *hz = malloc(bytes);
			P.gpu->ops->download(P.gpu, hz, zg, bytes);
			P.gpu->ops->upload(P.gpu, kg.k_d[l], hz, bytes);
			P.gpu->ops->upload(P.gpu, kg.v_d[l], hz, bytes);
			memset(kc.k_d[l], 0, ncache * sizeof(float));
			memset(kc.v_d[l], 0, ncache * sizeof(float));
			free(hz), freeb(P.cpu, zc), freeb(P.gpu, zg);
		}
		void *ic = put_bytes(P.cpu, inv, hd * 2), *ig = put_bytes(P.gpu, inv, hd * 2);
		void *pc = ints(P.cpu, pos, T), *pg = ints(P.gpu, pos, T);
		void *sc = ints(P.cpu, slot, T), *sg = ints(P.gpu, slot, T);
		struct fi_rope rc = {.head_dim = hd, .inv_freq_d = ic};
		struct fi_rope rg = {.head_dim = hd, .inv_freq_d = ig};
		struct fi_attn_batch bg = {.n_tokens = T, .tok_pos_d = pg, .slot_d = sg};
		void *qc = put_act(P.cpu, q, nq), *qg = put_act(P.gpu, q, nq);
		void *kc_ = put_act(P.cpu, kk, nk), *kg_ = put_act(P.gpu, kk, nk);
		void *vc = put_act(P.cpu, v, nk), *vg = put_act(P.gpu, v, nk);
		float *wq = rand_bf16((size_t)hd, 1.5f, &seed), *wk = rand_bf16((size_t)hd, 1.5f, &seed);
		struct fi_weight nqc, nqg, nkc, nkg;
		make_weight(P.cpu, wq, 1, hd, &nqc), make_weight(P.gpu, wq, 1, hd, &nqg);
		make_weight(P.cpu, wk, 1, hd, &nkc), make_weight(P.gpu, wk, 1, hd, &nkg);
		if (nrm) { /* the reference: rmsnorm over each head's hd values, then rope */
			ck_assert(P.cpu->ops->rmsnorm(P.cpu, qc, qc, NULL, &nqc, T * Hq, hd, 1e-6f) ==
				  FI_OK);
			ck_assert(P.cpu->ops->rmsnorm(P.cpu, kc_, kc_, NULL, &nkc, T * Hk, hd, 1e-6f) ==
				  FI_OK);
			rg.q_norm = &nqg, rg.k_norm = &nkg, rg.norm_eps = 1e-6f;
		}
		ck_assert(P.cpu->ops->rope(P.cpu, qc, kc_, pc, &rc, T, Hq, Hk) == FI_OK);
		/* the CPU op refuses a negative slot: its reference writes the others one by one */
		for (int t = 0; t < T; t++) {
			struct fi_attn_batch b1 = {.n_tokens = 1, .slot_d = (int32_t *)sc + t};
			size_t row = (size_t)Hk * hd;
			if (slot[t] >= 0)
				ck_assert(P.cpu->ops->kv_write(P.cpu, &kc, 1, (float *)kc_ + t * row,
							       (float *)vc + t * row, &b1) == FI_OK);
		}
		ck_assert_msg(P.gpu->ops->rope_kv_write(P.gpu, qg, kg_, vg, &rg, &kg, 1, Hq, &bg) ==
			      FI_OK, "%s", fi_errmsg());
		ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
		snprintf(name, sizeof name, "rope_kv_write q T=%d Hq=%d hd=%d norm=%d", T, Hq, hd, nrm);
		check(name, P.gpu, qg, P.cpu, qc, nq, 1.f / 64, 1e-2f, 8e-3f);
		snprintf(name, sizeof name, "rope_kv_write k T=%d Hk=%d hd=%d norm=%d", T, Hk, hd, nrm);
		check(name, P.gpu, kg_, P.cpu, kc_, nk, 1.f / 64, 1e-2f, 8e-3f);
		snprintf(name, sizeof name, "rope_kv_write K cache T=%d norm=%d", T, nrm);
		check(name, P.gpu, kg.k_d[1], P.cpu, kc.k_d[1], ncache, 1.f / 64, 1e-2f, 8e-3f);
		snprintf(name, sizeof name, "rope_kv_write V cache T=%d", T);
		check(name, P.gpu, kg.v_d[1], P.cpu, kc.v_d[1], ncache, 0, 0, 0);
		P.cpu->ops->kv_free(P.cpu, &kc), P.gpu->ops->kv_free(P.gpu, &kg);
		P.cpu->ops->weight_free(P.cpu, &nqc), P.gpu->ops->weight_free(P.gpu, &nqg);
		P.cpu->ops->weight_free(P.cpu, &nkc), P.gpu->ops->weight_free(P.gpu, &nkg);
		free(wq), free(wk);
		freeb(P.cpu, ic), freeb(P.gpu, ig), freeb(P.cpu, pc), freeb(P.gpu, pg);
		freeb(P.cpu, sc), freeb(P.gpu, sg), freeb(P.cpu, qc), freeb(P.gpu, qg);
		freeb(P.cpu, kc_), freeb(P.gpu, kg_), freeb(P.cpu, vc), freeb(P.gpu, vg);
		free(q), free(kk), free(v), free(zero);
	}
	/* T, F, K; each with gate and up apart, then joined by weight_cat (above 4 rows: one
	 * GEMM whose two halves silu_mul reads in place) */
	static const int gl[][3] = {{1, 14336, 4096}, {3, 8192, 2048}, {4, 40, 72}, {9, 1000, 256},
				    {64, 14336, 4096}, {300, 1000, 256}, {5, 1001, 128}};
	for (size_t k = 0; k < sizeof gl / sizeof gl[0]; k++) {
		int T = gl[k][0], F = gl[k][1], K = gl[k][2];
		size_t n = (size_t)T * F;
		float *x = rand_bf16((size_t)T * K, 1, &seed);
		float *wg = rand_bf16((size_t)F * K, 1, &seed), *wu = rand_bf16((size_t)F * K, 1, &seed);
		struct fi_weight gc, uc, gg, ug;
		char name[64];
		make_weight(P.cpu, wg, F, K, &gc), make_weight(P.gpu, wg, F, K, &gg);
		make_weight(P.cpu, wu, F, K, &uc), make_weight(P.gpu, wu, F, K, &ug);
		void *xc = put_act(P.cpu, x, (size_t)T * K), *xg = put_act(P.gpu, x, (size_t)T * K);
		void *ac = poisoned(P.cpu, n), *bc = poisoned(P.cpu, n), *oc = poisoned(P.cpu, n);
		void *ag = poisoned(P.gpu, n), *bg = poisoned(P.gpu, n), *og = poisoned(P.gpu, n);
		ck_assert(P.cpu->ops->matmul(P.cpu, ac, xc, &gc, NULL, T) == FI_OK);
		ck_assert(P.cpu->ops->matmul(P.cpu, bc, xc, &uc, NULL, T) == FI_OK);
		ck_assert(P.cpu->ops->silu_mul(P.cpu, oc, ac, bc, T, F) == FI_OK);
		ck_assert_msg(P.gpu->ops->matmul_glu(P.gpu, og, ag, bg, xg, &gg, &ug, T) == FI_OK, "%s",
			      fi_errmsg());
		ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
		snprintf(name, sizeof name, "matmul_glu T=%d F=%d K=%d", T, F, K);
		/* silu(g)*u of outputs ~ sqrt(K)/3: slack as matmul's, squared scale */
		check(name, P.gpu, og, P.cpu, oc, n, 1.f / 32, 4e-2f * K / 9, 1.6e-2f);
		{
			uint16_t *hg = malloc((size_t)F * K * 2), *hu = malloc((size_t)F * K * 2);
			struct fi_tensor t2[2];
			struct fi_weight cat, parts[2];
			fi_convert(hg, FI_DT_BF16, wg, FI_DT_F32, (size_t)F * K);
			fi_convert(hu, FI_DT_BF16, wu, FI_DT_F32, (size_t)F * K);
			for (int i = 0; i < 2; i++)
				t2[i] = (struct fi_tensor){.name = "w", .dtype = FI_DT_BF16, .ndim = 2,
							   .shape = {F, K}, .data = i ? hu : hg,
							   .nbytes = (size_t)F * K * 2};
			const struct fi_tensor *tp[2] = {&t2[0], &t2[1]};
			ck_assert_msg(P.gpu->ops->weight_cat(P.gpu, tp, 2, &cat, parts) == FI_OK, "%s",
				      fi_errmsg());
			void *o2 = poisoned(P.gpu, n);
			ck_assert_msg(P.gpu->ops->matmul_glu(P.gpu, o2, ag, bg, xg, &parts[0],
							     &parts[1], T) == FI_OK,
				      "%s", fi_errmsg());
			ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
			snprintf(name, sizeof name, "matmul_glu cat T=%d F=%d K=%d", T, F, K);
			check(name, P.gpu, o2, P.cpu, oc, n, 1.f / 32, 4e-2f * K / 9, 1.6e-2f);
			P.gpu->ops->weight_free(P.gpu, &cat);
			freeb(P.gpu, o2);
			free(hg), free(hu);
		}
		P.cpu->ops->weight_free(P.cpu, &gc), P.gpu->ops->weight_free(P.gpu, &gg);
		P.cpu->ops->weight_free(P.cpu, &uc), P.gpu->ops->weight_free(P.gpu, &ug);
		freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.cpu, ac), freeb(P.cpu, bc);
		freeb(P.cpu, oc), freeb(P.gpu, ag), freeb(P.gpu, bg), freeb(P.gpu, og);
		free(x), free(wg), free(wu);
	}
}
END_TEST

START_TEST(test_argmax)
{
	static const int sz[][2] = {{4, 128256}, {3, 1001}, {64, 32000}, {1, 5}};
	for (int k = 0; k < 4; k++) {
		int n = sz[k][0], V = sz[k][1];
		float *l = rand_bf16((size_t)n * V, 10, &seed);
		int32_t tc[64], tg[64];
		/* a tie: the lower index must win */
		l[(size_t)(n - 1) * V + V / 3] = 11;
		l[(size_t)(n - 1) * V + V / 2] = 11;
		void *lc = put_bytes(P.cpu, l, (size_t)n * V * 4), *lg = put_bytes(P.gpu, l, (size_t)n * V * 4);
		int32_t *dc = NULL, *dg = NULL;
		ck_assert(!P.cpu->ops->alloc(P.cpu, 4 * n, (void **)&dc));
		ck_assert(!P.gpu->ops->alloc(P.gpu, 4 * n, (void **)&dg));
		BOTH(P.cpu->ops->argmax(P.cpu, dc, lc, n, V), P.gpu->ops->argmax(P.gpu, dg, lg, n, V));
		P.cpu->ops->download(P.cpu, tc, dc, 4 * n);
		P.gpu->ops->download(P.gpu, tg, dg, 4 * n);
		for (int i = 0; i < n; i++)
			ck_assert_msg(tc[i] == tg[i], "argmax row %d of %dx%d: gpu %d cpu %d", i, n, V,
				      tg[i], tc[i]);
		printf("%-44s ok\n", "argmax");
		freeb(P.cpu, lc), freeb(P.gpu, lg), freeb(P.cpu, dc), freeb(P.gpu, dg);
		free(l);
	}
}
END_TEST

/* sample against lib/backend/sample.c (no penalty, no log-probabilities; tests/gpu/test_serve.c
 * has those against the CPU op): per row a CPU sampler (own seed) gives the reference token
 * with fi_sampler_next; the device gets the same parameters and the u that draw used
 * (fi_sampler_row before it). Logits: f32 uniform (no ties) or bf16-rounded (many exact
 * ties, so the id order inside equal logits is exercised), spreads from 2 to 150 (the
 * scale of a random-weight model's logits), and a
 * peaked row like a language model's. Tolerance: the same token on every row, except at
 * most 1 row in 500 where u or a top-p/min-p threshold meets a probability boundary to
 * within the rounding of a parallel sum (each such row is printed); the survivor count
 * (whether the draw was used) must agree wherever the token does. A row the kernel hands
 * back (-1: its window is over capacity, the host samples it) must be a wide one (more than
 * 64 survivors on the CPU); they are counted. */
START_TEST(test_sample)
{
	static const int vs[] = {5, 1001, 32000, 50257, 128256};
	static const struct {
		float temp, top_p, min_p;
		int top_k;
	} ps[] = {
		{0.0f, 1.0f, 0.0f, 0},   {0.8f, 0.9f, 0.0f, 0},  {1.0f, 1.0f, 0.0f, 40},
		{0.7f, 0.95f, 0.05f, 50}, {1.3f, 1.0f, 0.1f, 0}, {0.6f, 0.5f, 0.0f, 0},
		{1.0f, 0.99f, 0.0f, 1},  {1.0f, 1.0f, 0.0f, 0},  {0.5f, 1.0f, 0.0f, 0},
		{1.0f, 0.0f, 0.0f, 0},   {2.0f, 0.8f, 0.2f, 1000},
	};
	const int n = 24, np = (int)(sizeof ps / sizeof ps[0]);
	long rows = 0, bad = 0, back = 0;
	for (int vi = 0; vi < 5; vi++) {
		int V = vs[vi];
		float *l = malloc(sizeof(float) * (size_t)n * V);
		struct fi_sampler *sm = calloc((size_t)n, sizeof *sm);
		struct fi_sample_row rw[24];
		int32_t ref[24], out[48];
		for (int pi = 0; pi < np; pi++) {
			for (int r = 0; r < n; r++) {
				float a = (float[]){2, 6, 24, 150}[r % 4];
				float *x = l + (size_t)r * V;
				for (int i = 0; i < V; i++) {
					float u = (float)((next(&seed) >> 11) * 0x1.0p-53) * 2.f - 1.f;
					x[i] = u * a;
					if (r % 3 == 1)
						x[i] = fi_bf16_to_f32(fi_f32_to_bf16(x[i]));
				}
				if (r % 6 == 5) /* peaked: a few likely tokens over a flat tail */
					for (int j = 0; j < 8; j++)
						x[next(&seed) % V] = 18.f + (float)j;
				struct fi_sample_params sp;
				fi_sample_defaults(&sp);
				sp.temperature = ps[pi].temp;
				sp.top_p = ps[pi].top_p;
				sp.min_p = ps[pi].min_p;
				sp.top_k = ps[pi].top_k;
				sp.seed = next(&seed);
				ck_assert(!fi_sampler_init(&sm[r], &sp, V));
				ck_assert(fi_sampler_rowable(&sm[r]));
				fi_sampler_row(&sm[r], &rw[r]);
				ref[r] = fi_sampler_next(&sm[r], x, NULL, 0);
			}
			void *lg = put_bytes(P.gpu, l, sizeof(float) * (size_t)n * V);
			void *rg = put_bytes(P.gpu, rw, sizeof rw);
			int32_t *og = NULL;
			ck_assert(!P.gpu->ops->alloc(P.gpu, sizeof out, (void **)&og));
			struct fi_sample_args sa = {.n = n, .V = V, .logits_d = lg, .rows_d = rg,
						    .out_d = og};
			ck_assert_msg(P.gpu->ops->sample(P.gpu, &sa) == FI_OK, "%s", fi_errmsg());
			ck_assert(P.gpu->ops->download(P.gpu, out, og, sizeof out) == FI_OK);
			for (int r = 0; r < n; r++) {
				rows++;
				/* the CPU's survivor count, from the same processors */
				struct fi_sampler t;
				int32_t *idb = malloc(sizeof(int32_t) * (size_t)V);
				double *pb = malloc(sizeof(double) * (size_t)V);
				ck_assert(!fi_sampler_init(&t, &sm[r].p, V));
				int kept = fi_sampler_dist(&t, l + (size_t)r * V, NULL, 0, idb, pb);
				fi_sampler_free(&t);
				if (out[r] == -1) {
					back++;
					ck_assert_msg(kept > 64, "sample: V %d set %d row %d handed back "
						      "with %d survivors", V, pi, r, kept);
					free(idb);
					free(pb);
					continue;
				}
				if (out[r] != ref[r]) {
					bad++;
					printf("sample: V %d set %d row %d: gpu %d (kept %d) cpu %d (kept %d)\n",
					       V, pi, r, out[r], out[n + r], ref[r], kept);
				} else {
					ck_assert_msg(out[n + r] == kept ||
							      (out[n + r] > 1 && kept > 1 && ps[pi].top_p >= 1 &&
							       ps[pi].min_p <= 0 && ps[pi].top_k <= 0),
						      "sample: V %d set %d row %d: kept %d, cpu %d", V, pi, r,
						      out[n + r], kept);
				}
				free(idb);
				free(pb);
			}
			for (int r = 0; r < n; r++)
				fi_sampler_free(&sm[r]);
			freeb(P.gpu, lg), freeb(P.gpu, rg), freeb(P.gpu, og);
		}
		free(l);
		free(sm);
	}
	printf("sample: %ld rows, %ld differ, %ld handed back\n", rows, bad, back);
	ck_assert_msg(bad * 500 <= rows, "sample: %ld of %ld rows differ from lib/backend/sample.c", bad,
		      rows);
	printf("%-44s ok\n", "sample");
}
END_TEST

/* download of a large buffer takes the pinned, chunked path: every byte must arrive */
START_TEST(test_download_big)
{
	size_t n = (size_t)37 << 20; /* not a multiple of the chunk */
	unsigned char *h = malloc(n), *back = malloc(n);
	for (size_t i = 0; i < n; i++)
		h[i] = (unsigned char)(next(&seed) >> 56);
	void *d = put_bytes(P.gpu, h, n);
	memset(back, 0xa5, n);
	ck_assert_msg(P.gpu->ops->download(P.gpu, back, d, n) == FI_OK, "%s", fi_errmsg());
	ck_assert_msg(!memcmp(h, back, n), "large download differs");
	printf("%-44s ok\n", "download 37 MiB");
	freeb(P.gpu, d);
	free(h), free(back);
}
END_TEST

#include "attn_cases.h"

static Suite *suite(void)
{
	Suite *s = suite_create("gpu_kernels");
	TCase *tc = tcase_create("ops");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_embed_gather);
	tcase_add_test(tc, test_rmsnorm);
	tcase_add_test(tc, test_matmul);
	tcase_add_test(tc, test_matmul_multi);
	tcase_add_test(tc, test_rope_silu);
	tcase_add_test(tc, test_argmax);
	tcase_add_test(tc, test_sample);
	tcase_add_test(tc, test_fused_ops);
	tcase_add_test(tc, test_attention);
	tcase_add_test(tc, test_graph);
	tcase_add_test(tc, test_download_big);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (!pair_open(&P))
		return 77;
	printf("cpu: %s; gpu: %s\n", P.cpu->device, P.gpu->device);
	int rc = fi_test_run(suite());
	pair_close(&P);
	return rc;
}
