/* frame: frame structs, wire names and encoding (msgpack_packer into a growable buffer).
 * Decoding is in frame_decode.c, the fd reader in frame_reader.c. */
#include "base/utf8.h"
#include "frame.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Bytes of the valid UTF-8 character at s[0..n), 0 if none starts there. */
static size_t utf8_char(const uint8_t *s, size_t n)
{
	utf8proc_int32_t cp;
	utf8proc_ssize_t k;
	if (s[0] < 0x80)
		return 1;
	k = utf8proc_iterate(s, (utf8proc_ssize_t)n, &cp);
	return k > 0 ? (size_t)k : 0;
}

/* 1 when s[0..n) is valid UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF): what msgpack's str type requires, so every id fi writes or accepts is. */
static int utf8_ok(const char *s, size_t n)
{
	return fi_utf8_valid(s, n) == n;
}

const char *fi_frame_error_id(const char *id, char buf[FI_FRAME_ERROR_ID_MAX + 1])
{
	const uint8_t *p = (const uint8_t *)id;
	size_t n = id ? strlen(id) : 0, i = 0, k;
	buf[0] = 0;
	if (!id || !utf8_ok(id, n))
		return buf;
	while (i < n && (k = utf8_char(p + i, n - i)) && i + k <= FI_FRAME_ERROR_ID_MAX)
		i += k;
	memcpy(buf, id, i);
	buf[i] = 0;
	return buf;
}

/* s[0..n) with each byte that does not start a valid character replaced by U+FFFD, into
 * out (NUL-terminated). */
static fi_err utf8_clean(const char *s, size_t n, struct fi_buf *out)
{
	const uint8_t *p = (const uint8_t *)s;
	size_t i = 0, k;
	fi_err e = FI_OK;
	out->len = 0;
	while (!e && i < n) {
		if ((k = utf8_char(p + i, n - i)))
			e = fi_buf_append(out, p + i, k);
		else
			e = fi_buf_append(out, "\xef\xbf\xbd", 3), k = 1;
		i += k;
	}
	return e ? e : fi_buf_append(out, "", 1);
}

void fi_frame_limits_default(struct fi_frame_limits *lim)
{
	lim->max_frame = 64u << 20;
	lim->max_id = 256;
	lim->max_text = 16u << 20;
	lim->max_tokens = 1u << 20;
	lim->max_stop = 64;
	lim->max_stop_len = 1024;
	lim->max_blocks = 65536;
	lim->max_depth = 8;
	lim->max_objects = 1u << 20;
}

void fi_frame_init(struct fi_frame *f, enum fi_frame_type type)
{
	memset(f, 0, sizeof *f);
	f->type = type;
	switch (type) {
	case FI_FRAME_REQUEST:
		f->req.temperature = 1.0f;
		f->req.top_p = 1.0f;
		f->req.repeat_penalty = 1.0f;
		f->req.stream = 1;
		break;
	case FI_FRAME_DONE:
		f->done.queue_ms = f->done.ttft_ms = f->done.tpot_ms = f->done.total_ms = -1;
		break;
	default:
		break;
	}
}

void fi_frame_free(struct fi_frame *f)
{
	if (!f)
		return;
	free(f->id);
	free(f->prompt);
	switch (f->type) {
	case FI_FRAME_REQUEST:
		free(f->req.tok_name);
		free(f->req.text);
		free(f->req.tokens);
		for (uint32_t i = 0; i < f->req.nstop; i++)
			free(f->req.stop[i]);
		free(f->req.stop);
		free(f->req.stop_ids);
		free(f->req.kv.arena);
		free(f->req.kv.blocks);
		break;
	case FI_FRAME_TOKEN:
		free(f->tok.text);
		free(f->tok.top);
		break;
	case FI_FRAME_DONE:
		free(f->done.tokens);
		free(f->done.text);
		break;
	case FI_FRAME_ERROR:
		free(f->err.message);
		break;
	case FI_FRAME_HELLO:
		free(f->hello.role);
		free(f->hello.model);
		free(f->hello.kv_events);
		free(f->hello.kv_replay);
		break;
	default:
		break;
	}
	memset(f, 0, sizeof *f);
}

