/* jinja_parse: tokens -> syntax tree, following jinja2's parser (operator precedence,
 * filters binding tighter than binary operators, `is` tests, conditional expressions,
 * implicit tuples). Unknown filters, tests and tags are rejected here, as jinja2 rejects them
 * when it compiles a template, even where the template would never run them. */
#include "jinja.h"

#include <string.h>

struct ps {
	struct jz_ctx *c;
	struct jtok *t;
	size_t i, n;
	int loops; /* enclosing for loops (break/continue are valid inside) */
};

struct nvec {
	struct jnode **v;
	int n, cap;
};

static void nv_push(struct ps *p, struct nvec *v, struct jnode *x)
{
	if (v->n == v->cap) {
		int cap = v->cap ? 2 * v->cap : 8;
		struct jnode **nw = jz_alloc(p->c, (size_t)cap * sizeof *nw);
		if (v->n)
			memcpy(nw, v->v, (size_t)v->n * sizeof *nw);
		v->v = nw;
		v->cap = cap;
	}
	v->v[v->n++] = x;
}

static struct jtok *cur(struct ps *p) { return &p->t[p->i]; }
static struct jtok *next(struct ps *p)
{
	struct jtok *t = &p->t[p->i];
	if (t->type != T_EOF)
		p->i++;
	return t;
}

static const char *tokdesc(struct jtok *t)
{
	static const char *const names[] = {
		[T_EOF] = "end of template", [T_DATA] = "template data", [T_VAR_BEGIN] = "'{{'",
		[T_VAR_END] = "end of print statement", [T_BLOCK_BEGIN] = "'{%'",
		[T_BLOCK_END] = "end of statement block", [T_STRING] = "string", [T_INT] = "integer",
		[T_FLOAT] = "float",
	};
	return t->type == T_NAME || t->type == T_OP ? t->s : names[t->type];
}

static _Noreturn void pfail(struct ps *p, const char *what)
{
	struct jtok *t = cur(p);
	p->c->line = t->line;
	jz_fail(p->c, FI_EFORMAT, "%s, got %s", what, tokdesc(t));
}

static int is_op(struct ps *p, const char *op)
{
	struct jtok *t = cur(p);
	return t->type == T_OP && !strcmp(t->s, op);
}
static int is_name(struct ps *p, const char *nm)
{
	struct jtok *t = cur(p);
	return t->type == T_NAME && !strcmp(t->s, nm);
}
static int skip_op(struct ps *p, const char *op) { return is_op(p, op) ? (next(p), 1) : 0; }
static int skip_name(struct ps *p, const char *nm) { return is_name(p, nm) ? (next(p), 1) : 0; }
static void expect_op(struct ps *p, const char *op)
{
	char m[64];
	if (skip_op(p, op))
		return;
	snprintf(m, sizeof m, "expected '%s'", op);
	pfail(p, m);
}
static const char *expect_name(struct ps *p)
{
	if (cur(p)->type != T_NAME)
		pfail(p, "expected a name");
	return next(p)->s;
}
static void expect_block_end(struct ps *p)
{
	if (cur(p)->type != T_BLOCK_END)
		pfail(p, "expected end of statement block");
	next(p);
}

static struct jnode *mk(struct ps *p, int type, int line)
{
	struct jnode *x = jz_alloc(p->c, sizeof *x);
	x->t = type;
	x->line = line;
	return x;
}

static struct jnode *parse_expression(struct ps *p, int condexpr);
static struct jnode *parse_tuple(struct ps *p, int condexpr, int explicit_parens);

static void parse_args(struct ps *p, struct jnode *x)
{
	struct nvec pos = { 0 }, kwv = { 0 };
	const char **kwn = NULL;
	int nkw = 0, cap = 0;
	expect_op(p, "(");
	while (!is_op(p, ")")) {
		if (pos.n || nkw)
			expect_op(p, ",");
		if (is_op(p, ")"))
			break;
		if (is_op(p, "*") || is_op(p, "**"))
			pfail(p, "*args and **kwargs in calls are not supported");
		if (cur(p)->type == T_NAME && p->t[p->i + 1].type == T_OP &&
		    !strcmp(p->t[p->i + 1].s, "=")) {
			const char *k = next(p)->s;
			next(p);
			if (nkw == cap) {
				cap = cap ? 2 * cap : 4;
				const char **nk = jz_alloc(p->c, (size_t)cap * sizeof *nk);
				if (nkw)
					memcpy(nk, kwn, (size_t)nkw * sizeof *nk);
				kwn = nk;
			}
			kwn[nkw++] = k;
			nv_push(p, &kwv, parse_expression(p, 1));
		} else {
			if (nkw)
				pfail(p, "positional argument after keyword argument");
			nv_push(p, &pos, parse_expression(p, 1));
		}
	}
	next(p);
	x->v = pos.v;
	x->n = pos.n;
	x->kwn = kwn;
	x->kwv = kwv.v;
	x->nkw = nkw;
}

