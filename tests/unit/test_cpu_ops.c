/* CPU backend ops against naive loops, on random inputs of odd shapes, with 1 and 3
 * threads (so the pool's uneven chunks are exercised). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/quant.h"
#include "util.h"

static struct fi_backend *be;
static uint64_t rs = 88172645463325252ull;

static float frand(void) /* uniform in [-1, 1) */
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}

static float *rnd(size_t n)
{
	float *p = malloc(n * sizeof *p);
	for (size_t i = 0; i < n; i++)
		p[i] = frand();
	return p;
}

static void close_to(const float *a, const float *b, size_t n, double tol, const char *what)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(fabs((double)a[i] - b[i]) <= tol * (1 + fabs(b[i])),
			      "%s[%zu]: %g vs %g", what, i, a[i], b[i]);
}

static struct fi_weight mkw(const float *data, int rows, int cols)
{
	struct fi_tensor t = {.name = "w", .dtype = FI_DT_F32, .ndim = 2,
			      .shape = {rows, cols}, .data = data,
			      .nbytes = sizeof(float) * (size_t)rows * cols};
	struct fi_weight w;
	ck_assert_int_eq(be->ops->weight(be, &t, &w), FI_OK);
	ck_assert_int_eq(w.rows, rows);
	ck_assert_int_eq(w.cols, cols);
	return w;
}

static void setup_threads(int n)
{
	if (be)
		fi_backend_destroy(be);
	ck_assert_int_eq(fi_backend_cpu_create(n, &be), FI_OK);
	ck_assert_int_eq(be->act, FI_DT_F32);
}

START_TEST(test_weight_convert)
{
	uint16_t h[6];
	float want[6] = {1, -2.5f, 0.375f, 1024, -0.0078125f, 3};
	struct fi_tensor t = {.name = "x", .dtype = FI_DT_BF16, .ndim = 1, .shape = {6},
			      .data = h, .nbytes = sizeof h};
	struct fi_weight w;
	setup_threads(1);
	for (int i = 0; i < 6; i++)
		h[i] = fi_f32_to_bf16(want[i]);
	ck_assert_int_eq(be->ops->weight(be, &t, &w), FI_OK);
	ck_assert_int_eq(w.rows, 1);
	ck_assert_int_eq(w.cols, 6);
	close_to(w.p, want, 6, 0, "bf16");
	be->ops->weight_free(be, &w);
	for (int i = 0; i < 6; i++)
		h[i] = fi_f32_to_f16(want[i]);
	t.dtype = FI_DT_F16;
	ck_assert_int_eq(be->ops->weight(be, &t, &w), FI_OK);
	close_to(w.p, want, 6, 0, "f16");
	be->ops->weight_free(be, &w);
	t.dtype = FI_DT_I32; /* not a float type */
	t.nbytes = 24;
	ck_assert_int_eq(be->ops->weight(be, &t, &w), FI_EUNSUPPORTED);
	t.dtype = FI_DT_F16; /* wrong size */
	ck_assert_int_eq(be->ops->weight(be, &t, &w), FI_EFORMAT);
}
END_TEST

START_TEST(test_embed_gather)
{
	int V = 37, D = 23, T = 11;
	float *e = rnd((size_t)V * D), x[11 * 23], g[5 * 23];
	int32_t tok[11], idx[5] = {10, 0, 3, 3, 7};
	struct fi_weight w;
	setup_threads(_i ? 3 : 1);
	w = mkw(e, V, D);
	for (int t = 0; t < T; t++)
		tok[t] = (t * 7 + 3) % V;
	ck_assert_int_eq(be->ops->embed(be, x, &w, tok, T), FI_OK);
	for (int t = 0; t < T; t++)
		close_to(x + t * D, e + tok[t] * D, (size_t)D, 0, "embed");
	ck_assert_int_eq(be->ops->gather_rows(be, g, x, idx, 5, D), FI_OK);
	for (int i = 0; i < 5; i++)
		close_to(g + i * D, x + idx[i] * D, (size_t)D, 0, "gather");
	tok[4] = V;
	ck_assert_int_eq(be->ops->embed(be, x, &w, tok, T), FI_ERANGE);
	be->ops->weight_free(be, &w);
	free(e);
}
END_TEST

