/* jinja_ops: attribute and item lookup as the sandbox does them (a missing key or index gives
 * Undefined; methods that would mutate a list or dict are refused), slices, iteration,
 * membership and the arithmetic operators, with Python's semantics (floor division and modulo
 * signs; int overflow is an error instead of a big integer). */
#define _GNU_SOURCE
#include "jinja.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- lookups ---- */
static const char *obj_desc(struct jz_ctx *c, jv obj)
{
	return jz_msgf(c, "'%s object'", jv_typename(obj), "");
}

jv jz_getattr(struct jz_ctx *c, jv obj, const char *name)
{
	if (obj.k == JV_UNDEF)
		jz_fail_undef(c, obj);
	if (name[0] == '_' && name[1] == '_')
		return jv_undef(jz_msgf(c, "access to attribute '%s' of '%s' object is unsafe", name,
				     jv_typename(obj)));
	if (obj.k == JV_NS || obj.k == JV_DICT) {
		if (obj.k == JV_DICT) {
			jv m = jz_method(c, obj, name);
			if (m.k != JV_UNDEF || m.why)
				return m;
		}
		jv *v = jv_dgets(obj.d, name);
		if (v)
			return *v;
	} else {
		jv m = jz_method(c, obj, name);
		if (m.k != JV_UNDEF || m.why)
			return m;
	}
	return jv_undef(jz_msgf(c, "%s has no attribute '%s'", obj_desc(c, obj), name));
}

jv jz_getitem(struct jz_ctx *c, jv obj, jv key)
{
	if (obj.k == JV_UNDEF)
		jz_fail_undef(c, obj);
	if (obj.k == JV_DICT) {
		jv *v = jv_dget(obj.d, key);
		if (v)
			return *v;
	} else if (((obj.k == JV_LIST && !obj.l->is_gen) || obj.k == JV_STR) &&
		   (key.k == JV_INT || key.k == JV_BOOL)) {
		long long n = obj.k == JV_LIST ? (long long)obj.l->n : (long long)ju_len(obj.s->p, obj.s->n);
		long long i = key.i < 0 ? key.i + n : key.i;
		if (i >= 0 && i < n) {
			if (obj.k == JV_LIST)
				return obj.l->v[i];
			size_t a = ju_offset(obj.s->p, obj.s->n, (size_t)i), b = a;
			ju_decode(obj.s->p, obj.s->n, &b);
			return jv_str(c, obj.s->p + a, b - a);
		}
	}
	if (key.k == JV_STR)
		return jz_getattr(c, obj, key.s->p);
	struct jbuf b = { 0 };
	jv_repr_into(c, &b, key);
	return jv_undef(jz_msgf(c, "%s has no element %s", obj_desc(c, obj), b.p));
}

/* obj[a:b:st] with Python's index adjustment (PySlice_AdjustIndices). */
jv jz_slice(struct jz_ctx *c, jv obj, jv a, jv b, jv st, int soft)
{
	if (obj.k == JV_UNDEF)
		jz_fail_undef(c, obj);
	/* jinja2 compiles slices to a plain Python subscript, which fails on anything but a
	 * sequence; only when it folds a constant expression does the sandbox's getitem turn the
	 * failure into Undefined (soft). */
	int bad = obj.k != JV_LIST || obj.l->is_gen;
	bad = bad && obj.k != JV_STR;
	for (int k = 0; k < 3; k++) {
		jv x = k == 0 ? a : k == 1 ? b : st;
		bad |= x.k != JV_NONE && x.k != JV_INT && x.k != JV_BOOL;
	}
	if (bad && soft)
		return jv_undef("slice of a constant that cannot be sliced");
	if (bad)
		jz_fail(c, FI_EINVAL, "cannot slice '%s' with these indices", jv_typename(obj));
	long long len = obj.k == JV_LIST ? (long long)obj.l->n : (long long)ju_len(obj.s->p, obj.s->n);
	long long step = st.k == JV_NONE ? 1 : st.i, start, stop;
	if (step == 0)
		jz_fail(c, FI_EINVAL, "slice step cannot be zero");
	if (a.k == JV_NONE)
		start = step < 0 ? len - 1 : 0;
	else {
		start = a.i;
		if (start < 0) {
			start += len;
			if (start < 0)
				start = step < 0 ? -1 : 0;
		} else if (start >= len)
			start = step < 0 ? len - 1 : len;
	}
	if (b.k == JV_NONE)
		stop = step < 0 ? -1 : len;
	else {
		stop = b.i;
		if (stop < 0) {
			stop += len;
			if (stop < 0)
				stop = step < 0 ? -1 : 0;
		} else if (stop >= len)
			stop = step < 0 ? len - 1 : len;
	}
	size_t *offs = NULL;
	if (obj.k == JV_STR) {
		/* byte offsets of every character, plus the end */
		offs = jz_alloc(c, ((size_t)len + 1) * sizeof *offs);
		size_t i = 0, k = 0;
		while (i < obj.s->n) {
			offs[k++] = i;
			ju_decode(obj.s->p, obj.s->n, &i);
		}
		offs[k] = i;
	}
	jv r = obj.k == JV_LIST ? jv_list(c, 0) : jv_none;
	struct jbuf sb = { 0 };
	for (long long i = start; step > 0 ? i < stop : i > stop; i += step) {
		if (obj.k == JV_LIST)
			jv_push(c, r, obj.l->v[i]);
		else
			jb_put(c, &sb, obj.s->p + offs[i], offs[i + 1] - offs[i]);
	}
	if (obj.k == JV_STR)
		return jb_value(c, &sb);
	r.tuple = obj.tuple;
	return r;
}

