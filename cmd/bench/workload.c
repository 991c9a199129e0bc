/* workload: the requests of a serving benchmark and when they arrive (bench.h).
 *
 * Everything random comes from xoshiro256** streams seeded from --seed, one stream per
 * purpose (lengths, prompt tokens, each shared prefix, arrivals, warm-up), so that changing
 * the rate leaves the prompts as they were and a shared-prefix run differs from its
 * distinct-prefix twin only in the prefixes. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench.h"
#include "text/tokenizer.h"
#include "sched/scheduler.h"
#include "serve/serve.h"

/* Lengths of lines without max_tokens in a file workload (fi-decode's -n default). */
#define FILE_MAX_TOKENS 256
#define WARMUP_PROMPT 16
#define WARMUP_OUTPUT 4

enum { S_LENGTHS = 1, S_TOKENS, S_PREFIX, S_ARRIVALS, S_WARMUP };

struct rng {
	uint64_t s[4];
};

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The stream for (seed, purpose, k). */
static void rng_init(struct rng *r, uint64_t seed, int purpose, uint64_t k)
{
	uint64_t x = seed ^ ((uint64_t)purpose << 56) ^ (k * 0xd1342543de82ef95ull);
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix(&x);
}

static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s, res = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = s[3] << 45 | s[3] >> 19;
	return res;
}

/* Uniform in (0, 1). */
static double rng_unit(struct rng *r)
{
	return ((double)(rng_next(r) >> 11) + 0.5) * 0x1p-53;
}

static double rng_normal(struct rng *r)
{
	double u = rng_unit(r), v = rng_unit(r);
	return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

/* Gamma(shape a, scale 1): Marsaglia and Tsang; a < 1 through a + 1 and U^(1/a). */
static double rng_gamma(struct rng *r, double a)
{
	double boost = 1;
	if (a < 1) {
		boost = pow(rng_unit(r), 1 / a);
		a += 1;
	}
	double d = a - 1.0 / 3, c = 1 / sqrt(9 * d);
	for (;;) {
		double x = rng_normal(r), v = 1 + c * x, u;
		if (v <= 0)
			continue;
		v = v * v * v;
		u = rng_unit(r);
		if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
			return boost * d * v;
	}
}

static uint32_t mix_len(struct rng *r, double median, const struct bench_mix *m)
{
	double x;
	if (m->sigma < 0)
		return (uint32_t)median;
	x = floor(median * exp(m->sigma * rng_normal(r)) + 0.5);
	return x < m->lo ? m->lo : x > m->hi ? m->hi : (uint32_t)x;
}

/* A token an ordinary prompt could hold: not special, not an end of generation, inside the
 * tokenizer's vocabulary when the model's is padded beyond it. */
static uint32_t rand_token(struct rng *r, const struct fi_config *c, const struct fi_tok *tok)
{
	uint32_t V = (uint32_t)c->vocab, t = 0;
	if (tok && fi_tok_vocab_size(tok) && fi_tok_vocab_size(tok) < V)
		V = fi_tok_vocab_size(tok);
	for (int tries = 0; tries < 64; tries++) {
		int ok = 1;
		t = (uint32_t)(rng_next(r) % V);
		for (int i = 0; i < c->n_eos; i++)
			ok &= c->eos_ids[i] != (int)t;
		if (ok && (!tok || !fi_tok_is_special(tok, t)))
			break;
	}
	return t;
}

void bench_req_free(struct bench_req *r, int n)
{
	if (!r)
		return;
	for (int i = 0; i < n; i++) {
		free(r[i].tokens);
		free(r[i].tt);
		free(r[i].error);
	}
	free(r);
}

static int parse_u32(const char *s, uint32_t lo, uint32_t *out)
{
	char *end;
	unsigned long v;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < lo || v > (1ul << 24))
		return -1;
	*out = (uint32_t)v;
	return 0;
}

static int parse_pos(const char *s, double lo, double *out)
{
	char *end;
	errno = 0;
	*out = strtod(s, &end);
	return errno || end == s || *end || !isfinite(*out) || *out < lo || *out > (1 << 24) ? -1 : 0;
}

