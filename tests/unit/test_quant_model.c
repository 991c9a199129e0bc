/* Quantized models on the CPU engine against float32 references (tests/fixtures/quant, made
 * by tools/make_quant_fixtures.py: HF transformers on weights dequantized by numpy or by the
 * gguf package, never by fi).
 *
 * Each fixture is converted to an f32 image (so float tensors stay exact) the way fi-load
 * does, then run teacher-forced over prompt + reference greedy continuation in one forward,
 * once more one token at a time (decode), and once more through the decode fusions
 * (norm_qkv_rope, matmul_add, norm_glu: backend.h) that the GPU runs quantized weights in
 * (the CPU dequantizes at load, so every model whose widths they take runs them here; W8A8
 * weights keep their input rounding inside them).
 * - Weight-only formats (INT4, GGUF, FP8 without activation rounding): every logits row
 *   within 1e-4 of the reference (max abs error over max abs value, as test_model) and the
 *   greedy tokens identical.
 * - W8A8 formats (fi rounds activations to e4m3 per token, the reference does not): top-1
 *   agreement >= 98% of rows and mean KL(ref || fi) printed and bounded.
 * - fi-load --quantize fp8 on the trained tiny model against the same model in f32. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/image.h"
#include "model/model.h"
#include "model/store.h"
#include "text/tokenizer.h"
#include "util.h"

struct ref {
	int n_prompt, rows, vocab, w8a8;
	int32_t *ids;
	float *logits, *logits_w8a8; /* the second with fi's activation rounding in torch */
	json_t *texts;
};

static struct fi_backend *be;
static char tmpdir[256];

/* The decode fusions counted (the CPU composes them of its plain ops). */
static const struct fi_backend_ops *plain;
static struct fi_backend_ops counted;
static long n_fused;

static fi_err count_norm_glu(struct fi_backend *b, void *out_d, const void *x_d,
			     const struct fi_weight *norm, float eps, const struct fi_weight *gate,
			     const struct fi_weight *up, enum fi_glu_act act, int T)
{
	n_fused++;
	return plain->norm_glu(b, out_d, x_d, norm, eps, gate, up, act, T);
}

static void load_ref(const char *name, struct ref *r)
{
	char p[512];
	json_error_t je;
	json_t *o, *pr, *gr;
	size_t len;
	snprintf(p, sizeof p, "%s/ref.json", fi_test_fixture(name));
	ck_assert_msg((o = json_load_file(p, 0, &je)), "%s: %s", p, je.text);
	pr = json_object_get(o, "prompt");
	gr = json_object_get(o, "greedy");
	r->n_prompt = (int)json_array_size(pr);
	r->rows = (int)json_integer_value(json_object_get(o, "rows"));
	r->vocab = (int)json_integer_value(json_object_get(o, "vocab"));
	r->w8a8 = json_is_true(json_object_get(o, "w8a8"));
	ck_assert_int_eq(r->rows, r->n_prompt + (int)json_array_size(gr));
	r->ids = malloc(sizeof(int32_t) * (size_t)r->rows);
	for (int i = 0; i < r->rows; i++)
		r->ids[i] = (int32_t)json_integer_value(
			i < r->n_prompt ? json_array_get(pr, (size_t)i)
					: json_array_get(gr, (size_t)(i - r->n_prompt)));
	r->texts = json_incref(json_object_get(o, "texts"));
	json_decref(o);
	snprintf(p, sizeof p, "%s/logits.bin", fi_test_fixture(name));
	r->logits = (float *)fi_test_slurp(p, &len);
	ck_assert_msg(r->logits, "cannot read %s", p);
	ck_assert_uint_eq(len, sizeof(float) * (size_t)r->rows * r->vocab);
	r->logits_w8a8 = NULL;
	if (r->w8a8) {
		snprintf(p, sizeof p, "%s/logits_w8a8.bin", fi_test_fixture(name));
		r->logits_w8a8 = (float *)fi_test_slurp(p, &len);
		ck_assert_msg(r->logits_w8a8, "cannot read %s", p);
		ck_assert_uint_eq(len, sizeof(float) * (size_t)r->rows * r->vocab);
	}
}

static void free_ref(struct ref *r)
{
	free(r->ids);
	free(r->logits);
	free(r->logits_w8a8);
	json_decref(r->texts);
}

