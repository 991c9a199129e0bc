/* jinja: the interpreter behind lib/text/chat.c, internal to libfi.
 *
 * A subset of Jinja2 as Hugging Face chat templates use it, with jinja2's semantics under
 * transformers' configuration (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
 * loopcontrols, the {% generation %} tag, default Undefined). Values follow Python: str, int,
 * float, bool, None, list, tuple, dict (insertion ordered), plus Undefined, namespace and callables.
 *
 * Memory: every value, node and buffer lives in an arena (jz_arena) freed at once; a template's
 * AST lives in the template's arena, one render's values in the render's arena (capped by
 * max_memory). Errors unwind with longjmp to the entry point (jz_parse, jz_render), which turns
 * them into fi_err with "chat template line N: ..." details. */
#ifndef FI_JINJA_H
#define FI_JINJA_H

#include <setjmp.h>
#include <stddef.h>

#include <jansson.h>

#include "base/err.h"

/* ---- arena ---- */
struct jz_chunk;
struct jz_arena {
	struct jz_chunk *head;
	size_t used;  /* bytes handed out so far */
	size_t limit; /* 0: unlimited */
};

/* ---- error context shared by lexer, parser and evaluator ---- */
struct jz_ctx {
	struct jz_arena *arena;
	jmp_buf jb;
	int line;           /* template line being run (for messages) */
	fi_err code;
	char msg[512];
	long long steps, max_steps;
	int depth, max_depth;
	size_t max_output;
	long long now;      /* strftime_now time, seconds since the epoch (UTC); <0: local now */
	int folding;        /* evaluating a print statement made of literals only */
};

