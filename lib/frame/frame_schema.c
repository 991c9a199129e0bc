/* frame: the v1 schema: checks a scanned msgpack object key by key and copies it into a
 * struct fi_frame (fi-frame(5) is the reference for every key, type and default). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "frame_int.h"

/* Every key of the schema: its enum name and wire name (the order groups them in ranges). */
#define KEYS(X) \
	X(V, "v") X(TYPE, "type") X(ID, "id") X(MUST, "must") X(SEQ, "seq") \
	X(TEXT, "text") X(TOKENS, "tokens") X(TEMPERATURE, "temperature") X(TOP_K, "top_k") \
	X(TOP_P, "top_p") X(MIN_P, "min_p") X(REPEAT_PENALTY, "repeat_penalty") X(SEED, "seed") \
	X(MAX_TOKENS, "max_tokens") X(STOP, "stop") X(STOP_IDS, "stop_ids") X(STREAM, "stream") \
	X(KV, "kv") X(TOKENIZER, "tokenizer") X(IGNORE_EOS, "ignore_eos") \
	X(LOGPROBS, "logprobs") X(TOP_LOGPROBS, "top_logprobs") \
	X(TOKEN, "token") X(INDEX, "index") X(LOGPROB, "logprob") \
	X(FINISH, "finish") X(COUNTS, "counts") X(TIMINGS, "timings") \
	X(CODE, "code") X(CODE_NUM, "code_num") X(MESSAGE, "message") X(PROMPT, "prompt") \
	/* inside "kv" */ \
	X(ARENA, "arena") X(FINGERPRINT, "fingerprint") X(BLOCKS, "blocks") \
	X(NTOKENS, "ntokens") X(BLOCK_TOKENS, "block_tokens") \
	/* inside "counts" and "timings" */ \
	X(PROMPT_TOKENS, "prompt_tokens") X(GEN_TOKENS, "gen_tokens") \
	X(CACHED_TOKENS, "cached_tokens") X(QUEUE_MS, "queue_ms") X(TTFT_MS, "ttft_ms") \
	X(TPOT_MS, "tpot_ms") X(TOTAL_MS, "total_ms") \
	/* inside "tokenizer" */ \
	X(SHA256, "sha256") X(NAME, "name") \
	/* hello and load */ \
	X(ROLE, "role") X(MODEL, "model") X(KV_ROOT, "kv_root") X(KV_BLOCKS, "kv_blocks") \
	X(MAX_BATCH, "max_batch") X(KV_REPLAY, "kv_events_replay") X(KV_EVENTS, "kv_events") \
	X(QUEUED, "queued") X(QUEUED_TOKENS, "queued_tokens") X(RUNNING, "running") \
	X(RUNNING_TOKENS, "running_tokens") X(KV_USED, "kv_used") X(KV_TOTAL, "kv_total") \
	X(PREFIX_HITS, "prefix_hits") X(PREFIX_LOOKUPS, "prefix_lookups")

#define X_ENUM(k, s) K_##k,
#define X_NAME(k, s) s,
#define X_LEN(k, s) sizeof(s) - 1,
enum key { KEYS(X_ENUM) K_COUNT };
static const char *const key_names[K_COUNT] = { KEYS(X_NAME) };
static const uint8_t key_lens[K_COUNT] = { KEYS(X_LEN) };
_Static_assert(K_COUNT < 64, "key sets are 64-bit masks");

#define B(k) (1ull << (k))
#define RANGE(a, b) (((1ull << ((b) + 1)) - 1) & ~((1ull << (a)) - 1))
static const uint64_t common_keys = RANGE(K_V, K_SEQ);
/* Top-level keys each type understands (for "must" and to ignore the others). */
static const uint64_t type_keys[FI_FRAME_TYPE_COUNT] = {
	[FI_FRAME_REQUEST] = RANGE(K_TEXT, K_TOP_LOGPROBS),
	[FI_FRAME_TOKEN] = B(K_TOKEN) | B(K_INDEX) | B(K_TEXT) | B(K_LOGPROB) | B(K_TOP_LOGPROBS),
	[FI_FRAME_DONE] = B(K_FINISH) | B(K_COUNTS) | B(K_TIMINGS) | B(K_TOKENS) | B(K_TEXT) |
			  B(K_PROMPT),
	[FI_FRAME_ERROR] = B(K_CODE) | B(K_CODE_NUM) | B(K_MESSAGE) | B(K_PROMPT),
	[FI_FRAME_HELLO] = RANGE(K_ROLE, K_KV_EVENTS) | B(K_FINGERPRINT) | B(K_BLOCK_TOKENS),
	[FI_FRAME_LOAD] = RANGE(K_QUEUED, K_PREFIX_LOOKUPS),
};
static const uint64_t kv_keys = RANGE(K_ARENA, K_BLOCK_TOKENS);
static const uint64_t counts_keys = RANGE(K_PROMPT_TOKENS, K_CACHED_TOKENS);
static const uint64_t timings_keys = RANGE(K_QUEUE_MS, K_TOTAL_MS);
static const uint64_t tokenizer_keys = B(K_SHA256) | B(K_NAME);

