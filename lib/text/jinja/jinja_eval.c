/* jinja_eval: runs a syntax tree. Scoping follows jinja2: each for-loop iteration and each
 * macro call gets a fresh scope over the enclosing one (so {% set %} inside a loop does not
 * leak out, which is why templates use namespace()); if-blocks share their scope. Lookups and
 * operators are in jinja_ops.c. */
#define _GNU_SOURCE
#include "jinja.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jscope {
	struct jscope *parent;
	struct jdict vars;
};

enum { FLOW_NORMAL, FLOW_BREAK, FLOW_CONTINUE };

static jv eval(struct jz_ctx *c, struct jscope *s, struct jnode *x);
static int exec_body(struct jz_ctx *c, struct jscope *s, struct jnode **v, int n, struct jbuf *o);

static struct jscope *new_scope(struct jz_ctx *c, struct jscope *parent)
{
	struct jscope *s = jz_alloc(c, sizeof *s);
	s->parent = parent;
	return s;
}

static jv *lookup(struct jscope *s, const char *name)
{
	for (; s; s = s->parent) {
		jv *v = jv_dgets(&s->vars, name);
		if (v)
			return v;
	}
	return NULL;
}

static void bind(struct jz_ctx *c, struct jscope *s, const char *name, jv v)
{
	jv_dset(c, &s->vars, jv_cstr(c, name), v);
}

/* An expression jinja2 folds at compile time: made of literals only. In a print statement
 * such an expression is rendered by the folding, where the sandbox's getitem turns a failed
 * slice into Undefined instead of an error. */
static int is_const_at(struct jnode *x, int depth)
{
	if (!x)
		return 1;
	if (depth > 64) /* jinja2 would fold deeper ones too; such literals do not occur */
		return 0;
	switch (x->t) {
	case E_CONST: return 1;
	case E_NAME: case E_CALL: return 0;
	default: break;
	}
	depth++;
	if (!is_const_at(x->a, depth) || !is_const_at(x->b, depth) || !is_const_at(x->c, depth) ||
	    !is_const_at(x->d, depth))
		return 0;
	for (int i = 0; i < x->n; i++)
		if (!is_const_at(x->v[i], depth) || (x->t == E_DICT && !is_const_at(x->kwv[i], depth)))
			return 0;
	for (int i = 0; x->t != E_DICT && i < x->nkw; i++)
		if (!is_const_at(x->kwv[i], depth))
			return 0;
	return 1;
}

static int is_const(struct jnode *x) { return is_const_at(x, 0); }

static int compare(struct jz_ctx *c, int op, jv a, jv b)
{
	switch (op) {
	case OP_EQ: return jv_eq(a, b);
	case OP_NE: return !jv_eq(a, b);
	case OP_IN: return jz_contains(c, b, a);
	case OP_NOTIN: return !jz_contains(c, b, a);
	case OP_LT: return jv_cmp(c, a, b) < 0;
	case OP_LE: return jv_cmp(c, a, b) <= 0;
	case OP_GT: return jv_cmp(c, a, b) > 0;
	default: return jv_cmp(c, a, b) >= 0;
	}
}

