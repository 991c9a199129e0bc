/* The CUDA backend's decode fusions (norm_qkv_rope, matmul_add, norm_glu) over quantized
 * weights (kernels/gemv_qfused.cuh) against the CPU ops they stand for, as
 * test_decode_fused.c does for bf16: every type the fused kernels take (GGML Q8_0, Q4_0,
 * Q4_K, Q5_K, Q6_K; FP8 per row and per 128x128 block, weight-only and W8A8; INT4 with groups
 * of 32 and 128), 1 to 4 tokens, a padding slot, q/k/v of different types (a Q4_K_M file's
 * Q6_K v), an odd row count for the residual add, and the Llama-3-8B widths; act-order INT4
 * refused with its reason (tests/gpu/qweights.h's kinds).
 * The CPU reference rounds the normalised input to bf16, as the GPU's W8A8 path does before
 * quantizing it (kernels/act_quant.cu); tolerances are test_quant_kernels': outputs of about
 * unit scale, |d| <= 2e-2 + 2^-6 |r|, rel <= 8e-3. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/quant.h"
#include "gpu_util.h"
#include "qweights.h"
#include "../unit/util.h"

static struct pair P;
static uint64_t seed = 0x9e3779b97f4a7c15ull;


static void freeb(struct fi_backend *be, void *p) { be->ops->free(be, p); }

/* One random weight of type q on both backends. */
static void qweights(const struct qt *q, int64_t N, int64_t K, struct fi_weight *c,
		     struct fi_weight *g)
{
	uint64_t nb;
	uint8_t *data = make_q(q, N, K, &nb, &seed);
	struct fi_tensor t = {.name = "w", .dtype = q->dt, .ndim = 2, .shape = {N, K},
			      .data = data, .nbytes = nb};
	ck_assert_msg(!P.cpu->ops->weight(P.cpu, &t, c) && !P.gpu->ops->weight(P.gpu, &t, g) &&
		      !P.gpu->ops->sync(P.gpu), "%s", fi_errmsg());
	free(data);
}

static void bweights(const float *w, int64_t rows, int64_t cols, struct fi_weight *c,
		     struct fi_weight *g)
{
	make_weight(P.cpu, w, rows, cols, c);
	make_weight(P.gpu, w, rows, cols, g);
}

static void wfree(struct fi_weight *c, struct fi_weight *g)
{
	P.cpu->ops->weight_free(P.cpu, c);
	P.gpu->ops->weight_free(P.gpu, g);
}

static void check(const char *what, const void *gd, const void *cd, size_t n)
{
	float *a = get_act(P.gpu, gd, n), *b = get_act(P.cpu, cd, n);
	int ok = close_enough(what, a, b, n, 1.f / 64, 2e-2f, 8e-3f);
	free(a);
	free(b);
	ck_assert_msg(ok, "%s differs from the CPU ops", what);
}

/* The CPU reference's normalised input: rmsnorm, then rounded to bf16 in place. */
static void *cpu_norm(void *xc, struct fi_weight *gc, int T, int D)
{
	size_t n = (size_t)T * D;
	void *xb = poisoned(P.cpu, n);
	ck_assert(!P.cpu->ops->rmsnorm(P.cpu, xb, xc, NULL, gc, T, D, 1e-5f));
	float *h = get_act(P.cpu, xb, n);
	for (size_t i = 0; i < n; i++)
		h[i] = fi_bf16_to_f32(fi_f32_to_bf16(h[i]));
	P.cpu->ops->upload(P.cpu, xb, h, n * sizeof(float));
	free(h);
	return xb;
}

