/* jinja_parse: tokens -> syntax tree, following jinja2's parser (operator precedence,
 * filters binding tighter than binary operators, `is` tests, conditional expressions,
 * implicit tuples). Unknown filters, tests and tags are rejected here, as jinja2 rejects them
 * when it compiles a template, even where the template would never run them. */
#include "jinja_parse.h"

#include <string.h>

void jp_push(struct jparser *p, struct nvec *v, struct jnode *x)
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

struct jtok *jp_cur(struct jparser *p) { return &p->t[p->i]; }
struct jtok *jp_next(struct jparser *p)
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

_Noreturn void jp_fail(struct jparser *p, const char *what)
{
	struct jtok *t = jp_cur(p);
	p->c->line = t->line;
	jz_fail(p->c, FI_EFORMAT, "%s, got %s", what, tokdesc(t));
}

int jp_is_op(struct jparser *p, const char *op)
{
	struct jtok *t = jp_cur(p);
	return t->type == T_OP && !strcmp(t->s, op);
}
int jp_is_name(struct jparser *p, const char *nm)
{
	struct jtok *t = jp_cur(p);
	return t->type == T_NAME && !strcmp(t->s, nm);
}
int jp_skip_op(struct jparser *p, const char *op) { return jp_is_op(p, op) ? (jp_next(p), 1) : 0; }
int jp_skip_name(struct jparser *p, const char *nm) { return jp_is_name(p, nm) ? (jp_next(p), 1) : 0; }
void jp_expect_op(struct jparser *p, const char *op)
{
	char m[64];
	if (jp_skip_op(p, op))
		return;
	snprintf(m, sizeof m, "expected '%s'", op);
	jp_fail(p, m);
}
const char *jp_expect_name(struct jparser *p)
{
	if (jp_cur(p)->type != T_NAME)
		jp_fail(p, "expected a name");
	return jp_next(p)->s;
}
void jp_expect_block_end(struct jparser *p)
{
	if (jp_cur(p)->type != T_BLOCK_END)
		jp_fail(p, "expected end of statement block");
	jp_next(p);
}

struct jnode *jp_mk(struct jparser *p, int type, int line)
{
	struct jnode *x = jz_alloc(p->c, sizeof *x);
	x->t = type;
	x->line = line;
	return x;
}


static void parse_args(struct jparser *p, struct jnode *x)
{
	struct nvec pos = { 0 }, kwv = { 0 };
	const char **kwn = NULL;
	int nkw = 0, cap = 0;
	jp_expect_op(p, "(");
	while (!jp_is_op(p, ")")) {
		if (pos.n || nkw)
			jp_expect_op(p, ",");
		if (jp_is_op(p, ")"))
			break;
		if (jp_is_op(p, "*") || jp_is_op(p, "**"))
			jp_fail(p, "*args and **kwargs in calls are not supported");
		if (jp_cur(p)->type == T_NAME && p->t[p->i + 1].type == T_OP &&
		    !strcmp(p->t[p->i + 1].s, "=")) {
			const char *k = jp_next(p)->s;
			jp_next(p);
			if (nkw == cap) {
				cap = cap ? 2 * cap : 4;
				const char **nk = jz_alloc(p->c, (size_t)cap * sizeof *nk);
				if (nkw)
					memcpy(nk, kwn, (size_t)nkw * sizeof *nk);
				kwn = nk;
			}
			kwn[nkw++] = k;
			jp_push(p, &kwv, jp_expression(p, 1));
		} else {
			if (nkw)
				jp_fail(p, "positional argument after keyword argument");
			jp_push(p, &pos, jp_expression(p, 1));
		}
	}
	jp_next(p);
	x->v = pos.v;
	x->n = pos.n;
	x->kwn = kwn;
	x->kwv = kwv.v;
	x->nkw = nkw;
}

