/* fi-bench: micro benchmarks of a model on a backend, like llama-bench: prompt processing
 * (ppN: one N-token prompt in one call, or chunks of -u tokens) and generation (tgN: N decode
 * steps of -b sequences, one token each per step), optionally after a context of D tokens
 * (ppN@dD, tgN@dD). Each test runs once untimed, then -r times; the table gives tokens per
 * second as mean ± sd, with the device, build, weight upload rate, time from exec to the
 * first token and the peak device memory. `fi-bench -m M serve ...` is the serving benchmark
 * (bench/serve.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#ifdef FI_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "backend/backend.h"
#include "base/err.h"
#include "bench/bench.h"
#include "model/image.h"
#include "base/log.h"
#include "api/llm.h"
#include "model/model.h"
#include "model/tp.h"
#include "model/store.h"
#include "opt.h"

struct test {
	char name[48];
	int pp, tg, depth;
	double mean, sd;
	int reps;
};

struct env {
	struct fi_model *m;
	struct fi_backend *be;
	int batch, ubatch, V;
	size_t peak_used;
};

static int fail(const char *what)
{
	return what ? cmd_error("%s: %s", what, fi_errmsg()) : cmd_error(NULL);
}

static void note_mem(struct env *e)
{
#ifdef FI_HAVE_CUDA
	size_t fr, tot;
	if (!strcmp(e->be->ops->name, "cuda") && cudaMemGetInfo(&fr, &tot) == cudaSuccess &&
	    tot - fr > e->peak_used)
		e->peak_used = tot - fr;
#endif
	(void)e;
}

static int parse_test(const char *s, struct test *t)
{
	char kind[3] = {0};
	int n = 0, d = 0, used = 0;
	memset(t, 0, sizeof(*t));
	if (sscanf(s, "%2[a-z]%d%n", kind, &n, &used) != 2 || n <= 0)
		return -1;
	if (s[used] == '@') {
		int u2 = 0;
		if (sscanf(s + used, "@d%d%n", &d, &u2) != 1 || d < 0 || s[used + u2])
			return -1;
	} else if (s[used]) {
		return -1;
	}
	if (!strcmp(kind, "pp"))
		t->pp = n;
	else if (!strcmp(kind, "tg"))
		t->tg = n;
	else
		return -1;
	t->depth = d;
	snprintf(t->name, sizeof t->name, "%s", s);
	return 0;
}

static uint64_t rng = 0x243f6a8885a308d3ull;
static int32_t rand_tok(int V)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (int32_t)(3 + rng % (uint64_t)(V > 4 ? V - 3 : 1));
}

/* Feeds n tokens to each of the S sequences, in chunks of at most ubatch tokens per call;
 * each call returns the logits of each sequence's last token, or with logits NULL its
 * greedy token (tok[S]: what a greedy generator takes, argmax on the device). */
