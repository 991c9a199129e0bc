/* Forward pass parity with Hugging Face transformers (tests/fixtures/hf, made by
 * tools/make_hf_fixtures.py) and with a real trained model (stories260K, corpus).
 *
 * Error measure, per logits row: max_i |a_i - b_i| / max_i |b_i| (b = HF); every row of
 * every family must be <= 1e-4, and the 32 greedy tokens must be identical. Each family
 * runs three ways: one full-sequence forward, token-by-token decode (incremental KV), and
 * a mixed batch of three sequences at different stages (with a fork) in the same calls; the
 * last two once more through the decode fusions (backend.h: norm_qkv_rope, matmul_add,
 * norm_glu, add_norm, which the CPU backend has but does not use by itself), counting that
 * they ran (every family: with q/k norms, the norm, q/k/v and rope_kv_write apart). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model.h"
#include "model/names.h"
#include "model/safetensors.h"
#include "util.h"

#define TOL 1e-4

struct ref {
	int n_prompt, n_greedy, rows, vocab;
	int32_t *ids; /* prompt then greedy, [rows] */
	float *logits; /* [rows, vocab] */
};

static struct fi_backend *be;

static void load_ref(const char *name, struct ref *r)
{
	char p[512];
	json_error_t je;
	json_t *o, *pr, *gr;
	size_t len;
	char *bin;
	snprintf(p, sizeof p, "%s/ref.json", fi_test_fixture(name));
	o = json_load_file(p, 0, &je);
	ck_assert_msg(o, "%s: %s", p, je.text);
	pr = json_object_get(o, "prompt");
	gr = json_object_get(o, "greedy");
	r->n_prompt = (int)json_array_size(pr);
	r->n_greedy = (int)json_array_size(gr);
	r->rows = (int)json_integer_value(json_object_get(o, "rows"));
	r->vocab = (int)json_integer_value(json_object_get(o, "vocab"));
	ck_assert_int_eq(r->rows, r->n_prompt + r->n_greedy);
	r->ids = malloc(sizeof(int32_t) * (size_t)r->rows);
	for (int i = 0; i < r->n_prompt; i++)
		r->ids[i] = (int32_t)json_integer_value(json_array_get(pr, (size_t)i));
	for (int i = 0; i < r->n_greedy; i++)
		r->ids[r->n_prompt + i] = (int32_t)json_integer_value(json_array_get(gr, (size_t)i));
	json_decref(o);
	snprintf(p, sizeof p, "%s/logits.bin", fi_test_fixture(name));
	bin = fi_test_slurp(p, &len);
	ck_assert_msg(bin, "cannot read %s", p);
	ck_assert_uint_eq(len, sizeof(float) * (size_t)r->rows * r->vocab);
	r->logits = (float *)bin;
}

static void free_ref(struct ref *r)
{
	free(r->ids);
	free(r->logits);
}

static double row_err(const float *a, const float *b, int V)
{
	double d = 0, m = 0;
	for (int i = 0; i < V; i++) {
		if (fabs((double)a[i] - b[i]) > d)
			d = fabs((double)a[i] - b[i]);
		if (fabs(b[i]) > m)
			m = fabs(b[i]);
	}
	return d / m;
}

static int argmax(const float *l, int V)
{
	int b = 0;
	for (int i = 1; i < V; i++)
		if (l[i] > l[b])
			b = i;
	return b;
}

static struct fi_model *open_fixture(const char *name)
{
	struct fi_model *m;
	fi_err e = fi_model_load_hf(fi_test_fixture(name), be, &m);
	ck_assert_msg(!e, "%s: %s", name, fi_errmsg());
	return m;
}

