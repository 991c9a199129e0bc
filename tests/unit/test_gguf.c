/* GGUF parsing and the malformed quantized-model corpus (tests/fixtures/bad_quant, made by
 * tools/make_bad_quant_fixtures.py): every case fails with its code and a message naming
 * what is wrong (and the file), never a crash (make check-asan runs this under ASan). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/quant.h"
#include "model/gguf.h"
#include "model/image.h"
#include "text/tokenizer.h"
#include "util.h"

static fi_err code_of(const char *s)
{
	static const struct {
		const char *n;
		fi_err e;
	} m[] = {{"EFORMAT", FI_EFORMAT}, {"ERANGE", FI_ERANGE}, {"ENOTFOUND", FI_ENOTFOUND},
		 {"EUNSUPPORTED", FI_EUNSUPPORTED}, {"EMISMATCH", FI_EMISMATCH}};
	for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
		if (!strcmp(s, m[i].n))
			return m[i].e;
	ck_abort_msg("unknown code %s in cases.tsv", s);
	return FI_OK;
}

START_TEST(test_bad_corpus)
{
	size_t len;
	char *tab = fi_test_slurp(fi_test_fixture("bad_quant/cases.tsv"), &len), *line, *save = NULL;
	char tmp[] = "/tmp/fi-gguf-test.XXXXXX", out[512];
	int n[3] = {0, 0, 0};
	ck_assert_msg(tab, "tests/fixtures/bad_quant/cases.tsv missing");
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(out, sizeof out, "%s/x.fim", tmp);
	for (line = strtok_r(tab, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *kind, *file, *code, *sub, *s2 = NULL, path[512];
		fi_err want, got;
		if (line[0] == '#')
			continue;
		kind = strtok_r(line, "\t", &s2);
		file = strtok_r(NULL, "\t", &s2);
		code = strtok_r(NULL, "\t", &s2);
		sub = strtok_r(NULL, "\t", &s2);
		ck_assert_msg(kind && file && code && sub, "bad line in cases.tsv");
		want = code_of(code);
		snprintf(path, sizeof path, "%s/%s", fi_test_fixture("bad_quant"), file);
		fi_clear_error();
		if (!strcmp(kind, "gguf")) {
			struct fi_gguf *g = (void *)1;
			size_t dlen;
			char *data = fi_test_slurp(path, &dlen);
			uint8_t *copy;
			ck_assert_msg(data, "%s missing", path);
			got = fi_gguf_open(path, &g);
			ck_assert_msg(got == want && !g, "%s: got %s (%s), want %s", file,
				      fi_strerror(got), fi_errmsg(), code);
			ck_assert_msg(strstr(fi_errmsg(), path), "%s: '%s' does not name the file", file,
				      fi_errmsg());
			/* the same bytes in memory, an exact-size copy for ASan */
			copy = malloc(dlen ? dlen : 1);
			memcpy(copy, data, dlen);
			ck_assert_int_eq(fi_gguf_parse(copy, dlen, &g), want);
			free(copy);
			free(data);
			n[0]++;
		} else {
			got = fi_image_convert(path, out, FI_DT_BF16, FI_IMAGE_OVERWRITE);
			ck_assert_msg(access(out, F_OK), "%s: an image was left behind", file);
			n[!strcmp(kind, "conv") ? 1 : 2]++;
		}
		ck_assert_msg(got == want, "%s: got %s (%s), want %s", file, fi_strerror(got),
			      fi_errmsg(), code);
		ck_assert_msg(strstr(fi_errmsg(), sub), "%s: message '%s' lacks '%s'", file,
			      fi_errmsg(), sub);
	}
	free(tab);
	rmdir(tmp);
	ck_assert_int_ge(n[0], 30);
	ck_assert_int_ge(n[1], 10);
	ck_assert_int_ge(n[2], 12);
}
END_TEST

/* A file gguf-py wrote: keys, typed getters, tensor infos, and every prefix of it (a
 * truncated download) refused cleanly. */