/* "sharegpt[:IN:OUT[:SIGMA[:MIN:MAX]]]" or "fixed:IN:OUT" (fields split at ':'). */
static int parse_mix(char **f, int nf, struct bench_mix *m, char *msg, size_t msgsz)
{
	uint32_t in, out;
	*m = (struct bench_mix){140, 110, 1.0, 4, 1024}; /* means ~217 and ~176 tokens */
	if (!strcmp(f[0], "fixed")) {
		if (nf != 3 || parse_u32(f[1], 1, &in) || parse_u32(f[2], 1, &out)) {
			snprintf(msg, msgsz, "fixed:IN:OUT takes two lengths of at least 1");
			return -1;
		}
		*m = (struct bench_mix){in, out, -1, in, in};
		return 0;
	}
	if (strcmp(f[0], "sharegpt")) {
		snprintf(msg, msgsz, "unknown workload '%s' (sharegpt, fixed, file, prefix)", f[0]);
		return -1;
	}
	if ((nf != 1 && nf != 3 && nf != 4 && nf != 6) ||
	    (nf >= 3 && (parse_pos(f[1], 1, &m->in_median) || parse_pos(f[2], 1, &m->out_median))) ||
	    (nf >= 4 && (parse_pos(f[3], 0, &m->sigma) || m->sigma > 4)) ||
	    (nf == 6 && (parse_u32(f[4], 1, &m->lo) || parse_u32(f[5], m->lo, &m->hi)))) {
		snprintf(msg, msgsz, "sharegpt[:IN:OUT[:SIGMA[:MIN:MAX]]] takes medians of at least 1, "
			 "a spread from 0 to 4 and lengths MIN <= MAX");
		return -1;
	}
	return 0;
}

int bench_workload_parse(const char *s, struct bench_workload_spec *w, char *msg, size_t msgsz)
{
	char buf[512], *f[8];
	int nf = 0, rc = 0;
	memset(w, 0, sizeof *w);
	w->text = s;
	if (!strncmp(s, "file:", 5)) {
		w->kind = WL_FILE;
		w->path = s + 5;
		if (!*w->path) {
			snprintf(msg, msgsz, "file:PATH needs a path");
			return -1;
		}
		return 0;
	}
	if (strlen(s) >= sizeof buf) {
		snprintf(msg, msgsz, "workload too long");
		return -1;
	}
	strcpy(buf, s);
	for (char *p = buf, *c; nf < 8; p = c + 1) {
		f[nf++] = p;
		if (!(c = strchr(p, ':')))
			break;
		*c = 0;
	}
	if (!strcmp(f[0], "prefix")) {
		w->kind = WL_PREFIX;
		w->groups = 1;
		if (nf < 2 || parse_u32(f[1], 1, &w->prefix_len) ||
		    (nf >= 3 && parse_u32(f[2], 1, &w->groups))) {
			snprintf(msg, msgsz, "prefix:P[:G[:MIX]] takes a prefix length and a number "
				 "of groups of at least 1");
			return -1;
		}
		char *dflt[1] = {"sharegpt"};
		return nf > 3 ? parse_mix(f + 3, nf - 3, &w->mix, msg, msgsz)
			      : parse_mix(dflt, 1, &w->mix, msg, msgsz);
	}
	rc = parse_mix(f, nf, &w->mix, msg, msgsz);
	w->kind = w->mix.sigma < 0 ? WL_FIXED : WL_SHAREGPT;
	return rc;
}

static int model_ctx(const struct fi_config *c)
{
	return c->max_pos > 0 ? c->max_pos : 4096; /* the scheduler's rule */
}