/* All rows in one forward. */
static double run_full(const char *name, const struct ref *r)
{
	struct fi_model *m = open_fixture(name);
	int32_t *seq = calloc((size_t)r->rows, sizeof *seq);
	int8_t *want = malloc((size_t)r->rows);
	float *lg = malloc(sizeof(float) * (size_t)r->rows * r->vocab);
	int s, n;
	double worst = 0;
	ck_assert_int_eq(fi_model_seq_new(m, &s), FI_OK);
	for (int i = 0; i < r->rows; i++) {
		seq[i] = s;
		want[i] = 1;
	}
	struct fi_batch b = {r->rows, r->ids, seq, want};
	ck_assert_int_eq(fi_batch_n_logits(&b), r->rows);
	ck_assert_msg(!fi_model_forward(m, &b, lg, &n), "%s", fi_errmsg());
	ck_assert_int_eq(n, r->rows);
	for (int i = 0; i < r->rows; i++) {
		double e = row_err(lg + (size_t)i * r->vocab, r->logits + (size_t)i * r->vocab,
				   r->vocab);
		ck_assert_msg(e <= TOL, "%s full: row %d error %g", name, i, e);
		worst = fmax(worst, e);
		if (i >= r->n_prompt - 1 && i < r->rows - 1)
			ck_assert_int_eq(argmax(lg + (size_t)i * r->vocab, r->vocab), r->ids[i + 1]);
	}
	ck_assert_int_eq(fi_model_seq_len(m, s), r->rows);
	free(seq);
	free(want);
	free(lg);
	fi_model_close(m);
	return worst;
}

/* Prompt one token at a time, then 32 greedy steps choosing our own argmax. */
static double run_decode(const char *name, const struct ref *r, int *agree)
{
	struct fi_model *m = open_fixture(name);
	float *lg = malloc(sizeof(float) * (size_t)r->vocab);
	int s, n;
	int32_t tok = r->ids[0];
	double worst = 0;
	*agree = 0;
	ck_assert_int_eq(fi_model_seq_new(m, &s), FI_OK);
	for (int i = 0; i < r->rows; i++) {
		struct fi_batch b = {1, &tok, &s, NULL};
		double e;
		ck_assert_msg(!fi_model_forward(m, &b, lg, &n), "%s", fi_errmsg());
		ck_assert_int_eq(n, 1);
		e = row_err(lg, r->logits + (size_t)i * r->vocab, r->vocab);
		ck_assert_msg(e <= TOL, "%s decode: position %d error %g", name, i, e);
		worst = fmax(worst, e);
		if (i + 1 < r->n_prompt) {
			tok = r->ids[i + 1];
		} else if (i + 1 < r->rows) {
			tok = argmax(lg, r->vocab);
			*agree += tok == r->ids[i + 1];
			ck_assert_msg(tok == r->ids[i + 1], "%s decode: greedy token %d: %d, HF %d",
				      name, i + 1 - r->n_prompt, tok, r->ids[i + 1]);
		}
	}
	free(lg);
	fi_model_close(m);
	return worst;
}

/* Three sequences advancing by different, pseudo-random chunk sizes, their tokens
 * interleaved in each batch; a fork starts the third from the first mid-block. Blocks of
 * 4 tokens so that sequences span many blocks (and the fork copies a shared block). */
static double run_mixed(const char *name, const struct ref *r)
{
	struct fi_model *m = open_fixture(name);
	int sq[3], done[3] = {0, 0, 0}, n_seq = 2;
	uint32_t lcg = 12345;
	int32_t *tok = malloc(sizeof(int32_t) * 3 * (size_t)r->rows);
	int32_t *seq = malloc(sizeof(int32_t) * 3 * (size_t)r->rows);
	int *who = malloc(sizeof(int) * 3 * (size_t)r->rows);
	float *lg = malloc(sizeof(float) * 3 * (size_t)r->rows * r->vocab);
	double worst = 0;
	int forked = 0;
	ck_assert_int_eq(fi_model_cache_init(m, 3 * (r->rows / 4 + 2), 4), FI_OK);
	ck_assert_int_eq(fi_model_seq_new(m, &sq[0]), FI_OK);
	ck_assert_int_eq(fi_model_seq_new(m, &sq[1]), FI_OK);
	while (done[0] < r->rows || done[1] < r->rows || (n_seq == 3 && done[2] < r->rows)) {
		int take[3] = {0, 0, 0}, left[3], T = 0, n;
		if (!forked && done[0] >= 9) { /* 9 = two full blocks and one token */
			ck_assert_int_eq(fi_model_seq_fork(m, sq[0], &sq[2]), FI_OK);
			ck_assert_int_eq(fi_model_seq_len(m, sq[2]), done[0]);
			done[2] = done[0];
			n_seq = 3;
			forked = 1;
		}
		for (int k = 0; k < n_seq; k++) {
			lcg = lcg * 1103515245u + 12345u;
			take[k] = (lcg >> 16) % 3 == 0 ? 1 : (int)((lcg >> 18) % 9);
			if (take[k] > r->rows - done[k])
				take[k] = r->rows - done[k];
			left[k] = take[k];
		}
		/* interleave: round-robin over sequences with tokens left */
		for (int any = 1; any;) {
			any = 0;
			for (int k = 0; k < n_seq; k++)
				if (left[k]) {
					int pos = done[k] + take[k] - left[k];
					tok[T] = r->ids[pos];
					seq[T] = sq[k];
					who[T] = k;
					T++;
					left[k]--;
					any = 1;
				}
		}
		if (!T)
			continue;
		int8_t *want = malloc((size_t)T);
		memset(want, 1, (size_t)T);
		struct fi_batch b = {T, tok, seq, want};
		ck_assert_msg(!fi_model_forward(m, &b, lg, &n), "%s", fi_errmsg());
		ck_assert_int_eq(n, T);
		{
			int seen[3] = {0, 0, 0};
			for (int t = 0; t < T; t++) {
				int k = who[t], pos = done[k] + seen[k]++;
				double e = row_err(lg + (size_t)t * r->vocab,
						   r->logits + (size_t)pos * r->vocab, r->vocab);
				ck_assert_msg(e <= TOL, "%s mixed: seq %d position %d error %g", name, k,
					      pos, e);
				worst = fmax(worst, e);
			}
		}
		for (int k = 0; k < n_seq; k++) {
			done[k] += take[k];
			ck_assert_int_eq(fi_model_seq_len(m, sq[k]), done[k]);
		}
		free(want);
	}
	free(tok);
	free(seq);
	free(who);
	free(lg);
	fi_model_close(m);
	return worst;
}

