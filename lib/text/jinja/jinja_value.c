/* jinja_value: arena, errors, Python-like values, equality and ordering, UTF-8 helpers. */
#define _GNU_SOURCE /* memmem */
#include "jinja.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jz_chunk {
	struct jz_chunk *next;
	size_t used, cap;
	max_align_t data[];
};

void *jz_alloc(struct jz_ctx *c, size_t n)
{
	struct jz_arena *a = c->arena;
	struct jz_chunk *h = a->head;
	n = (n + 15) & ~(size_t)15;
	if (n < 16 || n > ((size_t)1 << 40))
		jz_fail(c, FI_ENOMEM, "allocation of %zu bytes refused", n);
	if (a->limit && a->used + n > a->limit)
		jz_fail(c, FI_ERANGE, "memory limit of %zu bytes exceeded", a->limit);
	if (!h || h->cap - h->used < n) {
		size_t cap = n > 65536 ? n : 65536;
		h = malloc(sizeof *h + cap);
		if (!h)
			jz_fail(c, FI_ENOMEM, "out of memory");
		h->next = a->head;
		h->used = 0;
		h->cap = cap;
		a->head = h;
	}
	void *p = (char *)h->data + h->used;
	h->used += n;
	a->used += n;
	memset(p, 0, n);
	return p;
}

char *jz_strndup(struct jz_ctx *c, const char *s, size_t n)
{
	char *p = jz_alloc(c, n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

void jz_arena_free(struct jz_arena *a)
{
	struct jz_chunk *h = a->head, *nx;
	for (; h; h = nx) {
		nx = h->next;
		free(h);
	}
	a->head = NULL;
	a->used = 0;
}

void jz_fail(struct jz_ctx *c, fi_err e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof c->msg, fmt, ap);
	va_end(ap);
	c->code = e;
	longjmp(c->jb, 1);
}

void jz_enter(struct jz_ctx *c)
{
	if (++c->depth > c->max_depth)
		jz_fail(c, FI_ERANGE, "nesting deeper than %d", c->max_depth);
}

/* ---- constructors ---- */
const jv jv_none = { .k = JV_NONE };
const jv jv_true = { .k = JV_BOOL, .i = 1 };
const jv jv_false = { .k = JV_BOOL, .i = 0 };

jv jv_undef(const char *why) { return (jv){ .k = JV_UNDEF, .why = why }; }
jv jv_bool(int b) { return (jv){ .k = JV_BOOL, .i = !!b }; }
jv jv_int(long long i) { return (jv){ .k = JV_INT, .i = i }; }
jv jv_float(double f) { return (jv){ .k = JV_FLOAT, .f = f }; }

jv jv_str(struct jz_ctx *c, const char *s, size_t n)
{
	struct jstr *x = jz_alloc(c, sizeof *x + n + 1);
	x->n = n;
	if (n)
		memcpy(x->p, s, n);
	x->p[n] = 0;
	return (jv){ .k = JV_STR, .s = x };
}

jv jv_cstr(struct jz_ctx *c, const char *s) { return jv_str(c, s, strlen(s)); }

jv jv_list(struct jz_ctx *c, size_t cap)
{
	struct jlist *l = jz_alloc(c, sizeof *l);
	l->cap = cap ? cap : 4;
	l->v = jz_alloc(c, l->cap * sizeof(jv));
	return (jv){ .k = JV_LIST, .l = l };
}

jv jv_dict(struct jz_ctx *c)
{
	struct jdict *d = jz_alloc(c, sizeof *d);
	return (jv){ .k = JV_DICT, .d = d };
}

jv jv_func(struct jz_ctx *c, const char *name, jz_builtin fn, jv self)
{
	struct jfunc *f = jz_alloc(c, sizeof *f);
	f->name = name;
	f->fn = fn;
	f->self = self;
	return (jv){ .k = JV_FUNC, .fn = f };
}

void jv_push(struct jz_ctx *c, jv list, jv x)
{
	struct jlist *l = list.l;
	if (l->n == l->cap) {
		jv *nv = jz_alloc(c, 2 * l->cap * sizeof(jv));
		memcpy(nv, l->v, l->n * sizeof(jv));
		l->v = nv;
		l->cap *= 2;
	}
	l->v[l->n++] = x;
}

static size_t str_hash(const char *s, size_t n)
{
	size_t h = 1469598103934665603u; /* FNV-1a */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211u;
	return h;
}

/* Index of the str key s in d, or -1. */
static long long find_str(struct jdict *d, const char *s, size_t n)
{
	if (d->ht) {
		for (size_t h = str_hash(s, n) & (d->hcap - 1);; h = (h + 1) & (d->hcap - 1)) {
			size_t e = d->ht[h];
			if (!e)
				return -1;
			jv k = d->k[e - 1];
			if (k.s->n == n && !memcmp(k.s->p, s, n))
				return (long long)(e - 1);
		}
	}
	for (size_t i = 0; i < d->n; i++)
		if (d->k[i].k == JV_STR && d->k[i].s->n == n && !memcmp(d->k[i].s->p, s, n))
			return (long long)i;
	return -1;
}

static void index_key(struct jdict *d, size_t i)
{
	jv k = d->k[i];
	if (k.k != JV_STR)
		return;
	size_t h = str_hash(k.s->p, k.s->n) & (d->hcap - 1);
	while (d->ht[h])
		h = (h + 1) & (d->hcap - 1);
	d->ht[h] = i + 1;
}

/* Keeps the index at most half full once the dict has more than 16 keys. */
static void reindex(struct jz_ctx *c, struct jdict *d)
{
	if (d->n <= 16 || (d->ht && 2 * d->n <= d->hcap)) {
		if (d->ht)
			index_key(d, d->n - 1);
		return;
	}
	size_t cap = 64;
	while (cap < 4 * d->n)
		cap *= 2;
	d->ht = jz_alloc(c, cap * sizeof *d->ht);
	d->hcap = cap;
	for (size_t i = 0; i < d->n; i++)
		index_key(d, i);
}

jv *jv_dget(struct jdict *d, jv key)
{
	if (key.k == JV_STR) {
		long long i = find_str(d, key.s->p, key.s->n);
		return i < 0 ? NULL : &d->v[i];
	}
	for (size_t i = 0; i < d->n; i++)
		if (jv_eq(d->k[i], key))
			return &d->v[i];
	return NULL;
}

jv *jv_dgets(struct jdict *d, const char *key)
{
	long long i = find_str(d, key, strlen(key));
	return i < 0 ? NULL : &d->v[i];
}

/* Appends a key known to be absent (JSON objects have unique keys: no O(n) lookup each). */
void jv_dappend(struct jz_ctx *c, struct jdict *d, jv key, jv val)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 8;
		jv *nk = jz_alloc(c, cap * sizeof(jv)), *nv = jz_alloc(c, cap * sizeof(jv));
		if (d->n) {
			memcpy(nk, d->k, d->n * sizeof(jv));
			memcpy(nv, d->v, d->n * sizeof(jv));
		}
		d->k = nk;
		d->v = nv;
		d->cap = cap;
	}
	d->k[d->n] = key;
	d->v[d->n++] = val;
	reindex(c, d);
}

