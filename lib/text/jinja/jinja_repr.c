/* jinja_repr: Python's str(), repr() and json.dumps() of template values, byte for byte,
 * since templates print dicts (`tool | string`) and JSON (`| tojson`) into prompts. */
#include "jinja.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

/* float.__repr__: the shortest digits that round-trip, fixed notation for exponents in
 * [-4, 16), else d.ddde+XX. */
void jz_float_repr(char *out, size_t cap, double f)
{
	char tmp[64], digits[32];
	int p, e, nd = 0;
	if (isnan(f)) {
		snprintf(out, cap, "nan");
		return;
	}
	if (isinf(f)) {
		snprintf(out, cap, f < 0 ? "-inf" : "inf");
		return;
	}
	for (p = 0; p < 17; p++) {
		snprintf(tmp, sizeof tmp, "%.*e", p, f);
		if (strtod(tmp, NULL) == f)
			break;
	}
	/* tmp: [-]d[.ddd]e[+-]XX */
	char *s = tmp, *ep = strchr(tmp, 'e');
	int neg = *s == '-';
	if (neg)
		s++;
	for (; s < ep; s++)
		if (*s != '.')
			digits[nd++] = *s;
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = 0;
	e = atoi(ep + 1);
	char *o = out;
	size_t left = cap;
#define PUT(...) do { int k_ = snprintf(o, left, __VA_ARGS__); if (k_ > 0 && (size_t)k_ < left) { o += k_; left -= k_; } } while (0)
	if (neg)
		PUT("-");
	if (e >= -4 && e < 16) {
		if (e < 0) {
			PUT("0.");
			for (int i = 0; i < -e - 1; i++)
				PUT("0");
			PUT("%s", digits);
		} else {
			for (int i = 0; i <= e; i++)
				PUT("%c", i < nd ? digits[i] : '0');
			PUT(".");
			if (nd > e + 1)
				PUT("%s", digits + e + 1);
			else
				PUT("0");
		}
	} else {
		PUT("%c", digits[0]);
		if (nd > 1)
			PUT(".%s", digits + 1);
		PUT("e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
	}
#undef PUT
}

static int printable(int cp)
{
	if (cp == ' ')
		return 1;
	switch (utf8proc_category(cp)) {
	case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
	case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL:
	case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
		return 0;
	default:
		return 1;
	}
}

static void repr_str(struct jz_ctx *c, struct jbuf *b, const char *s, size_t n)
{
	char q = '\'';
	if (memchr(s, '\'', n) && !memchr(s, '"', n))
		q = '"';
	jb_put(c, b, &q, 1);
	for (size_t i = 0; i < n;) {
		size_t st = i;
		int cp = ju_decode(s, n, &i);
		if (cp == q || cp == '\\')
			jb_printf(c, b, "\\%c", cp);
		else if (cp == '\t')
			jb_puts(c, b, "\\t");
		else if (cp == '\n')
			jb_puts(c, b, "\\n");
		else if (cp == '\r')
			jb_puts(c, b, "\\r");
		else if (cp < ' ' || cp == 0x7f)
			jb_printf(c, b, "\\x%02x", cp);
		else if (cp < 0x7f || printable(cp))
			jb_put(c, b, s + st, i - st);
		else if (cp <= 0xff)
			jb_printf(c, b, "\\x%02x", cp);
		else if (cp <= 0xffff)
			jb_printf(c, b, "\\u%04x", cp);
		else
			jb_printf(c, b, "\\U%08x", cp);
	}
	jb_put(c, b, &q, 1);
}

static void repr_dict_items(struct jz_ctx *c, struct jbuf *b, struct jdict *d)
{
	jb_puts(c, b, "{");
	for (size_t i = 0; i < d->n; i++) {
		if (i)
			jb_puts(c, b, ", ");
		jv_repr_into(c, b, d->k[i]);
		jb_puts(c, b, ": ");
		jv_repr_into(c, b, d->v[i]);
	}
	jb_puts(c, b, "}");
}

void jv_repr_into(struct jz_ctx *c, struct jbuf *b, jv v)
{
	char tmp[64];
	jz_enter(c);
	switch (v.k) {
	case JV_UNDEF: jb_puts(c, b, "Undefined"); break;
	case JV_STR: repr_str(c, b, v.s->p, v.s->n); break;
	case JV_LIST:
		if (v.l->is_gen) {
			jb_puts(c, b, "<generator object>");
			break;
		}
		if (v.l->is_range) {
			jb_printf(c, b, "range(%lld, %lld", v.l->range[0], v.l->range[1]);
			if (v.l->range[2] != 1)
				jb_printf(c, b, ", %lld", v.l->range[2]);
			jb_puts(c, b, ")");
			break;
		}
		jb_puts(c, b, v.tuple ? "(" : "[");
		for (size_t i = 0; i < v.l->n; i++) {
			if (i)
				jb_puts(c, b, ", ");
			jv_repr_into(c, b, v.l->v[i]);
		}
		if (v.tuple && v.l->n == 1)
			jb_puts(c, b, ",");
		jb_puts(c, b, v.tuple ? ")" : "]");
		break;
	case JV_DICT: repr_dict_items(c, b, v.d); break;
	case JV_FLOAT:
		jz_float_repr(tmp, sizeof tmp, v.f);
		jb_puts(c, b, tmp);
		break;
	default: jv_str_into(c, b, v);
	}
	jz_leave(c);
}

void jv_str_into(struct jz_ctx *c, struct jbuf *b, jv v)
{
	char tmp[64];
	switch (v.k) {
	case JV_UNDEF: break;
	case JV_NONE: jb_puts(c, b, "None"); break;
	case JV_BOOL: jb_puts(c, b, v.i ? "True" : "False"); break;
	case JV_INT: jb_printf(c, b, "%lld", v.i); break;
	case JV_FLOAT:
		jz_float_repr(tmp, sizeof tmp, v.f);
		jb_puts(c, b, tmp);
		break;
	case JV_STR: jb_put(c, b, v.s->p, v.s->n); break;
	case JV_NS:
		jb_puts(c, b, "<Namespace ");
		repr_dict_items(c, b, v.d);
		jb_puts(c, b, ">");
		break;
	case JV_FUNC: jb_printf(c, b, "<function %s>", v.fn->name ? v.fn->name : "?"); break;
	default: jv_repr_into(c, b, v);
	}
}

jv jv_to_str(struct jz_ctx *c, jv v)
{
	struct jbuf b = { 0 };
	if (v.k == JV_STR)
		return v;
	jv_str_into(c, &b, v);
	return jb_value(c, &b);
}

static void json_str(struct jz_ctx *c, struct jbuf *b, const char *s, size_t n, int ascii)
{
	jb_puts(c, b, "\"");
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		const char *esc = NULL;
		char u[8];
		switch (ch) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		default:
			if (ch < 0x20) {
				snprintf(u, sizeof u, "\\u%04x", ch);
				esc = u;
			} else if (ch >= 0x80 && ascii) {
				/* \uXXXX, as a surrogate pair above the BMP */
				size_t k = i;
				int cp = ju_decode(s, n, &k);
				jb_put(c, b, s + run, i - run);
				if (cp >= 0x10000)
					jb_printf(c, b, "\\u%04x\\u%04x", 0xd800 + ((cp - 0x10000) >> 10),
						  0xdc00 + ((cp - 0x10000) & 0x3ff));
				else
					jb_printf(c, b, "\\u%04x", cp);
				i = k - 1;
				run = k;
				continue;
			}
		}
		if (esc) {
			jb_put(c, b, s + run, i - run);
			jb_puts(c, b, esc);
			run = i + 1;
		}
	}
	jb_put(c, b, s + run, n - run);
	jb_puts(c, b, "\"");
}