static int key_find(const msgpack_object *k, uint64_t allowed)
{
	if (k->type != MSGPACK_OBJECT_STR || !k->via.str.size || k->via.str.size > 16)
		return -1;
	/* Only the allowed keys; the length and first byte rule out most at once. */
	for (uint64_t m = allowed & (B(K_COUNT) - 1); m; m &= m - 1) {
		int i = __builtin_ctzll(m);
		if (key_lens[i] == k->via.str.size && key_names[i][0] == k->via.str.ptr[0] &&
		    !memcmp(key_names[i], k->via.str.ptr, k->via.str.size))
			return i;
	}
	return -1;
}

/* Collects the values of the allowed keys of a map; unknown keys are skipped, a known key
 * twice is an error (two readers could disagree on which one counts). */
static fi_err map_keys(const msgpack_object *m, const char *what, uint64_t allowed,
		       const msgpack_object **vals)
{
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		int k = key_find(&m->via.map.ptr[i].key, allowed);
		if (k < 0)
			continue;
		if (vals[k])
			return fi_fail(FI_EFORMAT, "frame: %s: key '%s' given twice", what, key_names[k]);
		vals[k] = &m->via.map.ptr[i].val;
	}
	return FI_OK;
}

static const char *tname(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: return "nil";
	case MSGPACK_OBJECT_BOOLEAN: return "bool";
	case MSGPACK_OBJECT_POSITIVE_INTEGER: return "uint";
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "negative int";
	case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: return "float";
	case MSGPACK_OBJECT_STR: return "str";
	case MSGPACK_OBJECT_ARRAY: return "array";
	case MSGPACK_OBJECT_MAP: return "map";
	case MSGPACK_OBJECT_BIN: return "bin";
	default: return "ext";
	}
}

static fi_err bad_type(int k, const char *want, const msgpack_object *o)
{
	return fi_fail(FI_EFORMAT, "frame: key '%s': expected %s, got %s", key_names[k], want, tname(o));
}

static fi_err get_uint(const msgpack_object *o, int k, uint64_t max, uint64_t *out)
{
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return fi_fail(FI_ERANGE, "frame: key '%s': negative value %lld", key_names[k],
			       (long long)o->via.i64);
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return bad_type(k, "uint", o);
	if (o->via.u64 > max)
		return fi_fail(FI_ERANGE, "frame: key '%s': %llu exceeds %llu", key_names[k],
			       (unsigned long long)o->via.u64, (unsigned long long)max);
	*out = o->via.u64;
	return FI_OK;
}

static fi_err get_u32(const msgpack_object *o, int k, uint32_t *out)
{
	uint64_t v = 0;
	fi_err e = get_uint(o, k, UINT32_MAX, &v);
	if (!e)
		*out = (uint32_t)v;
	return e;
}

static fi_err get_num(const msgpack_object *o, int k, double lo, double hi, double *out)
{
	double v;
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: v = (double)o->via.u64; break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: v = (double)o->via.i64; break;
	case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: v = o->via.f64; break;
	default: return bad_type(k, "a number", o);
	}
	if (!(v >= lo && v <= hi)) /* also NaN */
		return fi_fail(FI_ERANGE, "frame: key '%s': %g is out of range [%g, %g]", key_names[k], v, lo, hi);
	*out = v;
	return FI_OK;
}

static fi_err get_f32(const msgpack_object *o, int k, double lo, double hi, float *out)
{
	double v = 0;
	fi_err e = get_num(o, k, lo, hi, &v);
	if (!e)
		*out = (float)v;
	return e;
}

