/* The CUDA ops of the model families (arch.h) against their CPU twins, as test_kernels.c
 * does for the others: the same bf16-exact inputs on both backends, the GPU output poisoned
 * with NaN first. Tolerances:
 *   gelu_mul, scale (bf16 out)                       |d| <= 1e-2 + 2^-6 |r|, rel <= 8e-3
 *   softcap (f32 in place)                           |d| <= 1e-5 + 1e-6 |r|
 *   random weights (bf16 of the CPU's f32 values)    |d| <= 2^-8 |r| + 1e-6
 *   weight_cat of 16 parts (the experts' stacking)   exact
 *   moe (routing, grouping, experts; bf16 h and y)   |d| <= 4e-2 + 2^-5 |r|, rel <= 2e-2,
 *     small batches (the rows kernels) and large ones (cuBLAS grouped GEMMs), Mixtral-like
 *     (8 experts, top 2) and Qwen3-MoE-like (128 experts, top 8, renormalised) routing
 *   attention with soft-capping and head size 256 (Gemma 2: cap 50 and a tight 5; decode,
 *     the split-K kernel, and prefill, the mma.sync kernel), as test_kernels' attention.
 * Run on a GPU machine; SKIPPED (exit 77) without. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "gpu_util.h"
#include "../unit/util.h"

static struct pair P;
static uint64_t seed = 0x51ed270b1f3c5a77ull;

#define BOTH(call_cpu, call_gpu)                                                           \
	do {                                                                               \
		ck_assert_msg((call_cpu) == FI_OK, "cpu: %s", fi_errmsg());                 \
		ck_assert_msg((call_gpu) == FI_OK, "gpu: %s", fi_errmsg());                 \
		ck_assert_msg(P.gpu->ops->sync(P.gpu) == FI_OK, "gpu sync: %s", fi_errmsg()); \
	} while (0)

static void check(const char *what, const void *gd, const void *cd, size_t n, float rtol,
		  float atol, float max_rel)
{
	float *a = get_act(P.gpu, gd, n), *b = get_act(P.cpu, cd, n);
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

START_TEST(test_elementwise)
{
	static const int sz[][2] = {{1, 14336}, {3, 37}, {16, 3584}};
	for (int k = 0; k < 3; k++) {
		int T = sz[k][0], F = sz[k][1];
		size_t n = (size_t)T * F;
		float *g = rand_bf16(n, 4, &seed), *u = rand_bf16(n, 3, &seed);
		char name[64];
		void *gc = put_act(P.cpu, g, n), *gg = put_act(P.gpu, g, n);
		void *uc = put_act(P.cpu, u, n), *ug = put_act(P.gpu, u, n);
		void *oc = poisoned(P.cpu, n), *og = poisoned(P.gpu, n);
		BOTH(P.cpu->ops->gelu_mul(P.cpu, oc, gc, uc, T, F),
		     P.gpu->ops->gelu_mul(P.gpu, og, gg, ug, T, F));
		snprintf(name, sizeof name, "gelu_mul T=%d F=%d", T, F);
		check(name, og, oc, n, 1.f / 64, 1e-2f, 8e-3f);
		/* Gemma's embedding scale, sqrt(3584) */
		BOTH(P.cpu->ops->scale(P.cpu, gc, (int64_t)n, 59.866518f),
		     P.gpu->ops->scale(P.gpu, gg, (int64_t)n, 59.866518f));
		snprintf(name, sizeof name, "scale n=%zu", n);
		check(name, gg, gc, n, 1.f / 64, 1e-2f, 8e-3f);
		freeb(P.cpu, gc), freeb(P.gpu, gg), freeb(P.cpu, uc), freeb(P.gpu, ug);
		freeb(P.cpu, oc), freeb(P.gpu, og);
		free(g), free(u);
	}
	{ /* final soft-capping of 3 rows of a 256000-token vocabulary, cap 30 */
		size_t n = 3 * 256000;
		float *x = rand_bf16(n, 60, &seed), *a = malloc(n * sizeof(float));
		void *xc = put_bytes(P.cpu, x, n * 4), *xg = put_bytes(P.gpu, x, n * 4);
		BOTH(P.cpu->ops->softcap(P.cpu, xc, (int64_t)n, 30.f),
		     P.gpu->ops->softcap(P.gpu, xg, (int64_t)n, 30.f));
		ck_assert(P.gpu->ops->download(P.gpu, a, xg, n * 4) == FI_OK);
		ck_assert(close_enough("softcap f32 n=768000 cap=30", a, xc, n, 1e-6f, 1e-5f, 1e-6f));
		freeb(P.cpu, xc), freeb(P.gpu, xg);
		free(x), free(a);
	}
}
END_TEST