static struct jnode *parse_primary(struct ps *p)
{
	struct jtok *t = cur(p);
	struct jnode *x;
	switch (t->type) {
	case T_NAME:
		next(p);
		x = mk(p, E_CONST, t->line);
		if (!strcmp(t->s, "true") || !strcmp(t->s, "True"))
			x->val = jv_true;
		else if (!strcmp(t->s, "false") || !strcmp(t->s, "False"))
			x->val = jv_false;
		else if (!strcmp(t->s, "none") || !strcmp(t->s, "None"))
			x->val = jv_none;
		else {
			x->t = E_NAME;
			x->name = t->s;
		}
		return x;
	case T_STRING: {
		struct jbuf b = { 0 };
		x = mk(p, E_CONST, t->line);
		while (cur(p)->type == T_STRING) {
			t = next(p);
			jb_put(p->c, &b, t->s, t->n);
		}
		x->val = jb_value(p->c, &b);
		return x;
	}
	case T_INT:
	case T_FLOAT:
		next(p);
		x = mk(p, E_CONST, t->line);
		x->val = t->type == T_INT ? jv_int(t->i) : jv_float(t->f);
		return x;
	case T_OP:
		if (skip_op(p, "(")) {
			x = parse_tuple(p, 1, 1);
			expect_op(p, ")");
			return x;
		}
		if (skip_op(p, "[")) {
			struct nvec v = { 0 };
			x = mk(p, E_LIST, t->line);
			while (!is_op(p, "]")) {
				if (v.n)
					expect_op(p, ",");
				if (is_op(p, "]"))
					break;
				nv_push(p, &v, parse_expression(p, 1));
			}
			next(p);
			x->v = v.v;
			x->n = v.n;
			return x;
		}
		if (skip_op(p, "{")) {
			struct nvec k = { 0 }, v = { 0 };
			x = mk(p, E_DICT, t->line);
			while (!is_op(p, "}")) {
				if (k.n)
					expect_op(p, ",");
				if (is_op(p, "}"))
					break;
				nv_push(p, &k, parse_expression(p, 1));
				expect_op(p, ":");
				nv_push(p, &v, parse_expression(p, 1));
			}
			next(p);
			x->v = k.v;
			x->kwv = v.v;
			x->n = k.n;
			return x;
		}
		/* fall through */
	default:
		pfail(p, "unexpected token in expression");
	}
}

static struct jnode *parse_subscript(struct ps *p, struct jnode *obj)
{
	struct jtok *t = next(p);
	struct jnode *x;
	if (!strcmp(t->s, ".")) {
		struct jtok *a = next(p);
		if (a->type == T_NAME) {
			x = mk(p, E_ATTR, t->line);
			x->a = obj;
			x->name = a->s;
			return x;
		}
		if (a->type != T_INT)
			pfail(p, "expected a name or number after '.'");
		x = mk(p, E_ITEM, t->line);
		x->a = obj;
		x->b = mk(p, E_CONST, t->line);
		x->b->val = jv_int(a->i);
		return x;
	}
	/* '[': an index or a slice a:b:c with every part optional */
	struct jnode *part[3] = { 0 };
	int k = 0;
	if (!is_op(p, ":"))
		part[0] = parse_expression(p, 1);
	if (is_op(p, ":")) {
		while (k < 2 && skip_op(p, ":")) {
			k++;
			if (!is_op(p, ":") && !is_op(p, "]"))
				part[k] = parse_expression(p, 1);
		}
		x = mk(p, E_SLICE, t->line);
		x->a = obj;
		x->b = part[0];
		x->c = part[1];
		x->d = part[2];
	} else {
		x = mk(p, E_ITEM, t->line);
		x->a = obj;
		x->b = part[0];
	}
	expect_op(p, "]");
	return x;
}

