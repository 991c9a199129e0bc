/* jinja_filters: jinja2's builtin filters and tests, with transformers' tojson (json.dumps with
 * ensure_ascii=False and optional indent, separators, sort_keys). Filters jinja2 has but chat
 * templates do not use are known by name (so a template that merely mentions one parses, as in
 * jinja2) and fail when run. */
#include "jinja.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(name) static jv name(struct jz_ctx *c, jv v, struct jargs *a)
#define ABSENT(x) ((x).k == JV_UNDEF && !(x).why)

static jv sval(struct jz_ctx *c, jv v) { return jv_to_str(c, v); }

static long long len_of(struct jz_ctx *c, jv v)
{
	switch (v.k) {
	case JV_UNDEF: return 0;
	case JV_STR: return (long long)ju_len(v.s->p, v.s->n);
	case JV_LIST:
		if (v.l->is_gen)
			jz_fail(c, FI_EINVAL, "object of type 'generator' has no len()");
		return (long long)v.l->n;
	case JV_DICT: return (long long)v.d->n;
	default: jz_fail(c, FI_EINVAL, "object of type '%s' has no len()", jv_typename(v));
	}
}

/* jinja's make_attrgetter: "a.b.0" looked up with getitem, part by part; an undefined part
 * becomes def when one is given. */
static jv attr_path_def(struct jz_ctx *c, jv obj, jv path, jv def)
{
	int has_def = !ABSENT(def) && def.k != JV_NONE;
	if (path.k == JV_INT) {
		obj = jz_getitem(c, obj, path);
		return has_def && obj.k == JV_UNDEF ? def : obj;
	}
	jv s = sval(c, path);
	const char *p = s.s->p;
	while (1) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		jv key = jv_str(c, p, n);
		int digits = n > 0;
		for (size_t i = 0; i < n; i++)
			digits &= p[i] >= '0' && p[i] <= '9';
		if (digits && n < 18)
			key = jv_int(atoll(key.s->p));
		obj = jz_getitem(c, obj, key);
		if (has_def && obj.k == JV_UNDEF)
			obj = def;
		if (!dot)
			return obj;
		p = dot + 1;
	}
}

static jv attr_path(struct jz_ctx *c, jv obj, jv path) { return attr_path_def(c, obj, path, jv_undef(NULL)); }

/* ---- sorting (a merge sort: the comparison may fail and unwind) ---- */
static void msort(struct jz_ctx *c, jv *k, jv *v, size_t n, jv *tk, jv *tv, int rev)
{
	if (n < 2)
		return;
	size_t h = n / 2, i = 0, j = h, o = 0;
	msort(c, k, v, h, tk, tv, rev);
	msort(c, k + h, v + h, n - h, tk, tv, rev);
	while (i < h && j < n) {
		int r = jv_cmp(c, k[j], k[i]);
		if (rev ? r > 0 : r < 0) {
			tk[o] = k[j];
			tv[o++] = v[j++];
		} else {
			tk[o] = k[i];
			tv[o++] = v[i++];
		}
	}
	while (i < h) {
		tk[o] = k[i];
		tv[o++] = v[i++];
	}
	while (j < n) {
		tk[o] = k[j];
		tv[o++] = v[j++];
	}
	memcpy(k, tk, n * sizeof *k);
	memcpy(v, tv, n * sizeof *v);
}

static jv sort_key(struct jz_ctx *c, jv x, jv attr, int cs)
{
	if (!ABSENT(attr) && attr.k != JV_NONE)
		x = attr_path(c, x, attr);
	if (!cs && x.k == JV_STR)
		x = js_case(c, x, 'l');
	return x;
}

static jv sorted(struct jz_ctx *c, jv items, jv attr, int cs, int rev, jv *keys_out)
{
	size_t n = items.l->n;
	jv *k = jz_alloc(c, (n + 1) * sizeof(jv)), *v = jz_alloc(c, (n + 1) * sizeof(jv));
	for (size_t i = 0; i < n; i++) {
		k[i] = keys_out ? keys_out[i] : sort_key(c, items.l->v[i], attr, cs);
		v[i] = items.l->v[i];
	}
	msort(c, k, v, n, jz_alloc(c, (n + 1) * sizeof(jv)), jz_alloc(c, (n + 1) * sizeof(jv)), rev);
	jv r = jv_list(c, n);
	for (size_t i = 0; i < n; i++)
		jv_push(c, r, v[i]);
	return r;
}