/* norm_qkv_rope with q and k of type qq and v of type qv. */
static void qkv(const struct qt *qq, const struct qt *qv, int T, int D, int Hq, int Hk, int hd,
		int bias)
{
	int Nq = Hq * hd, Nk = Hk * hd;
	struct fi_kv_cache kc = {.n_layers = 1, .n_blocks = 4, .block_size = 4, .n_kv_heads = Hk,
			    .head_dim = hd}, kg = kc;
	size_t ncache = (size_t)4 * 4 * Nk;
	float inv[256];
	int32_t pos[4], slot[4];
	char name[128];
	for (int i = 0; i < hd / 2; i++)
		inv[i] = (float)pow(500000.0, -2.0 * i / hd);
	for (int t = 0; t < T; t++) {
		pos[t] = (int32_t)((t * 2654435761u + 77u * (unsigned)D) % 9000);
		slot[t] = T > 1 && t == 1 ? -1 : (t * 5 + 3) % 16;
	}
	float *x = rand_bf16((size_t)T * D, 1, &seed), *g = rand_bf16(D, 1, &seed);
	float *bq = rand_bf16(Nq, 1, &seed), *bk = rand_bf16(Nk, 1, &seed), *bv = rand_bf16(Nk, 1, &seed);
	struct fi_weight gc, gg, qc, qg, kc_, kg_, vc, vg, bqc, bqg, bkc, bkg, bvc, bvg;
	bweights(g, 1, D, &gc, &gg);
	qweights(qq, Nq, D, &qc, &qg), qweights(qq, Nk, D, &kc_, &kg_), qweights(qv, Nk, D, &vc, &vg);
	bweights(bq, 1, Nq, &bqc, &bqg), bweights(bk, 1, Nk, &bkc, &bkg), bweights(bv, 1, Nk, &bvc, &bvg);
	ck_assert(!P.cpu->ops->kv_alloc(P.cpu, &kc) && !P.gpu->ops->kv_alloc(P.gpu, &kg));
	zero_cache(P.cpu, &kc, 0, ncache), zero_cache(P.gpu, &kg, 0, ncache);
	void *ic = put_bytes(P.cpu, inv, hd * 2), *ig = put_bytes(P.gpu, inv, hd * 2);
	void *pc = put_bytes(P.cpu, pos, 4 * T), *pg = put_bytes(P.gpu, pos, 4 * T);
	void *sc = put_bytes(P.cpu, slot, 4 * T), *sg = put_bytes(P.gpu, slot, 4 * T);
	struct fi_rope rc = {.head_dim = hd, .inv_freq_d = ic};
	struct fi_rope rg = {.head_dim = hd, .inv_freq_d = ig};
	struct fi_attn_batch bg = {.n_tokens = T, .tok_pos_d = pg, .slot_d = sg};
	void *xc = put_act(P.cpu, x, (size_t)T * D), *xg = put_act(P.gpu, x, (size_t)T * D);
	void *q_c = poisoned(P.cpu, (size_t)T * Nq), *k_c = poisoned(P.cpu, (size_t)T * Nk);
	void *v_c = poisoned(P.cpu, (size_t)T * Nk), *q_g = poisoned(P.gpu, (size_t)T * Nq);
	P.gpu->ops->sync(P.gpu);
	void *xb = cpu_norm(xc, &gc, T, D);
	ck_assert(!P.cpu->ops->matmul(P.cpu, q_c, xb, &qc, bias ? &bqc : NULL, T));
	ck_assert(!P.cpu->ops->matmul(P.cpu, k_c, xb, &kc_, bias ? &bkc : NULL, T));
	ck_assert(!P.cpu->ops->matmul(P.cpu, v_c, xb, &vc, bias ? &bvc : NULL, T));
	ck_assert(!P.cpu->ops->rope(P.cpu, q_c, k_c, pc, &rc, T, Hq, Hk));
	for (int t = 0; t < T; t++) {
		struct fi_attn_batch b1 = {.n_tokens = 1, .slot_d = (int32_t *)sc + t};
		if (slot[t] >= 0)
			ck_assert(!P.cpu->ops->kv_write(P.cpu, &kc, 0, (float *)k_c + (size_t)t * Nk,
							(float *)v_c + (size_t)t * Nk, &b1));
	}
	const struct fi_weight *const w3[] = {&qg, &kg_, &vg}, *const b3[] = {&bqg, &bkg, &bvg};
	ck_assert_msg(P.gpu->ops->norm_qkv_rope(P.gpu, q_g, xg, &gg, 1e-5f, w3, bias ? b3 : NULL,
						&rg, &kg, 0, Hq, &bg) == FI_OK, "%s", fi_errmsg());
	ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
	snprintf(name, sizeof name, "norm_qkv_rope %s/%s q T=%d D=%d hd=%d bias=%d", qq->what,
		 qv->what, T, D, hd, bias);
	check(name, q_g, q_c, (size_t)T * Nq);
	snprintf(name, sizeof name, "norm_qkv_rope %s/%s K cache T=%d D=%d", qq->what, qv->what, T, D);
	check(name, kg.k_d[0], kc.k_d[0], ncache);
	snprintf(name, sizeof name, "norm_qkv_rope %s/%s V cache T=%d D=%d", qq->what, qv->what, T, D);
	check(name, kg.v_d[0], kc.v_d[0], ncache);
	P.cpu->ops->kv_free(P.cpu, &kc), P.gpu->ops->kv_free(P.gpu, &kg);
	wfree(&gc, &gg), wfree(&qc, &qg), wfree(&kc_, &kg_), wfree(&vc, &vg);
	wfree(&bqc, &bqg), wfree(&bkc, &bkg), wfree(&bvc, &bvg);
	void *bc[] = {ic, pc, sc, xc, xb, q_c, k_c, v_c}, *bgp[] = {ig, pg, sg, xg, q_g};
	for (int i = 0; i < 8; i++)
		freeb(P.cpu, bc[i]);
	for (int i = 0; i < 5; i++)
		freeb(P.gpu, bgp[i]);
	free(x), free(g), free(bq), free(bk), free(bv);
}

