/* opt: option tables, getopt, generated usage and the commands' messages (opt.h). */
#include "opt.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/log.h"
#include "frame/frame.h"

#define MAX_OPTS 64
#define USAGE_WIDTH 80

/* Long-only shared options; a command's own use OPT_LONG + n, n < 256. */
enum {
	O_BACKEND = 2 * OPT_LONG, O_TP, O_TEMP, O_TOP_K, O_TOP_P, O_MIN_P, O_REPEAT, O_SEED, O_ARENA_SIZE,
	O_VERSION,
};

static const struct cmd *cur; /* the command being run, for usage_error() */
static int given_keys[MAX_OPTS], n_given; /* the keys cmd_parse saw */
static const char *prog = "fi";

const char *cmd_name(void)
{
	return prog;
}

int cmd_given(int key)
{
	for (int i = 0; i < n_given; i++)
		if (given_keys[i] == key)
			return 1;
	return 0;
}

/* ---- the shared options ---- */

/* Fills t with the options of groups, pointing into a; returns their count. */
static int shared_opts(unsigned groups, struct cmd_args *a, struct opt *t)
{
	const struct { unsigned group; struct opt o; } all[] = {
		{CMD_MODEL, {'m', NULL, "MODEL", OPT_STR, 0, 0, &a->model}},
		{CMD_STREAMS, {'i', NULL, "IN", OPT_STR, 0, 0, &a->in}},
		{CMD_STREAMS, {'o', NULL, "OUT", OPT_STR, 0, 0, &a->out}},
		{CMD_EOS, {'e', NULL, "N", OPT_INT, 0, 1 << 20, &a->eos_count}},
		{CMD_BACKEND, {O_BACKEND, "backend", "auto|cuda|cpu", OPT_CHOICE, 0, 0, &a->backend}},
		{CMD_BACKEND, {'t', NULL, "THREADS", OPT_INT, 1, 1024, &a->threads}},
		{CMD_BACKEND, {O_TP, "tp", "N", OPT_INT, 1, 16, &a->tp}},
		{CMD_SAMPLING, {O_TEMP, "temp", "T", OPT_FLOAT, 0, 1e4, &a->sp.temperature}},
		{CMD_SAMPLING, {O_TOP_K, "top-k", "K", OPT_INT, 0, INT32_MAX, &a->sp.top_k}},
		{CMD_SAMPLING, {O_TOP_P, "top-p", "P", OPT_FLOAT, 0, 1, &a->sp.top_p}},
		{CMD_SAMPLING, {O_MIN_P, "min-p", "P", OPT_FLOAT, 0, 1, &a->sp.min_p}},
		{CMD_SAMPLING, {O_REPEAT, "repeat-penalty", "R", OPT_FLOAT, 1e-3, 1e3,
				&a->sp.repeat_penalty}},
		{CMD_SAMPLING, {O_SEED, "seed", "S", OPT_SEED, 0, 0, &a->sp.seed}},
		{CMD_ARENA, {O_ARENA_SIZE, "arena-size", "SIZE", OPT_SIZE, 0, 0, &a->arena_size}},
		{CMD_FORCE, {'f', "force", NULL, OPT_FLAG, 0, 0, &a->force}},
		{CMD_VERBOSE, {'v', NULL, NULL, OPT_FLAG, 0, 0, &a->verbose}},
	};
	int n = 0;
	for (size_t i = 0; i < sizeof all / sizeof *all; i++)
		if (groups & all[i].group)
			t[n++] = all[i].o;
	return n;
}

/* The frame key bit of a sampling option (cmd_args.given), 0 for the others. */
static unsigned sampling_bit(int key)
{
	switch (key) {
	case O_TEMP: return FI_REQ_TEMPERATURE;
	case O_TOP_K: return FI_REQ_TOP_K;
	case O_TOP_P: return FI_REQ_TOP_P;
	case O_MIN_P: return FI_REQ_MIN_P;
	case O_REPEAT: return FI_REQ_REPEAT_PENALTY;
	case O_SEED: return FI_REQ_SEED;
	default: return 0;
	}
}

