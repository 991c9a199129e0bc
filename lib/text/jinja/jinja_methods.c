/* jinja_methods: Python methods of str, list and dict that templates call
 * (content.strip(), s.split('</think>'), d.items(), m.get('channel', '')), and the globals
 * transformers provides (range, namespace, dict, raise_exception, strftime_now). Methods that
 * would mutate a list or dict are refused, as ImmutableSandboxedEnvironment refuses them. */
#define _GNU_SOURCE
#include "jinja.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

static jv str_arg(struct jz_ctx *c, struct jargs *a, int pos, const char *name, const char *fn)
{
	jv v = jz_kwarg(a, pos, name);
	if (v.k != JV_STR && !(v.k == JV_UNDEF && !v.why))
		jz_fail(c, FI_EINVAL, "%s() argument must be str, not %s", fn, jv_typename(v));
	return v;
}

static int in_set(jv chars, int cp)
{
	for (size_t i = 0; i < chars.s->n;)
		if (ju_decode(chars.s->p, chars.s->n, &i) == cp)
			return 1;
	return 0;
}

/* str.strip family; chars NONE/absent: whitespace. */
jv js_strip(struct jz_ctx *c, jv s, jv chars, int left, int right)
{
	const char *p = s.s->p;
	size_t a = 0, b = s.s->n;
	int ws = chars.k != JV_STR;
	while (left && a < b) {
		size_t k = a;
		int cp = ju_decode(p, b, &k);
		if (ws ? !ju_isspace(cp) : !in_set(chars, cp))
			break;
		a = k;
	}
	while (right && b > a) {
		size_t st = b - 1;
		while (st > a && ((unsigned char)p[st] & 0xc0) == 0x80)
			st--;
		size_t k = st;
		int cp = ju_decode(p, b, &k);
		if (ws ? !ju_isspace(cp) : !in_set(chars, cp))
			break;
		b = st;
	}
	return jv_str(c, p + a, b - a);
}

static int cased(int cp)
{
	int cat = utf8proc_category(cp);
	return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

/* mode: 'u' upper, 'l' lower, 'c' capitalize, 't' str.title, 'j' jinja's title filter. */
jv js_case(struct jz_ctx *c, jv s, int mode)
{
	struct jbuf o = { 0 };
	int prev_cased = 0, first = 1, word_start = 1;
	for (size_t i = 0; i < s.s->n;) {
		int cp = ju_decode(s.s->p, s.s->n, &i), r = cp;
		utf8proc_uint8_t enc[8];
		switch (mode) {
		case 'u': r = utf8proc_toupper(cp); break;
		case 'l': r = utf8proc_tolower(cp); break;
		case 'c': r = first ? utf8proc_totitle(cp) : utf8proc_tolower(cp); break;
		case 't':
			if (cased(cp)) {
				r = prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp);
				prev_cased = 1;
			} else {
				prev_cased = 0;
			}
			break;
		default: {
			/* jinja's do_title: words begin after runs of whitespace or -({[< */
			int sep = ju_isspace(cp) || (cp < 128 && strchr("-({[<", cp));
			if (sep)
				word_start = 1;
			else if (word_start) {
				r = utf8proc_toupper(cp);
				word_start = 0;
			} else
				r = utf8proc_tolower(cp);
		}
		}
		first = 0;
		jb_put(c, &o, (char *)enc, (size_t)utf8proc_encode_char(r, enc));
	}
	return jb_value(c, &o);
}

jv js_replace(struct jz_ctx *c, jv s, jv old, jv new, long long count)
{
	struct jbuf o = { 0 };
	const char *p = s.s->p, *end = p + s.s->n;
	if (!old.s->n) {
		/* Python inserts new before every character and at the end */
		size_t i = 0;
		while (count != 0) {
			jb_put(c, &o, new.s->p, new.s->n);
			count--;
			if (i >= s.s->n)
				break;
			size_t st = i;
			ju_decode(p, s.s->n, &i);
			jb_put(c, &o, p + st, i - st);
		}
		if (i < s.s->n)
			jb_put(c, &o, p + i, s.s->n - i);
		return jb_value(c, &o);
	}
	while (count != 0) {
		const char *m = memmem(p, (size_t)(end - p), old.s->p, old.s->n);
		if (!m)
			break;
		jb_put(c, &o, p, (size_t)(m - p));
		jb_put(c, &o, new.s->p, new.s->n);
		p = m + old.s->n;
		count--;
	}
	jb_put(c, &o, p, (size_t)(end - p));
	return jb_value(c, &o);
}