static void add(const struct qt *q, int T, int N, int K)
{
	size_t n = (size_t)T * N;
	float *x = rand_bf16(n, 4, &seed), *in = rand_bf16((size_t)T * K, 1, &seed);
	float *one = malloc(N * sizeof(float));
	struct fi_weight wc, wg, oc, og;
	char name[96];
	for (int i = 0; i < N; i++)
		one[i] = 1.f;
	qweights(q, N, K, &wc, &wg);
	bweights(one, 1, N, &oc, &og);
	void *xc = put_act(P.cpu, x, n), *xg = put_act(P.gpu, x, n);
	void *ic = put_act(P.cpu, in, (size_t)T * K), *ig = put_act(P.gpu, in, (size_t)T * K);
	void *yc = poisoned(P.cpu, n), *nc = poisoned(P.cpu, n);
	ck_assert(!P.cpu->ops->matmul(P.cpu, yc, ic, &wc, NULL, T));
	ck_assert(!P.cpu->ops->rmsnorm(P.cpu, nc, xc, yc, &oc, T, N, 1e-5f)); /* x += y */
	ck_assert_msg(P.gpu->ops->matmul_add(P.gpu, xg, ig, &wg, T) == FI_OK, "%s", fi_errmsg());
	ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
	snprintf(name, sizeof name, "matmul_add %s T=%d N=%d K=%d", q->what, T, N, K);
	check(name, xg, xc, n);
	wfree(&wc, &wg), wfree(&oc, &og);
	freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.cpu, ic), freeb(P.gpu, ig);
	freeb(P.cpu, yc), freeb(P.cpu, nc);
	free(x), free(in), free(one);
}

static void glu(const struct qt *q, int T, int F, int K)
{
	size_t n = (size_t)T * F;
	float *x = rand_bf16((size_t)T * K, 3, &seed), *g = rand_bf16(K, 1, &seed);
	struct fi_weight nc_, ng, gc, gg, uc, ug;
	char name[96];
	bweights(g, 1, K, &nc_, &ng), qweights(q, F, K, &gc, &gg), qweights(q, F, K, &uc, &ug);
	void *xc = put_act(P.cpu, x, (size_t)T * K), *xg = put_act(P.gpu, x, (size_t)T * K);
	void *ac = poisoned(P.cpu, n), *bc = poisoned(P.cpu, n), *oc = poisoned(P.cpu, n);
	void *og = poisoned(P.gpu, n);
	void *xb = cpu_norm(xc, &nc_, T, K);
	ck_assert(!P.cpu->ops->matmul(P.cpu, ac, xb, &gc, NULL, T));
	ck_assert(!P.cpu->ops->matmul(P.cpu, bc, xb, &uc, NULL, T));
	ck_assert(!P.cpu->ops->silu_mul(P.cpu, oc, ac, bc, T, F));
	ck_assert_msg(P.gpu->ops->norm_glu(P.gpu, og, xg, &ng, 1e-5f, &gg, &ug, FI_GLU_SILU, T) == FI_OK, "%s",
		      fi_errmsg());
	ck_assert(P.gpu->ops->sync(P.gpu) == FI_OK);
	snprintf(name, sizeof name, "norm_glu %s T=%d F=%d K=%d", q->what, T, F, K);
	check(name, og, oc, n);
	wfree(&nc_, &ng), wfree(&gc, &gg), wfree(&uc, &ug);
	freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.cpu, xb), freeb(P.cpu, ac);
	freeb(P.cpu, bc), freeb(P.cpu, oc), freeb(P.gpu, og);
	free(x), free(g);
}

/* Act-order INT4 takes the plain ops: the fused op names why it refuses. */
static void refused(const struct qt *q)
{
	struct fi_weight wc, wg;
	float *in = rand_bf16(512, 1, &seed);
	void *ig = put_act(P.gpu, in, 512), *xg = poisoned(P.gpu, 256);
	qweights(q, 256, 512, &wc, &wg);
	ck_assert(P.gpu->ops->matmul_add(P.gpu, xg, ig, &wg, 1) == FI_EMISMATCH);
	ck_assert_msg(strstr(fi_errmsg(), "act-order"), "%s", fi_errmsg());
	wfree(&wc, &wg);
	freeb(P.gpu, ig), freeb(P.gpu, xg);
	free(in);
}

START_TEST(test_qfused_type)
{
	const struct qt *q = &qtypes[_i];
	if (q->perm) {
		refused(q);
		return;
	}
	for (int T = 1; T <= 4; T++) {
		qkv(q, q, T, 512, 8, 2, 64, T == 3);
		add(q, T, 257, 512);
		glu(q, T, 1000, 512);
	}
	/* the Llama-3-8B widths at one token (K split in slices) */
	qkv(q, q, 1, 4096, 32, 8, 128, 0);
	add(q, 1, 4096, 14336);
	glu(q, 1, 14336, 4096);
}
END_TEST

START_TEST(test_qfused_mixed)
{
	/* Q4_K q and k with a Q6_K v: one launch per run of segments of a type */
	for (int T = 1; T <= 2; T++)
		qkv(&qtypes[2], &qtypes[4], T, 1024, 16, 4, 64, 0);
}
END_TEST

int main(void)
{
	if (!pair_open(&P))
		return 77;
	Suite *s = suite_create("gpu_qfused");
	TCase *tc = tcase_create("ops");
	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, test_qfused_type, 0, N_QTYPES);
	tcase_add_test(tc, test_qfused_mixed);
	suite_add_tcase(s, tc);
	int rc = fi_test_run(s);
	pair_close(&P);
	return rc;
}
