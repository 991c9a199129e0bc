/* serve: `fi-bench -m MODEL serve [OPTIONS]`, the serving benchmark (serve.h, fi-bench(1)):
 * options, warm-up, the run loop (arrivals and concurrency as a client sees them), the
 * report and the exit status (0, 1 runtime failure, 2 usage, 3 some requests failed). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../cmdutil.h"
#include "base/log.h"
#include "frame/stream.h"
#include "model/store.h"
#include "serve.h"
#include "text/tokenizer.h"

static const char usage_text[] =
	"       fi-bench -m NAME|PATH [--backend auto|cuda|cpu] [-t THREADS] [-o md|csv|json]\n"
	"                serve [--requests N] [--workload SPEC] [--rate R|inf] [--burstiness B]\n"
	"                [--concurrency C] [--seed S] [--ignore-eos] [--temp T] [--warmup N]\n"
	"                [--slo-ttft MS] [--slo-tpot MS] [--plot FILE.png] [--save-requests FILE]\n"
	"                [--max-batch N] [--kv-size SIZE] [--prefill-chunk N] [--prefix-cache]\n"
	"                [-e ENDPOINT [-i IN] [--timeout S]] [--dry-run]\n";
static const char usage_legend[] =
	"SPEC: sharegpt[:IN:OUT[:SIGMA[:MIN:MAX]]], fixed:IN:OUT, file:PATH or\n"
	"      prefix:P[:G[:sharegpt...|:fixed:IN:OUT]]\n";

enum {
	O_BACKEND = 256, O_REQUESTS, O_WORKLOAD, O_RATE, O_BURST, O_CONC, O_SEED, O_IGNORE_EOS,
	O_TEMP, O_SLO_TTFT, O_SLO_TPOT, O_WARMUP, O_PLOT, O_SAVE, O_TIMEOUT, O_MAX_BATCH,
	O_KV_SIZE, O_CHUNK, O_PREFIX_CACHE, O_DRY_RUN,
};

static const char shortopts[] = "m:t:o:e:i:r:b:u:h";
static const struct option longopts[] = {
	{"backend", required_argument, 0, O_BACKEND},
	{"help", no_argument, 0, 'h'},
	{"requests", required_argument, 0, O_REQUESTS},
	{"num-prompts", required_argument, 0, O_REQUESTS}, /* vLLM's and SGLang's name */
	{"workload", required_argument, 0, O_WORKLOAD},
	{"rate", required_argument, 0, O_RATE},
	{"request-rate", required_argument, 0, O_RATE},
	{"burstiness", required_argument, 0, O_BURST},
	{"concurrency", required_argument, 0, O_CONC},
	{"max-concurrency", required_argument, 0, O_CONC},
	{"seed", required_argument, 0, O_SEED},
	{"ignore-eos", no_argument, 0, O_IGNORE_EOS},
	{"temp", required_argument, 0, O_TEMP},
	{"slo-ttft", required_argument, 0, O_SLO_TTFT},
	{"slo-tpot", required_argument, 0, O_SLO_TPOT},
	{"warmup", required_argument, 0, O_WARMUP},
	{"plot", required_argument, 0, O_PLOT},
	{"save-requests", required_argument, 0, O_SAVE},
	{"timeout", required_argument, 0, O_TIMEOUT},
	{"max-batch", required_argument, 0, O_MAX_BATCH},
	{"kv-size", required_argument, 0, O_KV_SIZE},
	{"prefill-chunk", required_argument, 0, O_CHUNK},
	{"prefix-cache", no_argument, 0, O_PREFIX_CACHE},
	{"dry-run", no_argument, 0, O_DRY_RUN},
	{0, 0, 0, 0},
};

int fi_bench_serve_wanted(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--"))
			return i + 1 < argc && !strcmp(argv[i + 1], "serve");
		if (a[0] == '-' && a[1] == '-') {
			for (const struct option *o = longopts; o->name; o++)
				if (!strcmp(a + 2, o->name) && o->has_arg == required_argument)
					i++; /* its value is the next word */
		} else if (a[0] == '-' && a[1]) {
			/* a cluster of short options: the first that takes a value ends it */
			for (const char *c = a + 1; *c; c++) {
				const char *p = strchr(shortopts, *c);
				if (p && p[1] == ':') {
					i += !c[1];
					break;
				}
			}
		} else if (!strcmp(a, "serve")) {
			return 1;
		}
	}
	return 0;
}

