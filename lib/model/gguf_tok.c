/* gguf_tok: the tokenizer a GGUF file carries (tokenizer.ggml.*), rebuilt as the Hugging
 * Face tokenizer.json and tokenizer_config.json that fi's tokenizer reads.
 *
 * Two kinds, as llama.cpp names them in tokenizer.ggml.model:
 *   "gpt2"  byte-level BPE: tokens, merges ("a b"), and the pre-tokenizer regex named by
 *           tokenizer.ggml.pre, mapped as llama.cpp's llama-vocab.cpp maps the names;
 *   "llama" SentencePiece BPE: tokens with scores; the merges are derived from the scores as
 *           transformers' SentencePieceExtractor derives them (every split of a piece into
 *           two vocabulary pieces, ranked by the piece's score, highest first), which gives
 *           the merge order of llama.cpp's score-driven SPM tokenizer; byte fallback, "▁"
 *           for spaces and a prefix space unless tokenizer.ggml.add_space_prefix is false.
 * Token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte): control
 * and unknown tokens become special added tokens, user-defined ones plain added tokens. */
#include "gguf_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/log.h"

/* llama.cpp's pre-tokenizer regexes (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_*), by the names
 * convert_hf_to_gguf.py writes. */
#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RX_LLAMA3                                                                            \
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "           \
	"?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                             \
	"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+" \
	"|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const struct {
	const char *name, *regex;
	int ignore_merges;
} pre_map[] = {
	{"default", RX_GPT2, 0},     {"gpt-2", RX_GPT2, 0},	   {"gpt2", RX_GPT2, 0},
	{"llama-bpe", RX_LLAMA3, 1}, {"llama3", RX_LLAMA3, 1},	   {"smaug-bpe", RX_LLAMA3, 1},
	{"qwen2", RX_QWEN2, 0},	     {"deepseek-r1-qwen", RX_QWEN2, 0},
	{"phi-2", RX_GPT2, 0},	     {"olmo", RX_GPT2, 0},
};

enum { TT_NORMAL = 1, TT_UNKNOWN, TT_CONTROL, TT_USER, TT_UNUSED, TT_BYTE };

struct vocab {
	struct fi_gguf_str *tok;
	uint64_t n;
	const struct fi_gguf_kv *types, *scores;
	const char *path;
};

static int ttype(const struct vocab *v, uint64_t i)
{
	return v->types ? (int)fi_gguf_arr_int(v->types, i) : TT_NORMAL;
}

static json_t *jstr(const struct fi_gguf_str *s)
{
	return json_stringn_nocheck(s->p, (size_t)s->n);
}

/* vocab {token: id}, and added_tokens for control, unknown and user-defined ones. */
static fi_err vocab_json(const struct vocab *v, json_t *model, json_t *added)
{
	json_t *vo = json_object();
	if (!vo)
		return fi_fail(FI_ENOMEM, "gguf tokenizer");
	json_object_set_new(model, "vocab", vo);
	for (uint64_t i = 0; i < v->n; i++) {
		int ty = ttype(v, i);
		char *k = strndup(v->tok[i].p, (size_t)v->tok[i].n);
		if (!k)
			return fi_fail(FI_ENOMEM, "gguf tokenizer");
		if (fi_utf8_valid(k, strlen(k)) != v->tok[i].n) {
			free(k);
			return fi_fail(FI_EFORMAT, "gguf '%s': token %llu is not UTF-8 text", v->path,
				       (unsigned long long)i);
		}
		/* A later duplicate would take over the id of an earlier one: keep the first. */
		if (!json_object_get(vo, k))
			json_object_set_new(vo, k, json_integer((json_int_t)i));
		if (ty == TT_CONTROL || ty == TT_UNKNOWN || ty == TT_USER)
			json_array_append_new(
				added, json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id",
						 (json_int_t)i, "content", k, "single_word", 0,
						 "lstrip", 0, "rstrip", 0, "normalized", ty == TT_USER,
						 "special", ty != TT_USER));
		free(k);
	}
	return FI_OK;
}

struct merge {
	uint32_t l, r;
	float score;
	uint64_t order;
};