/* Requests of the built-in workloads. */
static fi_err make_generated(const struct bench_opts *o, const struct fi_config *c,
			     const struct fi_tok *tok, struct bench_req *r, int n)
{
	const struct bench_workload_spec *w = &o->wl;
	uint32_t ctx = (uint32_t)model_ctx(c), P = w->kind == WL_PREFIX ? w->prefix_len : 0;
	uint32_t G = w->groups ? w->groups : 1;
	uint32_t **pre = NULL;
	struct rng lens, toks;
	if (P + 1 >= ctx)
		return fi_fail(FI_ERANGE, "a prefix of %u tokens leaves no room in the context of %u",
			       P, ctx);
	if (w->mix.sigma < 0 && (P + w->mix.in_median >= ctx ||
				 P + w->mix.in_median + w->mix.out_median > ctx))
		return fi_fail(FI_ERANGE, "%u prompt and %u output tokens do not fit the context of %u",
			       P + (uint32_t)w->mix.in_median, (uint32_t)w->mix.out_median, ctx);
	if (P) {
		if (G > (uint32_t)n)
			G = (uint32_t)n; /* groups no request uses are not made */
		if (!(pre = calloc(G, sizeof *pre)))
			return fi_fail(FI_ENOMEM, "out of memory");
		for (uint32_t g = 0; g < G; g++) {
			struct rng pr;
			if (!(pre[g] = malloc(sizeof(uint32_t) * P)))
				break;
			rng_init(&pr, o->seed, S_PREFIX, g);
			for (uint32_t k = 0; k < P; k++)
				pre[g][k] = rand_token(&pr, c, tok);
		}
	}
	rng_init(&lens, o->seed, S_LENGTHS, 0);
	rng_init(&toks, o->seed, S_TOKENS, 0);
	fi_err e = FI_OK;
	for (int i = 0; i < n && !e; i++) {
		uint32_t in = mix_len(&lens, w->mix.in_median, &w->mix);
		uint32_t out = mix_len(&lens, w->mix.out_median, &w->mix);
		/* A pair that does not fit the context is drawn again (as vLLM's ShareGPT filter
		 * drops it); after 100 tries it is cut: at least one output token. */
		for (int k = 0; k < 100 && P + in + out > ctx; k++) {
			in = mix_len(&lens, w->mix.in_median, &w->mix);
			out = mix_len(&lens, w->mix.out_median, &w->mix);
		}
		if (P + in > ctx - 1)
			in = ctx - 1 - P;
		if (P + in + out > ctx)
			out = ctx - P - in;
		r[i].ntokens = P + in;
		r[i].max_tokens = out;
		if (!(r[i].tokens = malloc(sizeof(uint32_t) * r[i].ntokens)) || (P && !pre[i % G])) {
			e = fi_fail(FI_ENOMEM, "out of memory");
			break;
		}
		if (P)
			memcpy(r[i].tokens, pre[i % G], sizeof(uint32_t) * P);
		for (uint32_t k = P; k < P + in; k++)
			r[i].tokens[k] = rand_token(&toks, c, tok);
	}
	for (uint32_t g = 0; pre && g < G; g++)
		free(pre[g]);
	free(pre);
	return e;
}

/* One line of a file workload: {"prompt": TEXT | "tokens": [IDS], "max_tokens": N}. */
static fi_err file_line(const char *path, long ln, json_t *o, const struct fi_config *c,
			const struct fi_tok *tok, struct bench_req *r)
{
	json_t *v;
	r->max_tokens = FILE_MAX_TOKENS;
	if ((v = json_object_get(o, "max_tokens"))) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 24))
			return fi_fail(FI_EFORMAT, "%s:%ld: max_tokens is not a count of at least 1",
				       path, ln);
		r->max_tokens = (uint32_t)json_integer_value(v);
	}
	if (json_is_array(v = json_object_get(o, "tokens"))) {
		size_t n = json_array_size(v);
		if (!n || n > (1u << 24))
			return fi_fail(FI_EFORMAT, "%s:%ld: tokens is empty", path, ln);
		if (!(r->tokens = malloc(sizeof(uint32_t) * n)))
			return fi_fail(FI_ENOMEM, "out of memory");
		for (size_t k = 0; k < n; k++) {
			json_t *t = json_array_get(v, k);
			if (!json_is_integer(t) || json_integer_value(t) < 0 ||
			    json_integer_value(t) >= c->vocab)
				return fi_fail(FI_ERANGE, "%s:%ld: token %zu is not an id below %d",
					       path, ln, k, c->vocab);
			r->tokens[k] = (uint32_t)json_integer_value(t);
		}
		r->ntokens = (uint32_t)n;
		return FI_OK;
	}
	if (json_is_string(v = json_object_get(o, "prompt"))) {
		struct fi_tok_ids ids = {0};
		fi_err e;
		if (!tok)
			return fi_fail(FI_EUNSUPPORTED, "%s:%ld: a text prompt, and the model has no "
				       "tokenizer (give \"tokens\")", path, ln);
		if ((e = fi_tok_encode(tok, json_string_value(v), json_string_length(v),
				       FI_SCHED_ENCODE_FLAGS, &ids)))
			return fi_fail_ctx(e, "%s:%ld", path, ln);
		if (!ids.n) {
			fi_tok_ids_free(&ids);
			return fi_fail(FI_EFORMAT, "%s:%ld: the prompt encodes to no tokens", path, ln);
		}
		r->tokens = ids.v;
		r->ntokens = (uint32_t)ids.n;
		return FI_OK;
	}
	return fi_fail(FI_EFORMAT, "%s:%ld: no \"prompt\" or \"tokens\"", path, ln);
}