/* Copies a str (NUL-terminated); embedded NULs refused where a C string is handed on. */
static fi_err dup_str(const msgpack_object *o, int k, uint32_t max, int nul_ok, char **out,
		      size_t *outlen)
{
	uint32_t n;
	if (o->type != MSGPACK_OBJECT_STR)
		return bad_type(k, "str", o);
	n = o->via.str.size;
	if (n > max)
		return fi_fail(FI_ERANGE, "frame: key '%s': %u bytes exceed the limit of %u", key_names[k], n, max);
	if (!nul_ok && memchr(o->via.str.ptr, 0, n))
		return fi_fail(FI_EFORMAT, "frame: key '%s': contains a NUL byte", key_names[k]);
	if (!(*out = malloc((size_t)n + 1)))
		return fi_fail(FI_ENOMEM, "frame: key '%s': %u bytes", key_names[k], n);
	memcpy(*out, o->via.str.ptr, n);
	(*out)[n] = 0;
	if (outlen)
		*outlen = n;
	return FI_OK;
}

/* Token ids: a bin of little-endian uint32 (what fi writes), or an array of uints (easy to
 * write by hand). Never NULL on success, even for zero tokens. */
static fi_err get_tokens(const msgpack_object *o, int k, uint32_t max, uint32_t **out, uint32_t *n)
{
	uint64_t cnt;
	uint32_t *t;
	if (o->type == MSGPACK_OBJECT_BIN) {
		if (o->via.bin.size % 4)
			return fi_fail(FI_EFORMAT, "frame: key '%s': bin of %u bytes is not a multiple of 4",
				       key_names[k], o->via.bin.size);
		cnt = o->via.bin.size / 4;
	} else if (o->type == MSGPACK_OBJECT_ARRAY) {
		cnt = o->via.array.size;
	} else {
		return bad_type(k, "bin (uint32 LE) or array", o);
	}
	if (cnt > max)
		return fi_fail(FI_ERANGE, "frame: key '%s': %llu tokens exceed the limit of %u",
			       key_names[k], (unsigned long long)cnt, max);
	if (!(t = malloc(cnt ? cnt * 4 : 4)))
		return fi_fail(FI_ENOMEM, "frame: key '%s': %llu tokens", key_names[k], (unsigned long long)cnt);
	if (o->type == MSGPACK_OBJECT_BIN) {
		const uint8_t *p = (const uint8_t *)o->via.bin.ptr;
		for (uint64_t i = 0; i < cnt; i++, p += 4)
			t[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	} else {
		for (uint64_t i = 0; i < cnt; i++) {
			fi_err e = get_u32(&o->via.array.ptr[i], k, &t[i]);
			if (e) {
				free(t);
				return e;
			}
		}
	}
	*out = t;
	*n = (uint32_t)cnt;
	return FI_OK;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A 32-byte key: bin 32 (what fi writes) or 64 hex digits. */
static fi_err get_key32(const msgpack_object *o, int k, uint8_t out[32])
{
	if (o->type == MSGPACK_OBJECT_BIN && o->via.bin.size == 32) {
		memcpy(out, o->via.bin.ptr, 32);
		return FI_OK;
	}
	if (o->type == MSGPACK_OBJECT_STR && o->via.str.size == 64) {
		for (int i = 0; i < 32; i++) {
			int h = hexval(o->via.str.ptr[2 * i]), l = hexval(o->via.str.ptr[2 * i + 1]);
			if (h < 0 || l < 0)
				return fi_fail(FI_EFORMAT, "frame: key '%s': not a hex string", key_names[k]);
			out[i] = (uint8_t)(h << 4 | l);
		}
		return FI_OK;
	}
	return bad_type(k, "bin 32 or 64 hex digits", o);
}

static fi_err get_map(const msgpack_object *o, int k, uint64_t allowed, const msgpack_object **vals)
{
	if (o->type != MSGPACK_OBJECT_MAP)
		return bad_type(k, "map", o);
	return map_keys(o, key_names[k], allowed, vals);
}

static fi_err dec_kv(const msgpack_object *o, const struct fi_frame_limits *lim, struct fi_kv_ref *kv)
{
	const msgpack_object *v[K_COUNT] = { 0 };
	const msgpack_object *bl;
	fi_err e = get_map(o, K_KV, kv_keys, v);

	if (e)
		return e;
	if (!v[K_FINGERPRINT] || !v[K_BLOCKS] || !v[K_NTOKENS])
		return fi_fail(FI_EFORMAT, "frame: key 'kv': needs 'fingerprint', 'blocks' and 'ntokens'");
	if (v[K_ARENA])
		e = dup_str(v[K_ARENA], K_ARENA, lim->max_id, 0, &kv->arena, NULL);
	else if (!(kv->arena = strdup("")))
		e = fi_fail(FI_ENOMEM, "frame: kv arena");
	if (!e)
		e = get_key32(v[K_FINGERPRINT], K_FINGERPRINT, kv->fingerprint);
	if (!e)
		e = get_u32(v[K_NTOKENS], K_NTOKENS, &kv->ntokens);
	if (!e && v[K_BLOCK_TOKENS])
		e = get_u32(v[K_BLOCK_TOKENS], K_BLOCK_TOKENS, &kv->block_tokens);
	if (e)
		return e;
	bl = v[K_BLOCKS];
	if (bl->type != MSGPACK_OBJECT_ARRAY)
		return bad_type(K_BLOCKS, "array", bl);
	if (bl->via.array.size > lim->max_blocks)
		return fi_fail(FI_ERANGE, "frame: key 'blocks': %u keys exceed the limit of %u",
			       bl->via.array.size, lim->max_blocks);
	if (!(kv->blocks = malloc(bl->via.array.size ? bl->via.array.size * 32u : 32u)))
		return fi_fail(FI_ENOMEM, "frame: %u block keys", bl->via.array.size);
	kv->nblocks = bl->via.array.size;
	for (uint32_t i = 0; i < kv->nblocks; i++)
		if (get_key32(&bl->via.array.ptr[i], K_BLOCKS, kv->blocks[i]))
			return fi_fail(FI_EFORMAT, "frame: key 'blocks': entry %u is not a bin of 32 "
				       "bytes or 64 hex digits", i);
	return FI_OK;
}

static fi_err dec_tokenizer(const msgpack_object *o, const struct fi_frame_limits *lim,
			    struct fi_request *r)
{
	const msgpack_object *v[K_COUNT] = { 0 };
	fi_err e = get_map(o, K_TOKENIZER, tokenizer_keys, v);
	if (e)
		return e;
	if (!v[K_SHA256])
		return fi_fail(FI_EFORMAT, "frame: key 'tokenizer': needs 'sha256'");
	if ((e = get_key32(v[K_SHA256], K_SHA256, r->tok_sha256)))
		return e;
	if (v[K_NAME] && (e = dup_str(v[K_NAME], K_NAME, lim->max_id, 0, &r->tok_name, NULL)))
		return e;
	return FI_OK;
}

static fi_err dec_stop(const msgpack_object *o, const struct fi_frame_limits *lim, struct fi_request *r)
{
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return bad_type(K_STOP, "array of str", o);
	if (o->via.array.size > lim->max_stop)
		return fi_fail(FI_ERANGE, "frame: key 'stop': %u strings exceed the limit of %u",
			       o->via.array.size, lim->max_stop);
	if (!(r->stop = calloc(o->via.array.size + 1, sizeof *r->stop)))
		return fi_fail(FI_ENOMEM, "frame: stop strings");
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		fi_err e = dup_str(&o->via.array.ptr[i], K_STOP, lim->max_stop_len, 0, &r->stop[i], NULL);
		if (e)
			return e;
		r->nstop++;
	}
	return FI_OK;
}

/* "top_logprobs" of a token frame: an array of [token, logprob] pairs. */
static fi_err dec_top(const msgpack_object *o, struct fi_token *t)
{
	if (o->type != MSGPACK_OBJECT_ARRAY)
		return bad_type(K_TOP_LOGPROBS, "array of [uint, float]", o);
	if (o->via.array.size > FI_FRAME_MAX_TOP)
		return fi_fail(FI_ERANGE, "frame: key 'top_logprobs': %u entries exceed the limit of %d",
			       o->via.array.size, FI_FRAME_MAX_TOP);
	if (!(t->top = calloc(o->via.array.size + 1, sizeof *t->top)))
		return fi_fail(FI_ENOMEM, "frame: top_logprobs");
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		const msgpack_object *p = &o->via.array.ptr[i];
		fi_err e;
		if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != 2)
			return bad_type(K_TOP_LOGPROBS, "array of [uint, float]", p);
		if ((e = get_u32(&p->via.array.ptr[0], K_TOP_LOGPROBS, &t->top[i].token)) ||
		    (e = get_f32(&p->via.array.ptr[1], K_TOP_LOGPROBS, -INFINITY, 0, &t->top[i].logprob)))
			return e;
		t->ntop = i + 1;
	}
	return FI_OK;
}