START_TEST(test_parse_fixture)
{
	size_t len;
	char *data = fi_test_slurp(fi_test_fixture("quant/stories260k_q8_0.gguf"), &len);
	struct fi_gguf *g;
	struct fi_gguf_str *toks;
	uint64_t nt;
	int64_t v;
	double f;
	char *s;
	const struct fi_gguf_tensor *t;
	ck_assert_ptr_nonnull(data);
	ck_assert_msg(!fi_gguf_parse(data, len, &g), "%s", fi_errmsg());
	ck_assert_uint_eq(g->version, 3);
	ck_assert_uint_eq(g->alignment, 32);
	ck_assert_int_eq(fi_gguf_get_str(g, "general.architecture", &s), FI_OK);
	ck_assert_str_eq(s, "llama");
	free(s);
	ck_assert_int_eq(fi_gguf_get_int(g, "llama.block_count", &v), FI_OK);
	ck_assert_int_eq(v, 5);
	ck_assert_int_eq(fi_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &f), FI_OK);
	ck_assert(f > 9e-6 && f < 1.1e-5);
	ck_assert_int_eq(fi_gguf_get_int(g, "general.architecture", &v), FI_EFORMAT);
	ck_assert_int_eq(fi_gguf_get_int(g, "no.such.key", &v), FI_ENOTFOUND);
	ck_assert_int_eq(fi_gguf_get_strs(g, "tokenizer.ggml.tokens", &toks, &nt), FI_OK);
	ck_assert_uint_eq(nt, 512);
	ck_assert(toks[1].n == 3 && !memcmp(toks[1].p, "<s>", 3));
	free(toks);
	ck_assert_ptr_nonnull(t = fi_gguf_tensor(g, "blk.0.attn_q.weight"));
	ck_assert_uint_eq(t->type, FI_GGML_Q8_0);
	ck_assert_int_eq(t->n_dims, 2);
	ck_assert_int_eq(t->ne[0], 64);
	ck_assert_uint_eq(t->nbytes, 64 / 32 * 34 * 64);
	ck_assert((const char *)t->data >= data && (const char *)t->data + t->nbytes <= data + len);
	fi_gguf_close(g);
	for (size_t cut = 0; cut < len; cut += cut < 4096 ? 1 : 4093) {
		uint8_t *p = malloc(cut ? cut : 1);
		memcpy(p, data, cut);
		ck_assert_msg(fi_gguf_parse(p, cut, &g) == FI_EFORMAT, "prefix of %zu bytes", cut);
		free(p);
	}
	free(data);
}
END_TEST

/* An image's quantized tensor is validated at open: a header byte changed in a written
 * image is a named error (the layout is checked before any weight is used). */
START_TEST(test_image_quant_header)
{
	char tmp[] = "/tmp/fi-gguf-img.XXXXXX", p[512];
	struct fi_image *im;
	size_t len;
	uint8_t *buf;
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	snprintf(p, sizeof p, "%s/a.fim", tmp);
	ck_assert_msg(!fi_image_convert(fi_test_fixture("quant/gptq_actorder"), p, FI_DT_BF16, 0),
		      "%s", fi_errmsg());
	ck_assert_msg(!fi_image_open(p, &im), "%s", fi_errmsg());
	buf = (uint8_t *)fi_test_slurp(p, &len);
	for (int i = 0; i < im->set.n; i++) {
		const struct fi_tensor *t = &im->set.t[i];
		size_t off = (size_t)((const uint8_t *)t->data - im->map);
		struct fi_image *bad;
		uint8_t save;
		int32_t dup;
		if (t->dtype != FI_DT_INT4)
			continue;
		save = buf[off + 8]; /* group size 128 -> 129 */
		buf[off + 8] = 129;
		ck_assert_int_eq(fi_image_parse(buf, len, &bad), FI_EFORMAT);
		ck_assert_msg(strstr(fi_errmsg(), t->name) && strstr(fi_errmsg(), "group size"),
			      "%s", fi_errmsg());
		buf[off + 8] = save;
		/* the act-order permutation with a repeated index */
		{
			struct fi_qlayout l;
			ck_assert_int_eq(fi_quant_layout(t->dtype, t->shape[0], t->shape[1], t->data,
							 t->nbytes, &l), FI_OK);
			ck_assert_int_eq(l.perm, 1);
			memcpy(&dup, buf + off + l.off_perm, 4);
			memcpy(buf + off + l.off_perm + 4, &dup, 4);
			ck_assert_int_eq(fi_image_parse(buf, len, &bad), FI_EFORMAT);
			ck_assert_msg(strstr(fi_errmsg(), "permutation"), "%s", fi_errmsg());
		}
		break;
	}
	free(buf);
	fi_image_close(im);
	unlink(p);
	rmdir(tmp);
}
END_TEST