/* ---- calls ---- */
static jv call_macro(struct jz_ctx *c, struct jfunc *f, struct jargs *a)
{
	struct jnode *m = f->macro;
	struct jscope *s = new_scope(c, f->closure);
	jv varargs = jv_list(c, 0), kwargs = jv_dict(c);
	varargs.tuple = 1;
	for (int i = 0; i < a->n; i++) {
		if (i < m->nkw)
			bind(c, s, m->kwn[i], a->pos[i]);
		else
			jv_push(c, varargs, a->pos[i]);
	}
	for (int i = 0; i < a->nkw; i++) {
		int k;
		for (k = 0; k < m->nkw && strcmp(m->kwn[k], a->kwn[i]); k++)
			;
		if (!strcmp(a->kwn[i], "caller")) {
			bind(c, s, "caller", a->kw[i]);
		} else if (k < m->nkw) {
			if (k < a->n)
				jz_fail(c, FI_EINVAL, "macro '%s' got multiple values for argument '%s'",
					m->name, a->kwn[i]);
			bind(c, s, a->kwn[i], a->kw[i]);
		} else {
			jv_dset(c, kwargs.d, jv_cstr(c, a->kwn[i]), a->kw[i]);
		}
	}
	for (int k = 0; k < m->nkw; k++) {
		if (jv_dgets(&s->vars, m->kwn[k]))
			continue;
		if (m->kwv[k])
			bind(c, s, m->kwn[k], eval(c, s, m->kwv[k]));
		else
			bind(c, s, m->kwn[k],
			     jv_undef(jz_msgf(c, "parameter '%s' was not provided", m->kwn[k], "")));
	}
	bind(c, s, "varargs", varargs);
	bind(c, s, "kwargs", kwargs);
	struct jbuf o = { 0 };
	jz_enter(c);
	exec_body(c, s, m->v, m->n, &o);
	jz_leave(c);
	return jb_value(c, &o);
}

jv jz_call(struct jz_ctx *c, jv fn, struct jargs *a)
{
	jz_step(c);
	if (fn.k == JV_UNDEF)
		jz_fail_undef(c, fn);
	if (fn.k != JV_FUNC)
		jz_fail(c, FI_EINVAL, "'%s' object is not callable", jv_typename(fn));
	if (fn.fn->macro)
		return call_macro(c, fn.fn, a);
	return fn.fn->fn(c, fn.fn->self, a);
}

static void eval_args(struct jz_ctx *c, struct jscope *s, struct jnode *x, struct jargs *a)
{
	a->n = x->n;
	a->nkw = x->nkw;
	a->pos = jz_alloc(c, (size_t)(x->n + 1) * sizeof(jv));
	a->kw = jz_alloc(c, (size_t)(x->nkw + 1) * sizeof(jv));
	a->kwn = x->kwn;
	for (int i = 0; i < x->n; i++)
		a->pos[i] = eval(c, s, x->v[i]);
	for (int i = 0; i < x->nkw; i++)
		a->kw[i] = eval(c, s, x->kwv[i]);
}

/* Applies a filter node (and the filters under it) to in; a node with no operand takes in. */
static jv apply_filter(struct jz_ctx *c, struct jscope *s, struct jnode *f, jv in)
{
	struct jargs a;
	jz_enter(c);
	jv v = !f->a ? in : f->a->t == E_FILTER ? apply_filter(c, s, f->a, in) : eval(c, s, f->a);
	eval_args(c, s, f, &a);
	c->line = f->line;
	v = jz_filter(f->name)(c, v, &a);
	jz_leave(c);
	return v;
}