void jv_dset(struct jz_ctx *c, struct jdict *d, jv key, jv val)
{
	jv *p = jv_dget(d, key);
	if (p)
		*p = val;
	else
		jv_dappend(c, d, key, val);
}

const char *jv_typename(jv v)
{
	switch (v.k) {
	case JV_UNDEF: return "Undefined";
	case JV_NONE: return "NoneType";
	case JV_BOOL: return "bool";
	case JV_INT: return "int";
	case JV_FLOAT: return "float";
	case JV_STR: return "str";
	case JV_LIST: return v.l->is_gen ? "generator" : v.tuple ? "tuple" : "list";
	case JV_DICT: return "dict";
	case JV_NS: return "Namespace";
	default: return v.fn->macro ? "Macro" : "builtin_function_or_method";
	}
}

/* ---- truth, equality, order ---- */
int jv_truthy(jv v)
{
	switch (v.k) {
	case JV_UNDEF: case JV_NONE: return 0;
	case JV_BOOL: case JV_INT: return v.i != 0;
	case JV_FLOAT: return v.f != 0;
	case JV_STR: return v.s->n > 0;
	case JV_LIST: return v.l->n > 0 || v.l->is_gen;
	case JV_DICT: return v.d->n > 0;
	default: return 1;
	}
}

int jv_is_num(jv v) { return v.k == JV_BOOL || v.k == JV_INT || v.k == JV_FLOAT; }
double jv_num(jv v) { return v.k == JV_FLOAT ? v.f : (double)v.i; }