/* The character that ends at byte e; *start gets where it begins. */
static int prev_char(const char *p, size_t e, size_t *start)
{
	size_t st = e - 1;
	while (st > 0 && ((unsigned char)p[st] & 0xc0) == 0x80 && e - st < 4)
		st--;
	size_t k = st;
	int cp = ju_decode(p, e, &k);
	if (k != e) { /* not a whole character: treat the last byte alone */
		st = e - 1;
		cp = 0xfffd;
	}
	*start = st;
	return cp;
}

static jv split(struct jz_ctx *c, jv s, jv sep, long long maxsplit, int from_right)
{
	jv r = jv_list(c, 0);
	const char *p = s.s->p;
	size_t n = s.s->n;
	if (sep.k == JV_STR && !sep.s->n)
		jz_fail(c, FI_EINVAL, "empty separator");
	if (sep.k != JV_STR) {
		/* runs of whitespace, no empty strings; Python's split_whitespace */
		jv rev = jv_list(c, 0);
		if (!from_right) {
			size_t i = 0, q;
			for (; maxsplit != 0; maxsplit--) {
				while (i < n && (q = i, ju_isspace(ju_decode(p, n, &q))))
					i = q;
				if (i >= n)
					break;
				size_t j = i;
				while (i < n && (q = i, !ju_isspace(ju_decode(p, n, &q))))
					i = q;
				jv_push(c, r, jv_str(c, p + j, i - j));
			}
			while (i < n && (q = i, ju_isspace(ju_decode(p, n, &q))))
				i = q;
			if (i < n)
				jv_push(c, r, jv_str(c, p + i, n - i));
			return r;
		}
		size_t e = n, b2; /* the characters before e remain */
		for (; maxsplit != 0; maxsplit--) {
			while (e > 0 && ju_isspace(prev_char(p, e, &b2)))
				e = b2;
			if (!e)
				break;
			size_t k = e;
			while (k > 0 && !ju_isspace(prev_char(p, k, &b2)))
				k = b2;
			jv_push(c, rev, jv_str(c, p + k, e - k));
			e = k;
		}
		while (e > 0 && ju_isspace(prev_char(p, e, &b2)))
			e = b2;
		if (e > 0)
			jv_push(c, rev, jv_str(c, p, e));
		for (size_t i = rev.l->n; i-- > 0;)
			jv_push(c, r, rev.l->v[i]);
		return r;
	}
	if (!from_right) {
		const char *q = p, *end = p + n;
		for (;;) {
			const char *m = maxsplit != 0 ? memmem(q, (size_t)(end - q), sep.s->p, sep.s->n) : NULL;
			if (!m) {
				jv_push(c, r, jv_str(c, q, (size_t)(end - q)));
				return r;
			}
			jv_push(c, r, jv_str(c, q, (size_t)(m - q)));
			q = m + sep.s->n;
			maxsplit--;
		}
	}
	/* rsplit with a separator: scan from the end */
	jv rev = jv_list(c, 0);
	size_t end = n;
	long long k = (long long)n - (long long)sep.s->n;
	while (k >= 0 && maxsplit != 0) {
		if (!memcmp(p + k, sep.s->p, sep.s->n)) {
			jv_push(c, rev, jv_str(c, p + k + sep.s->n, end - (size_t)k - sep.s->n));
			end = (size_t)k;
			k -= (long long)sep.s->n;
			maxsplit--;
		} else {
			k--;
		}
	}
	jv_push(c, rev, jv_str(c, p, end));
	for (size_t i = rev.l->n; i-- > 0;)
		jv_push(c, r, rev.l->v[i]);
	return r;
}