/* ---- a tokenizer.json written as GGUF vocabulary, the way llama.cpp's converter writes it,
 * then rebuilt by gguf_tok.c: it must encode every test input as the original does. ---- */

struct buf {
	uint8_t *p;
	size_t n, cap;
};

static void put(struct buf *b, const void *d, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2;
		b->p = realloc(b->p, b->cap);
	}
	memcpy(b->p + b->n, d, n);
	b->n += n;
}

static void put_u32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(struct buf *b, const char *s, size_t n)
{
	put_u64(b, n);
	put(b, s, n);
}

static void put_key(struct buf *b, const char *k, uint32_t type)
{
	put_str(b, k, strlen(k));
	put_u32(b, type);
}

static uint8_t *vocab_gguf(json_t *tj, const char *pre, int add_bos, int64_t bos, size_t *len)
{
	json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab");
	json_t *merges = json_object_get(model, "merges"), *added = json_object_get(tj, "added_tokens");
	size_t n = 0, i;
	const char *k;
	json_t *v, *a;
	const char **tok;
	int32_t *type;
	struct buf b = {0};
	json_object_foreach(vocab, k, v)
		if ((size_t)json_integer_value(v) + 1 > n)
			n = (size_t)json_integer_value(v) + 1;
	json_array_foreach(added, i, a)
		if ((size_t)json_integer_value(json_object_get(a, "id")) + 1 > n)
			n = (size_t)json_integer_value(json_object_get(a, "id")) + 1;
	tok = calloc(n, sizeof *tok);
	type = calloc(n, sizeof *type);
	json_object_foreach(vocab, k, v) {
		tok[json_integer_value(v)] = k;
		type[json_integer_value(v)] = 1;
	}
	json_array_foreach(added, i, a) {
		json_int_t id = json_integer_value(json_object_get(a, "id"));
		tok[id] = json_string_value(json_object_get(a, "content"));
		type[id] = json_is_true(json_object_get(a, "special")) ? 3 : 4;
	}
	put(&b, "GGUF", 4);
	put_u32(&b, 3);
	put_u64(&b, 0);
	put_u64(&b, 7);
	put_key(&b, "tokenizer.ggml.model", FI_GGUF_STRING);
	put_str(&b, "gpt2", 4);
	put_key(&b, "tokenizer.ggml.pre", FI_GGUF_STRING);
	put_str(&b, pre, strlen(pre));
	put_key(&b, "tokenizer.ggml.tokens", FI_GGUF_ARRAY);
	put_u32(&b, FI_GGUF_STRING);
	put_u64(&b, n);
	for (i = 0; i < n; i++)
		put_str(&b, tok[i] ? tok[i] : "", tok[i] ? strlen(tok[i]) : 0);
	put_key(&b, "tokenizer.ggml.token_type", FI_GGUF_ARRAY);
	put_u32(&b, FI_GGUF_I32);
	put_u64(&b, n);
	put(&b, type, 4 * n);
	put_key(&b, "tokenizer.ggml.merges", FI_GGUF_ARRAY);
	put_u32(&b, FI_GGUF_STRING);
	put_u64(&b, json_array_size(merges));
	json_array_foreach(merges, i, a) {
		if (json_is_string(a)) {
			put_str(&b, json_string_value(a), strlen(json_string_value(a)));
		} else { /* ["a", "b"] */
			char m[1024];
			snprintf(m, sizeof m, "%s %s", json_string_value(json_array_get(a, 0)),
				 json_string_value(json_array_get(a, 1)));
			put_str(&b, m, strlen(m));
		}
	}
	put_key(&b, "tokenizer.ggml.bos_token_id", FI_GGUF_U32);
	put_u32(&b, (uint32_t)bos);
	put_key(&b, "tokenizer.ggml.add_bos_token", FI_GGUF_BOOL);
	put(&b, &(uint8_t){(uint8_t)add_bos}, 1);
	free(tok);
	free(type);
	*len = b.n;
	return b.p;
}

