/* frame_json: frames <-> JSON objects (the mapping is in frame_json.h and fi-frame(5)). */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame_json.h"
#include "base/utf8.h"

/* Nesting of a JSON line turned into msgpack: the decoder refuses frames deeper than 8
 * levels anyway; this only bounds the recursion before it. */
#define MAX_DEPTH 32

static const char hexdig[] = "0123456789abcdef";

static json_t *hex_str(const uint8_t *p, size_t n)
{
	char *s = malloc(2 * n + 1);
	json_t *j;
	if (!s)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		s[2 * i] = hexdig[p[i] >> 4];
		s[2 * i + 1] = hexdig[p[i] & 15];
	}
	s[2 * n] = 0;
	j = json_stringn(s, 2 * n);
	free(s);
	return j;
}

json_t *fi_json_bytes(const char *s, size_t n)
{
	if (!s)
		s = "";
	if (fi_utf8_valid(s, n) == n)
		return json_stringn(s, n);
	return json_pack("{s:o}", "hex", hex_str((const uint8_t *)s, n));
}

json_t *fi_json_text(const char *s, size_t n)
{
	char *t;
	size_t tl;
	json_t *j;
	if (!s)
		s = "";
	if (fi_utf8_valid(s, n) == n)
		return json_stringn(s, n);
	if (fi_utf8_lossy(s, n, &t, &tl))
		return NULL;
	j = json_stringn(t, tl);
	free(t);
	return j;
}

json_t *fi_json_f32(float v)
{
	char b[32];
	for (int p = 6; p <= 9; p++) {
		snprintf(b, sizeof b, "%.*g", p, (double)v);
		if (strtof(b, NULL) == v)
			break;
	}
	return json_real(strtod(b, NULL));
}

/* uint64 as a JSON integer, or a decimal string above what JSON's signed integers hold. */
static json_t *u64(uint64_t v)
{
	char b[24];
	if (v <= (uint64_t)INT64_MAX)
		return json_integer((json_int_t)v);
	snprintf(b, sizeof b, "%llu", (unsigned long long)v);
	return json_string(b);
}

static json_t *token_array(const uint32_t *t, uint32_t n)
{
	json_t *a = json_array();
	for (uint32_t i = 0; a && i < n; i++)
		if (json_array_append_new(a, json_integer(t[i]))) {
			json_decref(a);
			return NULL;
		}
	return a;
}

/* json_object_set_new that remembers a failure (a NULL value is one). */
static void put(json_t *o, const char *k, json_t *v, int *bad)
{
	if (!v || json_object_set_new(o, k, v))
		*bad = 1;
}

