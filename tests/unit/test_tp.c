/* Tensor parallelism on the CPU (model/tp.h): the CPU communicator's collectives, and the
 * sharded forward against the whole model. TP = 2 and 4 must give the TP = 1 logits to 1e-5
 * (per row: max |a - b| / max |b|) on the embedded tiny model (8 heads, 4 KV heads, tied
 * embeddings) and on the hf/llama fixture (4 heads, 2 KV heads: at TP = 4 each KV head is
 * replicated on two ranks), over a prompt, decode steps, a second sequence forked from the
 * first (its copy-on-write block copied in every rank's pool), and greedy and top-k rows
 * chosen from the shards' candidates. Also: the KV arena's identity of a shard. */
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/comm.h"
#include "backend/sample.h"
#include "kv/kvxfer.h"
#include "model/image.h"
#include "model/model.h"
#include "model/store.h"
#include "model/tp.h"
#include "util.h"

#define TOL 1e-5

/* ---- the CPU communicator ---- */

struct crank {
	struct fi_comm *c;
	int n, ok;
};

static void *comm_main(void *p)
{
	struct crank *k = p;
	struct fi_comm *c = k->c;
	int r = c->rank, N = c->size, ok = 1;
	enum { L = 1003 };
	float x[L], g[4 * 8], b[5];
	for (int round = 0; round < 3; round++) { /* the scratch is reused across calls */
		for (int i = 0; i < L; i++)
			x[i] = (float)(r + 1) * (float)(i % 17) + (float)round;
		ok &= c->ops->all_reduce(c, x, L, FI_DT_F32) == FI_OK;
		for (int i = 0; i < L; i++) /* sum over r of (r+1)(i%17) + round */
			ok &= x[i] == (float)(N * (N + 1) / 2) * (float)(i % 17) + (float)(N * round);
	}
	float mine[8];
	for (int i = 0; i < 8; i++)
		mine[i] = (float)(100 * r + i);
	ok &= c->ops->all_gather(c, g, mine, sizeof mine) == FI_OK;
	for (int q = 0; q < N; q++)
		for (int i = 0; i < 8; i++)
			ok &= g[q * 8 + i] == (float)(100 * q + i);
	for (int i = 0; i < 5; i++)
		b[i] = r == N - 1 ? (float)(7 * i) : -1.0f;
	ok &= c->ops->broadcast(c, b, sizeof b, N - 1) == FI_OK;
	for (int i = 0; i < 5; i++)
		ok &= b[i] == (float)(7 * i);
	k->ok = ok;
	return NULL;
}

START_TEST(test_comm_cpu)
{
	for (int n = 1; n <= 4; n++) {
		struct fi_comm *c[4];
		struct crank k[4];
		pthread_t th[4];
		ck_assert_int_eq(fi_comm_cpu_create(n, c), FI_OK);
		for (int r = 0; r < n; r++) {
			k[r] = (struct crank){c[r], n, 0};
			ck_assert_int_eq(pthread_create(&th[r], NULL, comm_main, &k[r]), 0);
		}
		for (int r = 0; r < n; r++) {
			pthread_join(th[r], NULL);
			ck_assert_msg(k[r].ok, "n %d rank %d: a collective went wrong", n, r);
		}
		/* bf16 is NCCL's; the CPU group sums f32 and says so */
		ck_assert_int_eq(c[0]->ops->all_reduce(c[0], NULL, 0, FI_DT_BF16), FI_EUNSUPPORTED);
		for (int r = 0; r < n; r++)
			fi_comm_destroy(c[r]);
	}
	struct fi_comm *c[1];
	ck_assert_int_eq(fi_comm_cpu_create(0, c), FI_EINVAL);
	ck_assert_int_eq(fi_comm_cpu_create(FI_COMM_MAX + 1, c), FI_EINVAL);
}
END_TEST

/* ---- the sharded forward ---- */

struct run {
	int V, n_rows;
	float *lg;      /* every row's logits, in order */
	int32_t tok[64]; /* greedy and top-k tokens, in order */
	int n_tok;
};