/* src (a fixture directory or GGUF file) converted to an image in tmpdir. */
static struct fi_image *convert(const char *src, const char *tag, unsigned flags, enum fi_dtype dt)
{
	char p[512];
	struct fi_image *im;
	snprintf(p, sizeof p, "%s/%s.fim", tmpdir, tag);
	ck_assert_msg(!fi_image_convert(src, p, dt, FI_IMAGE_OVERWRITE | flags), "%s: %s", src,
		      fi_errmsg());
	ck_assert_msg(!fi_image_open(p, &im), "%s", fi_errmsg());
	unlink(p);
	return im;
}

/* Logits of every row of ids: one forward, or one token at a time. */
static float *run(const struct fi_image *im, const int32_t *ids, int n, int one_by_one)
{
	struct fi_model *m;
	int s;
	float *lg;
	ck_assert_msg(!fi_model_load(&im->config, &im->set, be, &m), "%s", fi_errmsg());
	if (getenv("FI_TEST_KV_FP8"))
		ck_assert(!fi_model_set_kv_dtype(m, FI_DT_F8_E4M3));
	ck_assert_int_eq(fi_model_seq_new(m, &s), FI_OK);
	lg = fi_test_rows(m, s, ids, n, im->config.vocab, one_by_one);
	fi_model_close(m);
	return lg;
}

static double row_err(const float *a, const float *b, int V)
{
	double d = 0, m = 0;
	for (int i = 0; i < V; i++) {
		d = fmax(d, fabs((double)a[i] - b[i]));
		m = fmax(m, fabs(b[i]));
	}
	return d / m;
}

/* KL(p || q) of the softmaxes of logits p and q. */
static double kl(const float *p, const float *q, int V)
{
	double mp = p[fi_test_argmax(p, V)], mq = q[fi_test_argmax(q, V)], sp = 0, sq = 0, k = 0;
	for (int i = 0; i < V; i++) {
		sp += exp(p[i] - mp);
		sq += exp(q[i] - mq);
	}
	for (int i = 0; i < V; i++) {
		double a = exp(p[i] - mp) / sp;
		if (a > 0)
			k += a * ((p[i] - mp - log(sp)) - (q[i] - mq - log(sq)));
	}
	return k;
}

struct score {
	int top1, rows, off; /* off: rows with an error above 1e-4 */
	double kl, worst;
};

static struct score compare(const float *ref, const float *got, int rows, int V)
{
	struct score s = {0, rows, 0, 0, 0};
	for (int i = 0; i < rows; i++) {
		const float *a = ref + (size_t)i * V, *b = got + (size_t)i * V;
		s.top1 += fi_test_argmax(a, V) == fi_test_argmax(b, V);
		s.kl += kl(a, b, V) / rows;
		s.worst = fmax(s.worst, row_err(b, a, V));
		s.off += row_err(b, a, V) > 1e-4;
	}
	return s;
}

/* One fixture: its reference, the three ways of running; fused: whether its layers take
 * the decode fusions. */