void fi_frame_move(struct fi_frame *dst, struct fi_frame *src)
{
	*dst = *src;
	memset(src, 0, sizeof *src);
}

static const char *const type_names[FI_FRAME_TYPE_COUNT] = {
	[FI_FRAME_REQUEST] = "request", [FI_FRAME_TOKEN] = "token", [FI_FRAME_DONE] = "done",
	[FI_FRAME_ERROR] = "error",     [FI_FRAME_CANCEL] = "cancel", [FI_FRAME_EOS] = "eos",
	[FI_FRAME_HELLO] = "hello",     [FI_FRAME_LOAD] = "load",     [FI_FRAME_BYE] = "bye",
};
static const char *const finish_names[FI_FINISH_COUNT] = { "stop", "length", "error", "cancel" };
/* Stable wire names of fi_err; the number ("code_num") mirrors err.h, the name decides. */
static const char *const code_names[FI_ENCODE_COUNT] = {
	"ok", "nomem", "io", "inval", "format", "range", "notfound", "unsupported",
	"mismatch", "exist", "full", "busy", "device", "state", "interrupt",
};

const char *fi_frame_type_name(enum fi_frame_type t)
{
	return (unsigned)t < FI_FRAME_TYPE_COUNT ? type_names[t] : NULL;
}

const char *fi_finish_name(enum fi_finish f)
{
	return (unsigned)f < FI_FINISH_COUNT ? finish_names[f] : NULL;
}

const char *fi_err_code_name(fi_err e)
{
	return (unsigned)e < FI_ENCODE_COUNT ? code_names[e] : NULL;
}

int fi_err_code_parse(const char *name, size_t len)
{
	for (int i = 0; i < FI_ENCODE_COUNT; i++)
		if (strlen(code_names[i]) == len && !memcmp(code_names[i], name, len))
			return i;
	return -1;
}

fi_err fi_buf_append(struct fi_buf *b, const void *p, size_t n)
{
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 256;
		uint8_t *d;
		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2)
				return fi_fail(FI_ENOMEM, "buffer of %zu bytes", b->len + n);
			cap *= 2;
		}
		d = realloc(b->data, cap);
		if (!d)
			return fi_fail(FI_ENOMEM, "buffer of %zu bytes", cap);
		b->data = d;
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return FI_OK;
}

void fi_buf_free(struct fi_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof *b);
}

/* Encoding. The packer's callback cannot carry an fi_err, so the first failure is kept in
 * the context and reported once at the end. */
struct enc {
	struct fi_buf *out;
	fi_err err;
	msgpack_packer pk;
};

static int enc_write(void *data, const char *buf, size_t len)
{
	struct enc *e = data;
	struct fi_buf *b = e->out;
	if (e->err)
		return -1;
	if (len <= b->cap - b->len) { /* the common case, without a call */
		memcpy(b->data + b->len, buf, len);
		b->len += len;
		return 0;
	}
	e->err = fi_buf_append(b, buf, len);
	return e->err ? -1 : 0;
}

static void put_key(struct enc *e, const char *k)
{
	msgpack_pack_str_with_body(&e->pk, k, strlen(k));
}

static void put_str(struct enc *e, const char *k, const char *s, size_t n)
{
	put_key(e, k);
	msgpack_pack_str_with_body(&e->pk, s ? s : "", s ? n : 0);
}

static void put_uint(struct enc *e, const char *k, uint64_t v)
{
	put_key(e, k);
	msgpack_pack_uint64(&e->pk, v);
}

static void put_f32(struct enc *e, const char *k, float v)
{
	put_key(e, k);
	msgpack_pack_float(&e->pk, v);
}