void fi_bench_serve_usage(FILE *f, int legend)
{
	fputs(legend ? usage_legend : usage_text, f);
}


/* ---- the run ---- */

struct run {
	const struct bench_opts *o;
	struct bench_target *t;
	struct bench_req *r;
	int n;
	double t0, last_event;
	int next, next_fixed, outstanding, finished, failed;
	double *slots;        /* --concurrency: when each free slot freed, oldest first */
	int slot_head, slot_n;
	int stopped;          /* interrupted: events no longer count */
	/* warm-up */
	int warm_done;
	char warm_err[512];
	struct fi_progress prog;
};

static void slot_push(struct run *R, double t)
{
	if (R->o->concurrency) {
		R->slots[(R->slot_head + R->slot_n) % R->o->concurrency] = t;
		R->slot_n++;
	}
}

static double slot_pop(struct run *R)
{
	double t = R->slots[R->slot_head];
	R->slot_head = (R->slot_head + 1) % R->o->concurrency;
	R->slot_n--;
	return t;
}

static void ended(struct run *R, struct bench_req *q, double t)
{
	q->end = t;
	R->outstanding--;
	R->finished++;
	R->failed += q->state == BR_FAILED;
	slot_push(R, t);
	fi_progress_update(&R->prog, (uint64_t)R->finished);
}

static void on_event(void *user, const struct bench_ev *ev)
{
	struct run *R = user;
	struct bench_req *q;
	double t = ev->t - R->t0;
	R->last_event = ev->t;
	if (R->stopped)
		return;
	if (ev->req < 0) { /* a warm-up request */
		if (ev->type == BENCH_EV_ERROR && !R->warm_err[0])
			snprintf(R->warm_err, sizeof R->warm_err, "%s", ev->message);
		if (ev->type != BENCH_EV_TOKEN)
			R->warm_done++;
		return;
	}
	if (ev->req >= R->n || (q = &R->r[ev->req])->state != BR_SENT)
		return; /* after its end (a done following an error), or not ours */
	switch (ev->type) {
	case BENCH_EV_TOKEN:
		if (q->ntt == q->cap_tt) {
			uint32_t cap = q->cap_tt ? 2 * q->cap_tt : 64;
			double *g = realloc(q->tt, sizeof(double) * cap);
			if (!g)
				return; /* the gap is lost, not the run */
			q->tt = g;
			q->cap_tt = cap;
		}
		if (!q->ntt)
			q->first = t;
		q->tt[q->ntt++] = t;
		break;
	case BENCH_EV_DONE:
		q->finish = ev->finish;
		q->prompt_tokens = ev->prompt_tokens;
		q->gen_tokens = ev->gen_tokens;
		q->cached_tokens = ev->cached_tokens;
		q->state = ev->finish == FI_FINISH_ERROR || ev->finish == FI_FINISH_CANCEL ? BR_FAILED
											 : BR_DONE;
		if (q->state == BR_FAILED)
			q->error = strdup(ev->finish == FI_FINISH_CANCEL ? "cancelled" : "failed");
		ended(R, q, t);
		break;
	case BENCH_EV_ERROR:
		q->state = BR_FAILED;
		q->error = strdup(ev->message ? ev->message : "failed");
		ended(R, q, t);
		break;
	}
}

/* Sends what is due; *busy when the target took no more for now (the request it did not
 * take counts as unanswered for --timeout). */
static fi_err send_due(struct run *R, int *busy)
{
	const struct bench_opts *o = R->o;
	double now = fi_now() - R->t0;
	*busy = 0;
	while (R->next < R->n && (!o->concurrency || R->outstanding < o->concurrency) &&
	       R->r[R->next].arrival <= now) {
		struct bench_req *q = &R->r[R->next];
		fi_err e;
		if (!R->next_fixed) { /* the client's clock starts when it wants to send */
			q->start = o->concurrency ? fmax(q->arrival, slot_pop(R)) : q->arrival;
			R->next_fixed = 1;
		}
		q->state = BR_SENT; /* a refusal comes back as an event inside send */
		R->outstanding++;
		if ((e = R->t->send(R->t, R->next, q))) {
			q->state = BR_WAIT;
			R->outstanding--;
			if (e != FI_EBUSY)
				return e;
			*busy = 1;
			break;
		}
		R->last_event = fi_now();
		R->next++;
		R->next_fixed = 0;
	}
	return FI_OK;
}