/* ---- str methods ---- */
static jv m_strip(struct jz_ctx *c, jv self, struct jargs *a) { return js_strip(c, self, str_arg(c, a, 0, "chars", "strip"), 1, 1); }
static jv m_lstrip(struct jz_ctx *c, jv self, struct jargs *a) { return js_strip(c, self, str_arg(c, a, 0, "chars", "lstrip"), 1, 0); }
static jv m_rstrip(struct jz_ctx *c, jv self, struct jargs *a) { return js_strip(c, self, str_arg(c, a, 0, "chars", "rstrip"), 0, 1); }
static jv m_upper(struct jz_ctx *c, jv self, struct jargs *a) { return js_case(c, self, 'u'); }
static jv m_lower(struct jz_ctx *c, jv self, struct jargs *a) { return js_case(c, self, 'l'); }
static jv m_title(struct jz_ctx *c, jv self, struct jargs *a) { return js_case(c, self, 't'); }
static jv m_capitalize(struct jz_ctx *c, jv self, struct jargs *a) { return js_case(c, self, 'c'); }

static long long int_arg(struct jz_ctx *c, struct jargs *a, int pos, const char *name, long long def)
{
	jv v = jz_kwarg(a, pos, name);
	if (v.k == JV_UNDEF && !v.why)
		return def;
	if (v.k == JV_NONE)
		return def;
	if (v.k != JV_INT && v.k != JV_BOOL)
		jz_fail(c, FI_EINVAL, "'%s' must be an integer, not %s", name, jv_typename(v));
	return v.i;
}

static jv m_split(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv sep = jz_kwarg(a, 0, "sep");
	return split(c, self, sep.k == JV_STR ? sep : jv_none, int_arg(c, a, 1, "maxsplit", -1), 0);
}
static jv m_rsplit(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv sep = jz_kwarg(a, 0, "sep");
	return split(c, self, sep.k == JV_STR ? sep : jv_none, int_arg(c, a, 1, "maxsplit", -1), 1);
}

static jv m_replace(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv o = str_arg(c, a, 0, "old", "replace"), n = str_arg(c, a, 1, "new", "replace");
	if (o.k != JV_STR || n.k != JV_STR)
		jz_fail(c, FI_EINVAL, "replace() takes at least 2 arguments");
	return js_replace(c, self, o, n, int_arg(c, a, 2, "count", -1));
}

static int affix(jv s, jv x, int end)
{
	if (x.s->n > s.s->n)
		return 0;
	return !memcmp(s.s->p + (end ? s.s->n - x.s->n : 0), x.s->p, x.s->n);
}

static jv starts_ends(struct jz_ctx *c, jv self, struct jargs *a, int end)
{
	jv x = jz_kwarg(a, 0, "prefix");
	if (x.k == JV_LIST && x.tuple) {
		for (size_t i = 0; i < x.l->n; i++) {
			if (x.l->v[i].k != JV_STR)
				jz_fail(c, FI_EINVAL, "tuple for startswith/endswith must only contain str");
			if (affix(self, x.l->v[i], end))
				return jv_true;
		}
		return jv_false;
	}
	if (x.k != JV_STR)
		jz_fail(c, FI_EINVAL, "startswith/endswith first arg must be str or a tuple of str, not %s",
			jv_typename(x));
	if (a->n > 1)
		jz_fail(c, FI_EUNSUPPORTED, "startswith/endswith with start/end is not supported");
	return jv_bool(affix(self, x, end));
}
static jv m_startswith(struct jz_ctx *c, jv self, struct jargs *a) { return starts_ends(c, self, a, 0); }
static jv m_endswith(struct jz_ctx *c, jv self, struct jargs *a) { return starts_ends(c, self, a, 1); }

static jv find(struct jz_ctx *c, jv self, struct jargs *a, int right, int raise)
{
	jv x = str_arg(c, a, 0, "sub", "find");
	if (x.k != JV_STR)
		jz_fail(c, FI_EINVAL, "find() takes at least 1 argument");
	const char *p = self.s->p, *m = NULL;
	if (!right) {
		m = memmem(p, self.s->n, x.s->p, x.s->n);
	} else {
		for (long long k = (long long)self.s->n - (long long)x.s->n; k >= 0; k--)
			if (!memcmp(p + k, x.s->p, x.s->n)) {
				m = p + k;
				break;
			}
	}
	if (!m) {
		if (raise)
			jz_fail(c, FI_EINVAL, "substring not found");
		return jv_int(-1);
	}
	return jv_int((long long)ju_len(p, (size_t)(m - p)));
}
static jv m_find(struct jz_ctx *c, jv self, struct jargs *a) { return find(c, self, a, 0, 0); }
static jv m_rfind(struct jz_ctx *c, jv self, struct jargs *a) { return find(c, self, a, 1, 0); }
static jv m_sindex(struct jz_ctx *c, jv self, struct jargs *a) { return find(c, self, a, 0, 1); }