/* The CPU ops with the fused ones counted: matmul_add (the o and down products of the
 * Llama family, Phi-3 and the MoE families), norm_glu (every dense MLP) and add_norm (Gemma's
 * post-norms, the MoE blocks). */
static struct fi_backend_ops counted;
static const struct fi_backend_ops *plain;
static long n_fused;

static fi_err count_matmul_add(struct fi_backend *b, void *x_d, const void *in_d,
			       const struct fi_weight *w, int T)
{
	n_fused++;
	return plain->matmul_add(b, x_d, in_d, w, T);
}

static fi_err count_norm_glu(struct fi_backend *b, void *out_d, const void *x_d,
			     const struct fi_weight *norm, float eps, const struct fi_weight *gate,
			     const struct fi_weight *up, enum fi_glu_act act, int T)
{
	n_fused++;
	return plain->norm_glu(b, out_d, x_d, norm, eps, gate, up, act, T);
}

static fi_err count_add_norm(struct fi_backend *b, void *x_d, const void *y_d,
			     const struct fi_weight *norm, float eps, int T, int D)
{
	n_fused++;
	return plain->add_norm(b, x_d, y_d, norm, eps, T, D);
}

static void family_fused(const char *name, int fusable)
{
	struct ref r;
	double ed, em;
	int agree;
	load_ref(name, &r);
	plain = be->ops;
	ck_assert_msg(plain->norm_qkv_rope && plain->matmul_add && plain->norm_glu &&
			      plain->add_norm,
		      "the CPU backend lacks the decode fusions");
	counted = *plain;
	counted.matmul_add = count_matmul_add;
	counted.norm_glu = count_norm_glu;
	counted.add_norm = count_add_norm;
	be->ops = &counted;
	be->fuse_max_T = 4;
	n_fused = 0;
	ed = run_decode(name, &r, &agree);
	em = run_mixed(name, &r);
	be->ops = plain;
	be->fuse_max_T = 0;
	ck_assert_msg(fusable ? n_fused > 0 : n_fused == 0, "%s: fused products ran %ld times",
		      name, n_fused);
	printf("parity %-12s fused decode %.2e  mixed %.2e  greedy %d/%d  (%ld fused calls)\n",
	       name, ed, em, agree, r.n_greedy, n_fused);
	free_ref(&r);
}

/* fusable: the model takes the decode fusions (run_layers' and fi_arch_layers' fused
 * paths). */
static void family_ex(const char *name, int fusable)
{
	struct ref r;
	double ef, ed, em;
	int agree;
	load_ref(name, &r);
	ef = run_full(name, &r);
	ed = run_decode(name, &r, &agree);
	em = run_mixed(name, &r);
	printf("parity %-12s max rel err: full %.2e  decode %.2e  mixed %.2e  greedy %d/%d\n",
	       name, ef, ed, em, agree, r.n_greedy);
	free_ref(&r);
	family_fused(name, fusable);
}

