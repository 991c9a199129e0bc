/* jinja_parse: the parser's shared state and helpers, used by jinja_parse.c (expressions)
 * and jinja_stmt.c (statements). Internal to libfi. */
#ifndef FI_JINJA_PARSE_H
#define FI_JINJA_PARSE_H

#include "jinja.h"

struct jparser {
	struct jz_ctx *c;
	struct jtok *t;
	size_t i, n;
	int loops; /* enclosing for loops (break/continue are valid inside) */
};

struct nvec {
	struct jnode **v;
	int n, cap;
};

void jp_push(struct jparser *p, struct nvec *v, struct jnode *x);
struct jtok *jp_cur(struct jparser *p);
struct jtok *jp_next(struct jparser *p);
_Noreturn void jp_fail(struct jparser *p, const char *what);
int jp_is_op(struct jparser *p, const char *op);
int jp_is_name(struct jparser *p, const char *nm);
int jp_skip_op(struct jparser *p, const char *op);
int jp_skip_name(struct jparser *p, const char *nm);
void jp_expect_op(struct jparser *p, const char *op);
const char *jp_expect_name(struct jparser *p);
void jp_expect_block_end(struct jparser *p);
struct jnode *jp_mk(struct jparser *p, int type, int line);
/* An expression (with `a if b else c` when condexpr), a possibly implicit tuple, an
 * assignment target (name, ns.attr when with_ns, or names a, b) and one filter applied to x. */
struct jnode *jp_expression(struct jparser *p, int condexpr);
struct jnode *jp_tuple(struct jparser *p, int condexpr, int explicit_parens);
struct jnode *jp_target(struct jparser *p, int with_ns);
struct jnode *jp_filter(struct jparser *p, struct jnode *x);

#endif