/* Token ids as a bin of little-endian uint32 (fast to copy, 4 bytes each). */
static void put_tokens(struct enc *e, const char *k, const uint32_t *t, uint32_t n)
{
	uint8_t tmp[1024];
	put_key(e, k);
	msgpack_pack_bin(&e->pk, (size_t)n * 4);
	for (uint32_t i = 0; i < n;) {
		uint32_t m = 0;
		for (; i < n && m < sizeof tmp; i++, m += 4) {
			tmp[m] = (uint8_t)t[i];
			tmp[m + 1] = (uint8_t)(t[i] >> 8);
			tmp[m + 2] = (uint8_t)(t[i] >> 16);
			tmp[m + 3] = (uint8_t)(t[i] >> 24);
		}
		msgpack_pack_bin_body(&e->pk, tmp, m);
	}
}

/* v, type, id (when given) and seq (when the frame has one), then nkeys more keys. */
static void put_head(struct enc *e, size_t nkeys, const struct fi_frame *f, const char *id)
{
	const char *tn = fi_frame_type_name(f->type);
	msgpack_pack_map(&e->pk, nkeys + (id ? 3 : 2) + !!f->has_seq);
	put_uint(e, "v", FI_FRAME_VERSION);
	put_str(e, "type", tn, strlen(tn));
	if (id)
		put_str(e, "id", id, strlen(id));
	if (f->has_seq)
		put_uint(e, "seq", f->seq);
}

/* The echoed prompt of done and error frames. */
static void put_prompt(struct enc *e, const struct fi_frame *f)
{
	if (f->prompt)
		put_str(e, "prompt", f->prompt, f->prompt_len);
}

static void enc_request(struct enc *e, const struct fi_frame *f)
{
	const struct fi_request *r = &f->req;
	const struct fi_kv_ref *kv = &r->kv;
	int temp = (r->set & FI_REQ_TEMPERATURE) || r->temperature != 1.0f;
	int topk = (r->set & FI_REQ_TOP_K) || r->top_k != 0;
	int topp = (r->set & FI_REQ_TOP_P) || r->top_p != 1.0f;
	int minp = (r->set & FI_REQ_MIN_P) || r->min_p != 0.0f;
	int rep = (r->set & FI_REQ_REPEAT_PENALTY) || r->repeat_penalty != 1.0f;
	int seed = !!(r->set & FI_REQ_SEED);
	int maxt = (r->set & FI_REQ_MAX_TOKENS) || r->max_tokens != 0;
	int stream = (r->set & FI_REQ_STREAM) || !r->stream;
	int haskv = !!(r->set & FI_REQ_KV);
	int hastok = !!(r->set & FI_REQ_TOKENIZER);
	int ieos = (r->set & FI_REQ_IGNORE_EOS) || r->ignore_eos;
	int lp = (r->set & FI_REQ_LOGPROBS) || r->logprobs;
	int top = (r->set & FI_REQ_TOP_LOGPROBS) || r->top_logprobs;
	size_t n = !!r->text + !!r->tokens + temp + topk + topp + minp + rep + seed + maxt +
		   stream + !!r->nstop + !!r->nstop_ids + haskv + hastok + ieos + lp + top;

	put_head(e, n, f, f->id);
	if (r->text)
		put_str(e, "text", r->text, r->text_len);
	if (r->tokens)
		put_tokens(e, "tokens", r->tokens, r->ntokens);
	if (temp)
		put_f32(e, "temperature", r->temperature);
	if (topk) {
		put_key(e, "top_k");
		msgpack_pack_int32(&e->pk, r->top_k);
	}
	if (topp)
		put_f32(e, "top_p", r->top_p);
	if (minp)
		put_f32(e, "min_p", r->min_p);
	if (rep)
		put_f32(e, "repeat_penalty", r->repeat_penalty);
	if (seed)
		put_uint(e, "seed", r->seed);
	if (maxt)
		put_uint(e, "max_tokens", r->max_tokens);
	if (stream) {
		put_key(e, "stream");
		if (r->stream)
			msgpack_pack_true(&e->pk);
		else
			msgpack_pack_false(&e->pk);
	}
	if (r->nstop) {
		put_key(e, "stop");
		msgpack_pack_array(&e->pk, r->nstop);
		for (uint32_t i = 0; i < r->nstop; i++)
			msgpack_pack_str_with_body(&e->pk, r->stop[i], strlen(r->stop[i]));
	}
	if (ieos) {
		put_key(e, "ignore_eos");
		if (r->ignore_eos)
			msgpack_pack_true(&e->pk);
		else
			msgpack_pack_false(&e->pk);
	}
	if (lp) {
		put_key(e, "logprobs");
		if (r->logprobs)
			msgpack_pack_true(&e->pk);
		else
			msgpack_pack_false(&e->pk);
	}
	if (top)
		put_uint(e, "top_logprobs", r->top_logprobs);
	if (r->nstop_ids) {
		put_key(e, "stop_ids");
		msgpack_pack_array(&e->pk, r->nstop_ids);
		for (uint32_t i = 0; i < r->nstop_ids; i++)
			msgpack_pack_uint32(&e->pk, r->stop_ids[i]);
	}
	if (haskv) {
		put_key(e, "kv");
		msgpack_pack_map(&e->pk, 4 + !!kv->block_tokens);
		put_str(e, "arena", kv->arena, kv->arena ? strlen(kv->arena) : 0);
		put_key(e, "fingerprint");
		msgpack_pack_bin_with_body(&e->pk, kv->fingerprint, 32);
		put_key(e, "blocks");
		msgpack_pack_array(&e->pk, kv->nblocks);
		for (uint32_t i = 0; i < kv->nblocks; i++)
			msgpack_pack_bin_with_body(&e->pk, kv->blocks[i], 32);
		put_uint(e, "ntokens", kv->ntokens);
		if (kv->block_tokens)
			put_uint(e, "block_tokens", kv->block_tokens);
	}
	if (hastok) {
		put_key(e, "tokenizer");
		msgpack_pack_map(&e->pk, 1 + !!r->tok_name);
		put_key(e, "sha256");
		msgpack_pack_bin_with_body(&e->pk, r->tok_sha256, 32);
		if (r->tok_name)
			put_str(e, "name", r->tok_name, strlen(r->tok_name));
	}
}