static void family(const char *name)
{
	family_ex(name, 1);
}

START_TEST(test_llama) { family("hf/llama"); }
END_TEST
START_TEST(test_llama_tied) { family("hf/llama_tied"); }
END_TEST
START_TEST(test_llama3_rope) { family("hf/llama3_rope"); }
END_TEST
START_TEST(test_mistral) { family("hf/mistral"); }
END_TEST
START_TEST(test_qwen2) { family("hf/qwen2"); }
END_TEST
START_TEST(test_qwen3) { family("hf/qwen3"); }
END_TEST
/* The families of arch.h (tools/make_hf_fixtures.py says what each fixture exercises). */
START_TEST(test_gemma2) { family_ex("hf/gemma2", 1); }
END_TEST
START_TEST(test_gemma3) { family_ex("hf/gemma3", 1); }
END_TEST
START_TEST(test_gemma3_mm) { family_ex("hf/gemma3_mm", 1); }
END_TEST
START_TEST(test_phi3) { family_ex("hf/phi3", 1); }
END_TEST
START_TEST(test_phi3_longrope) { family_ex("hf/phi3_longrope", 1); }
END_TEST
START_TEST(test_mixtral) { family_ex("hf/mixtral", 1); }
END_TEST
START_TEST(test_qwen3_moe) { family_ex("hf/qwen3_moe", 1); }
END_TEST
START_TEST(test_qwen2_yarn) { family("hf/qwen2_yarn"); }
END_TEST

/* A full cache fails with FI_EFULL and leaves the sequence as it was. */
START_TEST(test_cache_full)
{
	struct fi_model *m = open_fixture("hf/llama");
	int32_t ids[12] = {1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, seq[12] = {0};
	float *lg = malloc(sizeof(float) * 300);
	int s, n;
	ck_assert_int_eq(fi_model_cache_init(m, 2, 4), FI_OK);
	ck_assert_int_eq(fi_model_cache_init(m, 2, 4), FI_ESTATE);
	ck_assert_int_eq(fi_model_seq_new(m, &s), FI_OK);
	struct fi_batch b = {6, ids, seq, NULL};
	ck_assert_int_eq(fi_model_forward(m, &b, lg, &n), FI_OK);
	b.n_tokens = 12;
	ck_assert_int_eq(fi_model_forward(m, &b, lg, &n), FI_EFULL);
	ck_assert_int_eq(fi_model_seq_len(m, s), 6);
	ck_assert_int_eq(fi_kvcache_free_blocks(fi_model_cache(m)), 0);
	ids[0] = 300; /* outside the vocabulary */
	b.n_tokens = 1;
	ck_assert_int_eq(fi_model_forward(m, &b, lg, &n), FI_ERANGE);
	seq[0] = 7; /* no such sequence */
	ids[0] = 1;
	ck_assert_int_eq(fi_model_forward(m, &b, lg, &n), FI_ENOTFOUND);
	ck_assert_int_eq(fi_model_seq_truncate(m, s, 3), FI_OK);
	ck_assert_int_eq(fi_kvcache_free_blocks(fi_model_cache(m)), 1);
	fi_model_seq_free(m, s);
	ck_assert_int_eq(fi_kvcache_free_blocks(fi_model_cache(m)), 2);
	free(lg);
	fi_model_close(m);
}
END_TEST

/* The llama3 frequency table against values computed by transformers. */
START_TEST(test_rope_llama3)
{
	struct fi_config c = {.head_dim = 16, .rope_theta = 10000, .rope_type = FI_ROPE_LLAMA3,
			      .rope_factor = 8, .rope_low_freq_factor = 1,
			      .rope_high_freq_factor = 4, .rope_orig_max_pos = 32};
	/* transformers 5.23 ROPE_INIT_FUNCTIONS["llama3"] for this config: pair 0 kept,
	 * pair 1 smoothed, the rest divided by the factor */
	static const float want[8] = {1.0f, 0.095839977f, 0.0125f, 0.0039528473f, 0.00125f,
				      0.00039528473f, 0.00012500001f, 3.9528473e-05f};
	float got[8];
	ck_assert_int_eq(fi_rope_inv_freq(&c, got), FI_OK);
	for (int i = 0; i < 8; i++)
		ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-4f * want[i], "%d: %g vs %g", i,
			      got[i], want[i]);
	/* dynamic NTK within max_position_embeddings: the default frequencies, 10000^(-i/8) */
	c.rope_type = FI_ROPE_DYNAMIC;
	ck_assert_int_eq(fi_rope_inv_freq(&c, got), FI_OK);
	for (int i = 0; i < 8; i++)
		ck_assert_msg(fabsf(got[i] - powf(10000.0f, -i / 8.0f)) <= 1e-6f * got[0], "%d: %g", i,
			      got[i]);
}
END_TEST