static void req_json(json_t *o, const struct fi_request *r, int *bad)
{
	const struct fi_kv_ref *kv = &r->kv;
	/* The keys the encoder writes (frame.c, enc_request), in its order. */
	if (r->text)
		put(o, "text", fi_json_bytes(r->text, r->text_len), bad);
	if (r->tokens)
		put(o, "tokens", token_array(r->tokens, r->ntokens), bad);
	if ((r->set & FI_REQ_TEMPERATURE) || r->temperature != 1.0f)
		put(o, "temperature", fi_json_f32(r->temperature), bad);
	if ((r->set & FI_REQ_TOP_K) || r->top_k)
		put(o, "top_k", json_integer(r->top_k), bad);
	if ((r->set & FI_REQ_TOP_P) || r->top_p != 1.0f)
		put(o, "top_p", fi_json_f32(r->top_p), bad);
	if ((r->set & FI_REQ_MIN_P) || r->min_p != 0.0f)
		put(o, "min_p", fi_json_f32(r->min_p), bad);
	if ((r->set & FI_REQ_REPEAT_PENALTY) || r->repeat_penalty != 1.0f)
		put(o, "repeat_penalty", fi_json_f32(r->repeat_penalty), bad);
	if (r->set & FI_REQ_SEED)
		put(o, "seed", u64(r->seed), bad);
	if ((r->set & FI_REQ_MAX_TOKENS) || r->max_tokens)
		put(o, "max_tokens", json_integer(r->max_tokens), bad);
	if ((r->set & FI_REQ_STREAM) || !r->stream)
		put(o, "stream", json_boolean(r->stream), bad);
	if (r->nstop) {
		json_t *a = json_array();
		for (uint32_t i = 0; a && i < r->nstop; i++)
			if (json_array_append_new(a, fi_json_bytes(r->stop[i], strlen(r->stop[i]))))
				*bad = 1;
		put(o, "stop", a, bad);
	}
	if ((r->set & FI_REQ_IGNORE_EOS) || r->ignore_eos)
		put(o, "ignore_eos", json_boolean(r->ignore_eos), bad);
	if ((r->set & FI_REQ_LOGPROBS) || r->logprobs)
		put(o, "logprobs", json_boolean(r->logprobs), bad);
	if ((r->set & FI_REQ_TOP_LOGPROBS) || r->top_logprobs)
		put(o, "top_logprobs", json_integer(r->top_logprobs), bad);
	if (r->nstop_ids)
		put(o, "stop_ids", token_array(r->stop_ids, r->nstop_ids), bad);
	if (r->set & FI_REQ_KV) {
		json_t *k = json_object(), *bl = json_array();
		for (uint32_t i = 0; bl && i < kv->nblocks; i++)
			if (json_array_append_new(bl, hex_str(kv->blocks[i], 32)))
				*bad = 1;
		if (k) {
			put(k, "arena", fi_json_bytes(kv->arena, kv->arena ? strlen(kv->arena) : 0), bad);
			put(k, "fingerprint", hex_str(kv->fingerprint, 32), bad);
			put(k, "blocks", bl, bad);
			put(k, "ntokens", json_integer(kv->ntokens), bad);
			if (kv->block_tokens)
				put(k, "block_tokens", json_integer(kv->block_tokens), bad);
		} else {
			json_decref(bl);
		}
		put(o, "kv", k, bad);
	}
	if (r->set & FI_REQ_TOKENIZER) {
		json_t *t = json_object();
		if (t) {
			put(t, "sha256", hex_str(r->tok_sha256, 32), bad);
			if (r->tok_name)
				put(t, "name", fi_json_bytes(r->tok_name, strlen(r->tok_name)), bad);
		}
		put(o, "tokenizer", t, bad);
	}
}

static void done_json(json_t *o, const struct fi_done *d, int *bad)
{
	static const char *const tk[4] = { "queue_ms", "ttft_ms", "tpot_ms", "total_ms" };
	double tm[4] = { d->queue_ms, d->ttft_ms, d->tpot_ms, d->total_ms };
	json_t *t = json_object();
	put(o, "finish", json_string(fi_finish_name(d->finish)), bad);
	put(o, "counts", json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)d->prompt_tokens,
				   "gen_tokens", (json_int_t)d->gen_tokens, "cached_tokens",
				   (json_int_t)d->cached_tokens), bad);
	for (int i = 0; t && i < 4; i++)
		if (tm[i] >= 0)
			put(t, tk[i], json_real(tm[i]), bad);
	put(o, "timings", t, bad);
	if (d->tokens)
		put(o, "tokens", token_array(d->tokens, d->ntokens), bad);
	if (d->text)
		put(o, "text", fi_json_bytes(d->text, d->text_len), bad);
}