static struct jnode *parse_primary(struct jparser *p)
{
	struct jtok *t = jp_cur(p);
	struct jnode *x;
	switch (t->type) {
	case T_NAME:
		jp_next(p);
		x = jp_mk(p, E_CONST, t->line);
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
		x = jp_mk(p, E_CONST, t->line);
		while (jp_cur(p)->type == T_STRING) {
			t = jp_next(p);
			jb_put(p->c, &b, t->s, t->n);
		}
		x->val = jb_value(p->c, &b);
		return x;
	}
	case T_INT:
	case T_FLOAT:
		jp_next(p);
		x = jp_mk(p, E_CONST, t->line);
		x->val = t->type == T_INT ? jv_int(t->i) : jv_float(t->f);
		return x;
	case T_OP:
		if (jp_skip_op(p, "(")) {
			x = jp_tuple(p, 1, 1);
			jp_expect_op(p, ")");
			return x;
		}
		if (jp_skip_op(p, "[")) {
			struct nvec v = { 0 };
			x = jp_mk(p, E_LIST, t->line);
			while (!jp_is_op(p, "]")) {
				if (v.n)
					jp_expect_op(p, ",");
				if (jp_is_op(p, "]"))
					break;
				jp_push(p, &v, jp_expression(p, 1));
			}
			jp_next(p);
			x->v = v.v;
			x->n = v.n;
			return x;
		}
		if (jp_skip_op(p, "{")) {
			struct nvec k = { 0 }, v = { 0 };
			x = jp_mk(p, E_DICT, t->line);
			while (!jp_is_op(p, "}")) {
				if (k.n)
					jp_expect_op(p, ",");
				if (jp_is_op(p, "}"))
					break;
				jp_push(p, &k, jp_expression(p, 1));
				jp_expect_op(p, ":");
				jp_push(p, &v, jp_expression(p, 1));
			}
			jp_next(p);
			x->v = k.v;
			x->kwv = v.v;
			x->n = k.n;
			return x;
		}
		/* fall through */
	default:
		jp_fail(p, "unexpected token in expression");
	}
}

static struct jnode *parse_subscript(struct jparser *p, struct jnode *obj)
{
	struct jtok *t = jp_next(p);
	struct jnode *x;
	if (!strcmp(t->s, ".")) {
		struct jtok *a = jp_next(p);
		if (a->type == T_NAME) {
			x = jp_mk(p, E_ATTR, t->line);
			x->a = obj;
			x->name = a->s;
			return x;
		}
		if (a->type != T_INT)
			jp_fail(p, "expected a name or number after '.'");
		x = jp_mk(p, E_ITEM, t->line);
		x->a = obj;
		x->b = jp_mk(p, E_CONST, t->line);
		x->b->val = jv_int(a->i);
		return x;
	}
	/* '[': an index or a slice a:b:c with every part optional */
	struct jnode *part[3] = { 0 };
	int k = 0;
	if (!jp_is_op(p, ":"))
		part[0] = jp_expression(p, 1);
	if (jp_is_op(p, ":")) {
		while (k < 2 && jp_skip_op(p, ":")) {
			k++;
			if (!jp_is_op(p, ":") && !jp_is_op(p, "]"))
				part[k] = jp_expression(p, 1);
		}
		x = jp_mk(p, E_SLICE, t->line);
		x->a = obj;
		x->b = part[0];
		x->c = part[1];
		x->d = part[2];
	} else {
		x = jp_mk(p, E_ITEM, t->line);
		x->a = obj;
		x->b = part[0];
		if (jp_is_op(p, ",")) { /* a[1, 2]: the key is a tuple */
			struct nvec v = { 0 };
			jp_push(p, &v, part[0]);
			while (jp_skip_op(p, ",") && !jp_is_op(p, "]"))
				jp_push(p, &v, jp_expression(p, 1));
			x->b = jp_mk(p, E_TUPLE, t->line);
			x->b->v = v.v;
			x->b->n = v.n;
		}
	}
	jp_expect_op(p, "]");
	return x;
}

static struct jnode *parse_postfix(struct jparser *p, struct jnode *x)
{
	for (;;) {
		if (jp_is_op(p, ".") || jp_is_op(p, "[")) {
			x = parse_subscript(p, x);
		} else if (jp_is_op(p, "(")) {
			struct jnode *call = jp_mk(p, E_CALL, jp_cur(p)->line);
			call->a = x;
			parse_args(p, call);
			x = call;
		} else {
			return x;
		}
	}
}

static const char *dotted_name(struct jparser *p)
{
	const char *nm = jp_expect_name(p);
	while (jp_is_op(p, ".")) {
		jp_next(p);
		const char *more = jp_expect_name(p);
		size_t a = strlen(nm), b = strlen(more);
		char *s = jz_alloc(p->c, a + b + 2);
		memcpy(s, nm, a);
		s[a] = '.';
		memcpy(s + a + 1, more, b + 1);
		nm = s;
	}
	return nm;
}

struct jnode *jp_filter(struct jparser *p, struct jnode *x)
{
	int line = jp_cur(p)->line;
	const char *nm = dotted_name(p);
	struct jnode *f = jp_mk(p, E_FILTER, line);
	if (!jz_filter(nm)) {
		p->c->line = line;
		jz_fail(p->c, FI_EFORMAT, "no filter named '%s'", nm);
	}
	f->a = x;
	f->name = nm;
	if (jp_is_op(p, "("))
		parse_args(p, f);
	return f;
}