/* The command's whole table: shared options, its own, then -h/--help and --version. */
struct table {
	struct opt o[MAX_OPTS];
	int n;
};

static void build(const struct cmd *c, struct cmd_args *a, struct table *t)
{
	t->n = shared_opts(c->groups, a, t->o);
	for (const struct opt *p = c->opts; p && p->key; p++) {
		if (t->n == MAX_OPTS - 2)
			die(EXIT_RUNTIME, "internal: more than %d options", MAX_OPTS - 2);
		t->o[t->n++] = *p;
	}
	t->o[t->n++] = (struct opt){'h', "help", NULL, OPT_FLAG, 0, 0, NULL};
	t->o[t->n++] = (struct opt){O_VERSION, "version", NULL, OPT_FLAG, 0, 0, NULL};
}

/* The option a usage word names ("-m", "--temp"), or NULL. */
static const struct opt *find_word(const struct table *t, const char *w, size_t n)
{
	for (int i = 0; i < t->n; i++) {
		const struct opt *o = &t->o[i];
		if (n == 2 && w[0] == '-' && o->key < OPT_LONG && w[1] == o->key)
			return o;
		if (n > 2 && w[0] == '-' && w[1] == '-' && o->name && strlen(o->name) == n - 2 &&
		    !memcmp(w + 2, o->name, n - 2))
			return o;
	}
	return NULL;
}

/* ---- usage ---- */

static const char sampling_words[] =
	"[--temp] [--top-k] [--top-p] [--min-p] [--repeat-penalty] [--seed]";

struct line {
	char buf[2048];
	size_t len, col, indent;
	FILE *f;
};

/* Appends one unit (a bracketed group or a word) to the usage, wrapping before it when it
 * would pass the width. */
static void put_unit(struct line *l, const char *s, size_t n)
{
	if (l->col > l->indent && l->col + 1 + n > USAGE_WIDTH) { /* not before the first */
		fprintf(l->f, "\n%*s", (int)l->indent, "");
		l->col = l->indent;
	} else if (l->col > l->indent) {
		fputc(' ', l->f);
		l->col++;
	}
	fwrite(s, 1, n, l->f);
	l->col += n;
}

/* Expands the words of template s into out: each option with its value's name. Returns -1
 * (with the word in *bad) when an option word names no option of the table. */
static int expand(const struct table *t, const char *s, char *out, size_t cap, int *seen,
		  const char **bad)
{
	size_t len = 0;
	*out = 0;
	while (*s) {
		const char *w = s, *core, *end;
		size_t n = strcspn(s, " ");
		const struct opt *o;
		s += n;
		while (*s == ' ')
			s++;
		if (n == 9 && !memcmp(w, "@sampling", 9)) {
			char sub[512];
			if (expand(t, sampling_words, sub, sizeof sub, seen, bad))
				return -1;
			len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s",
						len ? " " : "", sub);
			continue;
		}
		/* the option inside "[--x", "--x]", "[-n]", "[--id]..." */
		core = w;
		end = w + n;
		while (core < end && *core == '[')
			core++;
		while (end > core && (end[-1] == ']' || end[-1] == '.'))
			end--;
		o = core[0] == '-' && end - core > 1 ? find_word(t, core, (size_t)(end - core)) : NULL;
		if (core[0] == '-' && end - core > 1 && !o) {
			*bad = w;
			return -1;
		}
		if (o)
			seen[o - t->o] = 1;
		len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%.*s%s%s%.*s",
					len ? " " : "", (int)(end - w), w, o && o->arg ? " " : "",
					o && o->arg ? o->arg : "", (int)(w + n - end), end);
	}
	return len < cap ? 0 : -1;
}

/* Writes the expanded line, keeping each top-level bracket group on one line. */
static void put_line(struct line *l, const char *s)
{
	while (*s) {
		const char *u = s;
		int depth = 0;
		while (*s && (depth || *s != ' ')) {
			depth += *s == '[' ? 1 : *s == ']' ? -1 : 0;
			s++;
		}
		put_unit(l, u, (size_t)(s - u));
		while (*s == ' ')
			s++;
	}
}