static fi_err check_alive(struct run *R, int outstanding)
{
	const struct bench_opts *o = R->o;
	const char *s = outstanding > 1 ? "s" : "";
	if (R->t->ended && outstanding)
		return fi_fail(FI_EIO, "the replies ended with %d request%s unanswered (did the "
			       "worker exit?)", outstanding, s);
	if (o->endpoint && outstanding && fi_now() - R->last_event > o->timeout)
		return fi_fail(FI_EIO, "no reply from %s for %g s, %d request%s unanswered",
			       o->endpoint, o->timeout, outstanding, s);
	if (fi_stream_interrupted())
		return fi_fail(FI_EINTERRUPT, "interrupted");
	return FI_OK;
}

static fi_err run(struct run *R)
{
	const struct bench_opts *o = R->o;
	fi_err e;
	if (o->concurrency) {
		if (!(R->slots = malloc(sizeof(double) * (size_t)o->concurrency)))
			return fi_fail(FI_ENOMEM, "out of memory");
		for (int i = 0; i < o->concurrency; i++)
			slot_push(R, 0);
	}
	fi_progress_begin(&R->prog, "serve", (uint64_t)R->n);
	R->t0 = R->last_event = fi_now();
	while (R->finished < R->n) {
		double wait = -1;
		int busy;
		if ((e = send_due(R, &busy)))
			return e;
		if (R->finished >= R->n)
			break;
		if (busy)
			wait = 0.001; /* read replies a moment, then send again */
		else if (R->next < R->n && (!o->concurrency || R->outstanding < o->concurrency))
			wait = fmax(0, R->r[R->next].arrival - (fi_now() - R->t0));
		if ((e = R->t->poll(R->t, wait)) || (e = check_alive(R, R->outstanding + busy)))
			return e;
	}
	fi_progress_end(&R->prog);
	return FI_OK;
}

/* Warm-up requests (graphs, caches, the worker reached), before the clock starts. */
static fi_err warmup(struct run *R)
{
	const struct bench_opts *o = R->o;
	fi_err e = FI_OK;
	R->last_event = fi_now();
	for (int k = 0; k < o->warmup && !e;) {
		struct bench_req q;
		if ((e = bench_workload_warmup(o, R->t->config, R->t->tok, k, &q)))
			break;
		e = R->t->send(R->t, -1 - k, &q);
		free(q.tokens);
		if (e == FI_EBUSY && !(e = R->t->poll(R->t, 0.001)))
			e = check_alive(R, o->warmup - R->warm_done);
		else if (!e)
			k++;
	}
	while (!e && R->warm_done < o->warmup && !(e = R->t->poll(R->t, -1)))
		e = check_alive(R, o->warmup - R->warm_done);
	if (!e && R->warm_err[0])
		e = fi_fail(FI_EIO, "warm-up request: %s", R->warm_err);
	/* the run's figures start now */
	R->t->steps = R->t->steps < 0 ? -1 : 0;
	R->t->step_s = 0;
	R->t->host_s = R->t->host_s < 0 ? -1 : 0;
	return e;
}

/* ---- options ---- */

static int bad(const char *opt, const char *val)
{
	fprintf(stderr, "fi-bench: invalid value '%s' for %s\n", val, opt);
	return 2;
}