static fi_err feed(struct env *e, const int *seqs, int S, int n, float *logits, int32_t *out)
{
	int chunk = e->ubatch / S > 0 ? e->ubatch / S : 1;
	int32_t *tok = malloc(sizeof(int32_t) * (size_t)S * chunk);
	int32_t *seq = malloc(sizeof(int32_t) * (size_t)S * chunk);
	fi_err err = FI_OK;
	if (!tok || !seq) {
		free(tok);
		free(seq);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	for (int done = 0; done < n && !err; done += chunk) {
		int k = n - done < chunk ? n - done : chunk, T = 0;
		for (int s = 0; s < S; s++)
			for (int i = 0; i < k; i++, T++) {
				tok[T] = rand_tok(e->V);
				seq[T] = seqs[s];
			}
		struct fi_batch b = {.n_tokens = T, .tokens = tok, .seq = seq};
		err = fi_model_forward_ex(e->m, &b, logits, logits ? NULL : out, NULL);
	}
	free(tok);
	free(seq);
	return err;
}

/* One run of a test; *secs gets the timed part. */
static fi_err run_once(struct env *e, const struct test *t, double *secs)
{
	int S = t->tg ? e->batch : 1, seqs[1024];
	int32_t *tok = malloc(sizeof(int32_t) * (size_t)S);
	fi_err err = FI_OK;
	int made = 0;
	if (!tok)
		return fi_fail(FI_ENOMEM, "out of memory");
	for (; made < S && !err; made++)
		err = fi_model_seq_new(e->m, &seqs[made]);
	if (err) {
		made--;
		goto out;
	}
	if (t->depth && (err = feed(e, seqs, S, t->depth, NULL, tok)))
		goto out;
	if ((err = e->be->ops->sync(e->be)))
		goto out;
	double t0 = fi_now();
	if (t->pp)
		err = feed(e, seqs, 1, t->pp, NULL, tok);
	else
		for (int i = 0; i < t->tg && !err; i++)
			err = feed(e, seqs, S, 1, NULL, tok);
	if (!err)
		err = e->be->ops->sync(e->be);
	*secs = fi_now() - t0;
	note_mem(e);
out:
	for (int s = 0; s < made; s++)
		fi_model_seq_free(e->m, seqs[s]);
	free(tok);
	return err;
}

/* Test k of n: its warm-up and repetitions, on a terminal only (fi_live). */
static fi_err run_test(struct env *e, struct test *t, int reps, int k, int n)
{
	double sum = 0, sum2 = 0, secs;
	double toks = t->pp ? t->pp : (double)t->tg * e->batch;
	fi_err err;
	fi_live(1, "[%d/%d] %s: warm-up", k, n, t->name);
	err = run_once(e, t, &secs); /* warm-up: plans, graphs, caches */
	for (int r = 0; r < reps && !err; r++) {
		fi_live(1, "[%d/%d] %s: run %d/%d", k, n, t->name, r + 1, reps);
		if ((err = run_once(e, t, &secs)))
			break;
		sum += toks / secs;
		sum2 += (toks / secs) * (toks / secs);
	}
	if (err)
		return err;
	t->reps = reps;
	t->mean = sum / reps;
	t->sd = reps > 1 ? sqrt(fmax(0, (sum2 - sum * sum / reps) / (reps - 1))) : 0;
	return FI_OK;
}

/* Seconds since this process was exec'd (from /proc), or -1. */
static double since_exec(void)
{
	FILE *f = fopen("/proc/self/stat", "r");
	unsigned long long st = 0;
	double up = -1;
	char buf[1024], *p;
	if (!f)
		return -1;
	p = fgets(buf, sizeof buf, f) ? strrchr(buf, ')') : NULL;
	fclose(f);
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
			 "%*d %*d %*d %llu", &st) != 1)
		return -1;
	if ((f = fopen("/proc/uptime", "r"))) {
		if (fscanf(f, "%lf", &up) != 1)
			up = -1;
		fclose(f);
	}
	return up < 0 ? -1 : up - (double)st / (double)sysconf(_SC_CLK_TCK);
}


enum {
	O_REQUESTS = OPT_LONG, O_LOAD_FORMAT, O_KV_DTYPE, O_WORKLOAD, O_RATE, O_BURST, O_CONC, O_SEED, O_IGNORE_EOS, O_TEMP,
	O_SLO_TTFT, O_SLO_TPOT, O_WARMUP, O_PLOT, O_SAVE, O_TIMEOUT, O_MAX_BATCH, O_KV_SIZE,
	O_CHUNK, O_PREFIX_CACHE, O_DRY_RUN, O_ENDPOINT,
};

/* Values that are not one kind: --requests (a long), --workload, --rate R|inf, --kv-size
 * (bytes, or tokens with a 't'). */
