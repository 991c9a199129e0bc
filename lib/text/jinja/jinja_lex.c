/* jinja_lex: template text -> tokens, with jinja2's whitespace rules as transformers sets
 * them (trim_blocks: drop the newline after a block or comment tag; lstrip_blocks: drop the
 * spaces and tabs before a block or comment tag that starts its line; '-' strips all
 * whitespace on that side, '+' keeps it) and its newline handling (\r\n and \r become \n; one
 * trailing newline of the template is dropped). Comments and {% raw %} resolve here. */
#include "jinja.h"

#include <ctype.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct lx {
	struct jz_ctx *c;
	const char *s;
	size_t n, pos;
	int line, line_starting;
	struct jtok *t;
	size_t nt, cap;
};

static struct jtok *emit(struct lx *x, int type, int line)
{
	if (x->nt == x->cap) {
		size_t cap = x->cap ? 2 * x->cap : 256;
		struct jtok *t = jz_alloc(x->c, cap * sizeof *t);
		if (x->nt)
			memcpy(t, x->t, x->nt * sizeof *t);
		x->t = t;
		x->cap = cap;
	}
	struct jtok *t = &x->t[x->nt++];
	memset(t, 0, sizeof *t);
	t->type = type;
	t->line = line;
	return t;
}

static _Noreturn void lfail(struct lx *x, const char *msg)
{
	x->c->line = x->line;
	jz_fail(x->c, FI_EFORMAT, "%s", msg);
}

static void count_lines(struct lx *x, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		x->line += x->s[i] == '\n';
}

/* Length of s[0..n) once trailing whitespace (Python's rstrip()) is removed. */
static size_t rstrip_len(const char *s, size_t n)
{
	while (n > 0) {
		size_t st = n - 1;
		while (st > 0 && ((unsigned char)s[st] & 0xc0) == 0x80)
			st--;
		size_t p = st;
		if (!ju_isspace(ju_decode(s, n, &p)))
			break;
		n = st;
	}
	return n;
}

static size_t skip_space(const char *s, size_t n, size_t i)
{
	while (i < n) {
		size_t p = i;
		if (!ju_isspace(ju_decode(s, n, &p)))
			break;
		i = p;
	}
	return i;
}

/* Emits the text before a tag, stripped as its sign and lstrip_blocks say. */
static void emit_text(struct lx *x, size_t from, size_t to, int sign, int lstrip_ok)
{
	const char *s = x->s + from;
	size_t n = to - from;
	int line = x->line;
	if (sign == '-') {
		n = rstrip_len(s, n);
	} else if (sign != '+' && lstrip_ok) {
		size_t l = n;
		while (l > 0 && s[l - 1] != '\n')
			l--;
		if (l > 0 || x->line_starting) {
			/* Python's \s: any Unicode whitespace (there is no newline after l) */
			if (n > l && skip_space(s, n, l) == n)
				n = l;
		}
	}
	count_lines(x, from, to);
	if (n) {
		struct jtok *t = emit(x, T_DATA, line);
		t->s = s;
		t->n = n;
	}
}