static jv eval(struct jz_ctx *c, struct jscope *s, struct jnode *x)
{
	jv a, b, r;
	struct jargs args;
	jz_enter(c);
	c->line = x->line;
	switch (x->t) {
	case E_CONST: r = x->val; break;
	case E_NAME: {
		jv *v = lookup(s, x->name);
		r = v ? *v : jv_undef(jz_msgf(c, "'%s' is undefined", x->name, ""));
		break;
	}
	case E_ATTR: r = jz_getattr(c, eval(c, s, x->a), x->name); break;
	case E_ITEM:
		a = eval(c, s, x->a);
		r = jz_getitem(c, a, eval(c, s, x->b));
		break;
	case E_SLICE:
		a = eval(c, s, x->a);
		r = jz_slice(c, a, x->b ? eval(c, s, x->b) : jv_none, x->c ? eval(c, s, x->c) : jv_none,
			  x->d ? eval(c, s, x->d) : jv_none, c->folding);
		break;
	case E_CALL:
		a = eval(c, s, x->a);
		eval_args(c, s, x, &args);
		c->line = x->line;
		r = jz_call(c, a, &args);
		break;
	case E_FILTER: r = apply_filter(c, s, x, jv_none); break;
	case E_TEST:
		a = eval(c, s, x->a);
		eval_args(c, s, x, &args);
		c->line = x->line;
		if (args.n + args.nkw != jz_test_arity(x->name))
			jz_fail(c, FI_EINVAL, "test '%s' takes %d argument(s), %d given", x->name,
				jz_test_arity(x->name), args.n + args.nkw);
		r = jz_test(x->name)(c, a, &args);
		r = jv_bool(jv_truthy(r) != x->op);
		break;
	case E_NEG:
	case E_POS:
		a = eval(c, s, x->a);
		if (a.k == JV_UNDEF)
			jz_fail_undef(c, a);
		if (!jv_is_num(a))
			jz_fail(c, FI_EINVAL, "bad operand type for unary %c: '%s'",
				x->t == E_NEG ? '-' : '+', jv_typename(a));
		if (x->t == E_POS)
			r = a.k == JV_BOOL ? jv_int(a.i) : a;
		else if (a.k == JV_FLOAT)
			r = jv_float(-a.f);
		else if (a.i == LLONG_MIN)
			jz_fail(c, FI_ERANGE, "integer overflow in unary '-'");
		else
			r = jv_int(-a.i);
		break;
	case E_NOT: r = jv_bool(!jv_truthy(eval(c, s, x->a))); break;
	case E_AND:
		a = eval(c, s, x->a);
		r = jv_truthy(a) ? eval(c, s, x->b) : a;
		break;
	case E_OR:
		a = eval(c, s, x->a);
		r = jv_truthy(a) ? a : eval(c, s, x->b);
		break;
	case E_BIN:
		a = eval(c, s, x->a);
		b = eval(c, s, x->b);
		c->line = x->line;
		r = jz_arith(c, x->op, a, b);
		break;
	case E_CMP:
		a = eval(c, s, x->v[0]);
		r = jv_true;
		for (int i = 0; i < x->n - 1; i++) {
			b = eval(c, s, x->v[i + 1]);
			c->line = x->line;
			if (!compare(c, x->ops[i], a, b)) {
				r = jv_false;
				break;
			}
			a = b;
		}
		break;
	case E_COND:
		if (jv_truthy(eval(c, s, x->a)))
			r = eval(c, s, x->b);
		else if (x->c)
			r = eval(c, s, x->c);
		else
			r = jv_undef("the inline if-expression evaluated to false and no else section was defined");
		break;
	case E_LIST:
	case E_TUPLE:
		r = jv_list(c, (size_t)x->n);
		for (int i = 0; i < x->n; i++)
			jv_push(c, r, eval(c, s, x->v[i]));
		r.tuple = x->t == E_TUPLE;
		break;
	case E_DICT:
		r = jv_dict(c);
		for (int i = 0; i < x->n; i++) {
			a = eval(c, s, x->v[i]);
			if (a.k == JV_LIST && !a.tuple)
				jz_fail(c, FI_EINVAL, "unhashable type: 'list'");
			if (a.k == JV_DICT)
				jz_fail(c, FI_EINVAL, "unhashable type: 'dict'");
			jv_dset(c, r.d, a, eval(c, s, x->kwv[i]));
		}
		break;
	default:
		jz_fail(c, FI_EFORMAT, "not an expression");
	}
	jz_leave(c);
	return r;
}

/* ---- statements ---- */
static void assign(struct jz_ctx *c, struct jscope *s, struct jnode *t, jv v)
{
	if (t->t == E_NAME) {
		bind(c, s, t->name, v);
	} else if (t->t == E_ATTR) {
		jv *ns = lookup(s, t->a->name);
		if (!ns || ns->k != JV_NS)
			jz_fail(c, FI_EINVAL, "cannot assign attribute on non-namespace object '%s'",
				t->a->name);
		if (t->name[0] == '_')
			jz_fail(c, FI_EINVAL, "cannot store underscore-prefixed attribute '%s' on a namespace",
				t->name);
		jv_dset(c, ns->d, jv_cstr(c, t->name), v);
	} else {
		jv items = jz_iterate(c, v);
		if ((int)items.l->n != t->n)
			jz_fail(c, FI_EINVAL, "cannot unpack %zu values into %d names", items.l->n, t->n);
		for (int i = 0; i < t->n; i++)
			assign(c, s, t->v[i], items.l->v[i]);
	}
}