int jv_eq(jv a, jv b)
{
	if (jv_is_num(a) && jv_is_num(b)) {
		if (a.k != JV_FLOAT && b.k != JV_FLOAT)
			return a.i == b.i;
		return jv_num(a) == jv_num(b);
	}
	if (a.k != b.k)
		return 0;
	switch (a.k) {
	case JV_UNDEF: case JV_NONE: return 1;
	case JV_STR: return a.s->n == b.s->n && !memcmp(a.s->p, b.s->p, a.s->n);
	case JV_LIST:
		if (a.l->is_gen || b.l->is_gen)
			return a.l == b.l;
		if (a.tuple != b.tuple || a.l->is_range != b.l->is_range || a.l->n != b.l->n)
			return 0;
		for (size_t i = 0; i < a.l->n; i++)
			if (!jv_eq(a.l->v[i], b.l->v[i]))
				return 0;
		return 1;
	case JV_DICT:
		if (a.d->n != b.d->n)
			return 0;
		for (size_t i = 0; i < a.d->n; i++) {
			jv *o = jv_dget(b.d, a.d->k[i]);
			if (!o || !jv_eq(a.d->v[i], *o))
				return 0;
		}
		return 1;
	case JV_NS: return a.d == b.d;
	case JV_FUNC: return a.fn == b.fn;
	}
	return 0;
}

int jv_cmp(struct jz_ctx *c, jv a, jv b)
{
	if (jv_is_num(a) && jv_is_num(b)) {
		if (a.k != JV_FLOAT && b.k != JV_FLOAT)
			return (a.i > b.i) - (a.i < b.i);
		double x = jv_num(a), y = jv_num(b);
		return (x > y) - (x < y);
	}
	if (a.k == JV_UNDEF || b.k == JV_UNDEF)
		jz_fail(c, FI_EINVAL, "%s", a.k == JV_UNDEF ? a.why : b.why);
	if (a.k == JV_STR && b.k == JV_STR) {
		size_t n = a.s->n < b.s->n ? a.s->n : b.s->n;
		int r = memcmp(a.s->p, b.s->p, n);
		if (r)
			return r;
		return (a.s->n > b.s->n) - (a.s->n < b.s->n);
	}
	if (a.k == JV_LIST && b.k == JV_LIST && a.tuple == b.tuple) {
		size_t n = a.l->n < b.l->n ? a.l->n : b.l->n;
		for (size_t i = 0; i < n; i++) {
			if (jv_eq(a.l->v[i], b.l->v[i]))
				continue;
			return jv_cmp(c, a.l->v[i], b.l->v[i]);
		}
		return (a.l->n > b.l->n) - (a.l->n < b.l->n);
	}
	jz_fail(c, FI_EINVAL, "'<' not supported between instances of '%s' and '%s'",
		jv_typename(a), jv_typename(b));
}

/* ---- UTF-8 ---- */
int ju_decode(const char *s, size_t n, size_t *pos)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = *pos;
	int c = u[i], len, cp;
	if (c < 0x80) {
		*pos = i + 1;
		return c;
	}
	if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
	else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
	else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
	else { *pos = i + 1; return 0xfffd; }
	if (i + len > n) {
		*pos = i + 1;
		return 0xfffd;
	}
	for (int k = 1; k < len; k++) {
		if ((u[i + k] & 0xc0) != 0x80) {
			*pos = i + 1;
			return 0xfffd;
		}
		cp = (cp << 6) | (u[i + k] & 0x3f);
	}
	*pos = i + len;
	return cp;
}

size_t ju_len(const char *s, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		ju_decode(s, n, &i);
		k++;
	}
	return k;
}

size_t ju_offset(const char *s, size_t n, size_t idx)
{
	size_t i = 0;
	while (idx-- && i < n)
		ju_decode(s, n, &i);
	return i;
}