static struct jnode *parse_postfix(struct ps *p, struct jnode *x)
{
	for (;;) {
		if (is_op(p, ".") || is_op(p, "[")) {
			x = parse_subscript(p, x);
		} else if (is_op(p, "(")) {
			struct jnode *call = mk(p, E_CALL, cur(p)->line);
			call->a = x;
			parse_args(p, call);
			x = call;
		} else {
			return x;
		}
	}
}

static const char *dotted_name(struct ps *p)
{
	const char *nm = expect_name(p);
	while (is_op(p, ".")) {
		next(p);
		const char *more = expect_name(p);
		size_t a = strlen(nm), b = strlen(more);
		char *s = jz_alloc(p->c, a + b + 2);
		memcpy(s, nm, a);
		s[a] = '.';
		memcpy(s + a + 1, more, b + 1);
		nm = s;
	}
	return nm;
}

static struct jnode *parse_filter(struct ps *p, struct jnode *x)
{
	int line = cur(p)->line;
	const char *nm = dotted_name(p);
	struct jnode *f = mk(p, E_FILTER, line);
	if (!jz_filter(nm)) {
		p->c->line = line;
		jz_fail(p->c, FI_EFORMAT, "no filter named '%s'", nm);
	}
	f->a = x;
	f->name = nm;
	if (is_op(p, "("))
		parse_args(p, f);
	return f;
}

static struct jnode *parse_test(struct ps *p, struct jnode *x)
{
	int line = cur(p)->line;
	struct jnode *f = mk(p, E_TEST, line);
	f->op = skip_name(p, "not");
	f->name = dotted_name(p);
	f->a = x;
	if (!jz_test(f->name)) {
		p->c->line = line;
		jz_fail(p->c, FI_EFORMAT, "no test named '%s'", f->name);
	}
	struct jtok *t = cur(p);
	if (is_op(p, "(")) {
		parse_args(p, f);
	} else if ((t->type == T_NAME || t->type == T_STRING || t->type == T_INT ||
		    t->type == T_FLOAT || is_op(p, "[") || is_op(p, "{")) &&
		   !is_name(p, "else") && !is_name(p, "or") && !is_name(p, "and")) {
		if (is_name(p, "is"))
			pfail(p, "cannot chain multiple tests with 'is'");
		f->v = jz_alloc(p->c, sizeof *f->v);
		f->v[0] = parse_postfix(p, parse_primary(p));
		f->n = 1;
	}
	return f;
}

static struct jnode *parse_filter_expr(struct ps *p, struct jnode *x)
{
	for (;;) {
		if (skip_op(p, "|")) {
			x = parse_filter(p, x);
		} else if (skip_name(p, "is")) {
			x = parse_test(p, x);
		} else if (is_op(p, "(")) {
			struct jnode *call = mk(p, E_CALL, cur(p)->line);
			call->a = x;
			parse_args(p, call);
			x = call;
		} else {
			return x;
		}
	}
}

static struct jnode *parse_unary(struct ps *p, int with_filter)
{
	struct jnode *x;
	int line = cur(p)->line;
	jz_enter(p->c);
	if (skip_op(p, "-")) {
		x = mk(p, E_NEG, line);
		x->a = parse_unary(p, 0);
	} else if (skip_op(p, "+")) {
		x = mk(p, E_POS, line);
		x->a = parse_unary(p, 0);
	} else {
		x = parse_primary(p);
	}
	x = parse_postfix(p, x);
	if (with_filter)
		x = parse_filter_expr(p, x);
	jz_leave(p->c);
	return x;
}

static struct jnode *bin(struct ps *p, int type, int op, struct jnode *a, struct jnode *b, int line)
{
	struct jnode *x = mk(p, type, line);
	x->op = op;
	x->a = a;
	x->b = b;
	return x;
}

static struct jnode *parse_pow(struct ps *p)
{
	struct jnode *x = parse_unary(p, 1);
	while (is_op(p, "**")) {
		int line = next(p)->line;
		x = bin(p, E_BIN, OP_POW, x, parse_unary(p, 1), line);
	}
	return x;
}

