/* jinja_format: Python's printf-style formatting, `"%s: %d" % (name, n)` and the format
 * filter. Conversions s r a d i u f F e E g G x X o c %, flags - + space 0 #, width and
 * precision, and %(key)s with a mapping, as Python formats them. */
#include "jinja.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static jv next_arg(struct jz_ctx *c, jv args, size_t *k)
{
	if (args.k == JV_LIST && args.tuple) {
		if (*k >= args.l->n)
			jz_fail(c, FI_EINVAL, "not enough arguments for format string");
		return args.l->v[(*k)++];
	}
	if ((*k)++)
		jz_fail(c, FI_EINVAL, "not enough arguments for format string");
	return args;
}

static void utf8_put(char *u, size_t *q, int v)
{
	if (v < 0x80) {
		u[(*q)++] = (char)v;
	} else if (v < 0x800) {
		u[(*q)++] = (char)(0xc0 | v >> 6);
		u[(*q)++] = (char)(0x80 | (v & 0x3f));
	} else if (v < 0x10000) {
		u[(*q)++] = (char)(0xe0 | v >> 12);
		u[(*q)++] = (char)(0x80 | ((v >> 6) & 0x3f));
		u[(*q)++] = (char)(0x80 | (v & 0x3f));
	} else {
		u[(*q)++] = (char)(0xf0 | v >> 18);
		u[(*q)++] = (char)(0x80 | ((v >> 12) & 0x3f));
		u[(*q)++] = (char)(0x80 | ((v >> 6) & 0x3f));
		u[(*q)++] = (char)(0x80 | (v & 0x3f));
	}
}

static void pad_put(struct jz_ctx *c, struct jbuf *o, const char *s, size_t n, int width, int left,
		    char fill)
{
	long long w = width - (long long)ju_len(s, n);
	if (!left)
		for (long long i = 0; i < w; i++)
			jb_put(c, o, &fill, 1);
	jb_put(c, o, s, n);
	if (left)
		for (long long i = 0; i < w; i++)
			jb_puts(c, o, " ");
}