static struct jnode *parse_test(struct jparser *p, struct jnode *x)
{
	int line = jp_cur(p)->line;
	struct jnode *f = jp_mk(p, E_TEST, line);
	f->op = jp_skip_name(p, "not");
	f->name = dotted_name(p);
	f->a = x;
	if (!jz_test(f->name)) {
		p->c->line = line;
		jz_fail(p->c, FI_EFORMAT, "no test named '%s'", f->name);
	}
	struct jtok *t = jp_cur(p);
	if (jp_is_op(p, "(")) {
		parse_args(p, f);
	} else if ((t->type == T_NAME || t->type == T_STRING || t->type == T_INT ||
		    t->type == T_FLOAT || jp_is_op(p, "[") || jp_is_op(p, "{")) &&
		   !jp_is_name(p, "else") && !jp_is_name(p, "or") && !jp_is_name(p, "and")) {
		if (jp_is_name(p, "is"))
			jp_fail(p, "cannot chain multiple tests with 'is'");
		f->v = jz_alloc(p->c, sizeof *f->v);
		f->v[0] = parse_postfix(p, parse_primary(p));
		f->n = 1;
	}
	return f;
}

static struct jnode *parse_filter_expr(struct jparser *p, struct jnode *x)
{
	for (;;) {
		if (jp_skip_op(p, "|")) {
			x = jp_filter(p, x);
		} else if (jp_skip_name(p, "is")) {
			x = parse_test(p, x);
		} else if (jp_is_op(p, "(")) {
			struct jnode *call = jp_mk(p, E_CALL, jp_cur(p)->line);
			call->a = x;
			parse_args(p, call);
			x = call;
		} else {
			return x;
		}
	}
}