static jv m_scount(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv x = str_arg(c, a, 0, "sub", "count");
	if (x.k != JV_STR)
		jz_fail(c, FI_EINVAL, "count() takes at least 1 argument");
	if (!x.s->n)
		return jv_int((long long)ju_len(self.s->p, self.s->n) + 1);
	long long k = 0;
	const char *p = self.s->p, *end = p + self.s->n, *m;
	while ((m = memmem(p, (size_t)(end - p), x.s->p, x.s->n))) {
		k++;
		p = m + x.s->n;
	}
	return jv_int(k);
}

static jv m_join(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv items = jz_iterate(c, jz_kwarg(a, 0, "iterable"));
	struct jbuf o = { 0 };
	for (size_t i = 0; i < items.l->n; i++) {
		if (items.l->v[i].k != JV_STR)
			jz_fail(c, FI_EINVAL, "sequence item %zu: expected str instance, %s found", i,
				jv_typename(items.l->v[i]));
		if (i)
			jb_put(c, &o, self.s->p, self.s->n);
		jb_put(c, &o, items.l->v[i].s->p, items.l->v[i].s->n);
	}
	return jb_value(c, &o);
}

static jv str_class(jv self, int what)
{
	size_t n = 0;
	int any_cased = 0;
	for (size_t i = 0; i < self.s->n;) {
		int cp = ju_decode(self.s->p, self.s->n, &i), cat = utf8proc_category(cp);
		n++;
		int letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
		int number = cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO;
		int ok = 1;
		switch (what) {
		case 'd': ok = cat == UTF8PROC_CATEGORY_ND; break;
		case 'a': ok = letter; break;
		case 'n': ok = letter || number; break;
		case 's': ok = ju_isspace(cp); break;
		case 'l':
			ok = cat != UTF8PROC_CATEGORY_LU && cat != UTF8PROC_CATEGORY_LT;
			any_cased |= cat == UTF8PROC_CATEGORY_LL;
			break;
		case 'u':
			ok = cat != UTF8PROC_CATEGORY_LL && cat != UTF8PROC_CATEGORY_LT;
			any_cased |= cat == UTF8PROC_CATEGORY_LU;
			break;
		}
		if (!ok)
			return jv_false;
	}
	if (what == 'l' || what == 'u')
		return jv_bool(any_cased);
	return jv_bool(n > 0);
}
static jv m_isdigit(struct jz_ctx *c, jv self, struct jargs *a) { return str_class(self, 'd'); }
static jv m_isalpha(struct jz_ctx *c, jv self, struct jargs *a) { return str_class(self, 'a'); }
static jv m_isalnum(struct jz_ctx *c, jv self, struct jargs *a) { return str_class(self, 'n'); }
static jv m_isspace(struct jz_ctx *c, jv self, struct jargs *a) { return str_class(self, 's'); }
static jv m_islower(struct jz_ctx *c, jv self, struct jargs *a) { return str_class(self, 'l'); }
static jv m_isupper(struct jz_ctx *c, jv self, struct jargs *a) { return str_class(self, 'u'); }

static jv m_removeprefix(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv x = str_arg(c, a, 0, "prefix", "removeprefix");
	if (x.k == JV_STR && affix(self, x, 0))
		return jv_str(c, self.s->p + x.s->n, self.s->n - x.s->n);
	return self;
}
static jv m_removesuffix(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv x = str_arg(c, a, 0, "suffix", "removesuffix");
	if (x.k == JV_STR && x.s->n && affix(self, x, 1))
		return jv_str(c, self.s->p, self.s->n - x.s->n);
	return self;
}