/* Python's str.isspace() set. */
int ju_isspace(int cp)
{
	return (cp >= 9 && cp <= 13) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
	       cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* ---- buffers ---- */
void jb_put(struct jz_ctx *c, struct jbuf *b, const char *s, size_t n)
{
	if (!n)
		return;
	if (b->n + n > c->max_output)
		jz_fail(c, FI_ERANGE, "output longer than %zu bytes", c->max_output);
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = jz_alloc(c, cap);
		if (b->n)
			memcpy(p, b->p, b->n);
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

void jb_puts(struct jz_ctx *c, struct jbuf *b, const char *s) { jb_put(c, b, s, strlen(s)); }

void jb_printf(struct jz_ctx *c, struct jbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	jb_put(c, b, tmp, n < 0 ? 0 : (size_t)n >= sizeof tmp ? sizeof tmp - 1 : (size_t)n);
}

jv jb_value(struct jz_ctx *c, struct jbuf *b) { return jv_str(c, b->p ? b->p : "", b->n); }

/* ---- JSON input ---- */
jv jv_from_json(struct jz_ctx *c, json_t *j)
{
	jv r;
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		const char *k;
		json_t *x;
		r = jv_dict(c);
		jz_enter(c);
		json_object_foreach(j, k, x)
			jv_dappend(c, r.d, jv_cstr(c, k), jv_from_json(c, x));
		jz_leave(c);
		return r;
	}
	case JSON_ARRAY: {
		size_t i;
		json_t *x;
		r = jv_list(c, json_array_size(j));
		jz_enter(c);
		json_array_foreach(j, i, x)
			jv_push(c, r, jv_from_json(c, x));
		jz_leave(c);
		return r;
	}
	case JSON_STRING: return jv_str(c, json_string_value(j), json_string_length(j));
	case JSON_INTEGER: return jv_int(json_integer_value(j));
	case JSON_REAL: return jv_float(json_real_value(j));
	case JSON_TRUE: return jv_true;
	case JSON_FALSE: return jv_false;
	default: return jv_none;
	}
}

/* ---- helpers of the evaluator's files (eval, ops, filters, methods), here below all of
 * them so that none reaches back up into another for them ---- */

const char *jz_msgf(struct jz_ctx *c, const char *fmt, const char *a, const char *b)
{
	char tmp[512];
	snprintf(tmp, sizeof tmp, fmt, a, b);
	return jz_strndup(c, tmp, strlen(tmp));
}

_Noreturn void jz_fail_undef(struct jz_ctx *c, jv v)
{
	jz_fail(c, FI_EINVAL, "%s", v.why ? v.why : "undefined value");
}

void jz_step(struct jz_ctx *c)
{
	if (++c->steps > c->max_steps)
		jz_fail(c, FI_ERANGE, "more than %lld loop iterations and calls", c->max_steps);
}

jv jz_kwarg(struct jargs *a, int pos, const char *name)
{
	if (pos >= 0 && pos < a->n)
		return a->pos[pos];
	for (int i = 0; i < a->nkw; i++)
		if (!strcmp(a->kwn[i], name))
			return a->kw[i];
	return jv_undef(NULL);
}

jv jz_iterate(struct jz_ctx *c, jv v)
{
	jv r;
	switch (v.k) {
	case JV_UNDEF: return jv_list(c, 0);
	case JV_LIST:
		if (v.l->is_gen) { /* a generator runs once */
			r = jv_list(c, v.l->n);
			for (size_t i = 0; i < v.l->n; i++)
				jv_push(c, r, v.l->v[i]);
			v.l->n = 0;
			return r;
		}
		return v;
	case JV_DICT:
		r = jv_list(c, v.d->n);
		for (size_t i = 0; i < v.d->n; i++)
			jv_push(c, r, v.d->k[i]);
		return r;
	case JV_STR:
		r = jv_list(c, v.s->n);
		for (size_t i = 0; i < v.s->n;) {
			size_t st = i;
			ju_decode(v.s->p, v.s->n, &i);
			jv_push(c, r, jv_str(c, v.s->p + st, i - st));
		}
		return r;
	default:
		jz_fail(c, FI_EINVAL, "'%s' object is not iterable", jv_typename(v));
	}
}

int jz_contains(struct jz_ctx *c, jv hay, jv needle)
{
	switch (hay.k) {
	case JV_UNDEF: return 0;
	case JV_STR:
		if (needle.k == JV_UNDEF)
			jz_fail_undef(c, needle);
		if (needle.k != JV_STR)
			jz_fail(c, FI_EINVAL, "'in <string>' requires string as left operand, not %s",
				jv_typename(needle));
		if (!needle.s->n)
			return 1;
		return memmem(hay.s->p, hay.s->n, needle.s->p, needle.s->n) != NULL;
	case JV_LIST:
		for (size_t i = 0; i < hay.l->n; i++)
			if (jv_eq(hay.l->v[i], needle))
				return 1;
		return 0;
	case JV_DICT: return jv_dget(hay.d, needle) != NULL;
	default:
		jz_fail(c, FI_EINVAL, "argument of type '%s' is not iterable", jv_typename(hay));
	}
}