/* ---- filters ---- */
F(f_abs)
{
	if (v.k == JV_FLOAT) return jv_float(fabs(v.f));
	if (v.k == JV_INT || v.k == JV_BOOL) {
		if (v.i == LLONG_MIN) jz_fail(c, FI_ERANGE, "integer overflow in abs");
		return jv_int(v.i < 0 ? -v.i : v.i);
	}
	jz_fail(c, FI_EINVAL, "bad operand type for abs(): '%s'", jv_typename(v));
}
F(f_attr)
{
	/* Python getattr: a dict's keys are not attributes */
	jv n = sval(c, jz_kwarg(a, 0, "name"));
	if (v.k == JV_DICT) {
		jv m = jz_method(c, v, n.s->p);
		return m.k == JV_UNDEF && !m.why ? jv_undef("no such attribute") : m;
	}
	return jz_getattr(c, v, n.s->p);
}
F(f_center)
{
	jv s = sval(c, v), w = jz_kwarg(a, 0, "width");
	long long width = ABSENT(w) ? 80 : w.k == JV_INT ? w.i : 0;
	long long len = (long long)ju_len(s.s->p, s.s->n), pad = width - len;
	if (pad <= 0)
		return s;
	long long left = pad / 2 + (pad & width & 1);
	struct jbuf o = { 0 };
	for (long long i = 0; i < pad && i < 100000; i++) {
		if (i == left)
			jb_put(c, &o, s.s->p, s.s->n);
		jb_puts(c, &o, " ");
	}
	if (left >= pad)
		jb_put(c, &o, s.s->p, s.s->n);
	return jb_value(c, &o);
}
F(f_capitalize) { return js_case(c, sval(c, v), 'c'); }
F(f_length) { return jv_int(len_of(c, v)); }
F(f_default)
{
	jv d = jz_kwarg(a, 0, "default_value"), b = jz_kwarg(a, 1, "boolean");
	if (ABSENT(d))
		d = jv_str(c, "", 0);
	if (v.k == JV_UNDEF || (jv_truthy(b) && !jv_truthy(v)))
		return d;
	return v;
}
F(f_dictsort)
{
	jv cs = jz_kwarg(a, 0, "case_sensitive"), by = jz_kwarg(a, 1, "by"), rev = jz_kwarg(a, 2, "reverse");
	if (v.k != JV_DICT)
		jz_fail(c, FI_EINVAL, "dictsort expects a mapping");
	int pos = 0;
	if (by.k == JV_STR && !strcmp(by.s->p, "value"))
		pos = 1;
	else if (!ABSENT(by) && !(by.k == JV_STR && !strcmp(by.s->p, "key")))
		jz_fail(c, FI_EINVAL, "you can only sort by either \"key\" or \"value\"");
	jv items = jv_list(c, v.d->n);
	jv *keys = jz_alloc(c, (v.d->n + 1) * sizeof(jv));
	for (size_t i = 0; i < v.d->n; i++) {
		jv t = jv_list(c, 2);
		t.tuple = 1;
		jv_push(c, t, v.d->k[i]);
		jv_push(c, t, v.d->v[i]);
		jv_push(c, items, t);
		keys[i] = sort_key(c, pos ? v.d->v[i] : v.d->k[i], jv_undef(NULL), jv_truthy(cs));
	}
	return sorted(c, items, jv_undef(NULL), 1, jv_truthy(rev), keys);
}
F(f_escape)
{
	jv s = sval(c, v);
	struct jbuf o = { 0 };
	for (size_t i = 0; i < s.s->n; i++) {
		switch (s.s->p[i]) {
		case '&': jb_puts(c, &o, "&amp;"); break;
		case '<': jb_puts(c, &o, "&lt;"); break;
		case '>': jb_puts(c, &o, "&gt;"); break;
		case '"': jb_puts(c, &o, "&#34;"); break;
		case '\'': jb_puts(c, &o, "&#39;"); break;
		default: jb_put(c, &o, s.s->p + i, 1);
		}
	}
	return jb_value(c, &o);
}
F(f_first)
{
	jv l = jz_iterate(c, v);
	return l.l->n ? l.l->v[0] : jv_undef("no first item, sequence was empty");
}
F(f_last)
{
	if (v.k == JV_LIST && v.l->is_gen)
		jz_fail(c, FI_EINVAL, "'generator' object is not reversible");
	jv l = jz_iterate(c, v);
	return l.l->n ? l.l->v[l.l->n - 1] : jv_undef("no last item, sequence was empty");
}
static int parse_num(jv s, double *d, long long *i, int want_int)
{
	char *end;
	jv t = s;
	const char *p = t.s->p;
	while (*p == ' ' || (*p >= 9 && *p <= 13))
		p++;
	if (want_int) {
		*i = strtoll(p, &end, 10);
	} else {
		*d = strtod(p, &end);
	}
	if (end == p || strpbrk(p, "xXpP"))
		return 0;
	while (*end == ' ' || (*end >= 9 && *end <= 13))
		end++;
	return *end == 0;
}
F(f_int)
{
	jv d = jz_kwarg(a, 0, "default");
	long long i;
	double f;
	if (ABSENT(d))
		d = jv_int(0);
	switch (v.k) {
	case JV_INT: case JV_BOOL: return jv_int(v.i);
	case JV_FLOAT:
		if (!isfinite(v.f) || fabs(v.f) > 9.2e18) return d;
		return jv_int((long long)v.f);
	case JV_STR:
		if (parse_num(v, &f, &i, 1)) return jv_int(i);
		if (parse_num(v, &f, &i, 0) && isfinite(f) && fabs(f) < 9.2e18) return jv_int((long long)f);
		return d;
	case JV_UNDEF: jz_fail(c, FI_EINVAL, "%s", v.why ? v.why : "undefined value");
	default: return d;
	}
}
F(f_float)
{
	jv d = jz_kwarg(a, 0, "default");
	long long i;
	double f;
	if (ABSENT(d))
		d = jv_float(0);
	switch (v.k) {
	case JV_INT: case JV_BOOL: return jv_float((double)v.i);
	case JV_FLOAT: return v;
	case JV_STR: return parse_num(v, &f, &i, 0) ? jv_float(f) : d;
	case JV_UNDEF: jz_fail(c, FI_EINVAL, "%s", v.why ? v.why : "undefined value");
	default: return d;
	}
}
F(f_items)
{
	if (v.k == JV_UNDEF) {
		jv r = jv_list(c, 0);
		r.l->is_gen = 1;
		return r;
	}
	if (v.k != JV_DICT)
		jz_fail(c, FI_EINVAL, "can only get item pairs from a mapping");
	jv r = jv_list(c, v.d->n);
	r.l->is_gen = 1;
	for (size_t i = 0; i < v.d->n; i++) {
		jv t = jv_list(c, 2);
		t.tuple = 1;
		jv_push(c, t, v.d->k[i]);
		jv_push(c, t, v.d->v[i]);
		jv_push(c, r, t);
	}
	return r;
}
static int split_line(const char *p, size_t n, size_t i, size_t *eol, size_t *next)
{
	/* str.splitlines() separators */
	while (i < n) {
		size_t k = i;
		int cp = ju_decode(p, n, &k);
		if (cp == '\n' || cp == '\r' || cp == 11 || cp == 12 || (cp >= 0x1c && cp <= 0x1e) ||
		    cp == 0x85 || cp == 0x2028 || cp == 0x2029) {
			*eol = i;
			*next = (cp == '\r' && k < n && p[k] == '\n') ? k + 1 : k;
			return 1;
		}
		i = k;
	}
	*eol = *next = n;
	return 0;
}
F(f_indent)
{
	jv w = jz_kwarg(a, 0, "width"), first = jz_kwarg(a, 1, "first"), blank = jz_kwarg(a, 2, "blank");
	struct jbuf ind = { 0 }, o = { 0 };
	if (w.k == JV_STR)
		jb_put(c, &ind, w.s->p, w.s->n);
	else
		for (long long i = 0, n = ABSENT(w) ? 4 : w.i; i < n && i < 4096; i++)
			jb_puts(c, &ind, " ");
	if (v.k != JV_STR)
		jz_fail(c, FI_EINVAL, "indent needs a string, not %s", jv_typename(v));
	jv s = v;
	struct jbuf t = { 0 };
	jb_put(c, &t, s.s->p, s.s->n);
	jb_puts(c, &t, "\n");
	size_t i = 0, eol, nx;
	int line = 0;
	if (jv_truthy(first))
		jb_put(c, &o, ind.p, ind.n);
	while (i < t.n) {
		split_line(t.p, t.n, i, &eol, &nx);
		if (line)
			jb_puts(c, &o, "\n");
		if (line && (jv_truthy(blank) || eol > i))
			jb_put(c, &o, ind.p, ind.n);
		jb_put(c, &o, t.p + i, eol - i);
		line++;
		i = nx;
	}
	return jb_value(c, &o);
}
F(f_join)
{
	jv d = jz_kwarg(a, 0, "d"), attr = jz_kwarg(a, 1, "attribute");
	jv l = jz_iterate(c, v);
	struct jbuf o = { 0 };
	for (size_t i = 0; i < l.l->n; i++) {
		if (i && d.k == JV_STR)
			jb_put(c, &o, d.s->p, d.s->n);
		jv x = l.l->v[i];
		if (!ABSENT(attr))
			x = attr_path(c, x, attr);
		jv_str_into(c, &o, x);
	}
	return jb_value(c, &o);
}
F(f_list)
{
	jv l = jz_iterate(c, v), r = jv_list(c, l.l->n);
	for (size_t i = 0; i < l.l->n; i++)
		jv_push(c, r, l.l->v[i]);
	return r;
}
F(f_lower) { return js_case(c, sval(c, v), 'l'); }
F(f_upper) { return js_case(c, sval(c, v), 'u'); }
F(f_title) { return js_case(c, sval(c, v), 'j'); }
F(f_map)
{
	jv l = jz_iterate(c, v), r = jv_list(c, l.l->n);
	r.l->is_gen = 1;
	jv attr = jz_kwarg(a, -1, "attribute"), def = jz_kwarg(a, -1, "default");
	if (!ABSENT(attr)) {
		for (size_t i = 0; i < l.l->n; i++) {
			jv_push(c, r, attr_path_def(c, l.l->v[i], attr, def));
		}
		return r;
	}
	if (a->n < 1 || a->pos[0].k != JV_STR)
		jz_fail(c, FI_EINVAL, "map requires a filter name or attribute=");
	jz_builtin f = jz_filter(a->pos[0].s->p);
	if (!f)
		jz_fail(c, FI_EINVAL, "no filter named '%s'", a->pos[0].s->p);
	struct jargs sub = { .n = a->n - 1, .pos = a->pos + 1, .nkw = a->nkw, .kwn = a->kwn, .kw = a->kw };
	for (size_t i = 0; i < l.l->n; i++)
		jv_push(c, r, f(c, l.l->v[i], &sub));
	return r;
}
static jv minmax(struct jz_ctx *c, jv v, struct jargs *a, int want_max)
{
	jv l = jz_iterate(c, v), cs = jz_kwarg(a, 0, "case_sensitive"), attr = jz_kwarg(a, 1, "attribute");
	if (!l.l->n)
		return jv_undef(want_max ? "no largest item, sequence was empty" : "no smallest item, sequence was empty");
	jv best = l.l->v[0], bk = sort_key(c, best, attr, jv_truthy(cs));
	for (size_t i = 1; i < l.l->n; i++) {
		jv k = sort_key(c, l.l->v[i], attr, jv_truthy(cs));
		int r = jv_cmp(c, k, bk);
		if (want_max ? r > 0 : r < 0) {
			best = l.l->v[i];
			bk = k;
		}
	}
	return best;
}
F(f_max) { return minmax(c, v, a, 1); }
F(f_min) { return minmax(c, v, a, 0); }
F(f_replace)
{
	jv s = sval(c, v), o = sval(c, jz_kwarg(a, 0, "old")), n = sval(c, jz_kwarg(a, 1, "new"));
	jv k = jz_kwarg(a, 2, "count");
	return js_replace(c, s, o, n, k.k == JV_INT ? k.i : -1);
}
F(f_reverse)
{
	if (v.k == JV_STR) {
		jv l = jz_iterate(c, v);
		struct jbuf o = { 0 };
		for (size_t i = l.l->n; i-- > 0;)
			jb_put(c, &o, l.l->v[i].s->p, l.l->v[i].s->n);
		return jb_value(c, &o);
	}
	jv l = jz_iterate(c, v), r = jv_list(c, l.l->n);
	for (size_t i = l.l->n; i-- > 0;)
		jv_push(c, r, l.l->v[i]);
	r.l->is_gen = 1; /* reversed(): an iterator */
	return r;
}
F(f_round)
{
	jv p = jz_kwarg(a, 0, "precision"), m = jz_kwarg(a, 1, "method");
	long long prec = p.k == JV_INT ? p.i : 0;
	if (!jv_is_num(v))
		jz_fail(c, FI_EINVAL, "round() needs a number, not %s", jv_typename(v));
	double x = jv_num(v), r;
	if (m.k == JV_STR && !strcmp(m.s->p, "floor")) {
		double e = pow(10, (double)prec);
		r = floor(x * e) / e;
	} else if (m.k == JV_STR && !strcmp(m.s->p, "ceil")) {
		double e = pow(10, (double)prec);
		r = ceil(x * e) / e;
	} else if (m.k == JV_STR && strcmp(m.s->p, "common")) {
		jz_fail(c, FI_EINVAL, "method must be common, ceil or floor");
	} else if (v.k != JV_FLOAT) {
		return jv_int(v.i); /* round(int, n >= 0) keeps the int */
	} else {
		/* correctly rounded, half to even, like Python's round() */
		char tmp[400];
		snprintf(tmp, sizeof tmp, "%.*f", (int)(prec < 0 ? 0 : prec > 300 ? 300 : prec), x);
		r = strtod(tmp, NULL);
	}
	return jv_float(r);
}
static jv select_common(struct jz_ctx *c, jv v, struct jargs *a, int by_attr, int keep)
{
	jv l = jz_iterate(c, v), r = jv_list(c, 0);
	r.l->is_gen = 1;
	int skip = by_attr ? 1 : 0;
	jz_builtin test = NULL;
	if (by_attr && a->n < 1)
		jz_fail(c, FI_EINVAL, "selectattr/rejectattr need an attribute name");
	if (a->n > skip) {
		jv tn = a->pos[skip];
		if (tn.k != JV_STR || !(test = jz_test(tn.s->p)))
			jz_fail(c, FI_EINVAL, "no test named '%s'", tn.k == JV_STR ? tn.s->p : "?");
	}
	struct jargs sub = { .n = a->n > skip + 1 ? a->n - skip - 1 : 0, .pos = a->pos + skip + 1,
			     .nkw = a->nkw, .kwn = a->kwn, .kw = a->kw };
	for (size_t i = 0; i < l.l->n; i++) {
		jv x = by_attr ? attr_path(c, l.l->v[i], a->pos[0]) : l.l->v[i];
		int ok = test ? jv_truthy(test(c, x, &sub)) : jv_truthy(x);
		if (ok == keep)
			jv_push(c, r, l.l->v[i]);
	}
	return r;
}
F(f_select) { return select_common(c, v, a, 0, 1); }
F(f_reject) { return select_common(c, v, a, 0, 0); }
F(f_selectattr) { return select_common(c, v, a, 1, 1); }
F(f_rejectattr) { return select_common(c, v, a, 1, 0); }
F(f_safe) { return v; }
F(f_sort)
{
	jv rev = jz_kwarg(a, 0, "reverse"), cs = jz_kwarg(a, 1, "case_sensitive"), attr = jz_kwarg(a, 2, "attribute");
	return sorted(c, jz_iterate(c, v), attr, jv_truthy(cs), jv_truthy(rev), NULL);
}
F(f_string) { return sval(c, v); }
F(f_sum)
{
	jv attr = jz_kwarg(a, 0, "attribute"), start = jz_kwarg(a, 1, "start"), l = jz_iterate(c, v);
	jv r = ABSENT(start) ? jv_int(0) : start;
	for (size_t i = 0; i < l.l->n; i++) {
		jv x = ABSENT(attr) ? l.l->v[i] : attr_path(c, l.l->v[i], attr);
		if (!jv_is_num(x) || !jv_is_num(r))
			jz_fail(c, FI_EINVAL, "unsupported operand type(s) for +: '%s' and '%s'",
				jv_typename(r), jv_typename(x));
		if (r.k == JV_FLOAT || x.k == JV_FLOAT)
			r = jv_float(jv_num(r) + jv_num(x));
		else if (__builtin_add_overflow(r.i, x.i, &r.i))
			jz_fail(c, FI_ERANGE, "integer overflow in sum");
		else
			r.k = JV_INT;
	}
	return r;
}
F(f_tojson)
{
	jv ea = jz_kwarg(a, 0, "ensure_ascii"), ind = jz_kwarg(a, 1, "indent");
	jv sep = jz_kwarg(a, 2, "separators"), sk = jz_kwarg(a, 3, "sort_keys");
	const char *indent = NULL, *item = ", ", *key = ": ";
	struct jbuf ib = { 0 }, o = { 0 };
	if (ind.k == JV_INT) {
		for (long long i = 0; i < ind.i && i < 256; i++)
			jb_puts(c, &ib, " ");
		indent = ib.p ? ib.p : "";
		item = ",";
	} else if (ind.k == JV_STR) {
		indent = ind.s->p;
		item = ",";
	}
	if (sep.k == JV_LIST && sep.l->n == 2 && sep.l->v[0].k == JV_STR && sep.l->v[1].k == JV_STR) {
		item = sep.l->v[0].s->p;
		key = sep.l->v[1].s->p;
	} else if (!ABSENT(sep) && sep.k != JV_NONE) {
		jz_fail(c, FI_EINVAL, "separators must be a pair of strings");
	}
	struct jz_json opts = { indent, item, key, jv_truthy(sk), jv_truthy(ea) };
	jv_tojson_into(c, &o, v, &opts, 0);
	return jb_value(c, &o);
}
F(f_trim) { return js_strip(c, sval(c, v), jz_kwarg(a, 0, "chars"), 1, 1); }
F(f_unique)
{
	jv cs = jz_kwarg(a, 0, "case_sensitive"), attr = jz_kwarg(a, 1, "attribute");
	jv l = jz_iterate(c, v), r = jv_list(c, 0), seen = jv_list(c, 0);
	r.l->is_gen = 1;
	for (size_t i = 0; i < l.l->n; i++) {
		jv k = sort_key(c, l.l->v[i], attr, jv_truthy(cs));
		if (jz_contains(c, seen, k))
			continue;
		jv_push(c, seen, k);
		jv_push(c, r, l.l->v[i]);
	}
	return r;
}
F(f_wordcount)
{
	jv s = sval(c, v);
	long long n = 0;
	int in = 0;
	for (size_t i = 0; i < s.s->n;) {
		int cp = ju_decode(s.s->p, s.s->n, &i);
		int w = cp == '_' || (cp < 128 ? (cp >= '0' && cp <= '9') || ((cp | 32) >= 'a' && (cp | 32) <= 'z') : !ju_isspace(cp));
		n += w && !in;
		in = w;
	}
	return jv_int(n);
}
F(f_format)
{
	if (a->n && a->nkw)
		jz_fail(c, FI_EINVAL, "format filter takes positional or keyword arguments, not both");
	jv args;
	if (a->nkw) {
		args = jv_dict(c);
		for (int i = 0; i < a->nkw; i++)
			jv_dset(c, args.d, jv_cstr(c, a->kwn[i]), a->kw[i]);
	} else {
		args = jv_list(c, (size_t)a->n);
		args.tuple = 1;
		for (int i = 0; i < a->n; i++)
			jv_push(c, args, a->pos[i]);
	}
	return jz_percent_format(c, sval(c, v), args);
}
F(f_unsupported)
{
	jz_fail(c, FI_EUNSUPPORTED, "this filter is not supported");
}