static jv loop_cycle(struct jz_ctx *c, jv self, struct jargs *a)
{
	if (!a->n)
		jz_fail(c, FI_EINVAL, "no items for cycling given");
	return a->pos[jv_dgets(self.d, "index0")->i % a->n];
}

/* loop.changed(*values): true on the first call and whenever the values differ from the last
 * call's; self is the loop's state, shared by its iterations. */
static jv loop_changed(struct jz_ctx *c, jv self, struct jargs *a)
{
	jv vals = jv_list(c, (size_t)a->n), *last = jv_dgets(self.d, "last");
	for (int i = 0; i < a->n; i++)
		jv_push(c, vals, a->pos[i]);
	if (last && jv_eq(*last, vals))
		return jv_false;
	jv_dset(c, self.d, jv_cstr(c, "last"), vals);
	return jv_true;
}

static int exec_for(struct jz_ctx *c, struct jscope *s, struct jnode *x, struct jbuf *o)
{
	jv items = jz_iterate(c, eval(c, s, x->b));
	if (x->c) {
		jv keep = jv_list(c, items.l->n);
		for (size_t i = 0; i < items.l->n; i++) {
			struct jscope *fs = new_scope(c, s);
			jz_step(c);
			assign(c, fs, x->a, items.l->v[i]);
			if (jv_truthy(eval(c, fs, x->c)))
				jv_push(c, keep, items.l->v[i]);
		}
		items = keep;
	}
	long long n = (long long)items.l->n;
	jv changed = jv_func(c, "changed", loop_changed, jv_dict(c));
	for (long long i = 0; i < n; i++) {
		struct jscope *ls = new_scope(c, s);
		jv loop = jv_dict(c);
		jz_step(c);
		jv_dset(c, loop.d, jv_cstr(c, "index"), jv_int(i + 1));
		jv_dset(c, loop.d, jv_cstr(c, "index0"), jv_int(i));
		jv_dset(c, loop.d, jv_cstr(c, "revindex"), jv_int(n - i));
		jv_dset(c, loop.d, jv_cstr(c, "revindex0"), jv_int(n - i - 1));
		jv_dset(c, loop.d, jv_cstr(c, "first"), jv_bool(i == 0));
		jv_dset(c, loop.d, jv_cstr(c, "last"), jv_bool(i == n - 1));
		jv_dset(c, loop.d, jv_cstr(c, "length"), jv_int(n));
		jv_dset(c, loop.d, jv_cstr(c, "depth"), jv_int(1));
		jv_dset(c, loop.d, jv_cstr(c, "depth0"), jv_int(0));
		if (i > 0)
			jv_dset(c, loop.d, jv_cstr(c, "previtem"), items.l->v[i - 1]);
		if (i < n - 1)
			jv_dset(c, loop.d, jv_cstr(c, "nextitem"), items.l->v[i + 1]);
		jv_dset(c, loop.d, jv_cstr(c, "cycle"), jv_func(c, "cycle", loop_cycle, loop));
		jv_dset(c, loop.d, jv_cstr(c, "changed"), changed);
		bind(c, ls, "loop", loop);
		assign(c, ls, x->a, items.l->v[i]);
		int f = exec_body(c, ls, x->v, x->n, o);
		if (f == FLOW_BREAK)
			break;
	}
	if (!n && x->nels)
		return exec_body(c, s, x->els, x->nels, o);
	return FLOW_NORMAL;
}