static void enc_done(struct enc *e, const struct fi_frame *f)
{
	const struct fi_done *d = &f->done;
	const char *fin = fi_finish_name(d->finish);
	double tm[4] = { d->queue_ms, d->ttft_ms, d->tpot_ms, d->total_ms };
	static const char *const tk[4] = { "queue_ms", "ttft_ms", "tpot_ms", "total_ms" };
	int nt = 0;

	for (int i = 0; i < 4; i++)
		nt += tm[i] >= 0;
	put_head(e, 3 + !!d->tokens + !!d->text + !!f->prompt, f, f->id);
	put_str(e, "finish", fin, strlen(fin));
	put_key(e, "counts");
	msgpack_pack_map(&e->pk, 3);
	put_uint(e, "prompt_tokens", d->prompt_tokens);
	put_uint(e, "gen_tokens", d->gen_tokens);
	put_uint(e, "cached_tokens", d->cached_tokens);
	put_key(e, "timings");
	msgpack_pack_map(&e->pk, nt);
	for (int i = 0; i < 4; i++)
		if (tm[i] >= 0) {
			put_key(e, tk[i]);
			msgpack_pack_double(&e->pk, tm[i]);
		}
	if (d->tokens)
		put_tokens(e, "tokens", d->tokens, d->ntokens);
	if (d->text)
		put_str(e, "text", d->text, d->text_len);
	put_prompt(e, f);
}

/* Refuses what the decoder (with default limits) would refuse, so a producer learns of its
 * bug at the source instead of every consumer answering with error frames. */