/* Writes the usage; returns -1 and names the problem when the template does not describe
 * the table (an option missing from every line, or a word naming no option). */
static int usage_to(const struct cmd *c, const struct table *t, FILE *f, char *why, size_t wcap)
{
	int seen[MAX_OPTS] = {0};
	const char *bad = NULL;
	for (int k = 0; c->usage[k]; k++) {
		struct line l = {.f = f};
		char ex[2048];
		if (expand(t, c->usage[k], ex, sizeof ex, seen, &bad)) {
			snprintf(why, wcap, "usage line %d: '%.*s' is no option", k + 1,
				 bad ? (int)strcspn(bad, " ") : 0, bad ? bad : "");
			return -1;
		}
		l.col = l.indent = (size_t)fprintf(f, "%s%s ", k ? "       " : "usage: ", c->name);
		put_line(&l, ex);
		fputc('\n', f);
	}
	fprintf(f, "       %s -h | --version\n", c->name);
	for (int i = 0; i < t->n; i++)
		if (!seen[i] && t->o[i].key != 'h' && t->o[i].key != O_VERSION) {
			const struct opt *o = &t->o[i];
			if (o->name)
				snprintf(why, wcap, "option --%s is in no usage line", o->name);
			else
				snprintf(why, wcap, "option -%c is in no usage line", o->key);
			return -1;
		}
	return 0;
}

void cmd_usage(const struct cmd *c, FILE *f)
{
	struct cmd_args a;
	struct table t;
	char why[256];
	build(c, &a, &t);
	usage_to(c, &t, f, why, sizeof why);
}

/* ---- messages ---- */

static void vsay(const char *fmt, va_list ap)
{
	char msg[2048];
	if (fmt)
		vsnprintf(msg, sizeof msg, fmt, ap);
	else
		snprintf(msg, sizeof msg, "%s", fi_errmsg());
	fflush(stdout);
	fprintf(stderr, "%s: %s\n", prog, msg);
}

_Noreturn void die(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	exit(status);
}

int cmd_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	return EXIT_RUNTIME;
}

_Noreturn void usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsay(fmt, ap);
	va_end(ap);
	if (cur)
		cmd_usage(cur, stderr);
	exit(EXIT_USAGE);
}

/* ---- values ---- */

static int parse_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	*out = strtod(s, &end);
	return errno || end == s || *end || !isfinite(*out) ? -1 : 0;
}

static int parse_ll(const char *s, long long *out)
{
	char *end;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno || end == s || *end ? -1 : 0;
}

static int parse_seed(const char *s, uint64_t *out)
{
	char *end;
	if (*s == '-' || *s == '+' || *s == ' ')
		return -1; /* strtoull would wrap "-1" to 2^64 - 1 */
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || end == s || *end ? -1 : 0;
}

/* "64M", "2GiB", "1.5G", "1048576": K, M, G, T are powers of 1024; at least 1 MiB. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !(v > 0))
		return -1;
	switch (*end) {
	case 'k': case 'K': v *= 1024.0; end++; break;
	case 'm': case 'M': v *= 1048576.0; end++; break;
	case 'g': case 'G': v *= 1073741824.0; end++; break;
	case 't': case 'T': v *= 1099511627776.0; end++; break;
	}
	if (*end == 'i' || *end == 'B')
		end += *end == 'i' && end[1] == 'B' ? 2 : 1;
	if (*end || v < 1048576.0 || v > 1e15)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

/* "65536t": tokens (1 to 2^40); anything else a byte size as parse_size reads it. */
static int parse_kv_size(const char *s, struct opt_kv_size *out)
{
	size_t n = strlen(s);
	long long ll;
	char buf[32];
	out->bytes = out->tokens = 0;
	if (n > 1 && n < sizeof buf && s[n - 1] == 't') {
		memcpy(buf, s, n - 1);
		buf[n - 1] = 0;
		if (parse_ll(buf, &ll) || ll < 1 || ll > (1ll << 40))
			return -1;
		out->tokens = (uint64_t)ll;
		return 0;
	}
	return parse_size(s, &out->bytes);
}