fi_err fi_frame_to_json(const struct fi_frame *f, json_t **out)
{
	const char *tn = fi_frame_type_name(f->type);
	json_t *o = json_object();
	int bad = !o;

	*out = NULL;
	if (!tn) {
		json_decref(o);
		return fi_fail(FI_EINVAL, "frame: no JSON for frame type %d", (int)f->type);
	}
	put(o, "v", json_integer(FI_FRAME_VERSION), &bad);
	put(o, "type", json_string(tn), &bad);
	if (f->type != FI_FRAME_EOS && (f->id || f->type == FI_FRAME_ERROR))
		put(o, "id", fi_json_bytes(f->id ? f->id : "", f->id ? strlen(f->id) : 0), &bad);
	if (f->has_seq)
		put(o, "seq", u64(f->seq), &bad);
	switch (f->type) {
	case FI_FRAME_REQUEST:
		req_json(o, &f->req, &bad);
		break;
	case FI_FRAME_TOKEN:
		put(o, "token", json_integer(f->tok.token), &bad);
		put(o, "index", json_integer(f->tok.index), &bad);
		if (f->tok.text)
			put(o, "text", fi_json_bytes(f->tok.text, f->tok.text_len), &bad);
		if (f->tok.has_logprob)
			put(o, "logprob", fi_json_f32(f->tok.logprob), &bad);
		if (f->tok.ntop) {
			json_t *a = json_array();
			for (uint32_t i = 0; a && i < f->tok.ntop; i++)
				if (json_array_append_new(a, json_pack("[I,o]",
								       (json_int_t)f->tok.top[i].token,
								       fi_json_f32(f->tok.top[i].logprob))))
					bad = 1;
			put(o, "top_logprobs", a, &bad);
		}
		break;
	case FI_FRAME_DONE:
		done_json(o, &f->done, &bad);
		break;
	case FI_FRAME_ERROR: {
		const char *m = f->err.message ? f->err.message : "";
		put(o, "code", json_string(fi_err_code_name(f->err.code) ? fi_err_code_name(f->err.code) : "inval"), &bad);
		put(o, "code_num", json_integer(f->err.code), &bad);
		put(o, "message", fi_json_bytes(m, strlen(m)), &bad);
		break;
	}
	case FI_FRAME_HELLO: {
		const struct fi_hello *h = &f->hello;
		put(o, "role", json_string(h->role ? h->role : ""), &bad);
		put(o, "model", fi_json_bytes(h->model ? h->model : "", h->model ? strlen(h->model) : 0), &bad);
		put(o, "fingerprint", hex_str(h->fingerprint, 32), &bad);
		if (h->has_kv_root)
			put(o, "kv_root", hex_str(h->kv_root, 32), &bad);
		put(o, "block_tokens", json_integer(h->block_tokens), &bad);
		put(o, "kv_blocks", u64(h->kv_blocks), &bad);
		put(o, "max_batch", json_integer(h->max_batch), &bad);
		if (h->kv_events)
			put(o, "kv_events", fi_json_bytes(h->kv_events, strlen(h->kv_events)), &bad);
		if (h->kv_replay)
			put(o, "kv_events_replay", fi_json_bytes(h->kv_replay, strlen(h->kv_replay)), &bad);
		break;
	}
	case FI_FRAME_LOAD: {
		const struct fi_load *ld = &f->load;
		put(o, "queued", u64(ld->queued), &bad);
		put(o, "queued_tokens", u64(ld->queued_tokens), &bad);
		put(o, "running", u64(ld->running), &bad);
		put(o, "running_tokens", u64(ld->running_tokens), &bad);
		put(o, "kv_used", u64(ld->kv_used), &bad);
		put(o, "kv_total", u64(ld->kv_total), &bad);
		put(o, "prefix_hits", u64(ld->prefix_hits), &bad);
		put(o, "prefix_lookups", u64(ld->prefix_lookups), &bad);
		break;
	}
	default:
		break;
	}
	if ((f->type == FI_FRAME_DONE || f->type == FI_FRAME_ERROR) && f->prompt)
		put(o, "prompt", fi_json_bytes(f->prompt, f->prompt_len), &bad);
	if (bad) {
		json_decref(o);
		return fi_fail(FI_ENOMEM, "frame: JSON of a %s frame", tn);
	}
	*out = o;
	return FI_OK;
}

/* ---- JSON text ---- */

static fi_err dump_real(struct fi_buf *b, double v)
{
	char t[40];
	for (int p = 15; p <= 17; p++) {
		snprintf(t, sizeof t, "%.*g", p, v);
		if (strtod(t, NULL) == v)
			break;
	}
	/* A real stays a real when read back: 1.0, not 1. */
	if (!strpbrk(t, ".eEn"))
		strcat(t, ".0");
	return fi_buf_append(b, t, strlen(t));
}