static fi_err dec_request(const msgpack_object **v, const struct fi_frame_limits *lim, struct fi_request *r)
{
	fi_err e = FI_OK;
	uint64_t u;
	double d;

	if (!v[K_TEXT] && !v[K_TOKENS])
		return fi_fail(FI_EFORMAT, "frame: request has neither 'text' nor 'tokens'");
	if (v[K_TEXT] && (e = dup_str(v[K_TEXT], K_TEXT, lim->max_text, 1, &r->text, &r->text_len)))
		return e;
	if (v[K_TOKENS] && (e = get_tokens(v[K_TOKENS], K_TOKENS, lim->max_tokens, &r->tokens, &r->ntokens)))
		return e;
	if (v[K_TEMPERATURE] && !(e = get_f32(v[K_TEMPERATURE], K_TEMPERATURE, 0, 1e4, &r->temperature)))
		r->set |= FI_REQ_TEMPERATURE;
	if (!e && v[K_TOP_K]) {
		if (!(e = get_uint(v[K_TOP_K], K_TOP_K, INT32_MAX, &u))) {
			r->top_k = (int32_t)u;
			r->set |= FI_REQ_TOP_K;
		}
	}
	if (!e && v[K_TOP_P] && !(e = get_f32(v[K_TOP_P], K_TOP_P, 0, 1, &r->top_p)))
		r->set |= FI_REQ_TOP_P;
	if (!e && v[K_MIN_P] && !(e = get_f32(v[K_MIN_P], K_MIN_P, 0, 1, &r->min_p)))
		r->set |= FI_REQ_MIN_P;
	if (!e && v[K_REPEAT_PENALTY] &&
	    !(e = get_num(v[K_REPEAT_PENALTY], K_REPEAT_PENALTY, 1e-3, 1e3, &d))) {
		r->repeat_penalty = (float)d;
		r->set |= FI_REQ_REPEAT_PENALTY;
	}
	if (!e && v[K_SEED] && !(e = get_uint(v[K_SEED], K_SEED, UINT64_MAX, &r->seed)))
		r->set |= FI_REQ_SEED;
	if (!e && v[K_MAX_TOKENS] && !(e = get_u32(v[K_MAX_TOKENS], K_MAX_TOKENS, &r->max_tokens)))
		r->set |= FI_REQ_MAX_TOKENS;
	if (!e && v[K_STREAM]) {
		if (v[K_STREAM]->type != MSGPACK_OBJECT_BOOLEAN)
			return bad_type(K_STREAM, "bool", v[K_STREAM]);
		r->stream = v[K_STREAM]->via.boolean;
		r->set |= FI_REQ_STREAM;
	}
	if (!e && v[K_IGNORE_EOS]) {
		if (v[K_IGNORE_EOS]->type != MSGPACK_OBJECT_BOOLEAN)
			return bad_type(K_IGNORE_EOS, "bool", v[K_IGNORE_EOS]);
		r->ignore_eos = v[K_IGNORE_EOS]->via.boolean;
		r->set |= FI_REQ_IGNORE_EOS;
	}
	if (!e && v[K_STOP])
		e = dec_stop(v[K_STOP], lim, r);
	if (!e && v[K_STOP_IDS]) {
		if (v[K_STOP_IDS]->type != MSGPACK_OBJECT_ARRAY)
			return bad_type(K_STOP_IDS, "array of uint", v[K_STOP_IDS]);
		e = get_tokens(v[K_STOP_IDS], K_STOP_IDS, lim->max_stop, &r->stop_ids, &r->nstop_ids);
	}
	if (!e && v[K_KV] && !(e = dec_kv(v[K_KV], lim, &r->kv)))
		r->set |= FI_REQ_KV;
	if (!e && v[K_TOKENIZER] && !(e = dec_tokenizer(v[K_TOKENIZER], lim, r)))
		r->set |= FI_REQ_TOKENIZER;
	if (!e && v[K_LOGPROBS]) {
		if (v[K_LOGPROBS]->type != MSGPACK_OBJECT_BOOLEAN)
			return bad_type(K_LOGPROBS, "bool", v[K_LOGPROBS]);
		r->logprobs = v[K_LOGPROBS]->via.boolean;
		r->set |= FI_REQ_LOGPROBS;
	}
	if (!e && v[K_TOP_LOGPROBS] &&
	    !(e = get_uint(v[K_TOP_LOGPROBS], K_TOP_LOGPROBS, FI_FRAME_MAX_TOP, &u))) {
		r->top_logprobs = (uint32_t)u;
		r->set |= FI_REQ_TOP_LOGPROBS;
	}
	return e;
}