static void check_fixture_f(const char *name, const char *src_rel, int fused)
{
	struct ref r;
	char src[512];
	struct fi_image *im;
	load_ref(name, &r);
	snprintf(src, sizeof src, "%s", fi_test_fixture(src_rel));
	im = convert(src, "fx", 0, FI_DT_F32);
	ck_assert_int_eq(im->config.vocab, r.vocab);
	for (int way = 0; way < 3; way++) {
		static const char *const ways[] = {"full", "decode", "fused"};
		float *lg;
		if (way == 2) {
			plain = be->ops;
			counted = *plain;
			counted.norm_glu = count_norm_glu;
			be->ops = &counted;
			be->fuse_max_T = 4;
			n_fused = 0;
		}
		lg = run(im, r.ids, r.rows, way > 0);
		if (way == 2) {
			be->ops = plain;
			be->fuse_max_T = 0;
			ck_assert_msg(fused ? n_fused > 0 : n_fused == 0, "%s: %ld fused calls", name,
				      n_fused);
		}
		struct score s = compare(r.logits, lg, r.rows, r.vocab);
		printf("%-18s %-6s top-1 %d/%d, mean KL %.2e, worst row error %.2e\n", name,
		       ways[way], s.top1, s.rows, s.kl, s.worst);
		if (r.w8a8) {
			/* Against the same rounding done by torch: exact (block FP8: 1e-6) but for
			 * a value that lands on an e4m3 rounding boundary in one and not the other
			 * (summation order), whose change reaches every later row through
			 * attention (channel FP8: 2e-2 in 23 of 40 rows); against no rounding: the
			 * rounding's own effect, which these random-weight models (Gaussian
			 * logits, small top-2 gaps) feel strongly (tests/gpu/NOTES.md). */
			struct score t = compare(r.logits_w8a8, lg, r.rows, r.vocab);
			printf("%-18s %-6s against torch's W8A8: top-1 %d/%d, worst row error %.2e, "
			       "%d rows above 1e-4\n", name, ways[way], t.top1, t.rows, t.worst, t.off);
			ck_assert_msg(t.top1 == t.rows && t.worst <= 5e-2,
				      "%s: W8A8 twin: top-1 %d/%d, %d rows off, row error %g", name,
				      t.top1, t.rows, t.off, t.worst);
			ck_assert_msg(s.top1 * 100 >= 85 * s.rows && s.kl < 0.1,
				      "%s: top-1 %d/%d, mean KL %g", name, s.top1, s.rows, s.kl);
		} else {
			ck_assert_msg(s.worst <= 1e-4, "%s: row error %g", name, s.worst);
			for (int i = r.n_prompt - 1; i < r.rows - 1; i++)
				ck_assert_msg(fi_test_argmax(lg + (size_t)i * r.vocab, r.vocab) == r.ids[i + 1],
					      "%s: greedy token %d differs", name, i + 1 - r.n_prompt);
		}
		free(lg);
	}
	/* The tokenizer a GGUF file carries encodes as the HF tokenizer of its source. */
	if (r.texts) {
		struct fi_tok *t;
		size_t i;
		json_t *c;
		ck_assert_msg(!fi_image_tokenizer(im, &t), "%s", fi_errmsg());
		json_array_foreach(r.texts, i, c) {
			const char *text = json_string_value(json_object_get(c, "text"));
			json_t *want = json_object_get(c, "ids");
			struct fi_tok_ids ids = {0};
			ck_assert_msg(!fi_tok_encode(t, text, strlen(text), FI_TOK_HF_DEFAULT, &ids), "%s",
				      fi_errmsg());
			ck_assert_msg(ids.n == json_array_size(want), "%s: '%s': %zu ids, HF %zu", name,
				      text, ids.n, json_array_size(want));
			for (size_t k = 0; k < ids.n; k++)
				ck_assert_msg(ids.v[k] == json_integer_value(json_array_get(want, k)),
					      "%s: '%s': id %zu is %u, HF %lld", name, text, k,
					      ids.v[k],
					      (long long)json_integer_value(json_array_get(want, k)));
			fi_tok_ids_free(&ids);
		}
		printf("%-18s tokenizer: %zu texts encode as HF's\n", name, json_array_size(r.texts));
		fi_tok_free(t);
	}
	fi_image_close(im);
	free_ref(&r);
}

static void check_fixture(const char *name, const char *src_rel)
{
	check_fixture_f(name, src_rel, 1);
}

START_TEST(test_awq) { check_fixture("quant/awq", "quant/awq"); }
END_TEST
START_TEST(test_gptq) { check_fixture("quant/gptq", "quant/gptq"); }
END_TEST
START_TEST(test_gptq_actorder) { check_fixture("quant/gptq_actorder", "quant/gptq_actorder"); }
END_TEST
START_TEST(test_fp8_block) { check_fixture("quant/fp8_block", "quant/fp8_block"); }
END_TEST
START_TEST(test_ct_fp8_channel) { check_fixture("quant/ct_fp8_channel", "quant/ct_fp8_channel"); }
END_TEST
START_TEST(test_ct_fp8_tensor) { check_fixture("quant/ct_fp8_tensor", "quant/ct_fp8_tensor"); }
END_TEST
START_TEST(test_gguf_kquants) { check_fixture("quant/llama_kquants", "quant/llama_kquants.gguf"); }
END_TEST
START_TEST(test_gguf_qwen2) { check_fixture("quant/qwen2_q8q4", "quant/qwen2_q8q4.gguf"); }
END_TEST
START_TEST(test_gguf_tiny) { check_fixture("quant/tiny_q4km", "quant/tiny_q4km.gguf"); }
END_TEST
/* backend.h aq_bf16: the W8A8 inputs rounded to bf16 before e4m3, the floor
 * tests/gpu/test_quant_model widens its bounds by. It moves a W8A8 model (measured on
 * fp8_block: worst row 6.5e-2, top-1 35 of 40) and leaves a weight-only one bit-equal. */