/* Random weights: the GPU's bf16 values are the rounding of the CPU's f32 ones; weight_cat
 * of 16 experts keeps each part's values (against separate weights). */
START_TEST(test_random_weights)
{
	static const struct {
		const char *name;
		int ndim;
		int64_t rows, cols;
	} ts[] = {{"blk.0.attn_norm", 1, 1, 4096}, {"blk.3.ffn_gate.7", 2, 1408, 2048},
		  {"output", 2, 5000, 4096}};
	P.cpu->random_weights = P.gpu->random_weights = 1;
	P.cpu->random_seed = P.gpu->random_seed = 7;
	for (int i = 0; i < 3; i++) {
		struct fi_tensor t = {.name = ts[i].name, .dtype = FI_DT_BF16, .ndim = ts[i].ndim,
				      .shape = {ts[i].ndim == 2 ? ts[i].rows : ts[i].cols, ts[i].cols},
				      .data = NULL, .nbytes = (uint64_t)(ts[i].rows * ts[i].cols) * 2};
		struct fi_weight wc, wg;
		size_t n = (size_t)(ts[i].rows * ts[i].cols);
		uint16_t *h = malloc(n * 2);
		float *g = malloc(n * sizeof(float));
		BOTH(P.cpu->ops->weight(P.cpu, &t, &wc), P.gpu->ops->weight(P.gpu, &t, &wg));
		ck_assert(P.gpu->ops->download(P.gpu, h, wg.p, n * 2) == FI_OK);
		fi_convert(g, FI_DT_F32, h, FI_DT_BF16, n);
		ck_assert(close_enough(ts[i].name, g, wc.p, n, 1.f / 256, 1e-6f, 4e-3f));
		P.cpu->ops->weight_free(P.cpu, &wc);
		P.gpu->ops->weight_free(P.gpu, &wg);
		free(h), free(g);
	}
	{
		enum { E = 16, F = 64, D = 256 };
		struct fi_tensor t[E];
		const struct fi_tensor *tp[E];
		struct fi_weight cat, parts[E], one;
		char names[E][32];
		uint16_t *a = malloc((size_t)E * F * D * 2), *b = malloc((size_t)F * D * 2);
		for (int e = 0; e < E; e++) {
			snprintf(names[e], sizeof names[e], "blk.0.ffn_up.%d", e);
			t[e] = (struct fi_tensor){.name = names[e], .dtype = FI_DT_BF16, .ndim = 2,
						  .shape = {F, D}, .data = NULL, .nbytes = F * D * 2};
			tp[e] = &t[e];
		}
		ck_assert_msg(P.gpu->ops->weight_cat(P.gpu, tp, E, &cat, parts) == FI_OK, "%s", fi_errmsg());
		ck_assert(cat.rows == E * F && cat.cols == D);
		ck_assert(P.gpu->ops->download(P.gpu, a, cat.p, (size_t)E * F * D * 2) == FI_OK);
		for (int e = 0; e < E; e += 5) {
			ck_assert(P.gpu->ops->weight(P.gpu, &t[e], &one) == FI_OK);
			ck_assert(P.gpu->ops->download(P.gpu, b, one.p, (size_t)F * D * 2) == FI_OK);
			ck_assert_msg(!memcmp(a + (size_t)e * F * D, b, (size_t)F * D * 2),
				      "weight_cat part %d differs", e);
			P.gpu->ops->weight_free(P.gpu, &one);
		}
		printf("%-44s ok\n", "weight_cat of 16 random experts");
		P.gpu->ops->weight_free(P.gpu, &cat);
		free(a), free(b);
	}
	P.cpu->random_weights = P.gpu->random_weights = 0;
}
END_TEST