static fi_err dec_done(const msgpack_object **v, const struct fi_frame_limits *lim, struct fi_done *dn)
{
	const msgpack_object *c[K_COUNT] = { 0 }, *t[K_COUNT] = { 0 };
	const msgpack_object *fo = v[K_FINISH];
	double *tm[4] = { &dn->queue_ms, &dn->ttft_ms, &dn->tpot_ms, &dn->total_ms };
	uint32_t *cn[3] = { &dn->prompt_tokens, &dn->gen_tokens, &dn->cached_tokens };
	fi_err e;
	int i;

	if (!fo)
		return fi_fail(FI_EFORMAT, "frame: done without 'finish'");
	if (fo->type != MSGPACK_OBJECT_STR)
		return bad_type(K_FINISH, "str", fo);
	for (i = 0; i < FI_FINISH_COUNT; i++)
		if (strlen(fi_finish_name(i)) == fo->via.str.size &&
		    !memcmp(fi_finish_name(i), fo->via.str.ptr, fo->via.str.size))
			break;
	if (i == FI_FINISH_COUNT)
		return fi_fail(FI_EFORMAT, "frame: key 'finish': unknown reason '%.*s'",
			       (int)(fo->via.str.size > 32 ? 32 : fo->via.str.size), fo->via.str.ptr);
	dn->finish = i;
	if (v[K_COUNTS] && (e = get_map(v[K_COUNTS], K_COUNTS, counts_keys, c)))
		return e;
	for (i = 0; i < 3; i++)
		if (c[K_PROMPT_TOKENS + i] && (e = get_u32(c[K_PROMPT_TOKENS + i], K_PROMPT_TOKENS + i, cn[i])))
			return e;
	if (v[K_TIMINGS] && (e = get_map(v[K_TIMINGS], K_TIMINGS, timings_keys, t)))
		return e;
	for (i = 0; i < 4; i++)
		if (t[K_QUEUE_MS + i] && (e = get_num(t[K_QUEUE_MS + i], K_QUEUE_MS + i, -1, 1e12, tm[i])))
			return e;
	if (v[K_TOKENS] && (e = get_tokens(v[K_TOKENS], K_TOKENS, lim->max_tokens, &dn->tokens, &dn->ntokens)))
		return e;
	if (v[K_TEXT] && (e = dup_str(v[K_TEXT], K_TEXT, lim->max_text, 1, &dn->text, &dn->text_len)))
		return e;
	return FI_OK;
}