static fi_err enc_check(const struct fi_frame *f)
{
	struct fi_frame_limits l;
	fi_frame_limits_default(&l);
	if (!fi_frame_type_name(f->type))
		return fi_fail(FI_EINVAL, "frame: cannot encode frame type %d", (int)f->type);
	if (f->type == FI_FRAME_EOS)
		return FI_OK;
	if (f->type != FI_FRAME_ERROR && (!f->id || !*f->id))
		return fi_fail(FI_EINVAL, "frame: %s frame without an id", fi_frame_type_name(f->type));
	if (f->id && strlen(f->id) > l.max_id)
		return fi_fail(FI_EINVAL, "frame: id longer than %u bytes", l.max_id);
	if (f->prompt && f->prompt_len > l.max_text)
		return fi_fail(FI_EINVAL, "frame: prompt of '%s' exceeds the frame limits", f->id ? f->id : "");
	if (f->id && !utf8_ok(f->id, strlen(f->id)))
		return fi_fail(FI_EINVAL, "frame: id is not valid UTF-8");
	switch (f->type) {
	case FI_FRAME_REQUEST:
		if (!f->req.text && !f->req.tokens)
			return fi_fail(FI_EINVAL, "frame: request '%s' has neither text nor tokens", f->id);
		if (f->req.nstop > l.max_stop || f->req.nstop_ids > l.max_stop)
			return fi_fail(FI_EINVAL, "frame: request '%s': %u stop strings and %u stop "
				       "ids, at most %u of each", f->id, f->req.nstop,
				       f->req.nstop_ids, l.max_stop);
		for (uint32_t i = 0; i < f->req.nstop; i++)
			if (strlen(f->req.stop[i]) > l.max_stop_len)
				return fi_fail(FI_EINVAL, "frame: request '%s': stop string %u is "
					       "longer than %u bytes", f->id, i, l.max_stop_len);
		if (f->req.ntokens > l.max_tokens || f->req.text_len > l.max_text ||
		    ((f->req.set & FI_REQ_KV) && f->req.kv.nblocks > l.max_blocks) ||
		    ((f->req.set & FI_REQ_TOKENIZER) && f->req.tok_name &&
		     strlen(f->req.tok_name) > l.max_id))
			return fi_fail(FI_EINVAL, "frame: request '%s' exceeds the frame limits", f->id);
		if (f->req.top_logprobs > FI_FRAME_MAX_TOP)
			return fi_fail(FI_EINVAL, "frame: request '%s': top_logprobs %u exceeds %d", f->id,
				       f->req.top_logprobs, FI_FRAME_MAX_TOP);
		break;
	case FI_FRAME_TOKEN:
		if (f->tok.ntop > FI_FRAME_MAX_TOP)
			return fi_fail(FI_EINVAL, "frame: token '%s': %u alternatives exceed %d", f->id,
				       f->tok.ntop, FI_FRAME_MAX_TOP);
		break;
	case FI_FRAME_DONE:
		if (!fi_finish_name(f->done.finish))
			return fi_fail(FI_EINVAL, "frame: done '%s': bad finish %d", f->id, (int)f->done.finish);
		break;
	case FI_FRAME_ERROR:
		if (!fi_err_code_name(f->err.code))
			return fi_fail(FI_EINVAL, "frame: error frame with bad code %d", (int)f->err.code);
		break;
	case FI_FRAME_HELLO:
		if (!f->hello.role || !f->hello.model || strlen(f->hello.model) > l.max_text ||
		    (f->hello.kv_events && strlen(f->hello.kv_events) > l.max_id) ||
		    (f->hello.kv_replay && strlen(f->hello.kv_replay) > l.max_id) ||
		    strlen(f->hello.role) > l.max_id)
			return fi_fail(FI_EINVAL, "frame: hello '%s' needs a role and a model within the limits", f->id);
		break;
	default:
		break;
	}
	return FI_OK;
}