static void keep(struct run *o, const float *lg, int n)
{
	o->lg = realloc(o->lg, sizeof(float) * (size_t)(o->n_rows + n) * o->V);
	memcpy(o->lg + (size_t)o->n_rows * o->V, lg, sizeof(float) * (size_t)n * o->V);
	o->n_rows += n;
}

/* The same work on a model of tp ranks (0: no group): a 19-token prompt with every row's
 * logits; 6 greedy decode steps (tokens only: from the shards' candidates); a fork of the
 * sequence in the middle of a block, both sequences stepping together (logits); 4 top-k
 * rows drawn with fixed draws. */
static void work(const char *dir, int tp, struct run *o)
{
	struct fi_backend *be;
	struct fi_image *im;
	struct fi_model *m;
	fi_err e;
	ck_assert_int_eq(fi_backend_create("cpu", 1, &be), FI_OK);
	ck_assert_msg(!fi_store_open_dtype(dir, FI_DT_F32, &im), "%s", fi_errmsg());
	e = tp ? fi_model_load_tp(&im->config, &im->set, be, tp, &m)
	       : fi_model_load(&im->config, &im->set, be, &m);
	ck_assert_msg(!e, "%s tp %d: %s", dir, tp, fi_errmsg());
	ck_assert_int_eq(fi_model_tp_size(m), tp);
	int V = o->V = im->config.vocab, s, s2, n;
	float *lg = malloc(sizeof(float) * 32 * (size_t)V);
	int32_t ids[32], seq[32];
	int8_t want[32];
	ck_assert_int_eq(fi_model_cache_init(m, 64, 8), FI_OK);
	ck_assert_int_eq(fi_model_seq_new(m, &s), FI_OK);
	for (int i = 0; i < 19; i++) {
		ids[i] = (int32_t)((i * 37 + 11) % V);
		seq[i] = s;
		want[i] = 1;
	}
	struct fi_batch b = {19, ids, seq, want};
	ck_assert_msg(!fi_model_forward(m, &b, lg, &n), "%s", fi_errmsg());
	ck_assert_int_eq(n, 19);
	keep(o, lg, n);
	int32_t t = ids[18];
	for (int k = 0; k < 6; k++) {
		struct fi_batch d = {1, &t, &s, NULL};
		int32_t next;
		ck_assert_msg(!fi_model_forward_ex(m, &d, NULL, &next, &n), "%s", fi_errmsg());
		o->tok[o->n_tok++] = t = next;
	}
	/* s holds 25 tokens: block 3 (of 8) is shared and partial, so the fork's next token
	 * copies it */
	ck_assert_int_eq(fi_model_seq_fork(m, s, &s2), FI_OK);
	for (int k = 0; k < 3; k++) {
		int32_t two[2] = {(int32_t)((5 + 3 * k) % V), (int32_t)((9 + 7 * k) % V)}, ss[2] = {s, s2};
		struct fi_batch d = {2, two, ss, NULL};
		ck_assert_msg(!fi_model_forward(m, &d, lg, &n), "%s", fi_errmsg());
		ck_assert_int_eq(n, 2);
		keep(o, lg, n);
	}
	/* sampled rows: top-k and greedy from the candidates, the full-vocabulary row with its
	 * logits for the host sampler */
	struct fi_sample_row rows[4] = {
		{.u = 0.3, .temperature = 0.8f, .top_p = 1, .top_k = 5, .penalty = 1, .n_logprobs = -1},
		{.u = 0.9, .temperature = 1.3f, .top_p = 0.9f, .min_p = 0.01f, .top_k = 40,
		 .penalty = 1, .n_logprobs = -1},
		{.u = 0.5, .temperature = 0, .top_p = 1, .penalty = 1, .n_logprobs = -1},
		{.u = 0.7, .temperature = 1, .top_p = 1, .penalty = 1, .n_logprobs = -1},
	};
	int32_t four[4] = {3, 4, 5, 6}, s4[4], tk[4], kept[4];
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(fi_model_seq_new(m, &s4[i]), FI_OK);
	struct fi_batch d = {4, four, s4, NULL};
	ck_assert_msg(!fi_model_forward_sample(m, &d, rows, lg, tk, kept, &n), "%s", fi_errmsg());
	ck_assert_int_eq(n, 4);
	struct fi_sample_work w;
	ck_assert_int_eq(fi_sample_work_init(&w, V), FI_OK);
	for (int i = 0; i < 4; i++) {
		if (tk[i] < 0) /* left to the host: as the scheduler does */
			tk[i] = fi_sample_pick(&rows[i], lg + (size_t)i * V, NULL, &w, &kept[i]);
		o->tok[o->n_tok++] = tk[i];
	}
	if (tp > 1)
		ck_assert_msg(tk[3] >= 0, "row 3 must come from the host sampler");
	fi_sample_work_free(&w);
	free(lg);
	fi_model_close(m);
	fi_image_close(im);
	fi_backend_destroy(be);
}