struct moe_case {
	const char *name;
	int T, E, k, Fm, D, norm, act;
};

static const struct moe_case moe_cases[] = {
	{"mixtral-like decode", 1, 8, 2, 512, 256, 1, FI_GLU_SILU},
	{"mixtral-like batch 4", 4, 8, 2, 512, 256, 1, FI_GLU_SILU},
	{"qwen3-moe-like decode", 1, 128, 8, 128, 512, 1, FI_GLU_SILU},
	{"qwen3-moe-like 31 tokens", 31, 128, 8, 128, 512, 0, FI_GLU_SILU},
	{"qwen3-moe-like prefill (grouped)", 300, 128, 8, 128, 512, 1, FI_GLU_SILU},
	{"mixtral-like prefill (grouped)", 200, 8, 2, 512, 256, 1, FI_GLU_SILU},
	{"gelu experts", 5, 16, 4, 96, 128, 1, FI_GLU_GELU_TANH},
};

START_TEST(test_moe)
{
	const struct moe_case *c = &moe_cases[_i];
	const int E = c->E, Fm = c->Fm, D = c->D, T = c->T;
	float *wg = rand_bf16((size_t)E * Fm * D, 1, &seed), *wu = rand_bf16((size_t)E * Fm * D, 1, &seed);
	float *wd = rand_bf16((size_t)E * D * Fm, 1, &seed), *x = rand_bf16((size_t)T * D, 1, &seed);
	float *r = rand_bf16((size_t)T * E, 4, &seed);
	struct fi_weight g[2], u[2], d[2];
	char name[96];
	/* unit-variance products: weights scaled by 1/sqrt(fan-in) */
	for (size_t i = 0; i < (size_t)E * Fm * D; i++) {
		wg[i] = fi_bf16_to_f32(fi_f32_to_bf16(wg[i] / sqrtf((float)D)));
		wu[i] = fi_bf16_to_f32(fi_f32_to_bf16(wu[i] / sqrtf((float)D)));
		wd[i] = fi_bf16_to_f32(fi_f32_to_bf16(wd[i] / sqrtf((float)Fm)));
	}
	make_weight(P.cpu, wg, (int64_t)E * Fm, D, &g[0]);
	make_weight(P.gpu, wg, (int64_t)E * Fm, D, &g[1]);
	make_weight(P.cpu, wu, (int64_t)E * Fm, D, &u[0]);
	make_weight(P.gpu, wu, (int64_t)E * Fm, D, &u[1]);
	make_weight(P.cpu, wd, (int64_t)E * D, Fm, &d[0]);
	make_weight(P.gpu, wd, (int64_t)E * D, Fm, &d[1]);
	void *xc = put_act(P.cpu, x, (size_t)T * D), *xg = put_act(P.gpu, x, (size_t)T * D);
	void *rc = put_bytes(P.cpu, r, (size_t)T * E * 4), *rg = put_bytes(P.gpu, r, (size_t)T * E * 4);
	void *oc = poisoned(P.cpu, (size_t)T * D), *og = poisoned(P.gpu, (size_t)T * D);
	struct fi_moe mc = {E, c->k, Fm, c->norm, c->act, &g[0], &u[0], &d[0]};
	struct fi_moe mg = {E, c->k, Fm, c->norm, c->act, &g[1], &u[1], &d[1]};
	P.gpu->ops->sync(P.gpu);
	BOTH(P.cpu->ops->moe(P.cpu, oc, xc, rc, &mc, T), P.gpu->ops->moe(P.gpu, og, xg, rg, &mg, T));
	snprintf(name, sizeof name, "moe %s T=%d E=%d k=%d", c->name, T, E, c->k);
	check(name, og, oc, (size_t)T * D, 1.f / 32, 4e-2f, 2e-2f);
	/* the same op again: buffers reused, results identical */
	void *og2 = poisoned(P.gpu, (size_t)T * D);
	ck_assert(P.gpu->ops->moe(P.gpu, og2, xg, rg, &mg, T) == FI_OK);
	check("moe again (same buffers)", og2, oc, (size_t)T * D, 1.f / 32, 4e-2f, 2e-2f);
	for (int i = 0; i < 2; i++) {
		struct fi_backend *b = i ? P.gpu : P.cpu;
		b->ops->weight_free(b, &g[i]);
		b->ops->weight_free(b, &u[i]);
		b->ops->weight_free(b, &d[i]);
	}
	freeb(P.cpu, xc), freeb(P.gpu, xg), freeb(P.cpu, rc), freeb(P.gpu, rg);
	freeb(P.cpu, oc), freeb(P.gpu, og), freeb(P.gpu, og2);
	free(wg), free(wu), free(wd), free(x), free(r);
}
END_TEST

