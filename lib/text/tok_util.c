/* Tokenizer helpers: buffers, hashing, UTF-8, character classes (utf8proc), regex matching
 * with PCRE2, and the per-call scratch pool. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

int tok_buf_reserve(struct tok_buf *b, size_t extra)
{
	size_t need = b->n + extra + 1, cap;
	char *p;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	if (!(p = realloc(b->p, cap)))
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

int tok_buf_put(struct tok_buf *b, const void *s, size_t n)
{
	if (tok_buf_reserve(b, n))
		return -1;
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}

void tok_buf_free(struct tok_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof *b);
}

int tok_pieces_add(struct tok_pieces *p, uint32_t off, uint32_t len, int first)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct tok_piece *v = realloc(p->v, cap * sizeof *v);
		if (!v)
			return -1;
		p->v = v;
		p->cap = cap;
	}
	p->v[p->n++] = (struct tok_piece){off, len, (uint8_t)first};
	return 0;
}

void tok_pieces_free(struct tok_pieces *p)
{
	tok_buf_free(&p->b);
	free(p->v);
	memset(p, 0, sizeof *p);
}

int tok_ids_push(struct fi_tok_ids *ids, uint32_t id)
{
	if (ids->n == ids->cap) {
		size_t cap = ids->cap ? ids->cap * 2 : 64;
		uint32_t *v = realloc(ids->v, cap * sizeof *v);
		if (!v)
			return -1;
		ids->v = v;
		ids->cap = cap;
	}
	ids->v[ids->n++] = id;
	return 0;
}

void fi_tok_ids_free(struct fi_tok_ids *ids)
{
	free(ids->v);
	memset(ids, 0, sizeof *ids);
}

/* 64-bit hash over 8-byte words (a multiply-xorshift mix; not for adversarial keys beyond
 * what open addressing with a load factor of 1/2 tolerates). */
uint64_t tok_hash(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull);
	while (n >= 8) {
		uint64_t w;
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 31;
		s += 8;
		n -= 8;
	}
	if (n) {
		uint64_t w = 0;
		memcpy(&w, s, n);
		h = (h ^ w) * 0x94d049bb133111ebull;
		h ^= h >> 29;
	}
	h *= 0xbf58476d1ce4e5b9ull;
	return h ^ (h >> 32);
}

/* Length of the valid sequence at s, or 0; *bad gets the length of the maximal invalid
 * subpart (at least 1) when invalid. */
static size_t utf8_step(const unsigned char *s, size_t n, size_t *bad)
{
	unsigned char b = s[0];
	size_t need, i;
	unsigned char lo = 0x80, hi = 0xbf;
	if (b < 0x80)
		return 1;
	if (b >= 0xc2 && b <= 0xdf)
		need = 1;
	else if (b >= 0xe0 && b <= 0xef) {
		need = 2;
		if (b == 0xe0)
			lo = 0xa0;
		if (b == 0xed)
			hi = 0x9f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		need = 3;
		if (b == 0xf0)
			lo = 0x90;
		if (b == 0xf4)
			hi = 0x8f;
	} else {
		*bad = 1;
		return 0;
	}
	for (i = 1; i <= need; i++) {
		if (i >= n || s[i] < lo || s[i] > hi) {
			*bad = i;
			return 0;
		}
		lo = 0x80;
		hi = 0xbf;
	}
	return need + 1;
}

size_t tok_utf8_valid_len(const unsigned char *s, size_t n)
{
	size_t bad;
	return n ? utf8_step(s, n, &bad) : 0;
}

size_t tok_utf8_check(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, bad;
	while (i < n) {
		size_t k;
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		if (!(k = utf8_step(u + i, n - i, &bad)))
			return i;
		i += k;
	}
	return n;
}

int tok_utf8_lossy(const char *s, size_t n, struct tok_buf *out)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0, bad;
	if (tok_buf_reserve(out, n))
		return -1;
	while (i < n) {
		size_t k = u[i] < 0x80 ? 1 : utf8_step(u + i, n - i, &bad);
		if (k) {
			i += k;
			continue;
		}
		if (tok_buf_put(out, s + run, i - run) || tok_buf_put(out, "\xef\xbf\xbd", 3))
			return -1;
		i += bad;
		run = i;
	}
	return tok_buf_put(out, s + run, n - run);
}

size_t tok_utf8_dec(const char *s, uint32_t *cp)
{
	const unsigned char *u = (const unsigned char *)s;
	if (u[0] < 0x80) {
		*cp = u[0];
		return 1;
	}
	if (u[0] < 0xe0) {
		*cp = ((uint32_t)(u[0] & 0x1f) << 6) | (u[1] & 0x3f);
		return 2;
	}
	if (u[0] < 0xf0) {
		*cp = ((uint32_t)(u[0] & 0x0f) << 12) | ((uint32_t)(u[1] & 0x3f) << 6) | (u[2] & 0x3f);
		return 3;
	}
	*cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3f) << 12) |
	      ((uint32_t)(u[2] & 0x3f) << 6) | (u[3] & 0x3f);
	return 4;
}