/* ---- list and dict methods ---- */
static jv m_lindex(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv x = jz_kwarg(a, 0, "value");
	for (size_t i = 0; i < self.l->n; i++)
		if (jv_eq(self.l->v[i], x))
			return jv_int((long long)i);
	jz_fail(c, FI_EINVAL, "value is not in list");
}
static jv m_lcount(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv x = jz_kwarg(a, 0, "value");
	long long k = 0;
	for (size_t i = 0; i < self.l->n; i++)
		k += jv_eq(self.l->v[i], x);
	return jv_int(k);
}
static jv m_copy(struct jz_ctx *c, jv self, struct jargs *a)
{
	if (self.k == JV_LIST) {
		jv r = jv_list(c, self.l->n);
		for (size_t i = 0; i < self.l->n; i++)
			jv_push(c, r, self.l->v[i]);
		r.tuple = self.tuple;
		return r;
	}
	jv r = jv_dict(c);
	for (size_t i = 0; i < self.d->n; i++)
		jv_dset(c, r.d, self.d->k[i], self.d->v[i]);
	return r;
}
static jv m_items(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv r = jv_list(c, self.d->n);
	for (size_t i = 0; i < self.d->n; i++) {
		jv t = jv_list(c, 2);
		t.tuple = 1;
		jv_push(c, t, self.d->k[i]);
		jv_push(c, t, self.d->v[i]);
		jv_push(c, r, t);
	}
	return r;
}
static jv m_keys(struct jz_ctx *c, jv self, struct jargs *a) { return jz_iterate(c, self); }
static jv m_values(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv r = jv_list(c, self.d->n);
	for (size_t i = 0; i < self.d->n; i++)
		jv_push(c, r, self.d->v[i]);
	return r;
}
static jv m_get(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv k = jz_kwarg(a, 0, "key"), d = jz_kwarg(a, 1, "default");
	jv *v = jv_dget(self.d, k);
	if (v)
		return *v;
	return d.k == JV_UNDEF && !d.why ? jv_none : d;
}

struct method {
	int kind;
	const char *name;
	jz_builtin fn;
};

static const struct method methods[] = {
	{ JV_STR, "strip", m_strip }, { JV_STR, "lstrip", m_lstrip }, { JV_STR, "rstrip", m_rstrip },
	{ JV_STR, "split", m_split }, { JV_STR, "rsplit", m_rsplit }, { JV_STR, "upper", m_upper },
	{ JV_STR, "lower", m_lower }, { JV_STR, "title", m_title }, { JV_STR, "capitalize", m_capitalize },
	{ JV_STR, "replace", m_replace }, { JV_STR, "startswith", m_startswith },
	{ JV_STR, "endswith", m_endswith }, { JV_STR, "find", m_find }, { JV_STR, "rfind", m_rfind },
	{ JV_STR, "index", m_sindex }, { JV_STR, "count", m_scount }, { JV_STR, "join", m_join },
	{ JV_STR, "isdigit", m_isdigit }, { JV_STR, "isalpha", m_isalpha },
	{ JV_STR, "isalnum", m_isalnum }, { JV_STR, "isspace", m_isspace },
	{ JV_STR, "islower", m_islower }, { JV_STR, "isupper", m_isupper },
	{ JV_STR, "removeprefix", m_removeprefix }, { JV_STR, "removesuffix", m_removesuffix },
	{ JV_LIST, "index", m_lindex }, { JV_LIST, "count", m_lcount }, { JV_LIST, "copy", m_copy },
	{ JV_DICT, "items", m_items }, { JV_DICT, "keys", m_keys }, { JV_DICT, "values", m_values },
	{ JV_DICT, "get", m_get }, { JV_DICT, "copy", m_copy },
};

static const char *const unsafe_list[] = { "append", "extend", "insert", "pop", "remove",
					   "reverse", "sort", "clear", NULL };
static const char *const unsafe_dict[] = { "pop", "popitem", "setdefault", "update", "clear", NULL };

jv jz_method(struct jz_ctx *c, jv obj, const char *name)
{
	for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
		if (methods[i].kind == obj.k && !strcmp(methods[i].name, name) &&
		    !(obj.tuple && methods[i].fn == m_copy))
			return jv_func(c, methods[i].name, methods[i].fn, obj);
	const char *const *u = obj.k == JV_LIST && !obj.tuple ? unsafe_list :
			       obj.k == JV_DICT ? unsafe_dict : NULL;
	for (; u && *u; u++)
		if (!strcmp(*u, name)) {
			char tmp[128];
			snprintf(tmp, sizeof tmp, "access to attribute '%s' of '%s' object is unsafe", name,
				 jv_typename(obj));
			return jv_undef(jz_strndup(c, tmp, strlen(tmp)));
		}
	return jv_undef(NULL);
}