static struct score bf16_inputs(const char *name)
{
	struct ref r;
	struct fi_image *im;
	float *a, *b;
	struct score s;
	load_ref(name, &r);
	im = convert(fi_test_fixture(name), "aq", 0, FI_DT_F32);
	a = run(im, r.ids, r.rows, 0);
	be->aq_bf16 = 1;
	b = run(im, r.ids, r.rows, 0);
	be->aq_bf16 = 0;
	s = compare(a, b, r.rows, r.vocab);
	printf("%-18s inputs in bf16 first: top-1 %d/%d, worst row error %.2e\n", name, s.top1,
	       s.rows, s.worst);
	free(a);
	free(b);
	free_ref(&r);
	fi_image_close(im);
	return s;
}

START_TEST(test_aq_bf16)
{
	struct score w = bf16_inputs("quant/fp8_block"), o = bf16_inputs("quant/awq");
	ck_assert_msg(w.worst > 1e-3 && w.worst < 0.2 && w.top1 * 10 >= w.rows * 8,
		      "fp8_block: worst %g, top-1 %d/%d", w.worst, w.top1, w.rows);
	ck_assert_msg(o.worst == 0 && o.top1 == o.rows, "awq: worst %g", o.worst);
}
END_TEST

START_TEST(test_gguf_stories)
{
	/* FFN width 172: not a multiple of 8, so the decode fusions are not taken */
	check_fixture_f("quant/stories260k_q8_0", "quant/stories260k_q8_0.gguf", 0);
}
END_TEST

/* fi-load --quantize fp8 on the trained tiny model: the same text teacher-forced through
 * the f32 model and the W8A8 one. The tiny model is far more sensitive to FP8 than large
 * ones (hidden 256); the bounds are what it measures with a margin (tests/gpu/NOTES.md). */
START_TEST(test_quantize_tiny)
{
	static const char text[] =
		"The with statement is used to wrap the execution of a block with methods defined "
		"by a context manager. This allows common try...except...finally usage patterns "
		"to be encapsulated for convenient reuse.";
	struct fi_image *f = convert("models/tiny", "f32", 0, FI_DT_F32);
	struct fi_image *q = convert("models/tiny", "fp8", FI_IMAGE_QUANT_FP8, FI_DT_F32);
	struct fi_tok *t;
	struct fi_tok_ids ids = {0};
	int n, V = f->config.vocab;
	int32_t seq[512];
	ck_assert_msg(!fi_image_tokenizer(f, &t), "%s", fi_errmsg());
	ck_assert_msg(!fi_tok_encode(t, text, strlen(text), FI_TOK_HF_DEFAULT, &ids), "%s",
				      fi_errmsg());
	n = (int)ids.n;
	for (int i = 0; i < n; i++)
		seq[i] = (int32_t)ids.v[i];
	{
		float *a = run(f, seq, n, 0), *b = run(q, seq, n, 0);
		struct score s = compare(a, b, n, V);
		printf("%-18s top-1 %d/%d, mean KL %.3e (W8A8 against f32)\n", "tiny --quantize",
		       s.top1, s.rows, s.kl);
		ck_assert_msg(s.top1 * 100 >= 70 * n && s.kl < 0.1, "top-1 %d/%d, KL %g", s.top1, n,
			      s.kl);
		free(a);
		free(b);
	}
	for (int i = 0; i < q->set.n; i++) /* linear layers only */
		ck_assert_msg((q->set.t[i].dtype == FI_DT_FP8) ==
				      (q->set.t[i].ndim == 2 && strcmp(q->set.t[i].name, "tok_embd")),
			      "%s is %s", q->set.t[i].name, fi_dtype_name(q->set.t[i].dtype));
	fi_tok_ids_free(&ids);
	fi_tok_free(t);
	fi_image_close(f);
	fi_image_close(q);
}
END_TEST

/* --kv-dtype fp8 on the trained tiny model: the same text teacher-forced with an f32 and an
 * FP8 KV cache; one token at a time it gives the FP8 full forward's argmaxes (its K/V come
 * from the one-row product instead of the GEMM: last-bit differences, of which the odd one
 * crosses an e4m3 rounding boundary, hence 2e-2 rather than 1e-4), and a fork in the middle
 * of a block copies the FP8 block (values and scales): both branches continue alike. */