size_t tok_utf8_enc(uint32_t cp, char *out)
{
	return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

int tok_is_whitespace(uint32_t c)
{
	utf8proc_category_t k;
	if (c < 0x80)
		return c == ' ' || (c >= 9 && c <= 13);
	if (c == 0x85)
		return 1;
	k = utf8proc_category((utf8proc_int32_t)c);
	return k == UTF8PROC_CATEGORY_ZS || k == UTF8PROC_CATEGORY_ZL || k == UTF8PROC_CATEGORY_ZP;
}

int tok_is_numeric(uint32_t c)
{
	utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
	return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

int tok_is_punct(uint32_t c)
{
	utf8proc_category_t k;
	if (c < 0x80)
		return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
		       (c >= 123 && c <= 126);
	k = utf8proc_category((utf8proc_int32_t)c);
	return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

/* byte -> the printable char GPT-2 maps it to, UTF-8 encoded (1 or 2 bytes). */
static char bl_map[256][2];
static uint8_t bl_len[256];
static int16_t bl_rev[68]; /* char 256 + i -> byte */
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void)
{
	uint32_t n = 0;
	for (int b = 0; b < 256; b++) {
		uint32_t cp;
		if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae))
			cp = (uint32_t)b;
		else {
			bl_rev[n] = (int16_t)b;
			cp = 256 + n++;
		}
		bl_len[b] = (uint8_t)tok_utf8_enc(cp, bl_map[b]);
	}
}

size_t tok_bytelevel_char(unsigned char b, char *out)
{
	pthread_once(&bl_once, bl_init);
	memcpy(out, bl_map[b], bl_len[b]);
	return bl_len[b];
}

int tok_bytelevel_byte(uint32_t cp)
{
	if ((cp >= '!' && cp <= '~') || (cp >= 0xa1 && cp <= 0xac) || (cp >= 0xae && cp <= 0xff))
		return (int)cp;
	pthread_once(&bl_once, bl_init);
	return cp >= 256 && cp < 256 + 68 ? bl_rev[cp - 256] : -1;
}

int tok_replace_all(const char *s, size_t n, const char *from, size_t fn, const char *to, size_t tn,
		    struct tok_buf *out)
{
	size_t i = 0, run = 0;
	if (!fn) {
		/* Rust: an empty pattern matches at every char boundary, ends included. */
		for (i = 0; i < n;) {
			size_t k = tok_utf8_valid_len((const unsigned char *)s + i, n - i);
			if (tok_buf_put(out, to, tn) || tok_buf_put(out, s + i, k ? k : 1))
				return -1;
			i += k ? k : 1;
		}
		return tok_buf_put(out, to, tn);
	}
	while (i + fn <= n) {
		if (!memcmp(s + i, from, fn)) {
			if (tok_buf_put(out, s + run, i - run) || tok_buf_put(out, to, tn))
				return -1;
			i += fn;
			run = i;
		} else
			i++;
	}
	return tok_buf_put(out, s + run, n - run);
}

pcre2_code *tok_re_compile(const char *pat, size_t len, int literal, const char *what)
{
	int ec;
	PCRE2_SIZE eo;
	uint32_t opt = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opt, &ec, &eo, NULL);
	if (!re) {
		char msg[160];
		pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
		fi_fail(FI_EFORMAT, "%s: bad regex at offset %zu: %s", what, (size_t)eo, msg);
		return NULL;
	}
	/* JIT is an optimisation: without it (unsupported CPU, no exec memory) the interpreter
	 * runs the same pattern. */
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
	return re;
}

int tok_segs_push(struct tok_ctx *c, uint32_t s, uint32_t e, int match)
{
	if (c->nsegs == c->segcap) {
		size_t cap = c->segcap ? c->segcap * 2 : 256;
		struct tok_seg *v = realloc(c->segs, cap * sizeof *v);
		if (!v)
			return -1;
		c->segs = v;
		c->segcap = cap;
	}
	c->segs[c->nsegs++] = (struct tok_seg){s, e, (uint8_t)match};
	return 0;
}