static double row_err(const float *a, const float *b, int V)
{
	double d = 0, mx = 0;
	for (int i = 0; i < V; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		mx = fmax(mx, fabs(b[i]));
	}
	return d / mx;
}

static void parity(const char *dir, int tp)
{
	struct run ref = {0}, got = {0};
	double worst = 0;
	work(dir, 0, &ref);
	work(dir, tp, &got);
	ck_assert_int_eq(got.n_rows, ref.n_rows);
	for (int i = 0; i < ref.n_rows; i++) {
		double e = row_err(got.lg + (size_t)i * ref.V, ref.lg + (size_t)i * ref.V, ref.V);
		ck_assert_msg(e <= TOL, "%s tp %d: row %d error %g", dir, tp, i, e);
		worst = fmax(worst, e);
	}
	ck_assert_int_eq(got.n_tok, ref.n_tok);
	for (int i = 0; i < ref.n_tok; i++)
		ck_assert_msg(got.tok[i] == ref.tok[i], "%s tp %d: token %d: %d, whole model %d", dir,
			      tp, i, got.tok[i], ref.tok[i]);
	printf("%s tp %d: %d rows, worst %.2e; %d tokens equal\n", dir, tp, ref.n_rows, worst,
	       ref.n_tok);
	free(ref.lg);
	free(got.lg);
}

START_TEST(test_tiny_tp1) { parity("models/tiny", 1); }
END_TEST
START_TEST(test_tiny_tp2) { parity("models/tiny", 2); }
END_TEST
START_TEST(test_tiny_tp4) { parity("models/tiny", 4); }
END_TEST
START_TEST(test_gqa_tp2) { parity(fi_test_fixture("hf/llama"), 2); }
END_TEST
START_TEST(test_gqa_tp4) { parity(fi_test_fixture("hf/llama"), 4); } /* 2 KV heads, 4 ranks */
END_TEST
START_TEST(test_qwen2_tp2) { parity(fi_test_fixture("hf/qwen2"), 2); } /* q/k/v biases */
END_TEST
START_TEST(test_qwen3_tp2) { parity(fi_test_fixture("hf/qwen3"), 2); } /* q/k norms */
END_TEST

START_TEST(test_refusals)
{
	struct fi_backend *be;
	struct fi_image *im;
	struct fi_model *m = NULL;
	ck_assert_int_eq(fi_backend_create("cpu", 1, &be), FI_OK);
	ck_assert_int_eq(fi_store_open_dtype("models/tiny", FI_DT_F32, &im), FI_OK);
	/* 8 heads do not split 3 ways; 4 KV heads over 8 ranks replicate, 704 / 8 = 88 */
	ck_assert_int_eq(fi_model_load_tp(&im->config, &im->set, be, 3, &m), FI_EUNSUPPORTED);
	ck_assert_ptr_null(m);
	ck_assert_int_eq(fi_model_load_tp(&im->config, &im->set, be, 0, &m), FI_EUNSUPPORTED);
	ck_assert_int_eq(fi_model_load_tp(&im->config, &im->set, be, 17, &m), FI_EUNSUPPORTED);
	ck_assert_int_eq(fi_model_load_tp(&im->config, &im->set, be, 8, &m), FI_OK);
	ck_assert_int_eq(fi_model_tp_size(m), 8);
	/* a group keeps its KV out of the arena (each rank holds part of every block) */
	struct fi_kvx *x;
	static const uint8_t fp[32];
	ck_assert_int_eq(fi_model_cache_init(m, 16, 16), FI_OK);
	ck_assert_int_eq(fi_kvx_open(&x, fi_model_cache(m), fp, 0, 1), FI_EUNSUPPORTED);
	fi_model_close(m);
	fi_image_close(im);
	fi_backend_destroy(be);
}
END_TEST