/* 0; the exit status of a usage error (its message printed); or -1 after -h. */
static int parse(int argc, char **argv, struct bench_opts *o)
{
	int c, li, nserve = 0, remote_only = 0;
	const char *engine_opt = NULL;
	double v;
	long long ll;
	char msg[256];
	o->backend = "auto";
	o->fmt = "md";
	o->rate = INFINITY;
	o->burstiness = 1;
	o->warmup = 1;
	o->slo_ttft_ms = o->slo_tpot_ms = -1;
	o->timeout = 600;
	o->in = "-";
	bench_workload_parse("sharegpt", &o->wl, msg, sizeof msg);
	while ((c = getopt_long(argc, argv, shortopts, longopts, &li)) != -1) {
		char sname[3] = {'-', (char)c, 0}, lname[40];
		const char *name = lname;
		snprintf(lname, sizeof lname, "--%s", c >= 256 ? longopts[li].name : "");
		switch (c) {
		case 'm': o->model = optarg; break;
		case 'o': o->fmt = optarg; break;
		case 'e': o->endpoint = optarg; break;
		case 'i': o->in = optarg; remote_only = 1; break;
		case O_BACKEND: o->backend = optarg; engine_opt = "--backend"; break;
		case 't':
			if (fi_parse_int(optarg, 0, 1024, &ll))
				return bad(sname, optarg);
			o->threads = (int)ll;
			engine_opt = "-t";
			break;
		case 'r': case 'b': case 'u':
			fprintf(stderr, "fi-bench: %s is for the pp and tg tests, not serve\n", sname);
			return 2;
		case 'h': return -fi_bench_usage(0) - 1; /* -1: done, exit 0 */
		case O_REQUESTS:
			if (fi_parse_int(optarg, 1, 10000000, &ll))
				return bad(name, optarg);
			o->requests = (long)ll;
			break;
		case O_WORKLOAD:
			if (bench_workload_parse(optarg, &o->wl, msg, sizeof msg)) {
				fprintf(stderr, "fi-bench: --workload '%s': %s\n", optarg, msg);
				return 2;
			}
			break;
		case O_RATE:
			if (!strcmp(optarg, "inf"))
				o->rate = INFINITY;
			else if (fi_parse_num(optarg, 1e-6, 1e9, &o->rate))
				return bad(name, optarg);
			break;
		case O_BURST:
			if (fi_parse_num(optarg, 1e-3, 1e3, &o->burstiness))
				return bad(name, optarg);
			break;
		case O_CONC:
			if (fi_parse_int(optarg, 1, 10000000, &ll))
				return bad(name, optarg);
			o->concurrency = (int)ll;
			break;
		case O_SEED:
			if (fi_parse_u64(optarg, &o->seed))
				return bad(name, optarg);
			break;
		case O_IGNORE_EOS: o->ignore_eos = 1; break;
		case O_TEMP:
			if (fi_parse_num(optarg, 0, 1e4, &v))
				return bad(name, optarg);
			o->temp = (float)v;
			break;
		case O_SLO_TTFT:
		case O_SLO_TPOT:
			if (fi_parse_num(optarg, 0, 1e9, &v))
				return bad(name, optarg);
			*(c == O_SLO_TTFT ? &o->slo_ttft_ms : &o->slo_tpot_ms) = v;
			break;
		case O_WARMUP:
			if (fi_parse_int(optarg, 0, 1000, &ll))
				return bad(name, optarg);
			o->warmup = (int)ll;
			break;
		case O_PLOT: o->plot = optarg; break;
		case O_SAVE: o->save = optarg; break;
		case O_TIMEOUT:
			if (fi_parse_num(optarg, 1e-3, 1e7, &o->timeout))
				return bad(name, optarg);
			remote_only = 1;
			break;
		case O_MAX_BATCH:
			if (fi_parse_int(optarg, 1, 65536, &ll))
				return bad(name, optarg);
			o->max_batch = (int)ll;
			engine_opt = "--max-batch";
			break;
		case O_KV_SIZE: {
			size_t k = strlen(optarg);
			char num[32];
			o->kv_tokens = k > 1 && optarg[k - 1] == 't';
			if (o->kv_tokens) { /* "65536t": tokens */
				if (k > sizeof num)
					return bad(name, optarg);
				memcpy(num, optarg, k - 1);
				num[k - 1] = 0;
				if (fi_parse_int(num, 1, 1ll << 40, &ll))
					return bad(name, optarg);
				o->kv_size = (uint64_t)ll;
			} else if (fi_parse_size(optarg, &o->kv_size)) {
				return bad(name, optarg);
			}
			engine_opt = "--kv-size";
			break;
		}
		case O_CHUNK:
			if (fi_parse_int(optarg, 0, 1 << 30, &ll))
				return bad(name, optarg);
			o->prefill_chunk = (int)ll;
			engine_opt = "--prefill-chunk";
			break;
		case O_PREFIX_CACHE: o->prefix_cache = 1; engine_opt = "--prefix-cache"; break;
		case O_DRY_RUN: o->dry_run = 1; break;
		default:
			return fi_bench_usage(2);
		}
	}
	for (int i = optind; i < argc; i++) {
		if (strcmp(argv[i], "serve")) {
			fprintf(stderr, "fi-bench: '%s' with serve: serve runs alone, without pp or tg "
				"tests\n", argv[i]);
			return 2;
		}
		nserve++;
	}
	if (!o->model || nserve != 1 ||
	    (strcmp(o->fmt, "md") && strcmp(o->fmt, "csv") && strcmp(o->fmt, "json")))
		return fi_bench_usage(2);
	if (o->endpoint && engine_opt) {
		fprintf(stderr, "fi-bench: %s sets up the in-process engine; with -e the worker has "
			"its own\n", engine_opt);
		return 2;
	}
	if (!o->endpoint && remote_only) {
		fprintf(stderr, "fi-bench: -i and --timeout go with -e ENDPOINT\n");
		return 2;
	}
	if (o->endpoint && (!strcmp(o->endpoint, "-") || !strstr(o->endpoint, "://"))) {
		fprintf(stderr, "fi-bench: -e takes a ZeroMQ endpoint (ipc://PATH, tcp://HOST:PORT), "
			"not '%s'\n", o->endpoint);
		return 2;
	}
	if (o->endpoint && !strcmp(o->in, "-") && isatty(0) && !o->dry_run) {
		fprintf(stderr, "fi-bench: the replies come from standard input, a terminal: pipe the "
			"worker's output in (fi-decode -i %s | fi-bench ...) or give -i ENDPOINT\n",
			o->endpoint);
		return 2;
	}
	return 0;
}