static void vocab_case(const char *name, const char *pre, int add_bos, int64_t bos)
{
	char rel[256];
	const char *path;
	size_t len, glen, i;
	char *text, *tj = NULL, *cfg = NULL;
	uint8_t *g;
	json_t *root, *inputs, *it;
	json_error_t je;
	struct fi_gguf *gg;
	struct fi_tok *ref, *got;
	int n = 0;
	snprintf(rel, sizeof rel, "corpus/tokenizers/%s/tokenizer.json", name);
	if (!(path = fi_test_corpus(rel, name)))
		return;
	text = fi_test_slurp(path, &len);
	ck_assert_ptr_nonnull(root = json_loadb(text, len, 0, &je));
	ck_assert_msg(!fi_tok_load_json(text, len, &ref), "%s", fi_errmsg());
	g = vocab_gguf(root, pre, add_bos, bos, &glen);
	ck_assert_msg(!fi_gguf_parse(g, glen, &gg), "%s", fi_errmsg());
	ck_assert_msg(!fi_gguf_tokenizer(gg, &tj, &cfg), "%s", fi_errmsg());
	ck_assert_msg(!fi_tok_load_json(tj, strlen(tj), &got), "%s", fi_errmsg());
	inputs = json_load_file(fi_test_fixture("tok/inputs.json"), JSON_ALLOW_NUL, &je);
	ck_assert_msg(inputs, "inputs.json: %s", je.text);
	json_array_foreach(json_object_get(inputs, "inputs"), i, it) {
		json_t *js = json_object_get(it, "text");
		const char *s = json_string_value(js);
		size_t sl = json_string_length(js);
		struct fi_tok_ids a = {0}, c = {0};
		ck_assert(!fi_tok_encode(ref, s, sl, FI_TOK_HF_DEFAULT, &a));
		ck_assert_msg(!fi_tok_encode(got, s, sl, FI_TOK_HF_DEFAULT, &c), "%s", fi_errmsg());
		ck_assert_msg(a.n == c.n && (!a.n || !memcmp(a.v, c.v, a.n * sizeof *a.v)),
			      "%s: input %zu encodes differently (%zu ids, tokenizer.json %zu)", name,
			      i, c.n, a.n);
		fi_tok_ids_free(&a);
		fi_tok_ids_free(&c);
		n++;
	}
	printf("%s as GGUF vocabulary (pre '%s'): %d inputs encode as its tokenizer.json\n", name,
	       pre, n);
	json_decref(inputs);
	fi_tok_free(ref);
	fi_tok_free(got);
	fi_gguf_close(gg);
	json_decref(root);
	free(tj);
	free(cfg);
	free(g);
	free(text);
}

START_TEST(test_gpt2_vocabs)
{
	vocab_case("llama-3", "llama-bpe", 1, 128000);
	vocab_case("gpt2", "gpt-2", 0, 50256);
	vocab_case("phi-2", "phi-2", 0, 50256);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gguf");
	TCase *tc = tcase_create("gguf");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_bad_corpus);
	tcase_add_test(tc, test_parse_fixture);
	tcase_add_test(tc, test_image_quant_header);
	tcase_add_test(tc, test_gpt2_vocabs);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