/* ---- globals ---- */
static jv g_range(struct jz_ctx *c, jv self, struct jargs *a)
{
	long long v[3] = { 0, 0, 1 };
	if (a->n < 1 || a->n > 3 || a->nkw)
		jz_fail(c, FI_EINVAL, "range expected 1 to 3 integer arguments");
	for (int i = 0; i < a->n; i++) {
		if (a->pos[i].k != JV_INT && a->pos[i].k != JV_BOOL)
			jz_fail(c, FI_EINVAL, "'%s' object cannot be interpreted as an integer",
				jv_typename(a->pos[i]));
		v[a->n == 1 ? 1 : i] = a->pos[i].i;
	}
	if (!v[2])
		jz_fail(c, FI_EINVAL, "range() arg 3 must not be zero");
	double n = v[2] > 0 ? ((double)v[1] - v[0]) / v[2] : ((double)v[0] - v[1]) / -v[2];
	if (n > 100000)
		jz_fail(c, FI_ERANGE, "range too big: the sandbox blocks ranges larger than 100000");
	jv r = jv_list(c, 0);
	for (long long i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2])
		jv_push(c, r, jv_int(i));
	r.l->is_range = 1;
	memcpy(r.l->range, v, sizeof v);
	return r;
}

static jv g_dict(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv r = jv_dict(c);
	if (a->n > 1)
		jz_fail(c, FI_EINVAL, "dict expected at most 1 argument");
	if (a->n) {
		jv src = a->pos[0];
		if (src.k == JV_DICT || src.k == JV_NS) {
			for (size_t i = 0; i < src.d->n; i++)
				jv_dset(c, r.d, src.d->k[i], src.d->v[i]);
		} else {
			jv items = jz_iterate(c, src);
			for (size_t i = 0; i < items.l->n; i++) {
				jv p = items.l->v[i];
				if (p.k != JV_LIST || p.l->n != 2)
					jz_fail(c, FI_EINVAL, "dictionary update sequence element has wrong length");
				jv_dset(c, r.d, p.l->v[0], p.l->v[1]);
			}
		}
	}
	for (int i = 0; i < a->nkw; i++)
		jv_dset(c, r.d, jv_cstr(c, a->kwn[i]), a->kw[i]);
	return r;
}

static jv g_namespace(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv r = g_dict(c, self, a);
	for (size_t i = 0; i < r.d->n; i++)
		if (r.d->k[i].k == JV_STR && r.d->k[i].s->p[0] == '_')
			jz_fail(c, FI_EINVAL, "chat templates cannot store underscore-prefixed attributes on a namespace, but got '%s'",
				r.d->k[i].s->p);
	r.k = JV_NS;
	return r;
}

static jv g_raise(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv m = jz_kwarg(a, 0, "message");
	jv s = jv_to_str(c, m);
	jz_fail(c, FI_EINVAL, "%s", s.s->p);
}

static jv g_strftime(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv f = jz_kwarg(a, 0, "format");
	char out[512];
	struct tm tm;
	if (f.k != JV_STR)
		jz_fail(c, FI_EINVAL, "strftime() argument must be str, not %s", jv_typename(f));
	time_t t = c->now >= 0 ? (time_t)c->now : time(NULL);
	if (c->now >= 0)
		gmtime_r(&t, &tm);
	else
		localtime_r(&t, &tm);
	size_t n = strftime(out, sizeof out, f.s->p, &tm);
	if (!n && f.s->n)
		jz_fail(c, FI_EINVAL, "strftime format too long or empty result");
	return jv_str(c, out, n);
}

void jz_install_globals(struct jz_ctx *c, struct jdict *g)
{
	jv_dset(c, g, jv_cstr(c, "range"), jv_func(c, "range", g_range, jv_none));
	jv_dset(c, g, jv_cstr(c, "dict"), jv_func(c, "dict", g_dict, jv_none));
	jv_dset(c, g, jv_cstr(c, "namespace"), jv_func(c, "namespace", g_namespace, jv_none));
	jv_dset(c, g, jv_cstr(c, "raise_exception"), jv_func(c, "raise_exception", g_raise, jv_none));
	jv_dset(c, g, jv_cstr(c, "strftime_now"), jv_func(c, "strftime_now", g_strftime, jv_none));
}