START_TEST(test_rmsnorm)
{
	int T = 13, D = 29;
	float *x = rnd((size_t)T * D), *add = rnd((size_t)T * D), *wd = rnd((size_t)D);
	float *x0 = malloc(sizeof(float) * T * D), *out = malloc(sizeof(float) * T * D);
	float *ref = malloc(sizeof(float) * T * D), eps = 1e-5f;
	struct fi_tensor t = {.name = "n", .dtype = FI_DT_F32, .ndim = 1, .shape = {D},
			      .data = wd, .nbytes = sizeof(float) * D};
	struct fi_weight w;
	setup_threads(_i ? 3 : 1);
	ck_assert_int_eq(be->ops->weight(be, &t, &w), FI_OK);
	memcpy(x0, x, sizeof(float) * T * D);
	ck_assert_int_eq(be->ops->rmsnorm(be, out, x, add, &w, T, D, eps), FI_OK);
	for (int r = 0; r < T; r++) {
		double ss = 0;
		for (int i = 0; i < D; i++) {
			float v = x0[r * D + i] + add[r * D + i];
			ck_assert(fabsf(x[r * D + i] - v) <= 1e-6f); /* residual updated in place */
			ss += (double)v * v;
		}
		for (int i = 0; i < D; i++)
			ref[r * D + i] = (float)(wd[i] * x[r * D + i] / sqrt(ss / D + eps));
	}
	close_to(out, ref, (size_t)T * D, 1e-5, "rmsnorm+add");
	/* in place, no residual */
	memcpy(out, x0, sizeof(float) * T * D);
	ck_assert_int_eq(be->ops->rmsnorm(be, out, out, NULL, &w, T, D, eps), FI_OK);
	for (int r = 0; r < T; r++) {
		double ss = 0;
		for (int i = 0; i < D; i++)
			ss += (double)x0[r * D + i] * x0[r * D + i];
		for (int i = 0; i < D; i++)
			ref[r * D + i] = (float)(wd[i] * x0[r * D + i] / sqrt(ss / D + eps));
	}
	close_to(out, ref, (size_t)T * D, 1e-5, "rmsnorm");
	ck_assert_int_eq(be->ops->rmsnorm(be, x, x, add, &w, T, D, eps), FI_EINVAL);
	ck_assert_int_eq(be->ops->rmsnorm(be, out, x, NULL, &w, T, D + 1, eps), FI_EMISMATCH);
	be->ops->weight_free(be, &w);
	free(x), free(add), free(wd), free(x0), free(out), free(ref);
}
END_TEST

static void naive_mm(float *out, const float *in, const float *w, const float *b, int T, int N,
		     int K)
{
	for (int t = 0; t < T; t++)
		for (int n = 0; n < N; n++) {
			double s = b ? b[n] : 0;
			for (int k = 0; k < K; k++)
				s += (double)in[t * K + k] * w[n * K + k];
			out[t * N + n] = (float)s;
		}
}

START_TEST(test_matmul)
{
	static const int shapes[][3] = {{7, 19, 33}, {1, 19, 33}, {1, 1, 5}, {17, 65, 3}};
	setup_threads(_i ? 3 : 1);
	for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
		int T = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
		float *in = rnd((size_t)T * K), *wd = rnd((size_t)N * K), *bd = rnd((size_t)N);
		float *out = malloc(sizeof(float) * T * N), *ref = malloc(sizeof(float) * T * N);
		struct fi_weight w = mkw(wd, N, K), b = mkw(bd, 1, N);
		ck_assert_int_eq(be->ops->matmul(be, out, in, &w, &b, T), FI_OK);
		naive_mm(ref, in, wd, bd, T, N, K);
		close_to(out, ref, (size_t)T * N, 1e-5, "matmul+bias");
		ck_assert_int_eq(be->ops->matmul(be, out, in, &w, NULL, T), FI_OK);
		naive_mm(ref, in, wd, NULL, T, N, K);
		close_to(out, ref, (size_t)T * N, 1e-5, "matmul");
		ck_assert_int_eq(be->ops->matmul_f32out(be, out, in, &w, T), FI_OK);
		close_to(out, ref, (size_t)T * N, 1e-5, "matmul_f32out");
		ck_assert_int_eq(be->ops->matmul(be, out, in, &w, &w, T), FI_EMISMATCH);
		be->ops->weight_free(be, &w);
		be->ops->weight_free(be, &b);
		free(in), free(wd), free(bd), free(out), free(ref);
	}
}
END_TEST

