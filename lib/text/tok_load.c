/* Loading: tokenizer.json (jansson) and the binary form, from memory or a path.
 *
 * Binary form (native little-endian, every field checked on load):
 *   "FITOKv01" | u32 json_len | json (tokenizer.json minus model.vocab and model.merges, with
 *   model.type always set) | u32 id_space | u32 nvocab | u32 pool_len | pool |
 *   u32 off[id_space + 1] | u8 present[id_space] | u32 nmerges |
 *   u32 merge[3 * nmerges] (a, b, new id by rank) | Unigram only: f64 score[id_space]
 * Loading it skips parsing the vocabulary and resolving merge strings, the slow part of the
 * JSON path. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tok_internal.h"

static const char MAGIC[8] = {'F', 'I', 'T', 'O', 'K', 'v', '0', '1'};

int fi_tok_is_binary(const void *buf, size_t len)
{
	return len >= 8 && !memcmp(buf, MAGIC, 8);
}

static struct fi_tok *tok_new(void)
{
	struct fi_tok *t = calloc(1, sizeof *t);
	if (t)
		pthread_mutex_init(&t->lock, NULL);
	return t;
}

void fi_tok_free(struct fi_tok *t)
{
	if (!t)
		return;
	tok_bpe_free(&t->bpe);
	if (t->norm) {
		tok_norm_free(t->norm);
		free(t->norm);
	}
	if (t->pre) {
		tok_pre_free(t->pre);
		free(t->pre);
	}
	if (t->post) {
		tok_post_free(t->post);
		free(t->post);
	}
	if (t->dec) {
		tok_dec_free(t->dec);
		free(t->dec);
	}
	tok_added_free(t);
	free(t->json_rest);
	for (int i = 0; i < t->npool; i++)
		tok_ctx_free(t->pool[i]);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

fi_err tok_parse_pipeline(struct fi_tok *t, json_t *root)
{
	json_t *v;
	fi_err e;
	if ((v = json_object_get(root, "normalizer")) && !json_is_null(v)) {
		if (!(t->norm = calloc(1, sizeof *t->norm)))
			return fi_fail(FI_ENOMEM, "tokenizer");
		if ((e = tok_norm_parse(v, t->norm, 0)))
			return e;
	}
	if ((v = json_object_get(root, "pre_tokenizer")) && !json_is_null(v)) {
		if (!(t->pre = calloc(1, sizeof *t->pre)))
			return fi_fail(FI_ENOMEM, "tokenizer");
		if ((e = tok_pre_parse(v, t->pre, 0)))
			return e;
	}
	if ((v = json_object_get(root, "post_processor")) && !json_is_null(v)) {
		if (!(t->post = calloc(1, sizeof *t->post)))
			return fi_fail(FI_ENOMEM, "tokenizer");
		if ((e = tok_post_parse(t, v, t->post, 0)))
			return e;
	}
	if ((v = json_object_get(root, "decoder")) && !json_is_null(v)) {
		if (!(t->dec = calloc(1, sizeof *t->dec)))
			return fi_fail(FI_ENOMEM, "tokenizer");
		if ((e = tok_dec_parse(v, t->dec, 0)))
			return e;
	}
	return FI_OK;
}

static fi_err check_root(json_t *root)
{
	json_t *ver = json_object_get(root, "version"), *m;
	if (!json_is_object(root))
		return fi_fail(FI_EFORMAT, "tokenizer.json: not a JSON object");
	if (ver && (!json_is_string(ver) || strcmp(json_string_value(ver), "1.0")))
		return fi_fail(FI_EUNSUPPORTED, "tokenizer.json: unknown version");
	m = json_object_get(root, "model");
	if (!json_is_object(m))
		return fi_fail(FI_EFORMAT, "tokenizer.json: missing model");
	return FI_OK;
}

/* Ids a post-processor adds must exist: an engine indexes embeddings with them. */
static fi_err check_post(const struct tok_post *p, uint32_t space)
{
	fi_err e;
	for (size_t i = 0; i < p->nsub; i++)
		if ((e = check_post(&p->sub[i], space)))
			return e;
	for (size_t i = 0; i < p->npre + p->npost; i++) {
		uint32_t id = i < p->npre ? p->pre[i] : p->post[i - p->npre];
		if (id >= space)
			return fi_fail(FI_ERANGE, "post_processor: special token id %u is outside the vocabulary (%u)",
				       id, space);
	}
	return FI_OK;
}

/* Everything after the model tables: pipeline, added tokens, id tables. */
static fi_err finish(struct fi_tok *t, json_t *root)
{
	fi_err e;
	if ((e = tok_parse_pipeline(t, root)) || (e = tok_added_parse(t, json_object_get(root, "added_tokens"))) ||
	    (e = tok_added_build(t)) || (t->post && (e = check_post(t->post, t->id_space))))
		return e;
	return FI_OK;
}