/* --dry-run: the requests as they would be sent, with their arrival times; the model is
 * opened for its vocabulary, context and tokenizer, not loaded. */
static int dry_run(const struct bench_opts *o)
{
	struct fi_image *im = NULL;
	struct fi_tok *tok = NULL;
	struct bench_req *r = NULL;
	int n = 0, rc = 0;
	if (fi_store_open(o->model, &im) ||
	    (fi_image_tokenizer(im, &tok) && fi_errcode() != FI_ENOTFOUND) ||
	    bench_workload_make(o, &im->config, tok, &r, &n) ||
	    bench_write_requests(stdout, "standard output", r, n)) {
		fprintf(stderr, "fi-bench: %s\n", fi_errmsg());
		rc = 1;
	}
	bench_req_free(r, n);
	fi_tok_free(tok);
	if (im)
		fi_image_close(im);
	return rc;
}

int fi_bench_serve(int argc, char **argv)
{
	struct bench_opts o = {0};
	struct bench_target *t = NULL;
	struct bench_result res;
	struct run R = {0};
	int rc;
	fi_err e;
	if ((rc = parse(argc, argv, &o)))
		return rc < 0 ? 0 : rc;
	if (o.dry_run)
		return dry_run(&o);
	if (o.plot && bench_plot_check()) {
		fprintf(stderr, "fi-bench: %s\n", fi_errmsg());
		return 1;
	}
	fi_stream_catch_signals();
	if ((e = o.endpoint ? bench_remote_open(&o, &t) : bench_engine_open(&o, &t))) {
		fprintf(stderr, "fi-bench: %s\n", fi_errmsg());
		return 1;
	}
	R.o = &o;
	R.t = t;
	t->cb = on_event;
	t->cb_user = &R;
	if ((e = bench_workload_make(&o, t->config, t->tok, &R.r, &R.n)) || (e = warmup(&R)) ||
	    (e = run(&R))) {
		fi_progress_end(&R.prog);
		rc = 1;
		if (e != FI_EINTERRUPT) {
			fprintf(stderr, "fi-bench: %s\n", fi_errmsg());
			goto out;
		}
		/* interrupted: what finished is reported; what is running is cancelled */
		R.stopped = 1;
		for (int i = 0; i < R.n; i++)
			if (R.r[i].state == BR_SENT)
				t->cancel(t, i);
		fprintf(stderr, "fi-bench: interrupted after %d of %d requests\n", R.finished, R.n);
	}
	bench_result_compute(R.r, R.n, &o, &res);
	bench_report(stdout, &o, t, &res);
	if (res.failed) {
		for (int i = 0, shown = 0; i < R.n && shown < 3; i++)
			if (R.r[i].state == BR_FAILED && R.r[i].error) {
				fprintf(stderr, "fi-bench: request %d: %s\n", i, R.r[i].error);
				shown++;
			}
		fprintf(stderr, "fi-bench: %d of %d requests failed\n", res.failed, R.n);
		rc = rc ? rc : 3;
	}
	if (o.save && (e = bench_save_requests(o.save, R.r, R.n))) {
		fprintf(stderr, "fi-bench: %s\n", fi_errmsg());
		rc = 1;
	}
	if (o.plot && (e = bench_plot(o.plot, &o, R.r, R.n, &res, o.model))) {
		fprintf(stderr, "fi-bench: %s\n", fi_errmsg());
		rc = 1;
	}
out:
	bench_req_free(R.r, R.n);
	free(R.slots);
	if (t)
		t->close(t);
	return rc;
}