static int is_choice(const char *choices, const char *v)
{
	size_t n = strlen(v);
	for (const char *p = choices; *p;) {
		size_t k = strcspn(p, "|");
		if (k == n && !memcmp(p, v, n))
			return 1;
		p += k + (p[k] == '|');
	}
	return 0;
}

/* What a value of o must be, for the message about a bad one. */
static void expected(const struct opt *o, char *out, size_t cap)
{
	switch (o->kind) {
	case OPT_INT:
		snprintf(out, cap, "a whole number from %.0f to %.0f", o->lo, o->hi);
		break;
	case OPT_FLOAT:
	case OPT_DOUBLE:
		snprintf(out, cap, "a number from %g to %g", o->lo, o->hi);
		break;
	case OPT_SIZE:
		snprintf(out, cap, "a size of at least 1M, such as 64M or 2G");
		break;
	case OPT_KVSIZE:
		snprintf(out, cap, "a size of at least 1M, such as 64M or 2G, or tokens, such as "
			 "65536t");
		break;
	case OPT_SEED:
		snprintf(out, cap, "a whole number from 0 to 18446744073709551615");
		break;
	case OPT_CHOICE: {
		size_t len = (size_t)snprintf(out, cap, "one of ");
		for (const char *p = o->arg; *p && len < cap;) {
			size_t k = strcspn(p, "|");
			len += (size_t)snprintf(out + len, cap - len, "%s%.*s", p == o->arg ? "" : ", ",
						(int)k, p);
			p += k + (p[k] == '|');
		}
		break;
	}
	case OPT_LIST:
		snprintf(out, cap, "a nonempty string, given at most %.0f times", o->hi);
		break;
	default:
		*out = 0;
	}
}

/* Stores value v of option o; -1 when v is not a valid value. */
static int store(const struct opt *o, const char *v)
{
	double d;
	long long ll;
	switch (o->kind) {
	case OPT_FLAG:
		*(int *)o->dst = 1;
		return 0;
	case OPT_STR:
		*(const char **)o->dst = v;
		return 0;
	case OPT_INT:
		if (parse_ll(v, &ll) || ll < o->lo || ll > o->hi)
			return -1;
		*(int *)o->dst = (int)ll;
		return 0;
	case OPT_FLOAT:
		if (parse_double(v, &d) || d < o->lo || d > o->hi)
			return -1;
		*(float *)o->dst = (float)d;
		return 0;
	case OPT_DOUBLE:
		if (parse_double(v, &d) || d < o->lo || d > o->hi)
			return -1;
		*(double *)o->dst = d;
		return 0;
	case OPT_SIZE:
		return parse_size(v, o->dst);
	case OPT_KVSIZE:
		return parse_kv_size(v, o->dst);
	case OPT_SEED:
		return parse_seed(v, o->dst);
	case OPT_CHOICE:
		if (!is_choice(o->arg, v))
			return -1;
		*(const char **)o->dst = v;
		return 0;
	case OPT_LIST: {
		struct opt_list *l = o->dst;
		if (!*v || l->n >= (int)o->hi || l->n >= OPT_LIST_MAX)
			return -1;
		l->v[l->n++] = (char *)v;
		return 0;
	}
	case OPT_CALL:
		return 0;
	}
	return -1;
}

/* The option as the user wrote it: "--temp", "-n". */
static void spelled(const struct opt *o, char *out, size_t cap)
{
	if (o->key < OPT_LONG)
		snprintf(out, cap, "-%c", o->key);
	else
		snprintf(out, cap, "--%s", o->name);
}

static void print_version(void)
{
#ifdef FI_HAVE_CUDA
	printf("%s (fi) %s, backends cpu and cuda\n", prog, FI_VERSION);
#else
	printf("%s (fi) %s, backend cpu (built without CUDA)\n", prog, FI_VERSION);
#endif
}