static struct jnode *parse_math2(struct ps *p)
{
	struct jnode *x = parse_pow(p);
	for (;;) {
		int op;
		if (is_op(p, "*")) op = OP_MUL;
		else if (is_op(p, "/")) op = OP_DIV;
		else if (is_op(p, "//")) op = OP_FLOORDIV;
		else if (is_op(p, "%")) op = OP_MOD;
		else return x;
		int line = next(p)->line;
		x = bin(p, E_BIN, op, x, parse_pow(p), line);
	}
}

static struct jnode *parse_concat(struct ps *p)
{
	struct jnode *x = parse_math2(p);
	while (is_op(p, "~")) {
		int line = next(p)->line;
		x = bin(p, E_BIN, OP_CONCAT, x, parse_math2(p), line);
	}
	return x;
}

static struct jnode *parse_math1(struct ps *p)
{
	struct jnode *x = parse_concat(p);
	for (;;) {
		int op;
		if (is_op(p, "+")) op = OP_ADD;
		else if (is_op(p, "-")) op = OP_SUB;
		else return x;
		int line = next(p)->line;
		x = bin(p, E_BIN, op, x, parse_concat(p), line);
	}
}

static struct jnode *parse_compare(struct ps *p)
{
	int line = cur(p)->line;
	struct jnode *first = parse_math1(p);
	struct nvec v = { 0 };
	int ops[64], n = 0;
	for (;;) {
		int op;
		if (is_op(p, "==")) op = OP_EQ;
		else if (is_op(p, "!=")) op = OP_NE;
		else if (is_op(p, "<")) op = OP_LT;
		else if (is_op(p, "<=")) op = OP_LE;
		else if (is_op(p, ">")) op = OP_GT;
		else if (is_op(p, ">=")) op = OP_GE;
		else if (is_name(p, "in")) op = OP_IN;
		else if (is_name(p, "not") && p->t[p->i + 1].type == T_NAME &&
			 !strcmp(p->t[p->i + 1].s, "in")) {
			next(p);
			op = OP_NOTIN;
		} else
			break;
		next(p);
		if (n == 64)
			pfail(p, "comparison chain too long");
		if (!v.n)
			nv_push(p, &v, first);
		ops[n++] = op;
		nv_push(p, &v, parse_math1(p));
	}
	if (!n)
		return first;
	struct jnode *x = mk(p, E_CMP, line);
	x->v = v.v;
	x->n = v.n;
	x->ops = jz_alloc(p->c, (size_t)n * sizeof(int));
	memcpy(x->ops, ops, (size_t)n * sizeof(int));
	return x;
}

static struct jnode *parse_not(struct ps *p)
{
	if (is_name(p, "not")) {
		int line = next(p)->line;
		jz_enter(p->c);
		struct jnode *x = mk(p, E_NOT, line);
		x->a = parse_not(p);
		jz_leave(p->c);
		return x;
	}
	return parse_compare(p);
}

static struct jnode *parse_and(struct ps *p)
{
	struct jnode *x = parse_not(p);
	while (is_name(p, "and")) {
		int line = next(p)->line;
		x = bin(p, E_AND, 0, x, parse_not(p), line);
	}
	return x;
}

static struct jnode *parse_or(struct ps *p)
{
	struct jnode *x = parse_and(p);
	while (is_name(p, "or")) {
		int line = next(p)->line;
		x = bin(p, E_OR, 0, x, parse_and(p), line);
	}
	return x;
}

static struct jnode *parse_expression(struct ps *p, int condexpr)
{
	struct jnode *x = parse_or(p);
	if (!condexpr)
		return x;
	jz_enter(p->c); /* 'a if b else c if d else ...' nests */
	while (is_name(p, "if")) {
		int line = next(p)->line;
		struct jnode *c = mk(p, E_COND, line);
		c->a = parse_or(p);
		c->b = x;
		if (skip_name(p, "else"))
			c->c = parse_expression(p, 1);
		x = c;
	}
	jz_leave(p->c);
	return x;
}

static int tuple_end(struct ps *p, int explicit_parens)
{
	struct jtok *t = cur(p);
	if (t->type == T_VAR_END || t->type == T_BLOCK_END || t->type == T_EOF)
		return 1;
	if (explicit_parens && is_op(p, ")"))
		return 1;
	return is_name(p, "recursive");
}