/* Attention of one sequence: hist tokens in the cache, nnew in the batch (all written with
 * kv_write first), blocks of 16 in shuffled order; Gemma-2 shapes. */
struct cap_case {
	const char *name;
	int Hq, Hk, hd, window, hist, nnew;
	float cap, scale;
	int plan; /* FI_DEC_PLAN=1: the planned path (the tensor-core loop at hd 128) */
};

static const struct cap_case cap_cases[] = {
	{"decode hd=256 cap 50", 16, 8, 256, 0, 300, 1, 50.f, 0.0625f, 0},
	{"decode hd=256 cap 5 window", 16, 8, 256, 64, 300, 1, 5.f, 0.0625f, 0},
	{"decode hd=128 cap 5", 8, 2, 128, 0, 90, 1, 5.f, 0.0884f, 0},
	{"decode hd=128 cap 5 planned", 8, 2, 128, 0, 300, 1, 5.f, 0.0884f, 1},
	{"decode hd=128 cap 5 window 40 planned", 8, 2, 128, 40, 300, 1, 5.f, 0.0884f, 1},
	{"prefill hd=256 cap 50", 16, 8, 256, 0, 0, 150, 50.f, 0.0625f, 0},
	{"prefill hd=256 cap 5 window 40", 8, 4, 256, 40, 20, 130, 5.f, 0.0625f, 0},
	{"prefill hd=256 no cap", 16, 8, 256, 0, 33, 100, 0.f, 0.0625f, 0},
	{"prefill hd=128 cap 5", 8, 2, 128, 0, 0, 90, 5.f, 0.0884f, 0},
};