/* ---- arithmetic ---- */
jv jz_arith(struct jz_ctx *c, int op, jv a, jv b)
{
	if (op == OP_CONCAT) {
		struct jbuf o = { 0 };
		jv_str_into(c, &o, a);
		jv_str_into(c, &o, b);
		return jb_value(c, &o);
	}
	if (a.k == JV_UNDEF)
		jz_fail_undef(c, a);
	if (b.k == JV_UNDEF)
		jz_fail_undef(c, b);
	static const char *const sym[] = { "+", "-", "*", "/", "//", "%", "**" };
	if (jv_is_num(a) && jv_is_num(b)) {
		int fl = a.k == JV_FLOAT || b.k == JV_FLOAT;
		long long x = a.i, y = b.i, r;
		double p = jv_num(a), q = jv_num(b);
		switch (op) {
		case OP_ADD:
			if (fl) return jv_float(p + q);
			if (__builtin_add_overflow(x, y, &r)) goto overflow;
			return jv_int(r);
		case OP_SUB:
			if (fl) return jv_float(p - q);
			if (__builtin_sub_overflow(x, y, &r)) goto overflow;
			return jv_int(r);
		case OP_MUL:
			if (fl) return jv_float(p * q);
			if (__builtin_mul_overflow(x, y, &r)) goto overflow;
			return jv_int(r);
		case OP_DIV:
			if (q == 0) goto zero;
			return jv_float(p / q);
		case OP_FLOORDIV:
			if (q == 0) goto zero;
			if (fl) return jv_float(floor(p / q));
			if (x == LLONG_MIN && y == -1) goto overflow;
			r = x / y;
			if ((x % y != 0) && ((x < 0) != (y < 0)))
				r--;
			return jv_int(r);
		case OP_MOD:
			if (q == 0) goto zero;
			if (fl) {
				double m = fmod(p, q);
				if (m != 0 && ((m < 0) != (q < 0)))
					m += q;
				return jv_float(m);
			}
			if (y == -1) return jv_int(0);
			r = x % y;
			if (r != 0 && ((r < 0) != (y < 0)))
				r += y;
			return jv_int(r);
		case OP_POW:
			if (fl || y < 0) return jv_float(pow(p, q));
			r = 1;
			for (long long k = 0; k < y; k++) {
				if (__builtin_mul_overflow(r, x, &r)) goto overflow;
				if (r == 0 || r == 1) break;
			}
			return jv_int(r);
		}
	}
	if (op == OP_ADD && a.k == JV_STR && b.k == JV_STR) {
		struct jbuf o = { 0 };
		jb_put(c, &o, a.s->p, a.s->n);
		jb_put(c, &o, b.s->p, b.s->n);
		return jb_value(c, &o);
	}
	if (op == OP_ADD && a.k == JV_LIST && b.k == JV_LIST && a.tuple == b.tuple) {
		jv r = jv_list(c, a.l->n + b.l->n);
		for (size_t i = 0; i < a.l->n; i++)
			jv_push(c, r, a.l->v[i]);
		for (size_t i = 0; i < b.l->n; i++)
			jv_push(c, r, b.l->v[i]);
		r.tuple = a.tuple;
		return r;
	}
	if (op == OP_MUL && (a.k == JV_STR || a.k == JV_LIST) && (b.k == JV_INT || b.k == JV_BOOL)) {
		jv r = a.k == JV_LIST ? jv_list(c, 0) : jv_none;
		struct jbuf o = { 0 };
		for (long long k = 0; k < b.i; k++) {
			jz_step(c);
			if (a.k == JV_STR)
				jb_put(c, &o, a.s->p, a.s->n);
			else
				for (size_t i = 0; i < a.l->n; i++)
					jv_push(c, r, a.l->v[i]);
		}
		if (a.k == JV_STR)
			return jb_value(c, &o);
		r.tuple = a.tuple;
		return r;
	}
	if (op == OP_MUL && (b.k == JV_STR || b.k == JV_LIST) && (a.k == JV_INT || a.k == JV_BOOL))
		return jz_arith(c, op, b, a);
	if (op == OP_MOD && a.k == JV_STR)
		return jz_percent_format(c, a, b);
	jz_fail(c, FI_EINVAL, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op],
		jv_typename(a), jv_typename(b));
overflow:
	jz_fail(c, FI_ERANGE, "integer overflow in '%s'", sym[op]);
zero:
	jz_fail(c, FI_EINVAL, "division by zero");
}