static struct jnode *parse_tuple(struct ps *p, int condexpr, int explicit_parens)
{
	int line = cur(p)->line, is_tuple = 0;
	struct nvec v = { 0 };
	for (;;) {
		if (v.n)
			expect_op(p, ",");
		if (tuple_end(p, explicit_parens))
			break;
		nv_push(p, &v, parse_expression(p, condexpr));
		if (is_op(p, ","))
			is_tuple = 1;
		else
			break;
	}
	if (!is_tuple) {
		if (v.n)
			return v.v[0];
		if (!explicit_parens)
			pfail(p, "expected an expression");
	}
	struct jnode *x = mk(p, E_TUPLE, line);
	x->v = v.v;
	x->n = v.n;
	return x;
}

/* Assignment targets: a name, name.attr (namespaces, when allowed) or names a, b. */
static struct jnode *parse_target(struct ps *p, int with_ns)
{
	int line = cur(p)->line, paren = skip_op(p, "(");
	struct nvec v = { 0 };
	do {
		struct jnode *x = mk(p, E_NAME, cur(p)->line);
		x->name = expect_name(p);
		if (with_ns && !v.n && is_op(p, ".")) {
			next(p);
			struct jnode *a = mk(p, E_ATTR, x->line);
			a->a = x;
			a->name = expect_name(p);
			return a;
		}
		nv_push(p, &v, x);
	} while (skip_op(p, ",") && cur(p)->type == T_NAME);
	if (paren)
		expect_op(p, ")");
	if (v.n == 1 && !paren)
		return v.v[0];
	struct jnode *x = mk(p, E_TUPLE, line);
	x->v = v.v;
	x->n = v.n;
	return x;
}

static struct nvec parse_body(struct ps *p, const char *const *ends, const char *block);

static void body_until(struct ps *p, struct jnode *x, const char *const *ends, const char *blk,
		       int *which)
{
	struct nvec v = parse_body(p, ends, blk);
	x->v = v.v;
	x->n = v.n;
	const char *e = next(p)->s;
	for (*which = 0; strcmp(ends[*which], e); (*which)++)
		;
}

static struct jnode *parse_statement(struct ps *p, int elif)
{
	struct jtok *t = cur(p);
	int line = t->line, which;
	if (t->type != T_NAME)
		pfail(p, "expected a tag name");
	const char *tag = next(p)->s;
	struct jnode *x;
	if (!strcmp(tag, "for")) {
		static const char *const e1[] = { "endfor", "else", NULL }, *const e2[] = { "endfor", NULL };
		x = mk(p, N_FOR, line);
		x->a = parse_target(p, 0);
		if (!skip_name(p, "in"))
			pfail(p, "expected 'in'");
		x->b = parse_tuple(p, 0, 0);
		if (skip_name(p, "if"))
			x->c = parse_expression(p, 1);
		if (is_name(p, "recursive"))
			pfail(p, "recursive loops are not supported");
		expect_block_end(p);
		p->loops++;
		body_until(p, x, e1, "for", &which);
		p->loops--;
		if (which == 1) {
			struct jnode tmp = { 0 };
			expect_block_end(p);
			body_until(p, &tmp, e2, "for", &which);
			x->els = tmp.v;
			x->nels = tmp.n;
		}
	} else if (!strcmp(tag, "if") || (elif && !strcmp(tag, "elif"))) {
		static const char *const e1[] = { "endif", "elif", "else", NULL }, *const e2[] = { "endif", NULL };
		x = mk(p, N_IF, line);
		x->a = parse_tuple(p, 0, 0);
		expect_block_end(p);
		body_until(p, x, e1, "if", &which);
		if (which == 1) {
			p->i--; /* the elif tag parses as a nested if */
			x->els = jz_alloc(p->c, sizeof *x->els);
			x->els[0] = parse_statement(p, 1);
			x->nels = 1;
			return x; /* the nested if consumed endif */
		}
		if (which == 2) {
			struct jnode tmp = { 0 };
			expect_block_end(p);
			body_until(p, &tmp, e2, "if", &which);
			x->els = tmp.v;
			x->nels = tmp.n;
		}
	} else if (!strcmp(tag, "set")) {
		static const char *const e1[] = { "endset", NULL };
		struct jnode *target = parse_target(p, 1);
		if (skip_op(p, "=")) {
			x = mk(p, N_SET, line);
			x->a = target;
			x->b = parse_tuple(p, 1, 0);
		} else {
			x = mk(p, N_SETBLOCK, line);
			x->a = target;
			while (skip_op(p, "|"))
				x->d = parse_filter(p, x->d);
			expect_block_end(p);
			body_until(p, x, e1, "set", &which);
		}
	} else if (!strcmp(tag, "macro")) {
		static const char *const e1[] = { "endmacro", NULL };
		struct nvec defs = { 0 };
		const char **names = NULL;
		int nn = 0, saved = p->loops;
		x = mk(p, N_MACRO, line);
		x->name = expect_name(p);
		expect_op(p, "(");
		while (!is_op(p, ")")) {
			if (nn)
				expect_op(p, ",");
			const char **nw = jz_alloc(p->c, (size_t)(nn + 1) * sizeof *nw);
			if (nn)
				memcpy(nw, names, (size_t)nn * sizeof *nw);
			names = nw;
			names[nn++] = expect_name(p);
			nv_push(p, &defs, skip_op(p, "=") ? parse_expression(p, 1) : NULL);
		}
		next(p);
		x->kwn = names;
		x->kwv = defs.v;
		x->nkw = nn;
		expect_block_end(p);
		p->loops = 0;
		body_until(p, x, e1, "macro", &which);
		p->loops = saved;
		if (cur(p)->type == T_NAME)
			next(p);
	} else if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
		if (!p->loops) {
			p->c->line = line;
			jz_fail(p->c, FI_EFORMAT, "'%s' outside of a loop", tag);
		}
		x = mk(p, tag[0] == 'b' ? N_BREAK : N_CONTINUE, line);
	} else if (!strcmp(tag, "generation")) {
		/* transformers' assistant-mask tag: renders its body unchanged */
		static const char *const e1[] = { "endgeneration", NULL };
		x = mk(p, N_BLOCK, line);
		expect_block_end(p);
		body_until(p, x, e1, "generation", &which);
	} else if (!strcmp(tag, "filter")) {
		static const char *const e1[] = { "endfilter", NULL };
		x = mk(p, N_FILTERBLOCK, line);
		x->d = parse_filter(p, NULL);
		while (skip_op(p, "|"))
			x->d = parse_filter(p, x->d);
		expect_block_end(p);
		body_until(p, x, e1, "filter", &which);
	} else {
		p->c->line = line;
		jz_fail(p->c, FI_EUNSUPPORTED, "unknown or unsupported tag '%s'", tag);
	}
	expect_block_end(p);
	return x;
}