static fi_err dec_error(const msgpack_object **v, const struct fi_frame_limits *lim, struct fi_error_frame *er)
{
	uint64_t num = FI_EINVAL;
	int code = -1;
	fi_err e;

	if (v[K_CODE_NUM] && (e = get_uint(v[K_CODE_NUM], K_CODE_NUM, UINT32_MAX, &num)))
		return e;
	if (v[K_CODE]) {
		if (v[K_CODE]->type != MSGPACK_OBJECT_STR)
			return bad_type(K_CODE, "str", v[K_CODE]);
		code = fi_err_code_parse(v[K_CODE]->via.str.ptr, v[K_CODE]->via.str.size);
	}
	/* The name decides; a name this version does not know falls back on the number. */
	if (code < 0)
		code = num < FI_ENCODE_COUNT ? (int)num : FI_EINVAL;
	er->code = (fi_err)code;
	if (v[K_MESSAGE])
		return dup_str(v[K_MESSAGE], K_MESSAGE, lim->max_text, 0, &er->message, NULL);
	if (!(er->message = strdup("")))
		return fi_fail(FI_ENOMEM, "frame: error message");
	return FI_OK;
}

static fi_err dec_hello(const msgpack_object **v, const struct fi_frame_limits *lim, struct fi_hello *h)
{
	uint64_t u;
	fi_err e;
	if (!v[K_ROLE] || !v[K_MODEL] || !v[K_FINGERPRINT] || !v[K_BLOCK_TOKENS] || !v[K_KV_BLOCKS] ||
	    !v[K_MAX_BATCH])
		return fi_fail(FI_EFORMAT, "frame: hello needs 'role', 'model', 'fingerprint', "
			       "'block_tokens', 'kv_blocks' and 'max_batch'");
	if ((e = dup_str(v[K_ROLE], K_ROLE, lim->max_id, 0, &h->role, NULL)))
		return e;
	if (strcmp(h->role, "decode") && strcmp(h->role, "prefill"))
		return fi_fail(FI_EFORMAT, "frame: key 'role': expected \"decode\" or \"prefill\"");
	if ((e = dup_str(v[K_MODEL], K_MODEL, lim->max_id, 0, &h->model, NULL)) ||
	    (e = get_key32(v[K_FINGERPRINT], K_FINGERPRINT, h->fingerprint)) ||
	    (e = get_u32(v[K_BLOCK_TOKENS], K_BLOCK_TOKENS, &h->block_tokens)) ||
	    (e = get_uint(v[K_KV_BLOCKS], K_KV_BLOCKS, UINT64_MAX, &h->kv_blocks)) ||
	    (e = get_uint(v[K_MAX_BATCH], K_MAX_BATCH, UINT32_MAX, &u)))
		return e;
	h->max_batch = (uint32_t)u;
	if (!h->block_tokens)
		return fi_fail(FI_ERANGE, "frame: key 'block_tokens': 0");
	if (v[K_KV_ROOT]) {
		if ((e = get_key32(v[K_KV_ROOT], K_KV_ROOT, h->kv_root)))
			return e;
		h->has_kv_root = 1;
	}
	if (v[K_KV_REPLAY] &&
	    (e = dup_str(v[K_KV_REPLAY], K_KV_REPLAY, lim->max_id, 0, &h->kv_replay, NULL)))
		return e;
	if (v[K_KV_EVENTS])
		return dup_str(v[K_KV_EVENTS], K_KV_EVENTS, lim->max_id, 0, &h->kv_events, NULL);
	return FI_OK;
}