struct named {
	const char *name;
	jz_builtin fn;
};

static const struct named filters[] = {
	{ "abs", f_abs }, { "attr", f_attr }, { "batch", f_unsupported }, { "capitalize", f_capitalize },
	{ "center", f_center }, { "count", f_length }, { "d", f_default }, { "default", f_default },
	{ "dictsort", f_dictsort }, { "e", f_escape }, { "escape", f_escape },
	{ "filesizeformat", f_unsupported }, { "first", f_first }, { "float", f_float },
	{ "forceescape", f_escape }, { "format", f_format }, { "groupby", f_unsupported },
	{ "indent", f_indent }, { "int", f_int }, { "items", f_items }, { "join", f_join },
	{ "last", f_last }, { "length", f_length }, { "list", f_list }, { "lower", f_lower },
	{ "map", f_map }, { "max", f_max }, { "min", f_min }, { "pprint", f_unsupported },
	{ "random", f_unsupported }, { "reject", f_reject }, { "rejectattr", f_rejectattr },
	{ "replace", f_replace }, { "reverse", f_reverse }, { "round", f_round }, { "safe", f_safe },
	{ "select", f_select }, { "selectattr", f_selectattr }, { "slice", f_unsupported },
	{ "sort", f_sort }, { "string", f_string }, { "striptags", f_unsupported }, { "sum", f_sum },
	{ "title", f_title }, { "tojson", f_tojson }, { "trim", f_trim }, { "truncate", f_unsupported },
	{ "unique", f_unique }, { "upper", f_upper }, { "urlencode", f_unsupported },
	{ "urlize", f_unsupported }, { "wordcount", f_wordcount }, { "wordwrap", f_unsupported },
	{ "xmlattr", f_unsupported },
};