static int cmp_merge(const void *a, const void *b)
{
	const struct merge *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* SentencePiece: merges from the scores (see the top of the file). */
static fi_err spm_merges(const struct vocab *v, json_t *vocab, json_t *merges)
{
	struct merge *m = NULL;
	size_t n = 0, cap = 0;
	uint64_t order = 0;
	char buf[1024];
	if (!v->scores || v->scores->n != v->n)
		return fi_fail(FI_EFORMAT, "gguf '%s': tokenizer.ggml.scores is missing or not one "
			       "per token", v->path);
	for (uint64_t i = 0; i < v->n; i++) {
		const struct fi_gguf_str *t = &v->tok[i];
		int ty = ttype(v, i);
		size_t first = n;
		if ((ty != TT_NORMAL && ty != TT_USER) || t->n >= sizeof buf)
			continue;
		for (uint64_t k = 1; k < t->n; k++) {
			json_t *a, *b;
			memcpy(buf, t->p, k);
			buf[k] = 0;
			if (!(a = json_object_get(vocab, buf)))
				continue;
			memcpy(buf, t->p + k, t->n - k);
			buf[t->n - k] = 0;
			if (!(b = json_object_get(vocab, buf)))
				continue;
			if (n == cap) {
				struct merge *nm = realloc(m, (cap = cap ? 2 * cap : 4096) * sizeof *m);
				if (!nm) {
					free(m);
					return fi_fail(FI_ENOMEM, "gguf tokenizer merges");
				}
				m = nm;
			}
			m[n++] = (struct merge){(uint32_t)json_integer_value(a),
						(uint32_t)json_integer_value(b),
						(float)fi_gguf_arr_f64(v->scores, i), 0};
		}
		/* The splits of one piece by (left id, right id), as the extractor orders them
		 * before the stable sort by score. */
		for (size_t a = first + 1; a < n; a++)
			for (size_t b = a; b > first && (m[b - 1].l > m[b].l ||
							 (m[b - 1].l == m[b].l && m[b - 1].r > m[b].r));
			     b--) {
				struct merge t2 = m[b];
				m[b] = m[b - 1];
				m[b - 1] = t2;
			}
		for (size_t a = first; a < n; a++)
			m[a].order = ++order;
	}
	if (n)
		qsort(m, n, sizeof *m, cmp_merge);
	for (size_t i = 0; i < n; i++) {
		json_t *pair = json_array();
		json_array_append_new(pair, jstr(&v->tok[m[i].l]));
		json_array_append_new(pair, jstr(&v->tok[m[i].r]));
		json_array_append_new(merges, pair);
	}
	free(m);
	return FI_OK;
}

static fi_err bpe_merges(const struct fi_gguf *g, json_t *merges)
{
	struct fi_gguf_str *mg = NULL;
	uint64_t n = 0;
	fi_err e = fi_gguf_get_strs(g, "tokenizer.ggml.merges", &mg, &n);
	if (e == FI_ENOTFOUND)
		return fi_fail(FI_EFORMAT, "gguf '%s': tokenizer.ggml.merges is missing (a gpt2 "
			       "tokenizer needs its merges)", g->path);
	if (e)
		return e;
	for (uint64_t i = 0; i < n; i++) {
		const char *sp = memchr(mg[i].p, ' ', (size_t)mg[i].n);
		if (!sp || sp == mg[i].p || sp + 1 == mg[i].p + mg[i].n) {
			free(mg);
			return fi_fail(FI_EFORMAT, "gguf '%s': merge %llu is not two tokens joined by "
				       "a space", g->path, (unsigned long long)i);
		}
		json_array_append_new(merges, json_pack("[s%, s%]", mg[i].p, (size_t)(sp - mg[i].p),
							sp + 1,
							(size_t)(mg[i].p + mg[i].n - sp - 1)));
	}
	free(mg);
	return FI_OK;
}

/* Token id from a key, checked against the vocabulary; -1 when absent. */
static int64_t tok_id(const struct fi_gguf *g, const char *key, uint64_t n, fi_err *e)
{
	int64_t v;
	fi_err r = fi_gguf_get_int(g, key, &v);
	if (r == FI_ENOTFOUND)
		return -1;
	if (!r && (v < 0 || (uint64_t)v >= n))
		r = fi_fail(FI_EFORMAT, "gguf '%s': %s = %lld is outside the vocabulary", g->path,
			    key, (long long)v);
	if (r)
		*e = r;
	return r ? -1 : v;
}

static json_t *special_entry(const struct vocab *v, int64_t id)
{
	char *s = strndup(v->tok[id].p, (size_t)v->tok[id].n);
	json_t *o = json_pack("{s:s, s:[I], s:[s]}", "id", s ? s : "", "ids", (json_int_t)id,
			      "tokens", s ? s : "");
	free(s);
	return o;
}

/* BOS (and EOS) added around every encoding, as tokenizer.ggml.add_bos_token says. */
static json_t *post_processor(const struct vocab *v, int64_t bos, int64_t eos, int add_bos,
			      int add_eos)
{
	json_t *single = json_array(), *sp = json_object(), *pp;
	if (add_bos && bos >= 0) {
		char *s = strndup(v->tok[bos].p, (size_t)v->tok[bos].n);
		json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id",
							s ? s : "", "type_id", 0));
		json_object_set_new(sp, s ? s : "", special_entry(v, bos));
		free(s);
	}
	json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "Sequence", "id", "A",
						"type_id", 0));
	if (add_eos && eos >= 0) {
		char *s = strndup(v->tok[eos].p, (size_t)v->tok[eos].n);
		json_array_append_new(single, json_pack("{s:{s:s, s:i}}", "SpecialToken", "id",
							s ? s : "", "type_id", 0));
		json_object_set_new(sp, s ? s : "", special_entry(v, eos));
		free(s);
	}
	pp = json_pack("{s:s, s:o, s:O, s:o}", "type", "TemplateProcessing", "single", single,
		       "pair", single, "special_tokens", sp);
	return pp;
}