fi_err fi_tok_load_json(const char *json, size_t len, struct fi_tok **out)
{
	json_error_t je;
	json_t *root = json_loadb(json, len, 0, &je), *rest = NULL, *m;
	struct fi_tok *t = NULL;
	fi_err e;
	*out = NULL;
	if (!root)
		return fi_fail(FI_EFORMAT, "tokenizer.json: line %d: %s", je.line, je.text);
	if ((e = check_root(root)))
		goto fail;
	if (!(t = tok_new())) {
		e = fi_fail(FI_ENOMEM, "tokenizer");
		goto fail;
	}
	if ((e = tok_model_parse(json_object_get(root, "model"), &t->bpe)) || (e = finish(t, root)))
		goto fail;
	/* Keep the pipeline description for the binary form, with the model kind spelled out
	 * (older files leave it to be inferred from the fields this drops). */
	rest = json_copy(root);
	m = rest ? json_copy(json_object_get(rest, "model")) : NULL;
	if (m) {
		json_object_del(m, "merges");
		json_object_del(m, "vocab");
	}
	if (!m || json_object_set_new(m, "type", json_string(tok_model_kind_name(t->bpe.kind))) ||
	    json_object_set_new(rest, "model", m) ||
	    !(t->json_rest = json_dumps(rest, JSON_COMPACT | JSON_ENSURE_ASCII))) {
		e = fi_fail(FI_ENOMEM, "tokenizer");
		goto fail;
	}
	t->json_rest_len = strlen(t->json_rest);
	json_decref(rest);
	json_decref(root);
	*out = t;
	return FI_OK;
fail:
	json_decref(rest);
	json_decref(root);
	fi_tok_free(t);
	return e;
}

fi_err fi_tok_save_binary(const struct fi_tok *t, void **buf, size_t *len)
{
	const struct tok_bpe *b = &t->bpe;
	size_t nscore = b->kind == TM_UNIGRAM ? (size_t)b->id_space : 0;
	size_t n = 8 + 4 + t->json_rest_len + 12 + b->pool_len + 4 * ((size_t)b->id_space + 1) +
		   b->id_space + 4 + 12 * (size_t)b->nmerges + 8 * nscore;
	char *p = malloc(n), *w = p;
	uint32_t u;
	if (!p)
		return fi_fail(FI_ENOMEM, "tokenizer binary form");
#define PUT(src, sz) (memcpy(w, (src), (sz)), w += (sz))
#define PUT32(x) (u = (uint32_t)(x), PUT(&u, 4))
	PUT(MAGIC, 8);
	PUT32(t->json_rest_len);
	PUT(t->json_rest, t->json_rest_len);
	PUT32(b->id_space);
	PUT32(b->nvocab);
	PUT32(b->pool_len);
	PUT(b->pool, b->pool_len);
	PUT(b->off, 4 * ((size_t)b->id_space + 1));
	PUT(b->present, b->id_space);
	PUT32(b->nmerges);
	if (b->nmerges)
		PUT(b->merge, 12 * (size_t)b->nmerges);
	if (nscore)
		PUT(b->score, 8 * nscore);
#undef PUT
#undef PUT32
	*buf = p;
	*len = (size_t)(w - p);
	return FI_OK;
}

struct rd {
	const char *p;
	size_t n;
};

static const void *take(struct rd *r, size_t sz)
{
	const char *q = r->p;
	if (sz > r->n)
		return NULL;
	r->p += sz;
	r->n -= sz;
	return q;
}

static int take32(struct rd *r, uint32_t *v)
{
	const void *q = take(r, 4);
	if (!q)
		return -1;
	memcpy(v, q, 4);
	return 0;
}