/* YaRN and LongRoPE frequency tables and attention factors against transformers 5.25
 * (ROPE_INIT_FUNCTIONS["yarn"], ["longrope"]) for the configs of the qwen2_yarn and
 * phi3_longrope fixtures. */
START_TEST(test_rope_ext)
{
	struct fi_config c = {.head_dim = 16, .rope_theta = 10000, .rope_type = FI_ROPE_YARN,
			      .rope_factor = 4, .rope_orig_max_pos = 32, .rope_beta_fast = 32,
			      .rope_beta_slow = 1, .rope_truncate = 1, .rope_attn_factor = 1.138629436111989};
	static const float yarn[8] = {1.0f, 0.19764235615730286f, 0.02500000037252903f,
				      0.007905694656074047f, 0.0024999999441206455f,
				      0.0007905694656074047f, 0.0002500000118743628f,
				      7.905694656074047e-05f};
	float got[8];
	ck_assert_int_eq(fi_rope_inv_freq(&c, got), FI_OK);
	for (int i = 0; i < 8; i++)
		ck_assert_msg(fabsf(got[i] - yarn[i]) <= 1e-6f * yarn[i], "yarn %d: %g vs %g", i, got[i],
			      yarn[i]);
	ck_assert_float_eq_tol(fi_attn_scale(&c), 0.25f * 1.138629436111989f * 1.138629436111989f, 1e-7f);
}
END_TEST

/* Dynamic NTK: within max_position_embeddings the llama fixture's logits exactly (the
 * frequencies are the default ones, as in transformers); a position past it is refused and
 * the sequence is left as it was. */
START_TEST(test_rope_dynamic)
{
	struct fi_config c;
	struct fi_st_model *st;
	struct fi_tensor t[64];
	char names[64][64];
	struct fi_model *m;
	struct ref r;
	int n = 0, s, rows;
	load_ref("hf/llama", &r);
	ck_assert_int_eq(fi_config_load_dir(fi_test_fixture("hf/llama"), &c), FI_OK);
	c.rope_type = FI_ROPE_DYNAMIC;
	c.rope_factor = 4;
	c.max_pos = 20;
	ck_assert_int_eq(fi_st_open_dir(fi_test_fixture("hf/llama"), &st), FI_OK);
	for (int i = 0; i < st->set.n && n < 64; i++)
		if (fi_name_from_hf(st->set.t[i].name, names[n], 64) == 1) {
			t[n] = st->set.t[i];
			t[n].name = names[n];
			n++;
		}
	struct fi_tensor_set ts = {n, t};
	ck_assert_msg(!fi_model_load(&c, &ts, be, &m), "%s", fi_errmsg());
	fi_st_close_dir(st);
	float *lg = malloc(sizeof(float) * 20 * (size_t)r.vocab);
	int32_t seq[20] = {0};
	int8_t want[20];
	ck_assert_int_eq(fi_model_seq_new(m, &s), FI_OK);
	for (int i = 0; i < 20; i++)
		seq[i] = s, want[i] = 1;
	struct fi_batch b = {20, r.ids, seq, want};
	ck_assert_msg(!fi_model_forward(m, &b, lg, &rows), "%s", fi_errmsg());
	for (int i = 0; i < 20; i++)
		ck_assert_msg(row_err(lg + (size_t)i * r.vocab, r.logits + (size_t)i * r.vocab, r.vocab) <= TOL,
			      "dynamic row %d", i);
	struct fi_batch one = {1, r.ids + 20, seq, NULL};
	ck_assert_int_eq(fi_model_forward(m, &one, lg, &rows), FI_ERANGE);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "position 20 is past max_position_embeddings (20)"));
	ck_assert_int_eq(fi_model_seq_len(m, s), 20);
	free(lg);
	fi_model_close(m);
	free_ref(&r);
}
END_TEST