static int take_opt(void *user, int key, const char *v)
{
	struct bench_opts *o = user;
	char msg[256], num[32];
	size_t k = strlen(v);
	double d;
	char *end;
	switch (key) {
	case O_REQUESTS:
		o->requests = strtol(v, &end, 10);
		return *v && !*end && o->requests >= 1 && o->requests <= 10000000 ? 0 : -1;
	case O_WORKLOAD:
		if (!bench_workload_parse(v, &o->wl, msg, sizeof msg))
			return 0;
		cmd_error("--workload '%s': %s", v, msg);
		return EXIT_USAGE;
	case O_RATE:
		if (!strcmp(v, "inf")) {
			o->rate = INFINITY;
			return 0;
		}
		d = strtod(v, &end);
		if (!*v || *end || !(d >= 1e-6 && d <= 1e9))
			return -1;
		o->rate = d;
		return 0;
	case O_KV_SIZE:
		if ((o->kv_tokens = k > 1 && v[k - 1] == 't')) { /* "65536t": tokens */
			long long t;
			if (k > sizeof num)
				return -1;
			memcpy(num, v, k - 1);
			num[k - 1] = 0;
			t = strtoll(num, &end, 10);
			if (!*num || *end || t < 1 || t > 1ll << 40)
				return -1;
			o->kv_size = (uint64_t)t;
			return 0;
		}
		d = strtod(v, &end);
		if (!*v || !(d > 0))
			return -1;
		switch (*end) {
		case 'k': case 'K': d *= 1024.0; end++; break;
		case 'm': case 'M': d *= 1048576.0; end++; break;
		case 'g': case 'G': d *= 1073741824.0; end++; break;
		case 't': case 'T': d *= 1099511627776.0; end++; break;
		}
		if (*end == 'i' || *end == 'B')
			end += *end == 'i' && end[1] == 'B' ? 2 : 1;
		if (*end || d < 1048576.0 || d > 1e15)
			return -1;
		o->kv_size = (uint64_t)d;
		return 0;
	}
	return -1;
}

/* fi-bench -m MODEL serve ...: the options the serving benchmark takes are checked here,
 * with the command's others; the run is bench/serve.c's. */
static int serve_main(struct bench_opts *o, const struct cmd_args *a, const char *fmt,
		      int argc, char **argv, int ops)
{
	static const int micro[] = {'r', 'b', 'u'};
	static const struct { int key; const char *name; } engine[] = {
		{'t', "-t"}, {O_MAX_BATCH, "--max-batch"}, {O_KV_SIZE, "--kv-size"},
		{O_CHUNK, "--prefill-chunk"}, {O_PREFIX_CACHE, "--prefix-cache"},
		{O_LOAD_FORMAT, "--load-format"},
	};
	for (int i = ops; i < argc; i++)
		if (strcmp(argv[i], "serve"))
			usage_error("'%s' with serve: serve runs alone, without pp or tg tests", argv[i]);
	if (argc - ops != 1)
		usage_error("serve once");
	for (size_t i = 0; i < sizeof micro / sizeof *micro; i++)
		if (cmd_given(micro[i]))
			usage_error("-%c is for the pp and tg tests, not serve", micro[i]);
	o->model = a->model;
	o->backend = a->backend;
	o->threads = a->threads;
	o->fmt = fmt;
	if (o->endpoint) {
		for (size_t i = 0; i < sizeof engine / sizeof *engine; i++)
			if (cmd_given(engine[i].key))
				usage_error("%s sets up the in-process engine; with -e or --endpoint "
					    "the worker has its own", engine[i].name);
		if (strcmp(a->backend, "auto"))
			usage_error("--backend sets up the in-process engine; with -e or --endpoint "
				    "the worker has its own");
		if (!strcmp(o->endpoint, "-") || !strstr(o->endpoint, "://"))
			usage_error("-e takes a ZeroMQ endpoint (ipc://PATH, tcp://HOST:PORT), not "
				    "'%s'", o->endpoint);
		if (!o->dealer && !strcmp(o->in, "-") && isatty(0) && !o->dry_run)
			usage_error("the replies come from standard input, a terminal: pipe the "
				    "worker's output in (fi-decode -i %s | fi-bench ...) or give -i "
				    "ENDPOINT", o->endpoint);
	} else if (cmd_given('i') || cmd_given(O_TIMEOUT)) {
		usage_error("-i and --timeout go with -e ENDPOINT");
	}
	return fi_bench_serve(o);
}