START_TEST(test_rope)
{
	int T = 5, Hq = 6, Hk = 2, hd = 10, half = 5;
	float *q = rnd((size_t)T * Hq * hd), *k = rnd((size_t)T * Hk * hd);
	float *q0 = malloc(sizeof(float) * T * Hq * hd), *k0 = malloc(sizeof(float) * T * Hk * hd);
	float inv[5];
	int32_t pos[5] = {0, 1, 7, 300, 4095};
	struct fi_rope r = {.head_dim = hd, .inv_freq_d = inv};
	setup_threads(_i ? 3 : 1);
	for (int i = 0; i < half; i++)
		inv[i] = (float)pow(10000.0, -2.0 * i / hd);
	memcpy(q0, q, sizeof(float) * T * Hq * hd);
	memcpy(k0, k, sizeof(float) * T * Hk * hd);
	ck_assert_int_eq(be->ops->rope(be, q, k, pos, &r, T, Hq, Hk), FI_OK);
	for (int t = 0; t < T; t++)
		for (int h = 0; h < Hq + Hk; h++) {
			const float *a = h < Hq ? q0 + (t * Hq + h) * hd : k0 + (t * Hk + h - Hq) * hd;
			const float *g = h < Hq ? q + (t * Hq + h) * hd : k + (t * Hk + h - Hq) * hd;
			float want[10];
			for (int i = 0; i < half; i++) {
				double ang = (double)(float)(pos[t] * inv[i]);
				want[i] = (float)(a[i] * cos(ang) - a[i + half] * sin(ang));
				want[i + half] = (float)(a[i + half] * cos(ang) + a[i] * sin(ang));
			}
			close_to(g, want, (size_t)hd, 1e-5, "rope");
		}
	r.head_dim = 9;
	ck_assert_int_eq(be->ops->rope(be, q, k, pos, &r, T, Hq, Hk), FI_EUNSUPPORTED);
	free(q), free(k), free(q0), free(k0);
}
END_TEST

START_TEST(test_silu_argmax)
{
	int T = 3, F = 7001; /* above the parallel grain, not a multiple of the threads */
	float *g = rnd((size_t)T * F), *u = rnd((size_t)T * F), *o = malloc(sizeof(float) * T * F);
	float l[2][5] = {{0, 3, 1, 3, -1}, {-5, -4, -4.5f, -9, -4}};
	int32_t tok[2];
	setup_threads(_i ? 3 : 1);
	ck_assert_int_eq(be->ops->silu_mul(be, o, g, u, T, F), FI_OK);
	for (int i = 0; i < T * F; i++) {
		double want = g[i] / (1 + exp(-(double)g[i])) * u[i];
		ck_assert(fabs(o[i] - want) <= 1e-6 * (1 + fabs(want)));
	}
	ck_assert_int_eq(be->ops->argmax(be, tok, &l[0][0], 2, 5), FI_OK);
	ck_assert_int_eq(tok[0], 1); /* ties: lowest id */
	ck_assert_int_eq(tok[1], 1);
	free(g), free(u), free(o);
}
END_TEST

/* Two sequences in a shuffled paged cache; a batch of some of their positions; compared
 * with attention over contiguous per-sequence K/V. With fp8 the cache is FP8 and the
 * reference reads K/V rounded as base/quant.h rounds a row (per token and head). */