/* ---- tests ---- */
static jv arg0(struct jz_ctx *c, struct jargs *a)
{
	if (a->n < 1)
		jz_fail(c, FI_EINVAL, "test needs an argument");
	return a->pos[0];
}
F(t_defined) { return jv_bool(v.k != JV_UNDEF); }
F(t_undefined) { return jv_bool(v.k == JV_UNDEF); }
F(t_none) { return jv_bool(v.k == JV_NONE); }
F(t_string) { return jv_bool(v.k == JV_STR); }
F(t_number) { return jv_bool(jv_is_num(v)); }
F(t_integer) { return jv_bool(v.k == JV_INT); }
F(t_float) { return jv_bool(v.k == JV_FLOAT); }
F(t_boolean) { return jv_bool(v.k == JV_BOOL); }
F(t_true) { return jv_bool(v.k == JV_BOOL && v.i); }
F(t_false) { return jv_bool(v.k == JV_BOOL && !v.i); }
F(t_mapping) { return jv_bool(v.k == JV_DICT); }
F(t_iterable) { return jv_bool(v.k == JV_STR || v.k == JV_LIST || v.k == JV_DICT || v.k == JV_UNDEF); }
F(t_callable) { return jv_bool(v.k == JV_FUNC); }
F(t_eq) { return jv_bool(jv_eq(v, arg0(c, a))); }
F(t_ne) { return jv_bool(!jv_eq(v, arg0(c, a))); }
F(t_lt) { return jv_bool(jv_cmp(c, v, arg0(c, a)) < 0); }
F(t_le) { return jv_bool(jv_cmp(c, v, arg0(c, a)) <= 0); }
F(t_gt) { return jv_bool(jv_cmp(c, v, arg0(c, a)) > 0); }
F(t_ge) { return jv_bool(jv_cmp(c, v, arg0(c, a)) >= 0); }
F(t_in) { return jv_bool(jz_contains(c, arg0(c, a), v)); }
F(t_divisibleby)
{
	jv d = arg0(c, a);
	if ((v.k != JV_INT && v.k != JV_BOOL) || (d.k != JV_INT && d.k != JV_BOOL)) {
		if (!jv_is_num(v) || !jv_is_num(d))
			jz_fail(c, FI_EINVAL, "divisibleby needs numbers");
		return jv_bool(jv_num(d) != 0 && fmod(jv_num(v), jv_num(d)) == 0);
	}
	if (!d.i)
		jz_fail(c, FI_EINVAL, "integer division or modulo by zero");
	return jv_bool(d.i == -1 || v.i % d.i == 0);
}
F(t_odd)
{
	if (v.k != JV_INT && v.k != JV_BOOL) jz_fail(c, FI_EINVAL, "odd needs an integer");
	return jv_bool(v.i % 2 != 0);
}
F(t_even)
{
	if (v.k != JV_INT && v.k != JV_BOOL) jz_fail(c, FI_EINVAL, "even needs an integer");
	return jv_bool(v.i % 2 == 0);
}
F(t_lower) { jv s = sval(c, v); return jv_eq(s, js_case(c, s, 'l')) && !jv_eq(s, js_case(c, s, 'u')) ? jv_true : jv_false; }
F(t_upper) { jv s = sval(c, v); return jv_eq(s, js_case(c, s, 'u')) && !jv_eq(s, js_case(c, s, 'l')) ? jv_true : jv_false; }
F(t_sameas)
{
	jv b = arg0(c, a);
	if (v.k != b.k)
		return jv_false;
	switch (v.k) {
	case JV_STR: return jv_bool(v.s == b.s);
	case JV_LIST: return jv_bool(v.l == b.l);
	case JV_DICT: case JV_NS: return jv_bool(v.d == b.d);
	case JV_FUNC: return jv_bool(v.fn == b.fn);
	default: return jv_bool(jv_eq(v, b));
	}
}
F(t_escaped) { return jv_false; }
F(t_filter) { jv n = arg0(c, a); return jv_bool(n.k == JV_STR && jz_filter(n.s->p)); }
F(t_test) { jv n = arg0(c, a); return jv_bool(n.k == JV_STR && jz_test(n.s->p)); }