static fi_err dump(struct fi_buf *b, const json_t *j, int depth)
{
	const char *k;
	json_t *v;
	size_t i;
	fi_err e = FI_OK;
	char *s;

	if (depth > MAX_DEPTH + 8)
		return fi_fail(FI_ERANGE, "json: nested too deep to print");
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		e = fi_buf_append(b, "{", 1);
		i = 0;
		json_object_foreach((json_t *)j, k, v) {
			json_t *ks = json_string(k);
			if (!e && i++)
				e = fi_buf_append(b, ",", 1);
			if (!e)
				e = ks ? dump(b, ks, depth + 1) : fi_fail(FI_ENOMEM, "json");
			json_decref(ks);
			if (!e)
				e = fi_buf_append(b, ":", 1);
			if (!e)
				e = dump(b, v, depth + 1);
			if (e)
				return e;
		}
		return fi_buf_append(b, "}", 1);
	case JSON_ARRAY:
		e = fi_buf_append(b, "[", 1);
		json_array_foreach((json_t *)j, i, v) {
			if (!e && i)
				e = fi_buf_append(b, ",", 1);
			if (!e)
				e = dump(b, v, depth + 1);
			if (e)
				return e;
		}
		return fi_buf_append(b, "]", 1);
	case JSON_REAL:
		return dump_real(b, json_real_value(j));
	case JSON_INTEGER: {
		char t[24];
		int n = snprintf(t, sizeof t, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
		return fi_buf_append(b, t, (size_t)n);
	}
	default: /* strings (escaped as jansson escapes them), integers, true, false, null */
		if (!(s = json_dumps(j, JSON_ENCODE_ANY)))
			return fi_fail(FI_ENOMEM, "json");
		e = fi_buf_append(b, s, strlen(s));
		free(s);
		return e;
	}
}

char *fi_json_dumps(const json_t *j)
{
	struct fi_buf b = { 0 };
	if (dump(&b, j, 0) || fi_buf_append(&b, "", 1)) {
		fi_buf_free(&b);
		return NULL;
	}
	return (char *)b.data;
}

/* ---- JSON -> msgpack ---- */

struct pk {
	struct fi_buf *out;
	fi_err err;
	msgpack_packer p;
};

static int pk_write(void *data, const char *buf, size_t len)
{
	struct pk *k = data;
	if (k->err)
		return -1;
	k->err = fi_buf_append(k->out, buf, len);
	return k->err ? -1 : 0;
}

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* {"hex": "..."} alone: the bytes of a str that is not valid UTF-8. */
static fi_err pack_hex(struct pk *k, json_t *s)
{
	const char *h = json_string_value(s);
	size_t n = json_string_length(s);
	uint8_t *b;
	if (n % 2)
		return fi_fail(FI_EFORMAT, "json: \"hex\" needs an even number of hex digits");
	if (!(b = malloc(n / 2 + 1)))
		return fi_fail(FI_ENOMEM, "json: %zu hex digits", n);
	for (size_t i = 0; i < n; i += 2) {
		int a = hexval((unsigned char)h[i]), c = hexval((unsigned char)h[i + 1]);
		if (a < 0 || c < 0) {
			free(b);
			return fi_fail(FI_EFORMAT, "json: \"hex\" holds a character that is not a hex digit");
		}
		b[i / 2] = (uint8_t)(a << 4 | c);
	}
	msgpack_pack_str_with_body(&k->p, b, n / 2);
	free(b);
	return FI_OK;
}

/* A decimal string where the schema has a uint64 that JSON integers cannot hold. */
static int u64_string(const char *key, json_t *v, uint64_t *out)
{
	const char *s = json_string_value(v);
	char *end;
	if (!key || (strcmp(key, "seed") && strcmp(key, "seq")) || !s || !*s || *s < '0' || *s > '9')
		return 0;
	*out = strtoull(s, &end, 10);
	return !*end && (size_t)(end - s) == json_string_length(v) && end - s <= 20;
}