/* The option word getopt refused, as the user wrote it ("--bogus", "-x"). */
static void refused(int argc, char **argv, char *out, size_t cap)
{
	const char *w = argv[optind - 1 < argc ? optind - 1 : argc - 1];
	if (!strncmp(w, "--", 2))
		snprintf(out, cap, "%.*s", (int)strcspn(w, "="), w);
	else
		snprintf(out, cap, "-%c", optopt);
}

int cmd_parse(const struct cmd *c, struct cmd_args *a, int argc, char **argv)
{
	struct option lo[2 * MAX_OPTS + 1];
	char shorts[3 * MAX_OPTS + 2], why[256], word[64], exp[160];
	struct table t;
	size_t ns = 0;
	int nl = 0, key;
	FILE *sink;

	cur = c;
	prog = c->name;
	fi_log_set_prog(c->name);
	memset(a, 0, sizeof *a);
	n_given = 0;
	a->in = a->out = "-";
	a->eos_count = 1;
	a->backend = "auto";
	fi_sample_defaults(&a->sp);
	build(c, a, &t);
	/* A table the usage cannot describe is the command's bug: refused on every run. */
	if ((sink = fopen("/dev/null", "w"))) {
		int bad = usage_to(c, &t, sink, why, sizeof why);
		fclose(sink);
		if (bad)
			die(EXIT_RUNTIME, "internal: %s", why);
	}
	shorts[ns++] = ':'; /* a missing value comes back as ':' */
	for (int i = 0; i < t.n; i++) {
		const struct opt *o = &t.o[i];
		if (o->key < OPT_LONG) {
			shorts[ns++] = (char)o->key;
			if (o->arg)
				shorts[ns++] = ':';
		}
		if (o->name)
			lo[nl++] = (struct option){o->name, o->arg ? required_argument : no_argument,
						   NULL, o->key};
	}
	for (const struct opt_alias *al = c->aliases; al && al->name; al++)
		for (int i = 0; i < t.n; i++)
			if (t.o[i].key == al->key && nl < MAX_OPTS) {
				lo[nl++] = (struct option){al->name, t.o[i].arg ? required_argument
										 : no_argument, NULL, al->key};
				break;
			}
	shorts[ns] = 0;
	lo[nl] = (struct option){0};
	opterr = 0;
	while ((key = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
		const struct opt *o = NULL;
		int r;
		if (key == '?' || key == ':') {
			refused(argc, argv, word, sizeof word);
			if (key == ':')
				usage_error("option '%s' needs a value", word);
			usage_error("unknown option '%s'", word);
		}
		if (key == 'h') {
			usage_to(c, &t, stdout, why, sizeof why);
			if (c->notes)
				fputs(c->notes, stdout);
			exit(fflush(stdout) ? EXIT_RUNTIME : EXIT_OK);
		}
		if (key == O_VERSION) {
			print_version();
			exit(fflush(stdout) ? EXIT_RUNTIME : EXIT_OK);
		}
		for (int i = 0; i < t.n && !o; i++)
			if (t.o[i].key == key)
				o = &t.o[i];
		if (n_given < MAX_OPTS)
			given_keys[n_given++] = key;
		r = o->kind == OPT_CALL ? (c->take ? c->take(c->user, key, optarg) : -1)
					: store(o, optarg);
		if (r == EXIT_USAGE)
			exit(EXIT_USAGE);
		if (r) {
			spelled(o, word, sizeof word);
			expected(o, exp, sizeof exp);
			die(EXIT_USAGE, "invalid value '%s' for %s%s%s%s", optarg ? optarg : "", word,
			    *exp ? " (" : "", exp, *exp ? ")" : "");
		}
		a->given |= sampling_bit(key);
	}
	if ((c->groups & CMD_MODEL) && !a->model)
		usage_error("no model: give -m MODEL (a store name, an image or a directory)");
	return optind;
}