fi_err fi_gguf_tokenizer(const struct fi_gguf *g, char **tok_json, char **cfg_json)
{
	struct vocab v = {0};
	char *model = NULL, *pre = NULL, *tmpl = NULL;
	json_t *root = NULL, *m = NULL, *added = NULL, *merges = NULL, *cfg = NULL;
	int64_t bos, eos, unk;
	int add_bos = 0, add_eos = 0, add_space = 1, spm;
	fi_err e = FI_OK;
	*tok_json = *cfg_json = NULL;
	v.path = g->path;
	if ((e = fi_gguf_get_str(g, "tokenizer.ggml.model", &model)))
		return e == FI_ENOTFOUND ? fi_fail(FI_ENOTFOUND, "gguf '%s' holds no tokenizer "
						   "(tokenizer.ggml.model)", g->path)
					 : e;
	if (!strcmp(model, "none") || !strcmp(model, "no_vocab")) {
		e = fi_fail(FI_ENOTFOUND, "gguf '%s' holds no tokenizer (tokenizer.ggml.model is "
			    "'%s')", g->path, model);
		goto out;
	}
	spm = !strcmp(model, "llama");
	if (!spm && strcmp(model, "gpt2")) {
		e = fi_fail(FI_EUNSUPPORTED, "gguf '%s': tokenizer model '%s' is not supported (gpt2, "
			    "llama)", g->path, model);
		goto out;
	}
	if ((e = fi_gguf_get_strs(g, "tokenizer.ggml.tokens", &v.tok, &v.n))) {
		if (e == FI_ENOTFOUND)
			e = fi_fail(FI_EFORMAT, "gguf '%s': tokenizer.ggml.tokens is missing", g->path);
		goto out;
	}
	v.types = fi_gguf_find(g, "tokenizer.ggml.token_type");
	v.scores = fi_gguf_find(g, "tokenizer.ggml.scores");
	if ((v.types && (v.types->type != FI_GGUF_ARRAY || v.types->n != v.n ||
			 v.types->arr_type == FI_GGUF_STRING)) ||
	    (v.scores && (v.scores->type != FI_GGUF_ARRAY || v.scores->arr_type == FI_GGUF_STRING))) {
		e = fi_fail(FI_EFORMAT, "gguf '%s': tokenizer.ggml.token_type or scores is not a "
			    "numeric array of one entry per token", g->path);
		goto out;
	}
	bos = tok_id(g, "tokenizer.ggml.bos_token_id", v.n, &e);
	eos = tok_id(g, "tokenizer.ggml.eos_token_id", v.n, &e);
	unk = tok_id(g, "tokenizer.ggml.unknown_token_id", v.n, &e);
	if (e)
		goto out;
	if (fi_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos) == FI_EFORMAT ||
	    fi_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos) == FI_EFORMAT ||
	    fi_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &add_space) == FI_EFORMAT) {
		e = FI_EFORMAT;
		goto out;
	}
	if (fi_gguf_find(g, "tokenizer.ggml.add_bos_token") == NULL)
		add_bos = spm; /* llama.cpp's defaults: SPM adds BOS, BPE does not */
	root = json_object();
	m = json_object();
	added = json_array();
	merges = json_array();
	if (!root || !m || !added || !merges) {
		e = fi_fail(FI_ENOMEM, "gguf tokenizer");
		goto out;
	}
	json_object_set_new(root, "version", json_string("1.0"));
	json_object_set_new(root, "added_tokens", added);
	json_object_set_new(m, "type", json_string("BPE"));
	if ((e = vocab_json(&v, m, added)))
		goto out;
	if (spm) {
		json_t *nz, *dec;
		if ((e = spm_merges(&v, json_object_get(m, "vocab"), merges)))
			goto out;
		nz = json_array();
		dec = json_array();
		if (add_space)
			json_array_append_new(nz, json_pack("{s:s, s:s}", "type", "Prepend", "prepend",
							    "\u2581"));
		json_array_append_new(nz, json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace",
						    "pattern", "String", " ", "content", "\u2581"));
		json_object_set_new(root, "normalizer",
				    json_pack("{s:s, s:o}", "type", "Sequence", "normalizers", nz));
		json_object_set_new(root, "pre_tokenizer", json_null());
		json_array_append_new(dec, json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace",
						     "pattern", "String", "\u2581", "content", " "));
		json_array_append_new(dec, json_pack("{s:s}", "type", "ByteFallback"));
		json_array_append_new(dec, json_pack("{s:s}", "type", "Fuse"));
		if (add_space)
			json_array_append_new(dec, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip",
							     "content", " ", "start", 1, "stop", 0));
		json_object_set_new(root, "decoder",
				    json_pack("{s:s, s:o}", "type", "Sequence", "decoders", dec));
		json_object_set_new(m, "byte_fallback", json_true());
		json_object_set_new(m, "fuse_unk", json_true());
		json_object_set_new(m, "ignore_merges", json_false());
		if (unk >= 0)
			json_object_set_new(m, "unk_token", jstr(&v.tok[unk]));
	} else {
		size_t i = 0;
		if ((e = bpe_merges(g, merges)))
			goto out;
		fi_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
		for (i = 0; pre && i < sizeof pre_map / sizeof pre_map[0]; i++)
			if (!strcmp(pre, pre_map[i].name))
				break;
		if (!pre || i == sizeof pre_map / sizeof pre_map[0]) {
			/* llama.cpp does the same: unknown names fall back to GPT-2's. */
			fi_warn("gguf '%s': pre-tokenizer '%s' is not known; using GPT-2's", g->path,
				pre ? pre : "(none)");
			i = 0;
		}
		json_object_set_new(
			root, "pre_tokenizer",
			json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type",
				  "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex",
				  pre_map[i].regex, "behavior", "Isolated", "invert", 0, "type",
				  "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0));
		json_object_set_new(root, "normalizer", json_null());
		json_object_set_new(root, "decoder",
				    json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel",
					      "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1));
		json_object_set_new(m, "byte_fallback", json_false());
		json_object_set_new(m, "ignore_merges", json_boolean(pre_map[i].ignore_merges));
	}
	json_object_set_new(m, "merges", merges);
	merges = NULL;
	json_object_set_new(root, "model", m);
	m = NULL;
	json_object_set_new(root, "post_processor", post_processor(&v, bos, eos, add_bos, add_eos));
	cfg = json_object();
	if (bos >= 0)
		json_object_set_new(cfg, "bos_token", jstr(&v.tok[bos]));
	if (eos >= 0)
		json_object_set_new(cfg, "eos_token", jstr(&v.tok[eos]));
	if (unk >= 0)
		json_object_set_new(cfg, "unk_token", jstr(&v.tok[unk]));
	json_object_set_new(cfg, "add_bos_token", json_boolean(add_bos));
	if (!fi_gguf_get_str(g, "tokenizer.chat_template", &tmpl))
		json_object_set_new(cfg, "chat_template", json_string(tmpl));
	if (!(*tok_json = json_dumps(root, JSON_COMPACT)) ||
	    !(*cfg_json = json_dumps(cfg, JSON_INDENT(1)))) {
		free(*tok_json);
		*tok_json = NULL;
		e = fi_fail(FI_ENOMEM, "gguf tokenizer");
	}
out:
	json_decref(root);
	json_decref(m);
	json_decref(merges);
	json_decref(cfg);
	free(v.tok);
	free(model);
	free(pre);
	free(tmpl);
	return e;
}