fi_err fi_tok_load_binary(const void *buf, size_t len, struct fi_tok **out)
{
	struct rd r = {buf, len};
	struct fi_tok *t = NULL;
	struct tok_bpe *b;
	json_t *root = NULL;
	json_error_t je;
	uint32_t jl, pl, nv;
	const void *q;
	fi_err e;
	size_t cnt = 0;
	*out = NULL;
	if (!fi_tok_is_binary(buf, len))
		return fi_fail(FI_EFORMAT, "tokenizer binary: bad magic");
	take(&r, 8);
	if (take32(&r, &jl) || !(q = take(&r, jl)))
		return fi_fail(FI_EFORMAT, "tokenizer binary: truncated");
	if (!(root = json_loadb(q, jl, 0, &je)))
		return fi_fail(FI_EFORMAT, "tokenizer binary: pipeline: %s", je.text);
	if ((e = check_root(root)))
		goto fail;
	if (!(t = tok_new())) {
		e = fi_fail(FI_ENOMEM, "tokenizer");
		goto fail;
	}
	b = &t->bpe;
	/* Binaries written before other kinds existed hold BPE, its "type" as the file had it. */
	if (json_object_get(json_object_get(root, "model"), "type") &&
	    (e = tok_model_kind(json_object_get(root, "model"), &b->kind)))
		goto fail;
	e = fi_fail(FI_EFORMAT, "tokenizer binary: truncated or inconsistent model tables");
	if (take32(&r, &b->id_space) || take32(&r, &nv) || take32(&r, &pl) || b->id_space > (1u << 26))
		goto fail;
	/* Sizes are checked against the bytes present before anything is allocated. */
	if ((size_t)pl > r.n || 5 * ((size_t)b->id_space + 1) > r.n - pl || nv > b->id_space)
		goto fail;
	b->nvocab = nv;
	b->pool_len = pl;
	b->off = malloc(4 * ((size_t)b->id_space + 1));
	b->present = malloc((size_t)b->id_space + 1);
	b->pool = malloc((size_t)pl + 1);
	if (!b->off || !b->present || !b->pool) {
		e = fi_fail(FI_ENOMEM, "tokenizer");
		goto fail;
	}
	if (!(q = take(&r, pl)))
		goto fail;
	memcpy(b->pool, q, pl);
	if (!(q = take(&r, 4 * ((size_t)b->id_space + 1))))
		goto fail;
	memcpy(b->off, q, 4 * ((size_t)b->id_space + 1));
	if (!(q = take(&r, b->id_space)))
		goto fail;
	memcpy(b->present, q, b->id_space);
	if (b->off[0] || b->off[b->id_space] != pl)
		goto fail;
	for (uint32_t i = 0; i < b->id_space; i++) {
		if (b->off[i + 1] < b->off[i] || b->present[i] > 1)
			goto fail;
		cnt += b->present[i];
	}
	if (cnt != nv || take32(&r, &b->nmerges) || b->nmerges > (1u << 26) || (b->nmerges && b->kind != TM_BPE) ||
	    r.n != 12 * (size_t)b->nmerges + (b->kind == TM_UNIGRAM ? 8 * (size_t)b->id_space : 0))
		goto fail;
	b->merge = malloc(12 * (size_t)b->nmerges + 1);
	if (b->kind == TM_UNIGRAM)
		b->score = malloc(8 * (size_t)b->id_space + 1);
	if (!b->merge || (b->kind == TM_UNIGRAM && !b->score)) {
		e = fi_fail(FI_ENOMEM, "tokenizer");
		goto fail;
	}
	memcpy(b->merge, r.p, 12 * (size_t)b->nmerges);
	if (b->kind == TM_UNIGRAM)
		memcpy(b->score, r.p + 12 * (size_t)b->nmerges, 8 * (size_t)b->id_space);
	fi_clear_error();
	if ((e = tok_model_finish(json_object_get(root, "model"), b)) || (e = finish(t, root)))
		goto fail;
	if (!(t->json_rest = malloc(jl + 1))) {
		e = fi_fail(FI_ENOMEM, "tokenizer");
		goto fail;
	}
	memcpy(t->json_rest, (const char *)buf + 12, jl);
	t->json_rest[jl] = 0;
	t->json_rest_len = jl;
	json_decref(root);
	*out = t;
	return FI_OK;
fail:
	json_decref(root);
	fi_tok_free(t);
	return e;
}

fi_err fi_tok_load_mem(const void *buf, size_t len, struct fi_tok **out)
{
	return fi_tok_is_binary(buf, len) ? fi_tok_load_binary(buf, len, out)
					  : fi_tok_load_json(buf, len, out);
}

fi_err fi_tok_load_path(const char *path, struct fi_tok **out)
{
	char file[4096];
	struct stat st;
	char *buf;
	int fd;
	fi_err e;
	ssize_t got;
	size_t n = 0;
	*out = NULL;
	if (stat(path, &st))
		return fi_fail(FI_EIO, "cannot open '%s': %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		snprintf(file, sizeof file, "%s/tokenizer.json", path);
		if (stat(file, &st))
			return fi_fail(FI_ENOTFOUND, "'%s': no tokenizer.json", path);
	} else
		snprintf(file, sizeof file, "%s", path);
	if ((fd = open(file, O_RDONLY)) < 0)
		return fi_fail(FI_EIO, "cannot open '%s': %s", file, strerror(errno));
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return fi_fail(FI_ENOMEM, "'%s'", file);
	}
	while (n < (size_t)st.st_size && (got = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
		n += (size_t)got;
	close(fd);
	if (n != (size_t)st.st_size) {
		free(buf);
		return fi_fail(FI_EIO, "cannot read '%s'", file);
	}
	e = fi_tok_load_mem(buf, n, out);
	free(buf);
	if (e)
		fi_fail_ctx(e, "'%s'", file);
	return e;
}