START_TEST(test_kv_fp8)
{
	static const char text[] =
		"The with statement is used to wrap the execution of a block with methods defined "
		"by a context manager. This allows common try...except...finally usage patterns.";
	struct fi_image *im = convert("models/tiny", "kv", 0, FI_DT_F32);
	struct fi_model *m;
	struct fi_tok *t;
	struct fi_tok_ids ids = {0};
	int n, V = im->config.vocab, s0, s1, nr;
	int32_t seq[512];
	float *a, *b, *c, *d;
	ck_assert_msg(!fi_image_tokenizer(im, &t), "%s", fi_errmsg());
	ck_assert_msg(!fi_tok_encode(t, text, strlen(text), FI_TOK_HF_DEFAULT, &ids), "%s",
		      fi_errmsg());
	n = (int)ids.n;
	for (int i = 0; i < n; i++)
		seq[i] = (int32_t)ids.v[i];
	a = run(im, seq, n, 0);
	setenv("FI_TEST_KV_FP8", "1", 1); /* run() makes the cache FP8 */
	b = run(im, seq, n, 0);
	c = run(im, seq, n, 1);
	unsetenv("FI_TEST_KV_FP8");
	{
		struct score s = compare(a, b, n, V), u = compare(b, c, n, V);
		printf("%-18s top-1 %d/%d, mean KL %.3e (FP8 KV against f32); decode vs full %.2e\n",
		       "tiny --kv-dtype fp8", s.top1, n, s.kl, u.worst);
		ck_assert_msg(s.top1 * 100 >= 90 * n && s.kl < 0.02, "top-1 %d/%d KL %g", s.top1, n,
			      s.kl);
		ck_assert_msg(u.worst <= 2e-2 && u.top1 == n, "decode: %g, top-1 %d/%d", u.worst,
			      u.top1, n);
	}
	/* fork mid-block: the branches' next logits are the same */
	ck_assert(!fi_model_load(&im->config, &im->set, be, &m));
	ck_assert(!fi_model_set_kv_dtype(m, FI_DT_F8_E4M3));
	ck_assert(!fi_model_cache_init(m, 64, 4));
	ck_assert_int_eq(fi_model_set_kv_dtype(m, FI_DT_F32), FI_ESTATE);
	ck_assert(!fi_model_seq_new(m, &s0));
	{
		int32_t sq[9] = {s0, s0, s0, s0, s0, s0, s0, s0, s0};
		struct fi_batch bb = {9, seq, sq, NULL};
		ck_assert_msg(!fi_model_forward(m, &bb, NULL, &nr), "%s", fi_errmsg());
	}
	ck_assert(!fi_model_seq_fork(m, s0, &s1));
	d = malloc(sizeof(float) * 2 * (size_t)V);
	for (int k = 0; k < 2; k++) {
		int32_t sq[1] = {k ? s1 : s0};
		struct fi_batch bb = {1, seq + 9, sq, NULL};
		ck_assert(!fi_model_forward(m, &bb, d + (size_t)k * V, &nr));
	}
	ck_assert_msg(!memcmp(d, d + V, sizeof(float) * (size_t)V), "forked branches differ");
	ck_assert(compare(b + (size_t)9 * V, d, 1, V).worst <= 2e-2);
	fi_model_close(m);
	free(a), free(b), free(c), free(d);
	fi_tok_ids_free(&ids);
	fi_tok_free(t);
	fi_image_close(im);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("quant_model");
	TCase *tc = tcase_create("fixtures");
	snprintf(tmpdir, sizeof tmpdir, "/tmp/fi-quant-test.XXXXXX");
	if (!mkdtemp(tmpdir) || fi_backend_create("cpu", 2, &be))
		return 1;
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_awq);
	tcase_add_test(tc, test_gptq);
	tcase_add_test(tc, test_gptq_actorder);
	tcase_add_test(tc, test_fp8_block);
	tcase_add_test(tc, test_ct_fp8_channel);
	tcase_add_test(tc, test_ct_fp8_tensor);
	tcase_add_test(tc, test_gguf_kquants);
	tcase_add_test(tc, test_gguf_qwen2);
	tcase_add_test(tc, test_gguf_tiny);
	tcase_add_test(tc, test_gguf_stories);
	tcase_add_test(tc, test_quantize_tiny);
	tcase_add_test(tc, test_kv_fp8);
	tcase_add_test(tc, test_aq_bf16);
	suite_add_tcase(s, tc);
	int rc = fi_test_run(s);
	fi_backend_destroy(be);
	rmdir(tmpdir);
	return rc;
}
