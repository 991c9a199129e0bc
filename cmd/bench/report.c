/* report: the figures of a serving run, computed as vLLM's benchmark computes them (its
 * names in csv and json, so scripts written for it read these), and printed as md, csv or
 * json.
 *
 *   TTFT  first token - start (the start is the arrival, or later when a concurrency slot
 *         freed);
 *   TPOT  per request: (last token - first token) / (tokens - 1), requests of 2+ tokens;
 *   ITL   every gap between two tokens of a request;
 *   E2EL  done - start.
 * Percentiles interpolate linearly between the closest ranks (numpy's default). Failed
 * requests count in "failed" and in no latency; throughput is over the whole duration,
 * from the first arrival to the last request's end. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#ifdef FI_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "model/store.h"
#include "bench.h"



static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p)
{
	double pos = p / 100 * (n - 1), lo = floor(pos);
	int k = (int)lo;
	return k + 1 < n ? v[k] + (v[k + 1] - v[k]) * (pos - lo) : v[k];
}

/* Sorts v in place. */
static struct bench_stat stat_of(double *v, int n)
{
	struct bench_stat s = {n, NAN, NAN, NAN, NAN};
	double sum = 0;
	if (!n)
		return s;
	qsort(v, (size_t)n, sizeof *v, cmp_dbl);
	for (int i = 0; i < n; i++)
		sum += v[i];
	s.mean = sum / n;
	s.median = pct(v, n, 50);
	s.p90 = pct(v, n, 90);
	s.p99 = pct(v, n, 99);
	return s;
}

static int completed(const struct bench_req *q)
{
	return q->state == BR_DONE;
}

/* A request's TTFT and TPOT in ms (NAN when it has no first token / fewer than two). */
static double ttft_ms(const struct bench_req *q)
{
	return q->ntt ? (q->first - q->start) * 1e3 : NAN;
}

static double tpot_ms(const struct bench_req *q)
{
	return q->ntt > 1 ? (q->tt[q->ntt - 1] - q->first) * 1e3 / (q->ntt - 1) : NAN;
}

void bench_result_compute(const struct bench_req *r, int n, const struct bench_opts *o,
			  struct bench_result *res)
{
	size_t nitl = 0;
	int nt = 0, np = 0, ne = 0;
	memset(res, 0, sizeof *res);
	res->requests = n;
	for (int i = 0; i < n; i++) {
		const struct bench_req *q = &r[i];
		if (q->state == BR_DONE || q->state == BR_FAILED)
			res->duration = fmax(res->duration, q->end);
		if (q->state == BR_FAILED)
			res->failed++;
		if (!completed(q))
			continue;
		res->completed++;
		res->input_tokens += q->prompt_tokens;
		res->output_tokens += q->gen_tokens;
		res->cached_tokens += q->cached_tokens;
		nitl += q->ntt > 1 ? q->ntt - 1 : 0;
	}
	double *ttft = malloc(sizeof(double) * (size_t)(n + 1)),
	       *tpot = malloc(sizeof(double) * (size_t)(n + 1)),
	       *e2el = malloc(sizeof(double) * (size_t)(n + 1)),
	       *itl = malloc(sizeof(double) * (nitl + 1));
	size_t ni = 0;
	for (int i = 0; ttft && tpot && e2el && itl && i < n; i++) {
		const struct bench_req *q = &r[i];
		double a, b;
		int good = 1;
		if (!completed(q))
			continue;
		e2el[ne++] = (q->end - q->start) * 1e3;
		if (!isnan(a = ttft_ms(q)))
			ttft[nt++] = a;
		if (!isnan(b = tpot_ms(q)))
			tpot[np++] = b;
		for (uint32_t k = 1; k < q->ntt; k++)
			itl[ni++] = (q->tt[k] - q->tt[k - 1]) * 1e3;
		/* no first token misses a TTFT SLO; one token has no TPOT to miss */
		if (o->slo_ttft_ms >= 0 && !(a <= o->slo_ttft_ms))
			good = 0;
		if (o->slo_tpot_ms >= 0 && !isnan(b) && b > o->slo_tpot_ms)
			good = 0;
		res->good += good;
	}
	if (ttft && tpot && e2el && itl) {
		res->ttft = stat_of(ttft, nt);
		res->tpot = stat_of(tpot, np);
		res->itl = stat_of(itl, (int)ni);
		res->e2el = stat_of(e2el, ne);
	}
	free(ttft);
	free(tpot);
	free(e2el);
	free(itl);
	double d = res->duration > 0 ? res->duration : NAN;
	res->request_throughput = res->completed / d;
	res->output_throughput = (double)res->output_tokens / d;
	res->total_token_throughput = (double)(res->input_tokens + res->output_tokens) / d;
	res->request_goodput = o->slo_ttft_ms >= 0 || o->slo_tpot_ms >= 0 ? res->good / d : NAN;
}