/* ---- the arena's identity of a shard ---- */

START_TEST(test_kvx_id_shard)
{
	struct fi_kv_cache kv = {.n_layers = 8, .n_kv_heads = 2, .head_dim = 32, .block_size = 16};
	uint8_t fp[32], geo[16], md[32];
	char whole[65], zero[65], one[65], r0[65], r1[65], r0of4[65], want[65], fph[65];
	unsigned len;
	for (int i = 0; i < 32; i++)
		fp[i] = (uint8_t)(i * 7 + 1);
	ck_assert_int_eq(fi_kvx_id(fp, &kv, FI_DT_BF16, whole), FI_OK);
	kv.shard_size = 1; /* TP = 1: the whole model's keys */
	ck_assert_int_eq(fi_kvx_id(fp, &kv, FI_DT_BF16, one), FI_OK);
	kv.shard_size = 2;
	ck_assert_int_eq(fi_kvx_id(fp, &kv, FI_DT_BF16, r0), FI_OK);
	kv.shard_rank = 1;
	ck_assert_int_eq(fi_kvx_id(fp, &kv, FI_DT_BF16, r1), FI_OK);
	kv.shard_rank = 0;
	kv.shard_size = 4;
	ck_assert_int_eq(fi_kvx_id(fp, &kv, FI_DT_BF16, r0of4), FI_OK);
	kv.shard_size = 0;
	ck_assert_int_eq(fi_kvx_id(fp, &kv, FI_DT_BF16, zero), FI_OK);
	ck_assert_str_eq(whole, one);
	ck_assert_str_eq(whole, zero);
	ck_assert_str_ne(r0, r1);
	ck_assert_str_ne(r0, whole);
	ck_assert_str_ne(r1, whole);
	ck_assert_str_ne(r0, r0of4);
	/* unchanged from before shards existed: kvxfer.h's formula, recomputed here */
	for (int i = 0; i < 32; i++)
		sprintf(fph + 2 * i, "%02x", fp[i]);
	uint32_t g[4] = {16, 8, 2, 32};
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++)
			geo[4 * i + j] = (uint8_t)(g[i] >> (8 * j));
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	EVP_DigestUpdate(ctx, "fi-kvx-1", 8);
	EVP_DigestUpdate(ctx, fph, 64);
	EVP_DigestUpdate(ctx, "bf16", 4);
	EVP_DigestUpdate(ctx, geo, 16);
	EVP_DigestFinal_ex(ctx, md, &len);
	EVP_MD_CTX_free(ctx);
	for (int i = 0; i < 32; i++)
		sprintf(want + 2 * i, "%02x", md[i]);
	ck_assert_str_eq(whole, want);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tp");
	TCase *tc = tcase_create("tp");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_comm_cpu);
	tcase_add_test(tc, test_kvx_id_shard);
	tcase_add_test(tc, test_tiny_tp1);
	tcase_add_test(tc, test_tiny_tp2);
	tcase_add_test(tc, test_tiny_tp4);
	tcase_add_test(tc, test_gqa_tp2);
	tcase_add_test(tc, test_gqa_tp4);
	tcase_add_test(tc, test_qwen2_tp2);
	tcase_add_test(tc, test_qwen3_tp2);
	tcase_add_test(tc, test_refusals);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