static void attn_case(int window, int fp8)
{
	enum { NB = 9, BS = 3, HK = 2, HD = 6, HQ = 6, S = 2, MAXB = 4 };
	int len[S] = {7, 11};
	int32_t table[S][MAXB] = {{5, 0, 8, -1}, {2, 7, 1, 4}};
	/* batch: the last 3 tokens of seq 0 and the last 4 of seq 1, interleaved */
	int32_t tseq[7] = {1, 0, 1, 0, 1, 0, 1}, tpos[7] = {7, 4, 8, 5, 9, 6, 10};
	int T = 7;
	float *kfull[S], *vfull[S];
	float *q = rnd((size_t)T * HQ * HD), *out = malloc(sizeof(float) * T * HQ * HD);
	float *kb = malloc(sizeof(float) * T * HK * HD), *vb = malloc(sizeof(float) * T * HK * HD);
	int32_t slot[7], slen[S] = {7, 11};
	float *kref[S], *vref[S];
	struct fi_kv_cache kv = {.n_layers = 2, .n_blocks = NB, .block_size = BS,
				 .n_kv_heads = HK, .head_dim = HD, .fp8 = fp8};
	ck_assert_int_eq(be->ops->kv_alloc(be, &kv), FI_OK);
	for (int s = 0; s < S; s++) {
		kfull[s] = rnd((size_t)len[s] * HK * HD);
		vfull[s] = rnd((size_t)len[s] * HK * HD);
		kref[s] = malloc(sizeof(float) * (size_t)len[s] * HK * HD);
		vref[s] = malloc(sizeof(float) * (size_t)len[s] * HK * HD);
		memcpy(kref[s], kfull[s], sizeof(float) * (size_t)len[s] * HK * HD);
		memcpy(vref[s], vfull[s], sizeof(float) * (size_t)len[s] * HK * HD);
		if (fp8) { /* one row per token and head */
			fi_quant_act_round(kref[s], (int64_t)len[s] * HK, HD, FI_AQ_TOKEN);
			fi_quant_act_round(vref[s], (int64_t)len[s] * HK, HD, FI_AQ_TOKEN);
		}
	}
	/* the earlier positions go in through kv_write too, as a first batch per sequence */
	for (int s = 0; s < S; s++) {
		int n = 0;
		int32_t sl[11], ts[11], tp[11];
		for (int p = 0; p < len[s]; p++) {
			int inbatch = 0;
			for (int t = 0; t < T; t++)
				inbatch |= tseq[t] == s && tpos[t] == p;
			if (inbatch)
				continue;
			sl[n] = table[s][p / BS] * BS + p % BS;
			ts[n] = s;
			tp[n] = p;
			memcpy(kb + n * HK * HD, kfull[s] + p * HK * HD, sizeof(float) * HK * HD);
			memcpy(vb + n * HK * HD, vfull[s] + p * HK * HD, sizeof(float) * HK * HD);
			n++;
		}
		struct fi_attn_batch b = {.n_tokens = n, .slot_d = sl, .tok_seq_d = ts,
					  .tok_pos_d = tp};
		ck_assert_int_eq(be->ops->kv_write(be, &kv, 1, kb, vb, &b), FI_OK);
	}
	for (int t = 0; t < T; t++) {
		int s = tseq[t], p = tpos[t];
		slot[t] = table[s][p / BS] * BS + p % BS;
		memcpy(kb + t * HK * HD, kfull[s] + p * HK * HD, sizeof(float) * HK * HD);
		memcpy(vb + t * HK * HD, vfull[s] + p * HK * HD, sizeof(float) * HK * HD);
	}
	struct fi_attn_batch b = {.n_tokens = T, .n_seqs = S, .max_blocks = MAXB,
				  .tok_seq_d = tseq, .tok_pos_d = tpos, .slot_d = slot,
				  .seq_len_d = slen, .block_table_d = &table[0][0],
				  .max_seq_len = 11, .sliding_window = window,
				  .scale = 1 / sqrtf(HD)};
	ck_assert_int_eq(be->ops->kv_write(be, &kv, 1, kb, vb, &b), FI_OK);
	ck_assert_int_eq(be->ops->attention(be, out, q, &kv, 1, HQ, &b), FI_OK);
	for (int t = 0; t < T; t++)
		for (int h = 0; h < HQ; h++) {
			int s = tseq[t], p = tpos[t], kh = h / (HQ / HK);
			int lo = window && p - window + 1 > 0 ? p - window + 1 : 0;
			double sc[11], mx = -1e30, sum = 0, want[HD] = {0};
			float wf[HD];
			for (int j = lo; j <= p; j++) {
				double d = 0;
				for (int i = 0; i < HD; i++)
					d += (double)q[(t * HQ + h) * HD + i] *
					     kref[s][(j * HK + kh) * HD + i];
				sc[j] = d / sqrt(HD);
				mx = fmax(mx, sc[j]);
			}
			for (int j = lo; j <= p; j++) {
				double e = exp(sc[j] - mx);
				sum += e;
				for (int i = 0; i < HD; i++)
					want[i] += e * vref[s][(j * HK + kh) * HD + i];
			}
			for (int i = 0; i < HD; i++)
				wf[i] = (float)(want[i] / sum);
			close_to(out + (t * HQ + h) * HD, wf, HD, 1e-5, "attention");
		}
	/* a block table entry outside the cache is refused, not followed */
	table[1][3] = NB; /* holds positions 9 and 10, read under every window */
	ck_assert_int_eq(be->ops->attention(be, out, q, &kv, 1, HQ, &b), FI_ERANGE);
	slot[0] = NB * BS;
	ck_assert_int_eq(be->ops->kv_write(be, &kv, 1, kb, vb, &b), FI_ERANGE);
	ck_assert_int_eq(be->ops->attention(be, out, q, &kv, 2, HQ, &b), FI_ERANGE);
	be->ops->kv_free(be, &kv);
	for (int s = 0; s < S; s++)
		free(kfull[s]), free(vfull[s]), free(kref[s]), free(vref[s]);
	free(q), free(out), free(kb), free(vb);
}

START_TEST(test_attention)
{
	setup_threads(_i ? 3 : 1);
	attn_case(0, 0);
	attn_case(4, 0);
	attn_case(1, 0);
	attn_case(0, 1); /* an FP8 cache */
	attn_case(4, 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cpu_ops");
	TCase *tc = tcase_create("cpu_ops");
	int rc;
	tcase_add_test(tc, test_weight_convert);
	tcase_add_loop_test(tc, test_embed_gather, 0, 2);
	tcase_add_loop_test(tc, test_rmsnorm, 0, 2);
	tcase_add_loop_test(tc, test_matmul, 0, 2);
	tcase_add_loop_test(tc, test_rope, 0, 2);
	tcase_add_loop_test(tc, test_silu_argmax, 0, 2);
	tcase_add_loop_test(tc, test_attention, 0, 2);
	suite_add_tcase(s, tc);
	rc = fi_test_run(s);
	fi_backend_destroy(be);
	return rc;
}