void bench_timeline(const struct bench_req *r, int n, double duration, int nb, double *tput,
		    double *running)
{
	double w = duration > 0 ? duration / nb : 1;
	memset(tput, 0, sizeof(double) * (size_t)nb);
	memset(running, 0, sizeof(double) * (size_t)nb);
	for (int i = 0; i < n; i++) {
		const struct bench_req *q = &r[i];
		double end = q->state == BR_DONE || q->state == BR_FAILED ? q->end : duration;
		for (uint32_t k = 0; k < q->ntt; k++) {
			int b = (int)(q->tt[k] / w);
			tput[b < 0 ? 0 : b >= nb ? nb - 1 : b] += 1 / w;
		}
		if (q->state == BR_WAIT)
			continue;
		for (int b = 0; b < nb; b++) {
			double mid = (b + 0.5) * w;
			running[b] += q->start <= mid && mid < end;
		}
	}
}

/* ---- printing ---- */

enum { F_STR, F_INT, F_NUM, F_U64 };

struct field {
	const char *key;
	int type;
	double v;      /* F_INT, F_NUM: NAN prints as null (json) or nothing (csv) */
	const char *s; /* F_STR */
	uint64_t u;    /* F_U64 (a seed: every bit) */
};

#define MAXF 64

struct fields {
	struct field f[MAXF];
	int n;
};

static void put(struct fields *F, const char *key, int type, double v, const char *s)
{
	if (F->n < MAXF)
		F->f[F->n++] = (struct field){key, type, v, s, 0};
}

/* mean_ttft_ms, median_ttft_ms, p90_ttft_ms, p99_ttft_ms */
#define PUT_STAT(F, name, s)                                                                   \
	do {                                                                                   \
		put(F, "mean_" name "_ms", F_NUM, (s)->mean, NULL);                            \
		put(F, "median_" name "_ms", F_NUM, (s)->median, NULL);                        \
		put(F, "p90_" name "_ms", F_NUM, (s)->p90, NULL);                              \
		put(F, "p99_" name "_ms", F_NUM, (s)->p99, NULL);                              \
	} while (0)

/* The model's last path element, "NAME (RANDOM WEIGHTS)" under --load-format dummy (as the
 * pp/tg tests print it). */
static const char *model_name(const struct bench_opts *o, const struct bench_target *t)
{
	static char buf[512];
	const char *s = strrchr(o->model, '/');
	s = s && s[1] ? s + 1 : o->model;
	if (!t->random_weights)
		return s;
	snprintf(buf, sizeof buf, "%s (RANDOM WEIGHTS)", s);
	return buf;
}