static fi_err pack(struct pk *k, json_t *j, const char *key, int depth)
{
	const char *ck;
	json_t *cv;
	size_t i;
	uint64_t u;

	if (depth > MAX_DEPTH)
		return fi_fail(FI_EFORMAT, "json: nested deeper than %d levels", MAX_DEPTH);
	switch (json_typeof(j)) {
	case JSON_OBJECT:
		if (json_object_size(j) == 1 && json_is_string(json_object_get(j, "hex")))
			return pack_hex(k, json_object_get(j, "hex"));
		msgpack_pack_map(&k->p, json_object_size(j));
		json_object_foreach(j, ck, cv) {
			fi_err e;
			msgpack_pack_str_with_body(&k->p, ck, strlen(ck));
			if ((e = pack(k, cv, ck, depth + 1)))
				return e;
		}
		break;
	case JSON_ARRAY:
		msgpack_pack_array(&k->p, json_array_size(j));
		json_array_foreach(j, i, cv) {
			fi_err e = pack(k, cv, NULL, depth + 1);
			if (e)
				return e;
		}
		break;
	case JSON_STRING:
		if (u64_string(key, j, &u))
			msgpack_pack_uint64(&k->p, u);
		else
			msgpack_pack_str_with_body(&k->p, json_string_value(j), json_string_length(j));
		break;
	case JSON_INTEGER:
		if (json_integer_value(j) >= 0)
			msgpack_pack_uint64(&k->p, (uint64_t)json_integer_value(j));
		else
			msgpack_pack_int64(&k->p, json_integer_value(j));
		break;
	case JSON_REAL:
		msgpack_pack_double(&k->p, json_real_value(j));
		break;
	case JSON_TRUE:
		msgpack_pack_true(&k->p);
		break;
	case JSON_FALSE:
		msgpack_pack_false(&k->p);
		break;
	default:
		msgpack_pack_nil(&k->p);
		break;
	}
	return k->err;
}

fi_err fi_frame_from_json(const char *text, size_t len, const struct fi_frame_limits *lim,
			  struct fi_frame *f, json_t **json)
{
	struct fi_frame_limits dl;
	struct fi_buf b = { 0 };
	struct pk k = { .out = &b };
	json_error_t je;
	json_t *j;
	fi_err e;

	memset(f, 0, sizeof *f);
	if (json)
		*json = NULL;
	if (!lim) {
		fi_frame_limits_default(&dl);
		lim = &dl;
	}
	if (len > 4 * lim->max_frame)
		return fi_fail(FI_ERANGE, "json: a line of %zu bytes, more than 4 times the frame limit", len);
	/* JSON_ALLOW_NUL: a prompt may hold U+0000 as a frame's str may. */
	if (!(j = json_loadb(text, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &je)))
		return fi_fail(FI_EFORMAT, "json: column %d: %s", je.column, je.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return fi_fail(FI_EFORMAT, "json: a frame is an object ({...})");
	}
	msgpack_packer_init(&k.p, &k, pk_write);
	e = pack(&k, j, NULL, 1);
	if (!e)
		e = fi_frame_decode(b.data, b.len, lim, f);
	fi_buf_free(&b);
	if (json)
		*json = j;
	else
		json_decref(j);
	return e;
}

int fi_json_dropped(json_t *in, json_t *out, char *path, size_t n)
{
	const char *k;
	json_t *v;
	json_object_foreach(in, k, v) {
		json_t *w = json_object_get(out, k);
		if (!w) {
			snprintf(path, n, "%s", k);
			return 1;
		}
		if (json_is_object(v) && json_is_object(w) &&
		    !(json_object_size(v) == 1 && json_object_get(v, "hex"))) {
			char sub[256];
			if (fi_json_dropped(v, w, sub, sizeof sub)) {
				snprintf(path, n, "%s.%s", k, sub);
				return 1;
			}
		}
	}
	return 0;
}
