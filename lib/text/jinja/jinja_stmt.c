/* jinja_stmt: statements ({% for %}, {% if %}, {% set %}, {% macro %}, {% filter %},
 * {% generation %}, break/continue) and the template body; expressions are in jinja_parse.c. */
#include "jinja_parse.h"

#include <string.h>

static struct nvec parse_body(struct jparser *p, const char *const *ends, const char *block);

static void body_until(struct jparser *p, struct jnode *x, const char *const *ends, const char *blk,
		       int *which)
{
	struct nvec v = parse_body(p, ends, blk);
	x->v = v.v;
	x->n = v.n;
	const char *e = jp_next(p)->s;
	for (*which = 0; strcmp(ends[*which], e); (*which)++)
		;
}

/* (a, b=default, ...) of a macro or call block: names in kwn, defaults in kwv (NULL: none). */
static void parse_params(struct jparser *p, struct jnode *x)
{
	struct nvec defs = { 0 };
	const char **names = NULL;
	int nn = 0;
	jp_expect_op(p, "(");
	while (!jp_is_op(p, ")")) {
		if (nn)
			jp_expect_op(p, ",");
		const char **nw = jz_alloc(p->c, (size_t)(nn + 1) * sizeof *nw);
		if (nn)
			memcpy(nw, names, (size_t)nn * sizeof *nw);
		names = nw;
		names[nn++] = jp_expect_name(p);
		jp_push(p, &defs, jp_skip_op(p, "=") ? jp_expression(p, 1) : NULL);
	}
	jp_next(p);
	x->kwn = names;
	x->kwv = defs.v;
	x->nkw = nn;
}