static fi_err dec_load(const msgpack_object **v, struct fi_load *ld)
{
	uint64_t *out[8] = { &ld->queued, &ld->queued_tokens, &ld->running, &ld->running_tokens,
			     &ld->kv_used, &ld->kv_total, &ld->prefix_hits, &ld->prefix_lookups };
	for (int i = 0; i < 8; i++) {
		fi_err e;
		if (!v[K_QUEUED + i])
			return fi_fail(FI_EFORMAT, "frame: load without '%s'", key_names[K_QUEUED + i]);
		if ((e = get_uint(v[K_QUEUED + i], K_QUEUED + i, UINT64_MAX, out[i])))
			return e;
	}
	if (ld->kv_used > ld->kv_total || ld->prefix_hits > ld->prefix_lookups)
		return fi_fail(FI_ERANGE, "frame: load: kv_used above kv_total or prefix_hits above prefix_lookups");
	return FI_OK;
}

static fi_err dec_head(const msgpack_object *o, const struct fi_frame_limits *lim,
		       const msgpack_object **v, struct fi_frame *f, enum fi_frame_type *type)
{
	const msgpack_object *t;
	uint64_t ver;
	fi_err e;
	int i;

	if (o->type != MSGPACK_OBJECT_MAP)
		return fi_fail(FI_EFORMAT, "frame: expected a map, got %s", tname(o));
	if ((e = map_keys(o, "frame", common_keys, v)))
		return e;
	/* The id first, so that any later failure can be answered for this request. */
	if (v[K_ID] && v[K_ID]->type == MSGPACK_OBJECT_STR && v[K_ID]->via.str.size <= lim->max_id &&
	    !memchr(v[K_ID]->via.str.ptr, 0, v[K_ID]->via.str.size) &&
	    fi_utf8_valid(v[K_ID]->via.str.ptr, v[K_ID]->via.str.size) == v[K_ID]->via.str.size &&
	    (e = dup_str(v[K_ID], K_ID, lim->max_id, 0, &f->id, NULL)))
		return e;
	if (!v[K_V])
		return fi_fail(FI_EFORMAT, "frame: no 'v' (schema version)");
	if ((e = get_uint(v[K_V], K_V, UINT32_MAX, &ver)))
		return e;
	if (ver < 1)
		return fi_fail(FI_EFORMAT, "frame: version 0 does not exist");
	if (!(t = v[K_TYPE]))
		return fi_fail(FI_EFORMAT, "frame: no 'type'");
	if (t->type != MSGPACK_OBJECT_STR)
		return bad_type(K_TYPE, "str", t);
	for (i = 1; i < FI_FRAME_TYPE_COUNT; i++)
		if (strlen(fi_frame_type_name(i)) == t->via.str.size &&
		    !memcmp(fi_frame_type_name(i), t->via.str.ptr, t->via.str.size))
			break;
	if (i == FI_FRAME_TYPE_COUNT)
		return fi_fail(FI_EUNSUPPORTED, "frame: unknown type '%.*s' (frame version %llu)",
			       (int)(t->via.str.size > 32 ? 32 : t->via.str.size), t->via.str.ptr,
			       (unsigned long long)ver);
	*type = i;
	if (v[K_SEQ]) {
		if ((e = get_uint(v[K_SEQ], K_SEQ, UINT64_MAX, &f->seq)))
			return e;
		f->has_seq = 1;
	}
	/* Later versions list the keys a reader must understand to handle the frame. */
	if (v[K_MUST]) {
		const msgpack_object *m = v[K_MUST];
		if (m->type != MSGPACK_OBJECT_ARRAY)
			return bad_type(K_MUST, "array of str", m);
		for (uint32_t j = 0; j < m->via.array.size; j++) {
			const msgpack_object *k = &m->via.array.ptr[j];
			if (k->type != MSGPACK_OBJECT_STR)
				return bad_type(K_MUST, "array of str", k);
			if (key_find(k, common_keys | type_keys[i]) < 0)
				return fi_fail(FI_EUNSUPPORTED, "frame: version %llu %s frame requires key '%.*s', unknown to version %d",
					       (unsigned long long)ver, fi_frame_type_name(i),
					       (int)(k->via.str.size > 32 ? 32 : k->via.str.size),
					       k->via.str.ptr, FI_FRAME_VERSION);
		}
	}
	if (i == FI_FRAME_EOS) {
		/* eos ends a stream, not a request: an id on it means nothing. */
		free(f->id);
		f->id = NULL;
		return FI_OK;
	}
	if (v[K_ID] && !f->id) {
		/* Unreadable: the reply's id stays "" (an id that is not UTF-8 cannot be sent
		 * back as a msgpack str) */
		if (v[K_ID]->type != MSGPACK_OBJECT_STR)
			return bad_type(K_ID, "str", v[K_ID]);
		if ((e = dup_str(v[K_ID], K_ID, lim->max_id, 0, &f->id, NULL)))
			return e;
		free(f->id);
		f->id = NULL;
		return fi_fail(FI_EFORMAT, "frame: key 'id' is not valid UTF-8");
	}
	if (i == FI_FRAME_ERROR && !f->id && !(f->id = strdup("")))
		return fi_fail(FI_ENOMEM, "frame: id");
	if (!f->id || (!*f->id && i != FI_FRAME_ERROR))
		return fi_fail(FI_EFORMAT, "frame: %s frame without an id", fi_frame_type_name(i));
	return FI_OK;
}