jv jz_percent_format(struct jz_ctx *c, jv fmt, jv args)
{
	struct jbuf o = { 0 };
	const char *p = fmt.s->p, *end = p + fmt.s->n;
	size_t k = 0;
	int used_map = 0;
	while (p < end) {
		const char *pc = memchr(p, '%', (size_t)(end - p));
		if (!pc) {
			jb_put(c, &o, p, (size_t)(end - p));
			break;
		}
		jb_put(c, &o, p, (size_t)(pc - p));
		p = pc + 1;
		jv arg = jv_undef(NULL);
		int have = 0;
		if (p < end && *p == '(') {
			const char *q = memchr(p, ')', (size_t)(end - p));
			if (!q)
				jz_fail(c, FI_EINVAL, "incomplete format key");
			if (args.k != JV_DICT)
				jz_fail(c, FI_EINVAL, "format requires a mapping");
			jv *v = jv_dget(args.d, jv_str(c, p + 1, (size_t)(q - p - 1)));
			if (!v)
				jz_fail(c, FI_EINVAL, "format key '%.*s' not found", (int)(q - p - 1), p + 1);
			arg = *v;
			have = used_map = 1;
			p = q + 1;
		}
		char flags[8] = "";
		int nf = 0, width = 0, prec = -1;
		while (p < end && strchr("-+ 0#", *p) && nf < 6)
			flags[nf++] = *p++;
		while (p < end && *p >= '0' && *p <= '9' && width < 100000)
			width = width * 10 + (*p++ - '0');
		if (p < end && *p == '.') {
			prec = 0;
			for (p++; p < end && *p >= '0' && *p <= '9' && prec < 100000;)
				prec = prec * 10 + (*p++ - '0');
		}
		while (p < end && (*p == 'h' || *p == 'l' || *p == 'L'))
			p++;
		if (p >= end)
			jz_fail(c, FI_EINVAL, "incomplete format");
		char t = *p++;
		if (t == '%') {
			jb_puts(c, &o, "%");
			continue;
		}
		if (!have)
			arg = next_arg(c, args, &k);
		int left = strchr(flags, '-') != NULL;
		char spec[32], tmp[512];
		switch (t) {
		case 's': case 'r': case 'a': {
			struct jbuf sb = { 0 };
			if (t == 's')
				jv_str_into(c, &sb, arg);
			else
				jv_repr_into(c, &sb, arg);
			size_t n = sb.n;
			if (prec >= 0)
				n = ju_offset(sb.p ? sb.p : "", sb.n, (size_t)prec);
			pad_put(c, &o, sb.p ? sb.p : "", n, width, left, ' ');
			break;
		}
		case 'd': case 'i': case 'u': case 'x': case 'X': case 'o': case 'c':
		case 'f': case 'F': case 'e': case 'E': case 'g': case 'G': {
			if (!jv_is_num(arg))
				jz_fail(c, FI_EINVAL, "%%%c format: a real number is required, not %s", t,
					jv_typename(arg));
			int prec_ok = prec >= 0 && prec < 300;
			if (strchr("diuxXoc", t)) {
				/* Python: %x, %X, %o and %c take integers only; %d, %i and %u a float's
				 * integer part, which may be beyond long long (its exact digits) */
				if (arg.k == JV_FLOAT && t == 'c')
					jz_fail(c, FI_EINVAL, "%%c requires int or char");
				if (arg.k == JV_FLOAT && t != 'd' && t != 'i' && t != 'u')
					jz_fail(c, FI_EINVAL, "%%%c format: an integer is required, not float", t);
				if (arg.k == JV_FLOAT && !isfinite(arg.f))
					jz_fail(c, FI_EINVAL, "cannot convert float to integer");
				if (arg.k == JV_FLOAT && !(arg.f >= -9223372036854775808.0 &&
							   arg.f < 9223372036854775808.0)) {
					char fl[8];
					size_t nf = 0;
					for (const char *f = flags; *f && nf + 1 < sizeof fl; f++)
						if (*f != '#') /* in C it would add a decimal point */
							fl[nf++] = *f;
					fl[nf] = 0;
					snprintf(spec, sizeof spec, "%%%s%d.0f", fl, width > 400 ? 400 : width);
					snprintf(tmp, sizeof tmp, spec, trunc(arg.f));
					jb_puts(c, &o, tmp);
					break;
				}
				long long v = arg.k == JV_FLOAT ? (long long)arg.f : arg.i;
				if (t == 'c') {
					char u[8];
					size_t q = 0;
					if (v < 0 || v > 0x10ffff)
						jz_fail(c, FI_ERANGE, "%%c arg not in range(0x110000)");
					utf8_put(u, &q, (int)v);
					pad_put(c, &o, u, q, width, left, ' ');
					break;
				}
				char ct = t == 'i' || t == 'u' ? 'd' : t;
				if (prec_ok)
					snprintf(spec, sizeof spec, "%%%s%d.%dll%c", flags, width > 400 ? 400 : width, prec, ct);
				else
					snprintf(spec, sizeof spec, "%%%s%dll%c", flags, width > 400 ? 400 : width, ct);
				snprintf(tmp, sizeof tmp, spec, v);
				/* Python writes the octal prefix as 0o */
				if (t == 'o' && strchr(flags, '#')) {
					char *z = strchr(tmp, '0');
					if (z) {
						memmove(z + 1, z, strlen(z) + 1);
						z[1] = 'o';
					}
				}
			} else {
				snprintf(spec, sizeof spec, "%%%s%d.%d%c", flags, width > 400 ? 400 : width,
					 prec_ok ? prec : 6, t);
				snprintf(tmp, sizeof tmp, spec, jv_num(arg));
			}
			jb_puts(c, &o, tmp);
			break;
		}
		default:
			jz_fail(c, FI_EINVAL, "unsupported format character '%c'", t);
		}
	}
	if (!used_map && args.k == JV_LIST && args.tuple && k < args.l->n)
		jz_fail(c, FI_EINVAL, "not all arguments converted during string formatting");
	if (!used_map && !(args.k == JV_LIST && args.tuple) && args.k != JV_DICT && k == 0)
		jz_fail(c, FI_EINVAL, "not all arguments converted during string formatting");
	return jb_value(c, &o);
}