static struct jnode *parse_unary(struct jparser *p, int with_filter)
{
	struct jnode *x;
	int line = jp_cur(p)->line;
	p->c->line = jp_cur(p)->line;
	jz_enter(p->c);
	if (jp_skip_op(p, "-")) {
		x = jp_mk(p, E_NEG, line);
		x->a = parse_unary(p, 0);
	} else if (jp_skip_op(p, "+")) {
		x = jp_mk(p, E_POS, line);
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

static struct jnode *bin(struct jparser *p, int type, int op, struct jnode *a, struct jnode *b, int line)
{
	struct jnode *x = jp_mk(p, type, line);
	x->op = op;
	x->a = a;
	x->b = b;
	return x;
}

static struct jnode *parse_pow(struct jparser *p)
{
	struct jnode *x = parse_unary(p, 1);
	while (jp_is_op(p, "**")) {
		int line = jp_next(p)->line;
		x = bin(p, E_BIN, OP_POW, x, parse_unary(p, 1), line);
	}
	return x;
}

static struct jnode *parse_math2(struct jparser *p)
{
	struct jnode *x = parse_pow(p);
	for (;;) {
		int op;
		if (jp_is_op(p, "*")) op = OP_MUL;
		else if (jp_is_op(p, "/")) op = OP_DIV;
		else if (jp_is_op(p, "//")) op = OP_FLOORDIV;
		else if (jp_is_op(p, "%")) op = OP_MOD;
		else return x;
		int line = jp_next(p)->line;
		x = bin(p, E_BIN, op, x, parse_pow(p), line);
	}
}

static struct jnode *parse_concat(struct jparser *p)
{
	struct jnode *x = parse_math2(p);
	while (jp_is_op(p, "~")) {
		int line = jp_next(p)->line;
		x = bin(p, E_BIN, OP_CONCAT, x, parse_math2(p), line);
	}
	return x;
}

static struct jnode *parse_math1(struct jparser *p)
{
	struct jnode *x = parse_concat(p);
	for (;;) {
		int op;
		if (jp_is_op(p, "+")) op = OP_ADD;
		else if (jp_is_op(p, "-")) op = OP_SUB;
		else return x;
		int line = jp_next(p)->line;
		x = bin(p, E_BIN, op, x, parse_concat(p), line);
	}
}

static struct jnode *parse_compare(struct jparser *p)
{
	int line = jp_cur(p)->line;
	struct jnode *first = parse_math1(p);
	struct nvec v = { 0 };
	int ops[64], n = 0;
	for (;;) {
		int op;
		if (jp_is_op(p, "==")) op = OP_EQ;
		else if (jp_is_op(p, "!=")) op = OP_NE;
		else if (jp_is_op(p, "<")) op = OP_LT;
		else if (jp_is_op(p, "<=")) op = OP_LE;
		else if (jp_is_op(p, ">")) op = OP_GT;
		else if (jp_is_op(p, ">=")) op = OP_GE;
		else if (jp_is_name(p, "in")) op = OP_IN;
		else if (jp_is_name(p, "not") && p->t[p->i + 1].type == T_NAME &&
			 !strcmp(p->t[p->i + 1].s, "in")) {
			jp_next(p);
			op = OP_NOTIN;
		} else
			break;
		jp_next(p);
		if (n == 64)
			jp_fail(p, "comparison chain too long");
		if (!v.n)
			jp_push(p, &v, first);
		ops[n++] = op;
		jp_push(p, &v, parse_math1(p));
	}
	if (!n)
		return first;
	struct jnode *x = jp_mk(p, E_CMP, line);
	x->v = v.v;
	x->n = v.n;
	x->ops = jz_alloc(p->c, (size_t)n * sizeof(int));
	memcpy(x->ops, ops, (size_t)n * sizeof(int));
	return x;
}

static struct jnode *parse_not(struct jparser *p)
{
	if (jp_is_name(p, "not")) {
		int line = jp_next(p)->line;
		p->c->line = jp_cur(p)->line;
		jz_enter(p->c);
		struct jnode *x = jp_mk(p, E_NOT, line);
		x->a = parse_not(p);
		jz_leave(p->c);
		return x;
	}
	return parse_compare(p);
}

static struct jnode *parse_and(struct jparser *p)
{
	struct jnode *x = parse_not(p);
	while (jp_is_name(p, "and")) {
		int line = jp_next(p)->line;
		x = bin(p, E_AND, 0, x, parse_not(p), line);
	}
	return x;
}

static struct jnode *parse_or(struct jparser *p)
{
	struct jnode *x = parse_and(p);
	while (jp_is_name(p, "or")) {
		int line = jp_next(p)->line;
		x = bin(p, E_OR, 0, x, parse_and(p), line);
	}
	return x;
}

struct jnode *jp_expression(struct jparser *p, int condexpr)
{
	struct jnode *x = parse_or(p);
	if (!condexpr)
		return x;
	p->c->line = jp_cur(p)->line;
	jz_enter(p->c); /* 'a if b else c if d else ...' nests */
	while (jp_is_name(p, "if")) {
		int line = jp_next(p)->line;
		struct jnode *c = jp_mk(p, E_COND, line);
		c->a = parse_or(p);
		c->b = x;
		if (jp_skip_name(p, "else"))
			c->c = jp_expression(p, 1);
		x = c;
	}
	jz_leave(p->c);
	return x;
}

static int tuple_end(struct jparser *p, int explicit_parens)
{
	struct jtok *t = jp_cur(p);
	if (t->type == T_VAR_END || t->type == T_BLOCK_END || t->type == T_EOF)
		return 1;
	if (explicit_parens && jp_is_op(p, ")"))
		return 1;
	return jp_is_name(p, "recursive");
}

struct jnode *jp_tuple(struct jparser *p, int condexpr, int explicit_parens)
{
	int line = jp_cur(p)->line, is_tuple = 0;
	struct nvec v = { 0 };
	for (;;) {
		if (v.n)
			jp_expect_op(p, ",");
		if (tuple_end(p, explicit_parens))
			break;
		jp_push(p, &v, jp_expression(p, condexpr));
		if (jp_is_op(p, ","))
			is_tuple = 1;
		else
			break;
	}
	if (!is_tuple) {
		if (v.n)
			return v.v[0];
		if (!explicit_parens)
			jp_fail(p, "expected an expression");
	}
	struct jnode *x = jp_mk(p, E_TUPLE, line);
	x->v = v.v;
	x->n = v.n;
	return x;
}

/* Assignment targets: a name, name.attr (namespaces, when allowed) or names a, b. */
struct jnode *jp_target(struct jparser *p, int with_ns)
{
	int line = jp_cur(p)->line, paren = jp_skip_op(p, "(");
	struct nvec v = { 0 };
	do {
		struct jnode *x = jp_mk(p, E_NAME, jp_cur(p)->line);
		x->name = jp_expect_name(p);
		if (with_ns && !v.n && jp_is_op(p, ".")) {
			jp_next(p);
			struct jnode *a = jp_mk(p, E_ATTR, x->line);
			a->a = x;
			a->name = jp_expect_name(p);
			return a;
		}
		jp_push(p, &v, x);
	} while (jp_skip_op(p, ",") && jp_cur(p)->type == T_NAME);
	if (paren)
		jp_expect_op(p, ")");
	if (v.n == 1 && !paren)
		return v.v[0];
	struct jnode *x = jp_mk(p, E_TUPLE, line);
	x->v = v.v;
	x->n = v.n;
	return x;
}