void *jz_alloc(struct jz_ctx *c, size_t n);
char *jz_strndup(struct jz_ctx *c, const char *s, size_t n);
void jz_arena_free(struct jz_arena *a);
_Noreturn void jz_fail(struct jz_ctx *c, fi_err e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void jz_enter(struct jz_ctx *c); /* depth++ with the limit */
#define jz_leave(c) ((c)->depth--)

/* ---- values ---- */
enum jv_kind {
	JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_FUNC
};

struct jstr {
	size_t n;
	char p[]; /* n bytes of UTF-8 plus a NUL */
};
struct jlist;
struct jdict;
struct jfunc;

typedef struct jv {
	int k;
	int tuple; /* JV_LIST: a tuple (prints with parentheses) */
	union {
		long long i; /* JV_BOOL, JV_INT */
		double f;
		struct jstr *s;
		struct jlist *l;
		struct jdict *d; /* JV_DICT, JV_NS */
		struct jfunc *fn;
		const char *why; /* JV_UNDEF: the message raised when it is used */
	};
} jv;

struct jlist {
	size_t n, cap;
	jv *v;
	int is_range;        /* made by range(): prints as range(start, stop[, step]) */
	int is_gen;          /* a generator (map, select, ...): truthy, no len(), runs once */
	long long range[3];
};
struct jdict {
	size_t n, cap;
	jv *k, *v;
	size_t *ht, hcap; /* once large: open-addressing index of the str keys (entry + 1) */
};

/* Call arguments: positional then keyword. */
struct jargs {
	int n, nkw;
	jv *pos;
	const char **kwn;
	jv *kw;
};

typedef jv (*jz_builtin)(struct jz_ctx *c, jv self, struct jargs *a);
struct jnode;
struct jscope;
struct jfunc {
	const char *name;
	jz_builtin fn;          /* builtin (with self for bound methods) */
	jv self;
	struct jnode *macro;    /* or a macro */
	struct jscope *closure;
};

extern const jv jv_none, jv_true, jv_false;
jv jv_undef(const char *why);
jv jv_bool(int b);
jv jv_int(long long i);
jv jv_float(double f);
jv jv_str(struct jz_ctx *c, const char *s, size_t n);
jv jv_cstr(struct jz_ctx *c, const char *s);
jv jv_list(struct jz_ctx *c, size_t cap);
jv jv_dict(struct jz_ctx *c);
jv jv_func(struct jz_ctx *c, const char *name, jz_builtin fn, jv self);
void jv_push(struct jz_ctx *c, jv list, jv x);
void jv_dset(struct jz_ctx *c, struct jdict *d, jv key, jv val);
/* Adds a key the caller knows is absent, without the O(n) lookup. */
void jv_dappend(struct jz_ctx *c, struct jdict *d, jv key, jv val);
jv *jv_dget(struct jdict *d, jv key);        /* NULL when absent */
jv *jv_dgets(struct jdict *d, const char *key);
const char *jv_typename(jv v);               /* Python's: 'str', 'int', 'dict', ... */

int jv_truthy(jv v);
int jv_eq(jv a, jv b);
int jv_cmp(struct jz_ctx *c, jv a, jv b);    /* <0, 0, >0; TypeError when unordered */
int jv_is_num(jv v);                          /* bool, int, float */
double jv_num(jv v);

/* Output buffer. */
struct jbuf {
	char *p;
	size_t n, cap;
};
void jb_put(struct jz_ctx *c, struct jbuf *b, const char *s, size_t n);
void jb_puts(struct jz_ctx *c, struct jbuf *b, const char *s);
void jb_printf(struct jz_ctx *c, struct jbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
jv jb_value(struct jz_ctx *c, struct jbuf *b);

/* Python str() and repr() of a value, appended to b. */
void jv_str_into(struct jz_ctx *c, struct jbuf *b, jv v);
void jv_repr_into(struct jz_ctx *c, struct jbuf *b, jv v);
jv jv_to_str(struct jz_ctx *c, jv v);  /* str(v) as a JV_STR (v itself when already one) */
void jz_float_repr(char *out, size_t cap, double f);
/* json.dumps(v, ensure_ascii, indent, separators, sort_keys); indent NULL: none. */
struct jz_json {
	const char *indent, *item_sep, *key_sep;
	int sort_keys, ensure_ascii;
};
void jv_tojson_into(struct jz_ctx *c, struct jbuf *b, jv v, const struct jz_json *o, int level);
jv jv_from_json(struct jz_ctx *c, json_t *j);

/* UTF-8 helpers: codepoint count, byte offset of codepoint i, decode one. */
size_t ju_len(const char *s, size_t n);
size_t ju_offset(const char *s, size_t n, size_t i);
int ju_decode(const char *s, size_t n, size_t *pos); /* returns the codepoint, advances *pos */
int ju_isspace(int cp);

/* ---- templates ---- */
enum jtok_type {
	T_EOF, T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STRING,
	T_INT, T_FLOAT, T_OP
};
struct jtok {
	int type, line;
	const char *s; /* T_DATA, T_STRING (decoded), T_NAME, T_OP; NUL-terminated */
	size_t n;
	long long i;
	double f;
};
/* Splits a template into tokens (lstrip/trim/'-' whitespace control, comments and raw blocks
 * resolved). Returns the count; *out is arena-allocated and ends with T_EOF. */
size_t jz_lex(struct jz_ctx *c, const char *src, size_t n, struct jtok **out);

enum jnode_type {
	/* statements */
	N_DATA, N_OUTPUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_BREAK, N_CONTINUE, N_BLOCK,
	N_CALLBLOCK, N_FILTERBLOCK, N_WITH,
	/* expressions */
	E_CONST, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS, E_NOT,
	E_BIN, E_AND, E_OR, E_CMP, E_COND, E_LIST, E_TUPLE, E_DICT
};

struct jnode {
	int t, line;
	int op;             /* E_BIN/E_CMP operator (enum jop); E_TEST: negated */
	jv val;             /* E_CONST */
	const char *name;   /* E_NAME, E_ATTR, E_FILTER, E_TEST, N_MACRO, N_DATA text */
	size_t len;         /* N_DATA length */
	struct jnode *a, *b, *c, *d;
	struct jnode **v;   /* statement bodies, args, list items, E_CMP operands */
	int n;
	const char **kwn;   /* keyword names (calls; N_MACRO parameter names) */
	struct jnode **kwv; /* keyword values (calls; N_MACRO defaults, NULL when none) */
	int nkw;
	struct jnode **els; /* N_IF / N_FOR else body */
	int nels;
	int *ops;           /* E_CMP: operators between operands */
};

enum jop {
	OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT,
	OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN
};

struct jz_template {
	struct jz_arena arena;
	struct jnode **body;
	int n;
};
/* Parses src into t (t->arena owns everything). On failure returns the code with the
 * detail in c->msg. */
fi_err jz_parse(struct jz_template *t, const char *src, size_t n, struct jz_ctx *c);

/* Renders t with the variables of globals (a JV_DICT). On success *out is malloc'd. */
fi_err jz_render(const struct jz_template *t, struct jz_ctx *c, jv globals, char **out,
		 size_t *len);

/* ---- evaluator pieces shared between files ----
 * Layered so that no file reaches back up: jinja_value.c holds the helpers every evaluator
 * file uses (jz_step, jz_fail_undef, jz_msgf, jz_kwarg, jz_iterate, jz_contains); then
 * jinja_methods.c (str/list/dict methods, js_*), jinja_ops.c (lookups, slices, arithmetic),
 * jinja_filters.c (filters and tests), and jinja_eval.c on top. */
jv jz_call(struct jz_ctx *c, jv fn, struct jargs *a);
/* obj[a:b:st]; soft: a failure gives Undefined (jinja2's constant folding). */
jv jz_slice(struct jz_ctx *c, jv obj, jv a, jv b, jv st, int soft);
jv jz_arith(struct jz_ctx *c, int op, jv a, jv b);
void jz_step(struct jz_ctx *c); /* counts a loop iteration or call against max_steps */
_Noreturn void jz_fail_undef(struct jz_ctx *c, jv v);
/* An arena copy of fmt formatted with two strings. */
const char *jz_msgf(struct jz_ctx *c, const char *fmt, const char *a, const char *b);
jv jz_getattr(struct jz_ctx *c, jv obj, const char *name);
jv jz_getitem(struct jz_ctx *c, jv obj, jv key);
jv jz_method(struct jz_ctx *c, jv obj, const char *name); /* bound method or JV_UNDEF */
void jz_install_globals(struct jz_ctx *c, struct jdict *g);
/* Filters and tests by name; NULL when unknown (the parser rejects those, as jinja2 does). */
jz_builtin jz_filter(const char *name);
jz_builtin jz_test(const char *name);
int jz_test_arity(const char *name);
/* Iterates a value as jinja2's for does: a new list (dict: keys; str: characters). */
jv jz_iterate(struct jz_ctx *c, jv v);
jv jz_kwarg(struct jargs *a, int pos, const char *name); /* JV_UNDEF (why NULL) when absent */
int jz_contains(struct jz_ctx *c, jv hay, jv needle);
/* str.strip family (chars: JV_STR or anything else for whitespace), case mapping ('u' upper,
 * 'l' lower, 'c' capitalize, 't' str.title, 'j' jinja's title filter) and str.replace. */
jv js_strip(struct jz_ctx *c, jv s, jv chars, int left, int right);
jv js_case(struct jz_ctx *c, jv s, int mode);
jv js_replace(struct jz_ctx *c, jv s, jv old, jv new, long long count);
/* fmt % args (args: a tuple, a mapping for %(key)s, or one value). */
jv jz_percent_format(struct jz_ctx *c, jv fmt, jv args);

#endif