static const struct named tests[] = {
	{ "defined", t_defined }, { "undefined", t_undefined }, { "none", t_none },
	{ "string", t_string }, { "number", t_number }, { "integer", t_integer }, { "float", t_float },
	{ "boolean", t_boolean }, { "true", t_true }, { "false", t_false }, { "mapping", t_mapping },
	{ "iterable", t_iterable }, { "sequence", t_iterable }, { "callable", t_callable },
	{ "eq", t_eq }, { "equalto", t_eq }, { "==", t_eq }, { "ne", t_ne }, { "!=", t_ne },
	{ "lt", t_lt }, { "lessthan", t_lt }, { "<", t_lt }, { "le", t_le }, { "<=", t_le },
	{ "gt", t_gt }, { "greaterthan", t_gt }, { ">", t_gt }, { "ge", t_ge }, { ">=", t_ge },
	{ "in", t_in }, { "divisibleby", t_divisibleby }, { "odd", t_odd }, { "even", t_even },
	{ "lower", t_lower }, { "upper", t_upper }, { "sameas", t_sameas }, { "escaped", t_escaped },
	{ "filter", t_filter }, { "test", t_test },
};

static jz_builtin find_named(const struct named *t, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(t[i].name, name))
			return t[i].fn;
	return NULL;
}

jz_builtin jz_filter(const char *name) { return find_named(filters, sizeof filters / sizeof *filters, name); }
jz_builtin jz_test(const char *name) { return find_named(tests, sizeof tests / sizeof *tests, name); }

/* Number of arguments a test takes (jinja2 raises TypeError on others). */
int jz_test_arity(const char *name)
{
	static const char *const unary[] = { "defined", "undefined", "none", "string", "number",
		"integer", "float", "boolean", "true", "false", "mapping", "iterable", "sequence",
		"callable", "odd", "even", "lower", "upper", "escaped", NULL };
	for (int i = 0; unary[i]; i++)
		if (!strcmp(unary[i], name))
			return 0;
	return 1;
}