fi_err fi_frame_decode_obj(const msgpack_object *o, const struct fi_frame_limits *lim,
			   struct fi_frame *f)
{
	const msgpack_object *v[K_COUNT] = { 0 };
	enum fi_frame_type type = FI_FRAME_NONE;
	fi_err e;
	char *id;

	memset(f, 0, sizeof *f);
	e = dec_head(o, lim, v, f, &type);
	if (!e) {
		struct fi_frame h = *f;
		fi_frame_init(f, type);
		f->id = h.id;
		f->seq = h.seq;
		f->has_seq = h.has_seq;
		/* Keys of other types are unknown keys here: ignored. */
		e = map_keys(o, "frame", type_keys[type], v);
	}
	if (!e && v[K_PROMPT])
		e = dup_str(v[K_PROMPT], K_PROMPT, lim->max_text, 1, &f->prompt, &f->prompt_len);
	if (!e) {
		switch (type) {
		case FI_FRAME_REQUEST:
			e = dec_request(v, lim, &f->req);
			break;
		case FI_FRAME_TOKEN:
			if (!v[K_TOKEN] || !v[K_INDEX]) {
				e = fi_fail(FI_EFORMAT, "frame: token frame needs 'token' and 'index'");
				break;
			}
			e = get_u32(v[K_TOKEN], K_TOKEN, &f->tok.token);
			if (!e)
				e = get_u32(v[K_INDEX], K_INDEX, &f->tok.index);
			if (!e && v[K_TEXT])
				e = dup_str(v[K_TEXT], K_TEXT, lim->max_text, 1, &f->tok.text, &f->tok.text_len);
			if (!e && v[K_LOGPROB] &&
			    !(e = get_f32(v[K_LOGPROB], K_LOGPROB, -INFINITY, 0, &f->tok.logprob)))
				f->tok.has_logprob = 1;
			if (!e && v[K_TOP_LOGPROBS])
				e = dec_top(v[K_TOP_LOGPROBS], &f->tok);
			break;
		case FI_FRAME_DONE:
			e = dec_done(v, lim, &f->done);
			break;
		case FI_FRAME_ERROR:
			e = dec_error(v, lim, &f->err);
			break;
		case FI_FRAME_HELLO:
			e = dec_hello(v, lim, &f->hello);
			break;
		case FI_FRAME_LOAD:
			e = dec_load(v, &f->load);
			break;
		default:
			break;
		}
	}
	if (e) {
		/* Keep only the id and seq, for the error reply. */
		uint64_t seq = f->seq;
		int has_seq = f->has_seq;
		id = f->id;
		f->id = NULL;
		fi_frame_free(f);
		f->id = id;
		f->seq = seq;
		f->has_seq = has_seq;
		f->type = FI_FRAME_NONE;
	}
	return e;
}