static void json_float(struct jz_ctx *c, struct jbuf *b, double f)
{
	char tmp[64];
	if (isnan(f))
		jb_puts(c, b, "NaN");
	else if (isinf(f))
		jb_puts(c, b, f < 0 ? "-Infinity" : "Infinity");
	else {
		jz_float_repr(tmp, sizeof tmp, f);
		jb_puts(c, b, tmp);
	}
}

static void json_newline(struct jz_ctx *c, struct jbuf *b, const char *indent, int level)
{
	jb_puts(c, b, "\n");
	for (int i = 0; i < level; i++)
		jb_puts(c, b, indent);
}

void jv_tojson_into(struct jz_ctx *c, struct jbuf *b, jv v, const struct jz_json *o, int level)
{
	const char *indent = o->indent, *item_sep = o->item_sep, *key_sep = o->key_sep;
	jz_enter(c);
	switch (v.k) {
	case JV_NONE: jb_puts(c, b, "null"); break;
	case JV_BOOL: jb_puts(c, b, v.i ? "true" : "false"); break;
	case JV_INT: jb_printf(c, b, "%lld", v.i); break;
	case JV_FLOAT: json_float(c, b, v.f); break;
	case JV_STR: json_str(c, b, v.s->p, v.s->n, o->ensure_ascii); break;
	case JV_LIST:
		if (v.l->is_gen)
			jz_fail(c, FI_EINVAL, "object of type generator is not JSON serializable");
		if (!v.l->n) {
			jb_puts(c, b, "[]");
			break;
		}
		jb_puts(c, b, "[");
		for (size_t i = 0; i < v.l->n; i++) {
			if (i)
				jb_puts(c, b, item_sep);
			if (indent)
				json_newline(c, b, indent, level + 1);
			jv_tojson_into(c, b, v.l->v[i], o, level + 1);
		}
		if (indent)
			json_newline(c, b, indent, level);
		jb_puts(c, b, "]");
		break;
	case JV_DICT: {
		struct jdict *d = v.d;
		if (!d->n) {
			jb_puts(c, b, "{}");
			break;
		}
		size_t *ord = jz_alloc(c, d->n * sizeof *ord);
		for (size_t i = 0; i < d->n; i++)
			ord[i] = i;
		if (o->sort_keys) {
			/* a stable insertion sort: dicts in prompts are small */
			for (size_t i = 1; i < d->n; i++)
				for (size_t j = i; j > 0; j--) {
					if (jv_cmp(c, d->k[ord[j - 1]], d->k[ord[j]]) <= 0)
						break;
					size_t t = ord[j];
					ord[j] = ord[j - 1];
					ord[j - 1] = t;
				}
		}
		jb_puts(c, b, "{");
		for (size_t i = 0; i < d->n; i++) {
			jv k = d->k[ord[i]];
			if (i)
				jb_puts(c, b, item_sep);
			if (indent)
				json_newline(c, b, indent, level + 1);
			switch (k.k) {
			case JV_STR: json_str(c, b, k.s->p, k.s->n, o->ensure_ascii); break;
			case JV_INT: jb_printf(c, b, "\"%lld\"", k.i); break;
			case JV_BOOL: jb_puts(c, b, k.i ? "\"true\"" : "\"false\""); break;
			case JV_NONE: jb_puts(c, b, "\"null\""); break;
			case JV_FLOAT:
				jb_puts(c, b, "\"");
				json_float(c, b, k.f);
				jb_puts(c, b, "\"");
				break;
			default:
				jz_fail(c, FI_EINVAL, "keys must be str, int, float, bool or None, not %s",
					jv_typename(k));
			}
			jb_puts(c, b, key_sep);
			jv_tojson_into(c, b, d->v[ord[i]], o, level + 1);
		}
		if (indent)
			json_newline(c, b, indent, level);
		jb_puts(c, b, "}");
		break;
	}
	default:
		jz_fail(c, FI_EINVAL, "object of type %s is not JSON serializable", jv_typename(v));
	}
	jz_leave(c);
}