static struct jnode *parse_statement(struct jparser *p, int elif)
{
	struct jtok *t = jp_cur(p);
	int line = t->line, which;
	if (t->type != T_NAME)
		jp_fail(p, "expected a tag name");
	const char *tag = jp_next(p)->s;
	struct jnode *x;
	if (!strcmp(tag, "for")) {
		static const char *const e1[] = { "endfor", "else", NULL }, *const e2[] = { "endfor", NULL };
		x = jp_mk(p, N_FOR, line);
		x->a = jp_target(p, 0);
		if (!jp_skip_name(p, "in"))
			jp_fail(p, "expected 'in'");
		x->b = jp_tuple(p, 0, 0);
		if (jp_skip_name(p, "if"))
			x->c = jp_expression(p, 1);
		if (jp_is_name(p, "recursive")) {
			p->c->line = line;
			jz_fail(p->c, FI_EUNSUPPORTED, "recursive loops are not supported");
		}
		jp_expect_block_end(p);
		p->loops++;
		body_until(p, x, e1, "for", &which);
		p->loops--;
		if (which == 1) {
			struct jnode tmp = { 0 };
			jp_expect_block_end(p);
			body_until(p, &tmp, e2, "for", &which);
			x->els = tmp.v;
			x->nels = tmp.n;
		}
	} else if (!strcmp(tag, "if") || (elif && !strcmp(tag, "elif"))) {
		static const char *const e1[] = { "endif", "elif", "else", NULL }, *const e2[] = { "endif", NULL };
		x = jp_mk(p, N_IF, line);
		x->a = jp_tuple(p, 0, 0);
		jp_expect_block_end(p);
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
			jp_expect_block_end(p);
			body_until(p, &tmp, e2, "if", &which);
			x->els = tmp.v;
			x->nels = tmp.n;
		}
	} else if (!strcmp(tag, "set")) {
		static const char *const e1[] = { "endset", NULL };
		struct jnode *target = jp_target(p, 1);
		if (jp_skip_op(p, "=")) {
			x = jp_mk(p, N_SET, line);
			x->a = target;
			x->b = jp_tuple(p, 1, 0);
		} else {
			x = jp_mk(p, N_SETBLOCK, line);
			x->a = target;
			while (jp_skip_op(p, "|"))
				x->d = jp_filter(p, x->d);
			jp_expect_block_end(p);
			body_until(p, x, e1, "set", &which);
		}
	} else if (!strcmp(tag, "macro")) {
		static const char *const e1[] = { "endmacro", NULL };
		int saved = p->loops;
		x = jp_mk(p, N_MACRO, line);
		x->name = jp_expect_name(p);
		parse_params(p, x);
		jp_expect_block_end(p);
		p->loops = 0;
		body_until(p, x, e1, "macro", &which);
		p->loops = saved;
		if (jp_cur(p)->type == T_NAME)
			jp_next(p);
	} else if (!strcmp(tag, "call")) {
		/* {% call(args) m(...) %}body{% endcall %}: m gets caller(), which renders body */
		static const char *const e1[] = { "endcall", NULL };
		int saved = p->loops;
		x = jp_mk(p, N_CALLBLOCK, line);
		x->name = "caller";
		if (jp_is_op(p, "("))
			parse_params(p, x);
		x->a = jp_expression(p, 1);
		if (x->a->t != E_CALL) {
			p->c->line = line;
			jz_fail(p->c, FI_EFORMAT, "expected a call after 'call'");
		}
		jp_expect_block_end(p);
		p->loops = 0;
		body_until(p, x, e1, "call", &which);
		p->loops = saved;
	} else if (!strcmp(tag, "with")) {
		static const char *const e1[] = { "endwith", NULL };
		struct jnode tmp = { 0 };
		struct nvec vals = { 0 };
		x = jp_mk(p, N_WITH, line);
		while (jp_cur(p)->type != T_BLOCK_END) {
			if (vals.n)
				jp_expect_op(p, ",");
			const char **nw = jz_alloc(p->c, (size_t)(vals.n + 1) * sizeof *nw);
			if (vals.n)
				memcpy(nw, x->kwn, (size_t)vals.n * sizeof *nw);
			x->kwn = nw;
			x->kwn[vals.n] = jp_expect_name(p);
			jp_expect_op(p, "=");
			jp_push(p, &vals, jp_expression(p, 1));
		}
		x->kwv = vals.v;
		x->nkw = vals.n;
		jp_expect_block_end(p);
		body_until(p, &tmp, e1, "with", &which);
		x->v = tmp.v;
		x->n = tmp.n;
	} else if (!strcmp(tag, "break") || !strcmp(tag, "continue")) {
		if (!p->loops) {
			p->c->line = line;
			jz_fail(p->c, FI_EFORMAT, "'%s' outside of a loop", tag);
		}
		x = jp_mk(p, tag[0] == 'b' ? N_BREAK : N_CONTINUE, line);
	} else if (!strcmp(tag, "generation")) {
		/* transformers' assistant-mask tag: renders its body unchanged */
		static const char *const e1[] = { "endgeneration", NULL };
		x = jp_mk(p, N_BLOCK, line);
		jp_expect_block_end(p);
		body_until(p, x, e1, "generation", &which);
	} else if (!strcmp(tag, "filter")) {
		static const char *const e1[] = { "endfilter", NULL };
		x = jp_mk(p, N_FILTERBLOCK, line);
		x->d = jp_filter(p, NULL);
		while (jp_skip_op(p, "|"))
			x->d = jp_filter(p, x->d);
		jp_expect_block_end(p);
		body_until(p, x, e1, "filter", &which);
	} else {
		p->c->line = line;
		jz_fail(p->c, FI_EUNSUPPORTED, "unknown or unsupported tag '%s'", tag);
	}
	jp_expect_block_end(p);
	return x;
}

/* Statements up to a block tag named in ends (left at that name) or the end of the template. */
static struct nvec parse_body(struct jparser *p, const char *const *ends, const char *block)
{
	struct nvec v = { 0 };
	p->c->line = jp_cur(p)->line;
	jz_enter(p->c);
	for (;;) {
		struct jtok *t = jp_cur(p);
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
		jp_next(p);
		if (t->type == T_DATA) {
			struct jnode *x = jp_mk(p, N_DATA, line);
			x->name = t->s;
			x->len = t->n;
			jp_push(p, &v, x);
		} else if (t->type == T_VAR_BEGIN) {
			struct jnode *x = jp_mk(p, N_OUTPUT, line);
			x->a = jp_tuple(p, 1, 0);
			if (jp_cur(p)->type != T_VAR_END)
				jp_fail(p, "expected end of print statement");
			jp_next(p);
			jp_push(p, &v, x);
		} else if (t->type == T_BLOCK_BEGIN) {
			struct jtok *nm = jp_cur(p);
			if (nm->type == T_NAME && ends)
				for (int k = 0; ends[k]; k++)
					if (!strcmp(nm->s, ends[k])) {
						jz_leave(p->c);
						return v;
					}
			jp_push(p, &v, parse_statement(p, 0));
		} else {
			p->i--;
			jp_fail(p, "unexpected token");
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
	struct jparser p = { .c = c, .t = toks, .n = nt };
	struct nvec v = parse_body(&p, NULL, NULL);
	t->body = v.v;
	t->n = v.n;
	return FI_OK;
}