/* The YaRN and LongRoPE keys as config.json gives them, parsed into the fields above. */
START_TEST(test_rope_ext_parse)
{
	static const char yarn[] = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":64,"
		"\"num_hidden_layers\":1,\"num_attention_heads\":4,\"intermediate_size\":8,"
		"\"vocab_size\":10,\"max_position_embeddings\":131072,\"rms_norm_eps\":1e-6,"
		"\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0,"
		"\"original_max_position_embeddings\":32768}}";
	struct fi_config c;
	ck_assert_msg(!fi_config_parse(yarn, sizeof yarn - 1, NULL, 0, &c), "%s", fi_errmsg());
	ck_assert_int_eq(c.rope_type, FI_ROPE_YARN);
	ck_assert_int_eq(c.rope_orig_max_pos, 32768);
	ck_assert(fabs(c.rope_attn_factor - (0.1 * log(4.0) + 1)) < 1e-12);
	ck_assert(c.rope_beta_fast == 32 && c.rope_beta_slow == 1 && c.rope_truncate == 1);
}
END_TEST

/* stories260K reproduces its greedy reference token for token (prompt [BOS], stop on
 * BOS/EOS or 256 tokens). */
START_TEST(test_stories260k)
{
	const char *dir = fi_test_corpus("corpus/models/stories260K-hf", "stories260K parity");
	const char *tv = dir ? fi_test_corpus("corpus/testvectors/stories260K/greedy_t0.json",
					      "stories260K parity") : NULL;
	struct fi_model *m;
	json_error_t je;
	json_t *o, *gen, *head;
	float lg[512];
	int32_t tok = 1;
	int s, n, i;
	if (!dir || !tv)
		return;
	o = json_load_file(tv, 0, &je);
	ck_assert_msg(o, "%s", je.text);
	gen = json_object_get(o, "generated_ids");
	head = json_object_get(o, "first_step_logits_head");
	ck_assert_msg(!fi_model_load_hf(dir, be, &m), "%s", fi_errmsg());
	ck_assert_int_eq(fi_model_seq_new(m, &s), FI_OK);
	for (i = 0; i < 256; i++) {
		struct fi_batch b = {1, &tok, &s, NULL};
		ck_assert_msg(!fi_model_forward(m, &b, lg, &n), "%s", fi_errmsg());
		if (i == 0)
			for (size_t j = 0; j < json_array_size(head); j++)
				ck_assert(fabs(lg[j] - json_number_value(json_array_get(head, j))) < 1e-4);
		tok = argmax(lg, 512);
		if (tok == 1 || tok == 2)
			break;
		ck_assert_msg((size_t)i < json_array_size(gen), "generated past the reference");
		ck_assert_msg(tok == json_integer_value(json_array_get(gen, (size_t)i)),
			      "token %d: %d, reference %lld", i, tok,
			      json_integer_value(json_array_get(gen, (size_t)i)));
	}
	ck_assert_int_eq(i, (int)json_array_size(gen));
	printf("stories260K: %d greedy tokens identical to the reference\n", i);
	json_decref(o);
	fi_model_close(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("model");
	int rc;
	if (fi_backend_cpu_create(2, &be)) {
		fprintf(stderr, "test_model: %s\n", fi_errmsg());
		return 1;
	}
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_llama);
	tcase_add_test(tc, test_llama_tied);
	tcase_add_test(tc, test_llama3_rope);
	tcase_add_test(tc, test_mistral);
	tcase_add_test(tc, test_qwen2);
	tcase_add_test(tc, test_qwen3);
	tcase_add_test(tc, test_gemma2);
	tcase_add_test(tc, test_gemma3);
	tcase_add_test(tc, test_gemma3_mm);
	tcase_add_test(tc, test_phi3);
	tcase_add_test(tc, test_phi3_longrope);
	tcase_add_test(tc, test_mixtral);
	tcase_add_test(tc, test_qwen3_moe);
	tcase_add_test(tc, test_qwen2_yarn);
	tcase_add_test(tc, test_cache_full);
	tcase_add_test(tc, test_rope_llama3);
	tcase_add_test(tc, test_rope_ext);
	tcase_add_test(tc, test_rope_ext_parse);
	tcase_add_test(tc, test_rope_dynamic);
	tcase_add_test(tc, test_stories260k);
	suite_add_tcase(s, tc);
	rc = fi_test_run(s);
	fi_backend_destroy(be);
	return rc;
}