static void put_utf8(char *o, size_t *k, int cp)
{
	if (cp < 0 || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
		cp = 0xfffd;
	if (cp < 0x80) {
		o[(*k)++] = (char)cp;
	} else if (cp < 0x800) {
		o[(*k)++] = (char)(0xc0 | cp >> 6);
		o[(*k)++] = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		o[(*k)++] = (char)(0xe0 | cp >> 12);
		o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[(*k)++] = (char)(0x80 | (cp & 0x3f));
	} else {
		o[(*k)++] = (char)(0xf0 | cp >> 18);
		o[(*k)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
		o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[(*k)++] = (char)(0x80 | (cp & 0x3f));
	}
}

/* A string literal: Python escapes (\n, \t, \xhh, \uhhhh, \Uhhhhhhhh, octal, ...). */
static void lex_string(struct lx *x)
{
	const char *s = x->s;
	char q = s[x->pos];
	size_t i = x->pos + 1, k = 0;
	int line = x->line;
	while (i < x->n && s[i] != q) {
		if (s[i] == '\\' && i + 1 < x->n)
			i++;
		i++;
	}
	if (i >= x->n)
		lfail(x, "unexpected end of string literal");
	/* decoded text is never longer than the source */
	char *o = jz_alloc(x->c, i - x->pos + 4);
	for (size_t j = x->pos + 1; j < i; j++) {
		if (s[j] != '\\') {
			o[k++] = s[j];
			continue;
		}
		char e = s[++j];
		int cp = -1, nd = 0, base = 16;
		switch (e) {
		case '\n': continue;
		case '\\': case '\'': case '"': o[k++] = e; continue;
		case 'a': o[k++] = 7; continue;
		case 'b': o[k++] = 8; continue;
		case 'f': o[k++] = 12; continue;
		case 'n': o[k++] = '\n'; continue;
		case 'r': o[k++] = '\r'; continue;
		case 't': o[k++] = '\t'; continue;
		case 'v': o[k++] = 11; continue;
		case 'x': nd = 2; break;
		case 'u': nd = 4; break;
		case 'U': nd = 8; break;
		case 'N': lfail(x, "\\N{...} escapes are not supported");
		default:
			if (e >= '0' && e <= '7') {
				cp = 0;
				for (int d = 0; d < 3 && j < i && s[j] >= '0' && s[j] <= '7'; d++, j++)
					cp = cp * 8 + (s[j] - '0');
				j--;
				put_utf8(o, &k, cp);
				continue;
			}
			o[k++] = '\\';
			o[k++] = e;
			continue;
		}
		/* eight hex digits reach 2^32: unsigned, then refused past
		 * U+10FFFF as Python's unicode-escape does */
		uint32_t u = 0;
		for (int d = 0; d < nd; d++) {
			char h = j + 1 + d < i ? s[j + 1 + d] : 0;
			if (!isxdigit((unsigned char)h))
				lfail(x, "truncated escape in string literal");
			u = u * (uint32_t)base + (uint32_t)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
		}
		if (u > 0x10ffff)
			lfail(x, "illegal Unicode character in string literal");
		cp = (int)u;
		j += nd;
		put_utf8(o, &k, cp);
	}
	o[k] = 0;
	count_lines(x, x->pos, i + 1);
	struct jtok *t = emit(x, T_STRING, line);
	t->s = o;
	t->n = k;
	x->pos = i + 1;
}

static void lex_number(struct lx *x)
{
	const char *s = x->s;
	size_t i = x->pos, st = i;
	int is_float = 0;
	char buf[128];
	size_t k = 0;
#define DIGITS() do { while (i < x->n && (isdigit((unsigned char)s[i]) || (s[i] == '_' && i + 1 < x->n && isdigit((unsigned char)s[i + 1])))) { if (s[i] != '_' && k < sizeof buf - 8) buf[k++] = s[i]; i++; } } while (0)
	DIGITS();
	int after_dot = st > 0 && s[st - 1] == '.';
	if (!after_dot && i + 1 < x->n && s[i] == '.' && isdigit((unsigned char)s[i + 1])) {
		buf[k++] = s[i++];
		DIGITS();
		is_float = 1;
	}
	if (!after_dot && i < x->n && (s[i] == 'e' || s[i] == 'E')) {
		size_t j = i + 1;
		if (j < x->n && (s[j] == '+' || s[j] == '-'))
			j++;
		if (j < x->n && isdigit((unsigned char)s[j])) {
			buf[k++] = 'e';
			i++;
			if (s[i] == '+' || s[i] == '-')
				buf[k++] = s[i++];
			DIGITS();
			is_float = 1;
		}
	}
#undef DIGITS
	buf[k] = 0;
	struct jtok *t = emit(x, is_float ? T_FLOAT : T_INT, x->line);
	errno = 0;
	if (is_float) {
		t->f = strtod(buf, NULL);
	} else {
		t->i = strtoll(buf, NULL, 10);
		if (errno == ERANGE)
			lfail(x, "integer literal too large");
	}
	x->pos = i;
}

static const char *const ops[] = { "**", "//", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%",
				   "~", "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":",
				   "|", ",", ";" };

/* Tokens of one {{ }} or {% %} tag, up to and including its end. */
static void lex_tag(struct lx *x, int block)
{
	const char *s = x->s;
	char stack[64];
	int depth = 0;
	for (;;) {
		size_t i = x->pos;
		if (i >= x->n)
			lfail(x, block ? "unexpected end of template in a block tag" :
					 "unexpected end of template in a print tag");
		if (!depth) {
			const char *e = block ? "%}" : "}}";
			if (s[i] == '-' && !strncmp(s + i + 1, e, 2)) {
				size_t j = skip_space(s, x->n, i + 3);
				emit(x, block ? T_BLOCK_END : T_VAR_END, x->line);
				count_lines(x, i, j);
				x->pos = j;
				x->line_starting = j > 0 && s[j - 1] == '\n';
				return;
			}
			if (block && s[i] == '+' && !strncmp(s + i + 1, e, 2)) {
				emit(x, T_BLOCK_END, x->line);
				x->pos = i + 3;
				x->line_starting = 0;
				return;
			}
			if (!strncmp(s + i, e, 2)) {
				size_t j = i + 2;
				if (block && j < x->n && s[j] == '\n')
					j++;
				emit(x, block ? T_BLOCK_END : T_VAR_END, x->line);
				count_lines(x, i, j);
				x->pos = j;
				x->line_starting = s[j - 1] == '\n';
				return;
			}
		}
		unsigned char ch = (unsigned char)s[i];
		if (isspace(ch)) {
			x->line += ch == '\n';
			x->pos++;
		} else if (isdigit(ch)) {
			lex_number(x);
		} else if (isalpha(ch) || ch == '_') {
			size_t j = i;
			while (j < x->n && (isalnum((unsigned char)s[j]) || s[j] == '_'))
				j++;
			struct jtok *t = emit(x, T_NAME, x->line);
			t->s = jz_strndup(x->c, s + i, j - i);
			t->n = j - i;
			x->pos = j;
		} else if (ch == '\'' || ch == '"') {
			lex_string(x);
		} else {
			size_t k;
			for (k = 0; k < sizeof ops / sizeof *ops; k++)
				if (!strncmp(s + i, ops[k], strlen(ops[k])))
					break;
			if (k == sizeof ops / sizeof *ops) {
				x->c->line = x->line;
				jz_fail(x->c, FI_EFORMAT, "unexpected char '%c'", ch);
			}
			char o = ops[k][0];
			if (!ops[k][1] && (o == '(' || o == '[' || o == '{')) {
				if (depth == (int)sizeof stack)
					lfail(x, "brackets nested too deeply");
				stack[depth++] = o == '(' ? ')' : o == '[' ? ']' : '}';
			} else if (!ops[k][1] && (o == ')' || o == ']' || o == '}')) {
				if (!depth || stack[depth - 1] != o) {
					x->c->line = x->line;
					jz_fail(x->c, FI_EFORMAT, "unexpected '%c'", o);
				}
				depth--;
			}
			struct jtok *t = emit(x, T_OP, x->line);
			t->s = ops[k];
			t->n = strlen(ops[k]);
			x->pos += t->n;
		}
	}
}

/* End of a "{% raw %}" tag whose "{%" and sign end at p, or 0 when the tag is not raw. */
static size_t raw_begin(const char *s, size_t n, size_t p)
{
	p = skip_space(s, n, p);
	if (strncmp(s + p, "raw", 3))
		return 0;
	p = skip_space(s, n, p + 3);
	if (s[p] == '-' && !strncmp(s + p + 1, "%}", 2))
		return skip_space(s, n, p + 3);
	if (!strncmp(s + p, "%}", 2))
		return p + 2;
	return 0;
}

/* The body of a raw block up to and including its {% endraw %}; x->pos is at the body. */
static void raw_body(struct lx *x)
{
	const char *s = x->s;
	size_t n = x->n, p = x->pos;
	for (size_t i = p; i + 1 < n; i++) {
		if (s[i] != '{' || s[i + 1] != '%')
			continue;
		size_t j = i + 2;
		int sign = 0;
		if (s[j] == '-' || s[j] == '+')
			sign = s[j++];
		j = skip_space(s, n, j);
		if (strncmp(s + j, "endraw", 6))
			continue;
		j = skip_space(s, n, j + 6);
		size_t end;
		if (s[j] == '+' && !strncmp(s + j + 1, "%}", 2))
			end = j + 3;
		else if (s[j] == '-' && !strncmp(s + j + 1, "%}", 2))
			end = skip_space(s, n, j + 3);
		else if (!strncmp(s + j, "%}", 2))
			end = j + 2 + (j + 2 < n && s[j + 2] == '\n');
		else
			continue;
		emit_text(x, p, i, sign, 1);
		count_lines(x, i, end);
		x->pos = end;
		x->line_starting = s[end - 1] == '\n';
		return;
	}
	lfail(x, "missing end of raw directive");
}

size_t jz_lex(struct jz_ctx *c, const char *src, size_t n, struct jtok **out)
{
	struct lx x = { .c = c, .line = 1, .line_starting = 1 };
	char *s = jz_alloc(c, n + 4);
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (src[i] == '\r') {
			s[k++] = '\n';
			if (i + 1 < n && src[i + 1] == '\n')
				i++;
		} else {
			s[k++] = src[i];
		}
	}
	if (k && s[k - 1] == '\n')
		k--;
	s[k] = 0;
	x.s = s;
	x.n = k;
	while (x.pos < x.n) {
		size_t i = x.pos;
		while (i + 1 < x.n && !(s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')))
			i++;
		if (i + 1 >= x.n) {
			emit_text(&x, x.pos, x.n, 0, 0);
			break;
		}
		char kind = s[i + 1];
		int sign = (s[i + 2] == '-' || s[i + 2] == '+') ? s[i + 2] : 0;
		size_t after = i + 2 + (sign ? 1 : 0);
		size_t rb = kind == '%' ? raw_begin(s, x.n, after) : 0;
		if (rb) {
			emit_text(&x, x.pos, i, sign, 1);
			count_lines(&x, i, rb);
			x.pos = rb;
			x.line_starting = s[rb - 1] == '\n';
			raw_body(&x);
			continue;
		}
		emit_text(&x, x.pos, i, sign, kind != '{');
		x.pos = after;
		x.line_starting = 0;
		if (kind == '#') {
			size_t j = x.pos;
			while (j + 1 < x.n && !(s[j] == '#' && s[j + 1] == '}'))
				j++;
			if (j + 1 >= x.n)
				lfail(&x, "missing end of comment tag");
			size_t end = j + 2;
			if (j > x.pos && s[j - 1] == '-')
				end = skip_space(s, x.n, end);
			else if (!(j > x.pos && s[j - 1] == '+') && end < x.n && s[end] == '\n')
				end++;
			count_lines(&x, x.pos, end);
			x.pos = end;
			x.line_starting = s[end - 1] == '\n';
			continue;
		}
		emit(&x, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, x.line);
		lex_tag(&x, kind == '%');
	}
	emit(&x, T_EOF, x.line);
	*out = x.t;
	return x.nt;
}