static void fields(const struct bench_opts *o, const struct bench_target *t,
		   const struct bench_result *res, struct fields *F, char *rate, size_t ratesz)
{
	if (isinf(o->rate))
		snprintf(rate, ratesz, "inf");
	else
		snprintf(rate, ratesz, "%g", o->rate);
	F->n = 0;
	put(F, "model", F_STR, 0, model_name(o, t));
	put(F, "weights", F_STR, 0, t->random_weights ? "random" : "image");
	put(F, "backend", F_STR, 0, t->backend);
	put(F, "device", F_STR, 0, t->device);
	put(F, "build", F_STR, 0, fi_bench_build());
	put(F, "workload", F_STR, 0, o->wl.text);
	put(F, "num_prompts", F_INT, res->requests, NULL);
	put(F, "request_rate", isinf(o->rate) ? F_STR : F_NUM, o->rate, rate);
	put(F, "burstiness", F_NUM, o->burstiness, NULL);
	put(F, "max_concurrency", F_INT, o->concurrency ? o->concurrency : NAN, NULL);
	put(F, "seed", F_U64, 0, NULL);
	F->f[F->n - 1].u = o->seed;
	put(F, "ignore_eos", F_INT, o->ignore_eos, NULL);
	put(F, "completed", F_INT, res->completed, NULL);
	put(F, "failed", F_INT, res->failed, NULL);
	put(F, "duration", F_NUM, res->duration, NULL);
	put(F, "total_input_tokens", F_INT, (double)res->input_tokens, NULL);
	put(F, "total_output_tokens", F_INT, (double)res->output_tokens, NULL);
	put(F, "cached_tokens", F_INT, (double)res->cached_tokens, NULL);
	put(F, "request_throughput", F_NUM, res->request_throughput, NULL);
	put(F, "output_throughput", F_NUM, res->output_throughput, NULL);
	put(F, "total_token_throughput", F_NUM, res->total_token_throughput, NULL);
	PUT_STAT(F, "ttft", &res->ttft);
	PUT_STAT(F, "tpot", &res->tpot);
	PUT_STAT(F, "itl", &res->itl);
	PUT_STAT(F, "e2el", &res->e2el);
	put(F, "slo_ttft_ms", F_NUM, o->slo_ttft_ms >= 0 ? o->slo_ttft_ms : NAN, NULL);
	put(F, "slo_tpot_ms", F_NUM, o->slo_tpot_ms >= 0 ? o->slo_tpot_ms : NAN, NULL);
	put(F, "good_requests", F_INT, isnan(res->request_goodput) ? NAN : res->good, NULL);
	put(F, "request_goodput", F_NUM, res->request_goodput, NULL);
	put(F, "peak_mem_bytes", F_INT, t->peak_mem ? (double)t->peak_mem : NAN, NULL);
	put(F, "steps", F_INT, t->steps >= 0 ? (double)t->steps : NAN, NULL);
	put(F, "mean_step_ms", F_NUM, t->steps > 0 ? t->step_s * 1e3 / t->steps : NAN, NULL);
	put(F, "host_ms_per_step", F_NUM,
	    t->steps > 0 && t->host_s >= 0 ? t->host_s * 1e3 / t->steps : NAN, NULL);
}

static void csv_str(FILE *f, const char *s)
{
	if (!strpbrk(s, ",\"\n")) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

static void print_csv(FILE *f, const struct fields *F)
{
	for (int i = 0; i < F->n; i++)
		fprintf(f, "%s%s", i ? "," : "", F->f[i].key);
	fputc('\n', f);
	for (int i = 0; i < F->n; i++) {
		const struct field *x = &F->f[i];
		if (i)
			fputc(',', f);
		if (x->type == F_STR)
			csv_str(f, x->s);
		else if (x->type == F_U64)
			fprintf(f, "%llu", (unsigned long long)x->u);
		else if (!isnan(x->v))
			fprintf(f, x->type == F_INT ? "%.0f" : "%.6g", x->v);
	}
	fputc('\n', f);
}

static void print_json(FILE *f, const struct fields *F)
{
	json_t *o = json_object();
	char *s;
	for (int i = 0; i < F->n; i++) {
		const struct field *x = &F->f[i];
		/* a seed above 2^63 is a string: JSON readers lose integers that large */
		json_t *v = x->type == F_U64 ? (x->u <= INT64_MAX ? json_integer((json_int_t)x->u)
							      : json_sprintf("%llu", (unsigned long long)x->u))
			    : x->type == F_STR ? json_string(x->s)
			    : isnan(x->v)    ? json_null()
			    : x->type == F_INT ? json_integer((json_int_t)x->v)
					       : json_real(x->v);
		json_object_set_new(o, x->key, v);
	}
	s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(8));
	if (s)
		fprintf(f, "%s\n", s);
	free(s);
	json_decref(o);
}