static int exec_body(struct jz_ctx *c, struct jscope *s, struct jnode **v, int n, struct jbuf *o)
{
	for (int i = 0; i < n; i++) {
		struct jnode *x = v[i];
		int f = FLOW_NORMAL;
		c->line = x->line;
		switch (x->t) {
		case N_DATA: jb_put(c, o, x->name, x->len); break;
		case N_OUTPUT:
			c->folding = is_const(x->a);
			jv_str_into(c, o, eval(c, s, x->a));
			c->folding = 0;
			break;
		case N_IF:
			if (jv_truthy(eval(c, s, x->a)))
				f = exec_body(c, s, x->v, x->n, o);
			else
				f = exec_body(c, s, x->els, x->nels, o);
			break;
		case N_FOR:
			jz_enter(c);
			f = exec_for(c, s, x, o);
			jz_leave(c);
			break;
		case N_SET: assign(c, s, x->a, eval(c, s, x->b)); break;
		case N_SETBLOCK:
		case N_FILTERBLOCK: {
			struct jbuf sub = { 0 };
			jz_enter(c);
			f = exec_body(c, s, x->v, x->n, &sub);
			jz_leave(c);
			jv val = jb_value(c, &sub);
			if (x->d)
				val = apply_filter(c, s, x->d, val);
			if (x->t == N_SETBLOCK)
				assign(c, s, x->a, val);
			else
				jv_str_into(c, o, val);
			break;
		}
		case N_MACRO: {
			jv fn = jv_func(c, x->name, NULL, jv_none);
			fn.fn->macro = x;
			fn.fn->closure = s;
			bind(c, s, x->name, fn);
			break;
		}
		case N_WITH: {
			struct jscope *ws = new_scope(c, s);
			for (int k = 0; k < x->nkw; k++)
				bind(c, ws, x->kwn[k], eval(c, s, x->kwv[k]));
			f = exec_body(c, ws, x->v, x->n, o);
			break;
		}
		case N_CALLBLOCK: {
			struct jnode *call = x->a;
			struct jargs a;
			jv fn = eval(c, s, call->a), caller = jv_func(c, "caller", NULL, jv_none);
			caller.fn->macro = x;
			caller.fn->closure = s;
			eval_args(c, s, call, &a);
			const char **kwn = jz_alloc(c, (size_t)(a.nkw + 1) * sizeof *kwn);
			if (a.nkw)
				memcpy(kwn, a.kwn, (size_t)a.nkw * sizeof *kwn);
			kwn[a.nkw] = "caller";
			a.kw[a.nkw] = caller; /* eval_args left room for one more */
			a.kwn = kwn;
			a.nkw++;
			c->line = x->line;
			jv_str_into(c, o, jz_call(c, fn, &a));
			break;
		}
		case N_BREAK: return FLOW_BREAK;
		case N_CONTINUE: return FLOW_CONTINUE;
		case N_BLOCK: f = exec_body(c, s, x->v, x->n, o); break;
		default: jz_fail(c, FI_EFORMAT, "not a statement");
		}
		if (f != FLOW_NORMAL)
			return f;
	}
	return FLOW_NORMAL;
}

fi_err jz_render(const struct jz_template *t, struct jz_ctx *c, jv globals, char **out, size_t *len)
{
	struct jbuf o = { 0 };
	*out = NULL;
	if (setjmp(c->jb))
		return c->code;
	struct jscope *builtins = new_scope(c, NULL);
	jz_install_globals(c, &builtins->vars);
	struct jscope *vars = new_scope(c, builtins);
	vars->vars = *globals.d;
	struct jscope *root = new_scope(c, vars);
	exec_body(c, root, t->body, t->n, &o);
	char *r = malloc(o.n + 1);
	if (!r)
		return fi_fail(FI_ENOMEM, "out of memory");
	if (o.n)
		memcpy(r, o.p, o.n);
	r[o.n] = 0;
	*out = r;
	if (len)
		*len = o.n;
	return FI_OK;
}