/* Statements up to a block tag named in ends (left at that name) or the end of the template. */
static struct nvec parse_body(struct ps *p, const char *const *ends, const char *block)
{
	struct nvec v = { 0 };
	jz_enter(p->c);
	for (;;) {
		struct jtok *t = cur(p);
		int line = t->line;
		if (t->type == T_EOF) {
			if (ends) {
				p->c->line = line;
				jz_fail(p->c, FI_EFORMAT,
					"unexpected end of template: the '%s' block is not closed (expected '%s')",
					block, ends[0]);
			}
			break;
		}
		next(p);
		if (t->type == T_DATA) {
			struct jnode *x = mk(p, N_DATA, line);
			x->name = t->s;
			x->len = t->n;
			nv_push(p, &v, x);
		} else if (t->type == T_VAR_BEGIN) {
			struct jnode *x = mk(p, N_OUTPUT, line);
			x->a = parse_tuple(p, 1, 0);
			if (cur(p)->type != T_VAR_END)
				pfail(p, "expected end of print statement");
			next(p);
			nv_push(p, &v, x);
		} else if (t->type == T_BLOCK_BEGIN) {
			struct jtok *nm = cur(p);
			if (nm->type == T_NAME && ends)
				for (int k = 0; ends[k]; k++)
					if (!strcmp(nm->s, ends[k])) {
						jz_leave(p->c);
						return v;
					}
			nv_push(p, &v, parse_statement(p, 0));
		} else {
			p->i--;
			pfail(p, "unexpected token");
		}
	}
	jz_leave(p->c);
	return v;
}

fi_err jz_parse(struct jz_template *t, const char *src, size_t n, struct jz_ctx *c)
{
	struct jtok *toks;
	c->arena = &t->arena;
	if (setjmp(c->jb))
		return c->code;
	size_t nt = jz_lex(c, src, n, &toks);
	struct ps p = { .c = c, .t = toks, .n = nt };
	struct nvec v = parse_body(&p, NULL, NULL);
	t->body = v.v;
	t->n = v.n;
	return FI_OK;
}