static const char *num(char *buf, size_t n, const char *fmt, double v)
{
	if (isnan(v))
		snprintf(buf, n, "n/a");
	else
		snprintf(buf, n, fmt, v);
	return buf;
}

static void md_stat(FILE *f, const char *name, const struct bench_stat *s)
{
	char a[32], b[32], c[32], d[32];
	fprintf(f, "| %s | %d | %s | %s | %s | %s |\n", name, s->n, num(a, sizeof a, "%.2f", s->mean),
		num(b, sizeof b, "%.2f", s->median), num(c, sizeof c, "%.2f", s->p90),
		num(d, sizeof d, "%.2f", s->p99));
}

static void print_md(FILE *f, const struct bench_opts *o, const struct bench_target *t,
		     const struct bench_result *res, const char *rate)
{
	char a[32], b[32], c[32], d[32], conc[16], pk[32];
	snprintf(conc, sizeof conc, o->concurrency ? "%d" : "-", o->concurrency);
	fprintf(f, "| model | backend | workload | requests | rate | concurrency | completed | "
		"failed | duration s | req/s | output tok/s | total tok/s |\n");
	fprintf(f, "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
	fprintf(f, "| %s | %s | %s | %d | %s | %s | %d | %d | %.3f | %s | %s | %s |\n\n",
		model_name(o, t), t->backend, o->wl.text, res->requests, rate, conc, res->completed,
		res->failed, res->duration, num(a, sizeof a, "%.2f", res->request_throughput),
		num(b, sizeof b, "%.1f", res->output_throughput),
		num(c, sizeof c, "%.1f", res->total_token_throughput));
	fprintf(f, "| latency ms | n | mean | p50 | p90 | p99 |\n");
	fprintf(f, "| --- | ---: | ---: | ---: | ---: | ---: |\n");
	md_stat(f, "TTFT", &res->ttft);
	md_stat(f, "TPOT", &res->tpot);
	md_stat(f, "ITL", &res->itl);
	md_stat(f, "E2E", &res->e2el);
	fprintf(f, "\ntokens: %llu prompt (%llu cached), %llu output; per completed request "
		"%s prompt, %s output\n", (unsigned long long)res->input_tokens,
		(unsigned long long)res->cached_tokens, (unsigned long long)res->output_tokens,
		num(a, sizeof a, "%.1f", (double)res->input_tokens / res->completed),
		num(b, sizeof b, "%.1f", (double)res->output_tokens / res->completed));
	if (!isnan(res->request_goodput)) {
		fprintf(f, "goodput (");
		if (o->slo_ttft_ms >= 0)
			fprintf(f, "TTFT <= %g ms%s", o->slo_ttft_ms, o->slo_tpot_ms >= 0 ? ", " : "");
		if (o->slo_tpot_ms >= 0)
			fprintf(f, "TPOT <= %g ms", o->slo_tpot_ms);
		fprintf(f, "): %s req/s, %d of %d requests\n",
			num(a, sizeof a, "%.2f", res->request_goodput), res->good, res->requests);
	}
	fprintf(f, "device: %s; build: %s; seed: %llu%s%s\n", t->device, fi_bench_build(),
		(unsigned long long)o->seed, o->ignore_eos ? "; ignore eos" : "",
		t->random_weights ? "; weights: RANDOM (--load-format dummy), drawn on the device"
				  : "");
	if (t->peak_mem)
		fi_format_bytes(t->peak_mem, pk, sizeof pk);
	fprintf(f, "peak device memory: %s; steps: %s (%s ms each); host time per step: %s\n",
		t->peak_mem ? pk : "n/a", t->steps >= 0 ? num(a, sizeof a, "%.0f", (double)t->steps) : "n/a",
		num(b, sizeof b, "%.3f", t->steps > 0 ? t->step_s * 1e3 / t->steps : NAN),
		num(d, sizeof d, "%.3f ms",
		    t->steps > 0 && t->host_s >= 0 ? t->host_s * 1e3 / t->steps : NAN));
}

void bench_report(FILE *f, const struct bench_opts *o, const struct bench_target *t,
		  const struct bench_result *res)
{
	struct fields F;
	char rate[32];
	fields(o, t, res, &F, rate, sizeof rate);
	if (!strcmp(o->fmt, "csv"))
		print_csv(f, &F);
	else if (!strcmp(o->fmt, "json"))
		print_json(f, &F);
	else
		print_md(f, o, t, res, rate);
	fflush(f);
}

static const char *const state_names[] = {"waiting", "sent", "done", "failed"};

fi_err bench_write_requests(FILE *f, const char *path, const struct bench_req *r, int n)
{
	fi_err e = FI_OK;
	for (int i = 0; i < n && !e; i++) {
		const struct bench_req *q = &r[i];
		json_t *o = json_object(), *itl = json_array();
		char id[32], *s;
		int ended = q->state == BR_DONE || q->state == BR_FAILED;
		double a = ttft_ms(q), b = tpot_ms(q);
		bench_req_id(i, id, sizeof id);
		for (uint32_t k = 1; k < q->ntt; k++)
			json_array_append_new(itl, json_real((q->tt[k] - q->tt[k - 1]) * 1e3));
		json_object_set_new(o, "index", json_integer(i));
		json_object_set_new(o, "id", json_string(id));
		json_object_set_new(o, "state", json_string(state_names[q->state]));
		json_object_set_new(o, "finish", q->state == BR_DONE ? json_string(fi_finish_name(q->finish))
								       : json_null());
		json_object_set_new(o, "input_tokens", json_integer(q->ntokens));
		json_object_set_new(o, "max_tokens", json_integer(q->max_tokens));
		json_object_set_new(o, "prompt_tokens", json_integer(q->prompt_tokens));
		json_object_set_new(o, "output_tokens", json_integer(q->gen_tokens));
		json_object_set_new(o, "cached_tokens", json_integer(q->cached_tokens));
		json_object_set_new(o, "arrival_s", json_real(q->arrival));
		json_object_set_new(o, "start_s", q->state != BR_WAIT ? json_real(q->start) : json_null());
		json_object_set_new(o, "ttft_ms", isnan(a) ? json_null() : json_real(a));
		json_object_set_new(o, "tpot_ms", isnan(b) ? json_null() : json_real(b));
		json_object_set_new(o, "e2el_ms", ended ? json_real((q->end - q->start) * 1e3) : json_null());
		json_object_set_new(o, "itl_ms", itl);
		json_object_set_new(o, "error", q->error ? json_string(q->error) : json_null());
		s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
		if (!s || fprintf(f, "%s\n", s) < 0)
			e = fi_fail(FI_EIO, "cannot write '%s': %s", path, strerror(errno));
		free(s);
		json_decref(o);
	}
	if (fflush(f) && !e)
		e = fi_fail(FI_EIO, "cannot write '%s': %s", path, strerror(errno));
	return e;
}

fi_err bench_save_requests(const char *path, const struct bench_req *r, int n)
{
	FILE *f = fopen(path, "w");
	fi_err e;
	if (!f)
		return fi_fail(FI_EIO, "cannot open '%s': %s", path, strerror(errno));
	e = bench_write_requests(f, path, r, n);
	if (fclose(f) && !e)
		e = fi_fail(FI_EIO, "cannot write '%s': %s", path, strerror(errno));
	return e;
}

/* "fi 0.1.0, cuda 12.8": the build, in every report of fi-bench (micro and serve). */
const char *fi_bench_build(void)
{
#ifdef FI_HAVE_CUDA
	static char b[64];
	int v = 0;
	cudaRuntimeGetVersion(&v);
	snprintf(b, sizeof b, "fi %s, cuda %d.%d", FI_VERSION, v / 1000, (v % 1000) / 10);
	return b;
#else
	return "fi " FI_VERSION ", cpu only";
#endif
}