fi_err fi_frame_encode(const struct fi_frame *f, struct fi_buf *out)
{
	struct enc e = { .out = out };
	size_t len0 = out->len;
	fi_err err = enc_check(f);

	if (err)
		return err;
	msgpack_packer_init(&e.pk, &e, enc_write);
	switch (f->type) {
	case FI_FRAME_REQUEST:
		enc_request(&e, f);
		break;
	case FI_FRAME_TOKEN:
		put_head(&e, 2 + !!f->tok.text + !!f->tok.has_logprob + !!f->tok.ntop, f, f->id);
		put_uint(&e, "token", f->tok.token);
		put_uint(&e, "index", f->tok.index);
		if (f->tok.text)
			put_str(&e, "text", f->tok.text, f->tok.text_len);
		if (f->tok.has_logprob)
			put_f32(&e, "logprob", f->tok.logprob);
		if (f->tok.ntop) {
			put_key(&e, "top_logprobs");
			msgpack_pack_array(&e.pk, f->tok.ntop);
			for (uint32_t i = 0; i < f->tok.ntop; i++) {
				msgpack_pack_array(&e.pk, 2);
				msgpack_pack_uint32(&e.pk, f->tok.top[i].token);
				msgpack_pack_float(&e.pk, f->tok.top[i].logprob);
			}
		}
		break;
	case FI_FRAME_DONE:
		enc_done(&e, f);
		break;
	case FI_FRAME_ERROR: {
		const char *cn = fi_err_code_name(f->err.code);
		const char *m = f->err.message ? f->err.message : "";
		struct fi_buf clean = {0};
		if (!utf8_ok(m, strlen(m))) {
			if ((err = utf8_clean(m, strlen(m), &clean))) {
				fi_buf_free(&clean);
				return err;
			}
			m = (const char *)clean.data;
		}
		put_head(&e, 3 + !!f->prompt, f, f->id ? f->id : "");
		put_str(&e, "code", cn, strlen(cn));
		put_uint(&e, "code_num", (uint64_t)f->err.code);
		put_str(&e, "message", m, strlen(m));
		put_prompt(&e, f);
		fi_buf_free(&clean);
		break;
	}
	case FI_FRAME_CANCEL:
	case FI_FRAME_BYE:
		put_head(&e, 0, f, f->id);
		break;
	case FI_FRAME_HELLO: {
		const struct fi_hello *h = &f->hello;
		put_head(&e, 6 + !!h->kv_events + !!h->kv_replay + !!h->has_kv_root, f, f->id);
		put_str(&e, "role", h->role, strlen(h->role));
		put_str(&e, "model", h->model, strlen(h->model));
		put_key(&e, "fingerprint");
		msgpack_pack_bin_with_body(&e.pk, h->fingerprint, 32);
		if (h->has_kv_root) {
			put_key(&e, "kv_root");
			msgpack_pack_bin_with_body(&e.pk, h->kv_root, 32);
		}
		put_uint(&e, "block_tokens", h->block_tokens);
		put_uint(&e, "kv_blocks", h->kv_blocks);
		put_uint(&e, "max_batch", h->max_batch);
		if (h->kv_events)
			put_str(&e, "kv_events", h->kv_events, strlen(h->kv_events));
		if (h->kv_replay)
			put_str(&e, "kv_events_replay", h->kv_replay, strlen(h->kv_replay));
		break;
	}
	case FI_FRAME_LOAD: {
		const struct fi_load *ld = &f->load;
		put_head(&e, 8, f, f->id);
		put_uint(&e, "queued", ld->queued);
		put_uint(&e, "queued_tokens", ld->queued_tokens);
		put_uint(&e, "running", ld->running);
		put_uint(&e, "running_tokens", ld->running_tokens);
		put_uint(&e, "kv_used", ld->kv_used);
		put_uint(&e, "kv_total", ld->kv_total);
		put_uint(&e, "prefix_hits", ld->prefix_hits);
		put_uint(&e, "prefix_lookups", ld->prefix_lookups);
		break;
	}
	default: /* eos */
		put_head(&e, 0, f, NULL);
		break;
	}
	if (e.err)
		out->len = len0;
	return e.err;
}

fi_err fi_frame_encode_error(struct fi_buf *out, const char *id, fi_err code, const char *msg)
{
	struct fi_frame f;
	char idbuf[FI_FRAME_ERROR_ID_MAX + 1];
	fi_frame_init(&f, FI_FRAME_ERROR);
	f.id = (char *)fi_frame_error_id(id, idbuf);
	f.err.code = (unsigned)code < FI_ENCODE_COUNT ? code : FI_EINVAL;
	f.err.message = (char *)(msg ? msg : fi_strerror(code));
	return fi_frame_encode(&f, out);
}