int tok_re_segments(struct tok_ctx *c, const pcre2_code *re, const char *s, size_t n)
{
	size_t prev = 0, from = 0, last_end = (size_t)-1;
	c->nsegs = 0;
	if (!n)
		return tok_segs_push(c, 0, 0, 0);
	while (from <= n) {
		int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, c->md, c->mc);
		PCRE2_SIZE *ov;
		size_t ms, me;
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0) {
			char msg[160];
			pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg);
			if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT)
				fi_fail(FI_ERANGE, "regex match failed near byte %zu: %s (the pattern backtracks "
					"too much on this text)", from, msg);
			else
				fi_fail(FI_ERANGE, "regex match failed near byte %zu: %s", from, msg);
			return -2;
		}
		ov = pcre2_get_ovector_pointer(c->md);
		ms = ov[0];
		me = ov[1];
		if (me == ms && me == last_end) {
			/* No empty match right after the previous match: step one char. */
			if (from >= n)
				break;
			from += tok_utf8_valid_len((const unsigned char *)s + from, n - from);
			continue;
		}
		if (prev != ms && tok_segs_push(c, (uint32_t)prev, (uint32_t)ms, 0))
			return -1;
		if (tok_segs_push(c, (uint32_t)ms, (uint32_t)me, 1))
			return -1;
		prev = me;
		from = me;
		last_end = me;
	}
	if (prev != n && tok_segs_push(c, (uint32_t)prev, (uint32_t)n, 0))
		return -1;
	return 0;
}

int tok_pred_segments(struct tok_ctx *c, int (*pred)(uint32_t, uint32_t), uint32_t arg,
		      const char *s, size_t n)
{
	size_t i = 0, last = 0;
	c->nsegs = 0;
	if (!n)
		return tok_segs_push(c, 0, 0, 0);
	while (i < n) {
		uint32_t cp;
		size_t k = tok_utf8_dec(s + i, &cp);
		if (pred(cp, arg)) {
			if (last < i && tok_segs_push(c, (uint32_t)last, (uint32_t)i, 0))
				return -1;
			if (tok_segs_push(c, (uint32_t)i, (uint32_t)(i + k), 1))
				return -1;
			last = i + k;
		}
		i += k;
	}
	if (n > last && tok_segs_push(c, (uint32_t)last, (uint32_t)n, 0))
		return -1;
	return 0;
}

static struct tok_ctx *ctx_new(void)
{
	struct tok_ctx *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->md = pcre2_match_data_create(16, NULL);
	c->mc = pcre2_match_context_create(NULL);
	/* A 1 MB run of one character class must match: the JIT stack and the interpreter's
	 * heap may grow well past their defaults. */
	c->js = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
	c->cslot = calloc(TOK_CACHE_SLOTS, sizeof *c->cslot);
	c->cent = malloc(TOK_CACHE_SLOTS / 2 * sizeof *c->cent);
	if (!c->md || !c->mc || !c->cslot || !c->cent) {
		tok_ctx_free(c);
		return NULL;
	}
	if (c->js)
		pcre2_jit_stack_assign(c->mc, NULL, c->js);
	pcre2_set_heap_limit(c->mc, 4u * 1024 * 1024); /* KiB: 4 GiB */
	/* A pattern that backtracks catastrophically ((a+)+$ on a run of a's) fails in tens of
	 * milliseconds with a named error instead of burning seconds of CPU per prompt; the
	 * tokenizers' own patterns stay far below these limits, even on 1 MB runs. */
	pcre2_set_match_limit(c->mc, TOK_RE_MATCH_LIMIT);
	pcre2_set_depth_limit(c->mc, TOK_RE_MATCH_LIMIT);
	return c;
}

void tok_ctx_free(struct tok_ctx *c)
{
	if (!c)
		return;
	pcre2_match_data_free(c->md);
	pcre2_match_context_free(c->mc);
	if (c->js)
		pcre2_jit_stack_free(c->js);
	tok_buf_free(&c->text);
	tok_buf_free(&c->norm);
	tok_buf_free(&c->tmp);
	tok_pieces_free(&c->pa);
	tok_pieces_free(&c->pb);
	free(c->segs);
	free(c->sym);
	free(c->heap);
	free(c->cslot);
	free(c->cent);
	tok_buf_free(&c->ckeys);
	free(c->cids);
	free(c->best);
	tok_buf_free(&c->da.b);
	free(c->da.end);
	tok_buf_free(&c->db.b);
	free(c->db.end);
	free(c);
}

struct tok_ctx *tok_ctx_get(const struct fi_tok *t)
{
	struct fi_tok *m = (struct fi_tok *)t; /* the pool is the only mutable part */
	struct tok_ctx *c = NULL;
	pthread_mutex_lock(&m->lock);
	if (m->npool)
		c = m->pool[--m->npool];
	pthread_mutex_unlock(&m->lock);
	return c ? c : ctx_new();
}

void tok_ctx_put(const struct fi_tok *t, struct tok_ctx *c)
{
	struct fi_tok *m = (struct fi_tok *)t;
	if (!c)
		return;
	pthread_mutex_lock(&m->lock);
	if (m->npool < (int)(sizeof m->pool / sizeof m->pool[0])) {
		m->pool[m->npool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&m->lock);
	tok_ctx_free(c);
}