static fi_err make_file(const struct bench_opts *o, const struct fi_config *c,
			const struct fi_tok *tok, struct bench_req **out, int *n)
{
	const char *path = o->wl.path;
	FILE *f = fopen(path, "r");
	struct bench_req *r = NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	long ln = 0;
	int nr = 0, cr = 0;
	fi_err e = FI_OK;
	if (!f)
		return fi_fail(FI_EIO, "cannot open '%s': %s", path, strerror(errno));
	while (!e && (o->requests <= 0 || nr < o->requests) && (len = getline(&line, &cap, f)) >= 0) {
		json_error_t je;
		json_t *j;
		ln++;
		while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
			line[--len] = 0;
		if (!len)
			continue;
		if (!(j = json_loadb(line, (size_t)len, 0, &je)) || !json_is_object(j)) {
			e = fi_fail(FI_EFORMAT, "%s:%ld: not a JSON object%s%s", path, ln,
				    j ? "" : ": ", j ? "" : je.text);
			json_decref(j);
			break;
		}
		if (nr == cr) {
			struct bench_req *g = realloc(r, sizeof *r * (size_t)(cr = cr ? 2 * cr : 64));
			if (!g) {
				json_decref(j);
				e = fi_fail(FI_ENOMEM, "out of memory");
				break;
			}
			r = g;
		}
		memset(&r[nr], 0, sizeof *r);
		e = file_line(path, ln, j, c, tok, &r[nr++]);
		json_decref(j);
	}
	if (!e && ferror(f))
		e = fi_fail(FI_EIO, "cannot read '%s': %s", path, strerror(errno));
	fclose(f);
	free(line);
	if (!e && !nr)
		e = fi_fail(FI_EFORMAT, "%s: no requests", path);
	if (!e && o->requests > nr)
		e = fi_fail(FI_ERANGE, "%s holds %d requests; --requests asks for %ld", path, nr,
			    o->requests);
	if (e) {
		bench_req_free(r, nr);
		return e;
	}
	*out = r;
	*n = nr;
	return FI_OK;
}

fi_err bench_workload_make(const struct bench_opts *o, const struct fi_config *c,
			   const struct fi_tok *tok, struct bench_req **out, int *n)
{
	struct bench_req *r = NULL;
	struct rng ar;
	int nr = o->requests > 0 ? (int)o->requests : 1000;
	fi_err e;
	*out = NULL;
	*n = 0;
	if (o->wl.kind == WL_FILE) {
		if ((e = make_file(o, c, tok, &r, &nr)))
			return e;
	} else {
		if (!(r = calloc((size_t)nr, sizeof *r)))
			return fi_fail(FI_ENOMEM, "out of memory");
		if ((e = make_generated(o, c, tok, r, nr))) {
			bench_req_free(r, nr);
			return e;
		}
	}
	/* The first request at 0, then gaps drawn from gamma(burstiness, 1 / (rate burstiness)):
	 * exponential (Poisson arrivals) at burstiness 1, as vLLM's benchmark draws them. */
	rng_init(&ar, o->seed, S_ARRIVALS, 0);
	for (int i = 1; i < nr; i++)
		r[i].arrival = isinf(o->rate) ? 0 : r[i - 1].arrival +
			rng_gamma(&ar, o->burstiness) / (o->rate * o->burstiness);
	*out = r;
	*n = nr;
	return FI_OK;
}

fi_err bench_workload_warmup(const struct bench_opts *o, const struct fi_config *c,
			     const struct fi_tok *tok, int k, struct bench_req *r)
{
	struct rng g;
	memset(r, 0, sizeof *r);
	rng_init(&g, o->seed, S_WARMUP, (uint64_t)k);
	r->ntokens = WARMUP_PROMPT;
	r->max_tokens = WARMUP_OUTPUT;
	if (!(r->tokens = malloc(sizeof(uint32_t) * WARMUP_PROMPT)))
		return fi_fail(FI_ENOMEM, "out of memory");
	for (int i = 0; i < WARMUP_PROMPT; i++)
		r->tokens[i] = rand_token(&g, c, tok);
	return FI_OK;
}

void bench_req_id(int i, char *buf, size_t n)
{
	if (i < 0)
		snprintf(buf, n, "warmup%d", -1 - i);
	else
		snprintf(buf, n, "r%d", i);
}

int bench_req_index(const char *id)
{
	const char *d = !strncmp(id, "warmup", 6) ? id + 6 : id[0] == 'r' ? id + 1 : NULL;
	char *end;
	long v;
	if (!d || !*d || *d < '0' || *d > '9' || (d[0] == '0' && d[1]))
		return INT32_MIN;
	errno = 0;
	v = strtol(d, &end, 10);
	if (errno || *end || v > INT32_MAX - 1)
		return INT32_MIN;
	return d == id + 6 ? (int)(-1 - v) : (int)v;
}