START_TEST(test_capped_attention)
{
	const struct cap_case *c = &cap_cases[_i];
	const int bs = 16, hd = c->hd, Hq = c->Hq, Hk = c->Hk, len = c->hist + c->nnew;
	const int maxb = (len + bs - 1) / bs, nb = maxb + 3;
	int32_t *bt = malloc(sizeof(int32_t) * maxb), *perm = malloc(sizeof(int32_t) * nb);
	int32_t *seq = calloc((size_t)len, 4), *pos = malloc(4 * (size_t)len), *slot = malloc(4 * (size_t)len);
	int32_t slen[1] = {len};
	float *k = rand_bf16((size_t)len * Hk * hd, 1, &seed), *v = rand_bf16((size_t)len * Hk * hd, 1, &seed);
	float *q = rand_bf16((size_t)c->nnew * Hq * hd, 3, &seed);
	void *out[2];
	struct fi_kv_cache kv[2];
	for (int i = 0; i < nb; i++)
		perm[i] = i;
	for (int i = nb - 1; i > 0; i--) {
		int j = (int)(next(&seed) % (uint64_t)(i + 1)), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (int j = 0; j < maxb; j++)
		bt[j] = perm[j];
	for (int p = 0; p < len; p++) {
		pos[p] = p;
		slot[p] = bt[p / bs] * bs + p % bs;
	}
	for (int i = 0; i < 2; i++) {
		struct fi_backend *b = i ? P.gpu : P.cpu;
		void *sd = ints(b, seq, (size_t)len), *pd = ints(b, pos, (size_t)len);
		void *sl = ints(b, slot, (size_t)len), *ld = ints(b, slen, 1), *btd = ints(b, bt, (size_t)maxb);
		void *kd = put_act(b, k, (size_t)len * Hk * hd), *vd = put_act(b, v, (size_t)len * Hk * hd);
		void *qd = put_act(b, q, (size_t)c->nnew * Hq * hd);
		kv[i] = (struct fi_kv_cache){.n_layers = 1, .n_blocks = nb, .block_size = bs,
					     .n_kv_heads = Hk, .head_dim = hd};
		ck_assert_msg(b->ops->kv_alloc(b, &kv[i]) == FI_OK, "kv_alloc: %s", fi_errmsg());
		struct fi_attn_batch all = {.n_tokens = len, .n_seqs = 1, .max_blocks = maxb,
					    .tok_seq_d = sd, .tok_pos_d = pd, .slot_d = sl,
					    .seq_len_d = ld, .block_table_d = btd, .max_seq_len = len,
					    .sliding_window = c->window, .scale = c->scale,
					    .softcap = c->cap};
		ck_assert(b->ops->kv_write(b, &kv[i], 0, kd, vd, &all) == FI_OK);
		/* the batch: the last nnew positions */
		struct fi_attn_batch nw = all;
		nw.n_tokens = c->nnew;
		nw.tok_seq_d = (const int32_t *)sd + c->hist;
		nw.tok_pos_d = (const int32_t *)pd + c->hist;
		nw.slot_d = (const int32_t *)sl + c->hist;
		out[i] = poisoned(b, (size_t)c->nnew * Hq * hd);
		if (i && c->plan) {
			setenv("FI_DEC_PLAN", "1", 1);
			fi_settings_reload();
		}
		ck_assert_msg(b->ops->attention(b, out[i], qd, &kv[i], 0, Hq, &nw) == FI_OK, "%s: %s",
			      b->ops->name, fi_errmsg());
		ck_assert(b->ops->sync(b) == FI_OK);
		unsetenv("FI_DEC_PLAN");
		fi_settings_reload();
		freeb(b, sd), freeb(b, pd), freeb(b, sl), freeb(b, ld), freeb(b, btd);
		freeb(b, kd), freeb(b, vd), freeb(b, qd);
	}
	char name[96];
	snprintf(name, sizeof name, "attention %s", c->name);
	check(name, out[1], out[0], (size_t)c->nnew * Hq * hd, 1.f / 32, 2e-2f, 1.5e-2f);
	for (int i = 0; i < 2; i++) {
		struct fi_backend *b = i ? P.gpu : P.cpu;
		b->ops->kv_free(b, &kv[i]);
		freeb(b, out[i]);
	}
	free(bt), free(perm), free(seq), free(pos), free(slot), free(k), free(v), free(q);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("gpu_family_ops");
	TCase *tc = tcase_create("ops");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_elementwise);
	tcase_add_test(tc, test_random_weights);
	tcase_add_loop_test(tc, test_moe, 0, sizeof moe_cases / sizeof moe_cases[0]);
	tcase_add_loop_test(tc, test_capped_attention, 0, sizeof cap_cases / sizeof cap_cases[0]);
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