int main(int argc, char **argv)
{
	const char *fmt = "md", *load_format = "auto", *kv_dtype = "auto";
	int reps = 5, batch = 1, ubatch = 2048;
	const char *dealer_ep = NULL;
	struct bench_opts so = {.rate = INFINITY, .burstiness = 1, .warmup = 1, .slo_ttft_ms = -1,
				.slo_tpot_ms = -1, .timeout = 600, .in = "-"};
	char msg[256];
	const struct opt own[] = {
		{'r', NULL, "REPS", OPT_INT, 1, 1000000, &reps},
		{'b', NULL, "BATCH", OPT_INT, 1, 1024, &batch},
		{'u', NULL, "UBATCH", OPT_INT, 1, 1 << 20, &ubatch},
		{'o', NULL, "md|csv|json", OPT_CHOICE, 0, 0, &fmt},
		{O_LOAD_FORMAT, "load-format", "auto|dummy", OPT_CHOICE, 0, 0, &load_format},
		{O_KV_DTYPE, "kv-dtype", "auto|fp8", OPT_CHOICE, 0, 0, &kv_dtype},
		/* serve */
		{O_REQUESTS, "requests", "N", OPT_CALL, 0, 0, NULL},
		{O_WORKLOAD, "workload", "SPEC", OPT_CALL, 0, 0, NULL},
		{O_RATE, "rate", "R|inf", OPT_CALL, 0, 0, NULL},
		{O_BURST, "burstiness", "B", OPT_DOUBLE, 1e-3, 1e3, &so.burstiness},
		{O_CONC, "concurrency", "C", OPT_INT, 1, 10000000, &so.concurrency},
		{O_SEED, "seed", "S", OPT_SEED, 0, 0, &so.seed},
		{O_IGNORE_EOS, "ignore-eos", NULL, OPT_FLAG, 0, 0, &so.ignore_eos},
		{O_TEMP, "temp", "T", OPT_FLOAT, 0, 1e4, &so.temp},
		{O_WARMUP, "warmup", "N", OPT_INT, 0, 1000, &so.warmup},
		{O_SLO_TTFT, "slo-ttft", "MS", OPT_DOUBLE, 0, 1e9, &so.slo_ttft_ms},
		{O_SLO_TPOT, "slo-tpot", "MS", OPT_DOUBLE, 0, 1e9, &so.slo_tpot_ms},
		{O_PLOT, "plot", "FILE.png", OPT_STR, 0, 0, &so.plot},
		{O_SAVE, "save-requests", "FILE", OPT_STR, 0, 0, &so.save},
		{O_MAX_BATCH, "max-batch", "N", OPT_INT, 1, 65536, &so.max_batch},
		{O_KV_SIZE, "kv-size", "SIZE", OPT_CALL, 0, 0, NULL},
		{O_CHUNK, "prefill-chunk", "N", OPT_INT, 0, 1 << 30, &so.prefill_chunk},
		{O_PREFIX_CACHE, "prefix-cache", NULL, OPT_FLAG, 0, 0, &so.prefix_cache},
		{'e', NULL, "ENDPOINT", OPT_STR, 0, 0, &so.endpoint},
		{O_ENDPOINT, "endpoint", "ENDPOINT", OPT_STR, 0, 0, &dealer_ep},
		{'i', NULL, "IN", OPT_STR, 0, 0, &so.in},
		{O_TIMEOUT, "timeout", "S", OPT_DOUBLE, 1e-3, 1e7, &so.timeout},
		{O_DRY_RUN, "dry-run", NULL, OPT_FLAG, 0, 0, &so.dry_run},
		{0},
	};
	/* the names vLLM's and SGLang's benchmarks give these */
	static const struct opt_alias aliases[] = {
		{"num-prompts", O_REQUESTS}, {"request-rate", O_RATE},
		{"max-concurrency", O_CONC}, {0},
	};
	static const char *const usage[] = {
		"-m [--backend] [-t] [--tp] [-r] [-b] [-u] [-o] [--load-format] [--kv-dtype] [TEST ...]",
		"-m [--backend] [-t] [--tp] [-o] serve [--requests] [--workload] [--rate] [--burstiness]"
		" [--concurrency] [--seed] [--ignore-eos] [--temp] [--warmup] [--slo-ttft]"
		" [--slo-tpot] [--plot] [--save-requests] [--max-batch] [--kv-size] [--prefill-chunk]"
		" [--prefix-cache] [-e [-i] | --endpoint] [--timeout] [--dry-run]",
		NULL,
	};
	const struct cmd cmd = {.name = "fi-bench", .groups = CMD_MODEL | CMD_BACKEND,
				.opts = own, .usage = usage, .aliases = aliases, .take = take_opt,
				.user = &so,
				.notes = "TEST: ppN or tgN, optionally @dD (context depth D); default: "
					 "pp512 tg128\n"
					 "SPEC: sharegpt[:IN:OUT[:SIGMA[:MIN:MAX]]], fixed:IN:OUT, "
					 "file:PATH or\n"
					 "      prefix:P[:G[:sharegpt...|:fixed:IN:OUT]]\n"};
	static const int serve_only[] = {
		O_REQUESTS, O_WORKLOAD, O_RATE, O_BURST, O_CONC, O_SEED, O_IGNORE_EOS, O_TEMP,
		O_WARMUP, O_SLO_TTFT, O_SLO_TPOT, O_PLOT, O_SAVE, O_MAX_BATCH, O_KV_SIZE, O_CHUNK,
		O_PREFIX_CACHE, 'e', 'i', O_TIMEOUT, O_DRY_RUN, O_ENDPOINT,
	};
	struct cmd_args a;
	int ops;
	bench_workload_parse("sharegpt", &so.wl, msg, sizeof msg);
	ops = cmd_parse(&cmd, &a, argc, argv);
	if (dealer_ep) {
		if (so.endpoint || cmd_given('i'))
			usage_error("--endpoint sends and receives on one socket: no -e or -i");
		so.endpoint = dealer_ep;
		so.dealer = 1;
	}
	fi_random_weights = !strcmp(load_format, "dummy");
	fi_tp_size = a.tp; /* the serving engine opens its model with it too */
	for (int i = ops; i < argc; i++)
		if (!strcmp(argv[i], "serve"))
			return serve_main(&so, &a, fmt, argc, argv, ops);
	for (size_t i = 0; i < sizeof serve_only / sizeof *serve_only; i++)
		if (cmd_given(serve_only[i]))
			usage_error("the serving options go with the test serve (fi-bench -m MODEL "
				    "serve ...)");
	const char *model = a.model, *backend = a.backend;
	int threads = a.threads, kv_fp8 = !strcmp(kv_dtype, "fp8");
	int nt = argc - ops ? argc - ops : 2;
	struct test *tests = calloc((size_t)nt, sizeof(*tests));
	if (!tests)
		return cmd_error("out of memory");
	for (int i = 0; i < nt; i++) {
		const char *s = argc - ops ? argv[ops + i] : (i ? "tg128" : "pp512");
		if (parse_test(s, &tests[i]))
			die(EXIT_USAGE, "bad test '%s' (ppN, tgN, optionally @dD)", s);
	}

	struct fi_image *im;
	struct env e = {.batch = batch, .ubatch = ubatch};
	struct fi_backend_start *bs;
	double be_secs = 0;
	double t_main = since_exec(); /* the dynamic loader's part (cudart, cuBLASLt) */
	double ph[4]; /* startup: start, image open, backend ready, first token */
	/* The backend starts in its own thread from the first moment while this thread opens
	 * the image. The image is not prefaulted: mapping its pages in at the same time slowed
	 * the context creation from 0.22 to 0.85 s (measured with tools/cuda_start.c), and the
	 * upload threads take the faults of a fresh mapping at full speed. */
	ph[0] = fi_now();
	if (fi_backend_start(backend, threads, &bs)) {
		free(tests);
		return fail(NULL);
	}
	fi_err oe = fi_random_weights ? fi_image_random(model, 0, &im) : fi_store_open(model, &im);
	ph[1] = fi_now();
	fi_err be_err = fi_backend_join(bs, &e.be, &be_secs);
	ph[2] = fi_now();
	if (be_err || oe) { /* the backend's error first: it was recorded last */
		int rc = fail(NULL);
		if (!oe)
			fi_image_close(im);
		fi_backend_destroy(e.be);
		free(tests);
		return rc;
	}
	/* the KV cache: every test's sequences at their longest */
	int need = 0;
	for (int i = 0; i < nt; i++) {
		int S = tests[i].tg ? batch : 1, len = tests[i].depth + tests[i].pp + tests[i].tg;
		int blocks = S * ((len + 15) / 16 + 1);
		need = blocks > need ? blocks : need;
	}
	/* Refuse early, with the sizes, when the weights and the cache cannot fit. */
	if (e.be->mem_free) {
		const struct fi_config *cf = &im->config;
		uint64_t w = 0, kv = (uint64_t)(need + 8) * 16 * cf->n_layers * 2 * cf->n_kv_heads *
				     (kv_fp8 ? (uint64_t)cf->head_dim + 4
					    : (uint64_t)cf->head_dim * fi_dtype_size(e.be->act));
		/* quantized weights stay packed on the GPU; the CPU (f32 activations) widens them */
		for (int i = 0; i < im->set.n; i++)
			w += fi_dtype_is_quant(im->set.t[i].dtype) && e.be->act != FI_DT_F32
				     ? im->set.t[i].nbytes
				     : (uint64_t)fi_tensor_numel(&im->set.t[i]) *
					       fi_dtype_size(e.be->act);
		if (a.tp > 1) { /* each GPU holds about its share (tp.h) */
			w /= (uint64_t)a.tp;
			kv /= (uint64_t)a.tp;
		}
		if (w + kv > e.be->mem_free) {
			return cmd_error("%s needs %.2f GiB of weights + %.2f GiB of KV cache; "
				"%s has %.2f GiB free of %.2f GiB", model, w / 1073741824.0,
				kv / 1073741824.0, e.be->device, e.be->mem_free / 1073741824.0,
				e.be->mem_total / 1073741824.0);
		}
	}
	if (im->random) { /* drawn on the device (backend.h) */
		e.be->random_weights = 1;
		e.be->random_seed = im->random_seed;
		fi_random_weights_notice("fi-bench", model);
	}
	double tl = fi_now();
	if ((a.tp ? fi_model_load_tp(&im->config, &im->set, e.be, a.tp, &e.m)
		  : fi_model_load(&im->config, &im->set, e.be, &e.m)) ||
	    e.be->ops->sync(e.be))
		return fail("loading the model");
	tl = fi_now() - tl;
	uint64_t wbytes = 0;
	for (int i = 0; i < im->set.n; i++)
		wbytes += im->set.t[i].nbytes;
	if ((kv_fp8 && fi_model_set_kv_dtype(e.m, FI_DT_F8_E4M3)) ||
	    fi_model_cache_init(e.m, need + 8, 16))
		return fail("kv cache");
	e.V = im->config.vocab;
	/* exec to first token: a one-token prompt, logits on the host */
	double first = -1;
	{
		int s;
		float *lg = malloc(sizeof(float) * (size_t)e.V);
		if (!lg || fi_model_seq_new(e.m, &s) || feed(&e, &s, 1, 1, lg, NULL))
			return fail("first token");
		first = since_exec();
		ph[3] = fi_now();
		fi_model_seq_free(e.m, s);
		free(lg);
	}
	note_mem(&e);

	char params[32], size[32], pk[32];
	char name[256];
	{ /* the last component (a config.json's directory), marked when the weights are random */
		char tmp[256], *sl;
		size_t n = (size_t)snprintf(tmp, sizeof tmp, "%s", model);
		while (n > 1 && tmp[n - 1] == '/')
			tmp[--n] = 0;
		if (im->random && n > 12 && !strcmp(tmp + n - 12, "/config.json"))
			tmp[n - 12] = 0;
		sl = strrchr(tmp, '/');
		snprintf(name, sizeof name, "%s%s", sl && sl[1] ? sl + 1 : tmp,
			 im->random ? " (RANDOM WEIGHTS)" : "");
	}
	fi_format_count(fi_image_params(im), params, sizeof params);
	fi_format_bytes(wbytes, size, sizeof size);
	double gbs = tl > 0 ? wbytes / tl / 1e9 : 0;
	/* md and csv rows are written as each test completes (a long run shows its progress
	 * in the table itself); json is one document, written at the end. */
	if (!strcmp(fmt, "md")) {
		printf("| model | size | params | backend | batch | test | t/s |\n");
		printf("| --- | ---: | ---: | --- | ---: | --- | ---: |\n");
	} else if (!strcmp(fmt, "csv")) {
		printf("model,size_bytes,params,backend,device,build,batch,test,reps,tps_mean,tps_sd,"
		       "load_s,load_gbps,exec_to_first_token_s,peak_mem_bytes\n");
	}
	fflush(stdout);
	/* The rows are written between progress lines, which are erased first: no delay. */
	fi_live_delay(0);
	for (int i = 0; i < nt; i++) {
		if (run_test(&e, &tests[i], reps, i + 1, nt)) {
			fi_live_clear();
			return fail(tests[i].name);
		}
		fi_live_clear();
		if (!strcmp(fmt, "md"))
			printf("| %s | %s | %s | %s | %d | %s | %.2f ± %.2f |\n", name, size, params,
			       e.be->ops->name, tests[i].tg ? batch : 1, tests[i].name, tests[i].mean,
			       tests[i].sd);
		else if (!strcmp(fmt, "csv"))
			printf("%s,%llu,%lld,%s,\"%s\",\"%s\",%d,%s,%d,%.3f,%.3f,%.4f,%.2f,%.4f,%zu\n",
			       name, (unsigned long long)wbytes, fi_image_params(im), e.be->ops->name,
			       e.be->device, fi_bench_build(), tests[i].tg ? batch : 1, tests[i].name,
			       reps, tests[i].mean, tests[i].sd, tl, gbs, first, e.peak_used);
		fflush(stdout);
	}
	fi_format_bytes(e.peak_used, pk, sizeof pk);
	if (!strcmp(fmt, "md")) {
		printf("\ndevice: %s; build: %s; reps: %d%s\n", e.be->device, fi_bench_build(), reps,
		       im->random ? "; weights: RANDOM (--load-format dummy), drawn on the device" : "");
		printf("load: %.3f s (%.1f GB/s); exec to first token: %.3f s; peak device memory: %s\n",
		       tl, gbs, first, e.peak_used ? pk : "n/a");
		printf("startup: exec to main %.3f s, backend %.3f s (image open %.3f s meanwhile), "
		       "weights %.3f s, first forward %.3f s\n",
		       t_main, be_secs, ph[1] - ph[0], tl, ph[3] - ph[2] - tl);
	} else if (!strcmp(fmt, "json")) {
		json_t *o = json_object(), *arr = json_array();
		json_object_set_new(o, "model", json_string(name));
		json_object_set_new(o, "weights", json_string(im->random ? "random" : "image"));
		json_object_set_new(o, "size_bytes", json_integer((json_int_t)wbytes));
		json_object_set_new(o, "params", json_integer(fi_image_params(im)));
		json_object_set_new(o, "backend", json_string(e.be->ops->name));
		json_object_set_new(o, "device", json_string(e.be->device));
		json_object_set_new(o, "build", json_string(fi_bench_build()));
		json_object_set_new(o, "load_s", json_real(tl));
		json_object_set_new(o, "load_gbps", json_real(gbs));
		json_object_set_new(o, "exec_to_first_token_s", json_real(first));
		json_object_set_new(o, "peak_mem_bytes", json_integer((json_int_t)e.peak_used));
		for (int i = 0; i < nt; i++) {
			json_t *t = json_object();
			json_object_set_new(t, "test", json_string(tests[i].name));
			json_object_set_new(t, "batch", json_integer(tests[i].tg ? batch : 1));
			json_object_set_new(t, "n_prompt", json_integer(tests[i].pp));
			json_object_set_new(t, "n_gen", json_integer(tests[i].tg));
			json_object_set_new(t, "depth", json_integer(tests[i].depth));
			json_object_set_new(t, "reps", json_integer(reps));
			json_object_set_new(t, "tps_mean", json_real(tests[i].mean));
			json_object_set_new(t, "tps_sd", json_real(tests[i].sd));
			json_array_append_new(arr, t);
		}
		json_object_set_new(o, "tests", arr);
		char *s = json_dumps(o, JSON_INDENT(1));
		puts(s);
		free(s);
		json_decref(o);
	}
	fi_model_close(e.m);
	fi_backend_destroy(e.be);
	fi_image_close(im);
	free(tests);
	return 0;
}
