/* fi-bench: micro benchmarks of a model on a backend, like llama-bench: prompt processing
 * (ppN: one N-token prompt in one call, or chunks of -u tokens) and generation (tgN: N decode
 * steps of -b sequences, one token each per step), optionally after a context of D tokens
 * (ppN@dD, tgN@dD). Each test runs once untimed, then -r times; the table gives tokens per
 * second as mean ± sd, with the device, build, weight upload rate, time from exec to the
 * first token and the peak device memory. `fi-bench -m M serve ...` is the serving benchmark
 * (bench/serve.c). */
#include <getopt.h>
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
#include "bench/serve.h"
#include "model/image.h"
#include "base/log.h"
#include "cmdutil.h"
#include "model/model.h"
#include "model/store.h"

static const char usage_text[] =
	"usage: fi-bench -m NAME|PATH [--backend auto|cuda|cpu] [-t THREADS] [-r REPS]\n"
	"                [-b BATCH] [-u UBATCH] [-o md|csv|json] [TEST ...]\n";
static const char usage_tail[] =
	"       fi-bench -h\n"
	"TEST: ppN or tgN, optionally @dD (context depth D); default: pp512 tg128\n";

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

/* Both forms, micro and serve, as the SYNOPSIS of fi-bench(1) gives them. */
static int usage(int rc)
{
	FILE *f = rc ? stderr : stdout;
	fputs(usage_text, f);
	fi_bench_serve_usage(f, 0);
	fputs(usage_tail, f);
	fi_bench_serve_usage(f, 1);
	return rc;
}

int fi_bench_usage(int rc)
{
	return usage(rc);
}

static int fail(const char *what)
{
	fprintf(stderr, "fi-bench: %s%s%s\n", what ? what : "", what ? ": " : "", fi_errmsg());
	return 1;
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

static const char *build_desc(void)
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

/* The serving benchmark's report names the build the same way. */
const char *fi_bench_build(void)
{
	return build_desc();
}

int main(int argc, char **argv)
{
	const char *model = NULL, *backend = "auto", *fmt = "md";
	int threads = 0, reps = 5, batch = 1, ubatch = 2048, c;
	long long v;
	static const struct option lo[] = {{"backend", required_argument, 0, 'B'},
					   {"help", no_argument, 0, 'h'},
					   {0, 0, 0, 0}};
	fi_log_set_prog("fi-bench");
	if (fi_bench_serve_wanted(argc, argv))
		return fi_bench_serve(argc, argv);
	while ((c = getopt_long(argc, argv, "m:t:r:b:u:o:h", lo, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 'B': backend = optarg; break;
		case 't': if (fi_parse_int(optarg, 0, 1024, &v)) goto bad; threads = (int)v; break;
		case 'r': if (fi_parse_int(optarg, 1, 1000000, &v)) goto bad; reps = (int)v; break;
		case 'b': if (fi_parse_int(optarg, 1, 1024, &v)) goto bad; batch = (int)v; break;
		case 'u': if (fi_parse_int(optarg, 1, 1 << 20, &v)) goto bad; ubatch = (int)v; break;
		case 'o': fmt = optarg; break;
		case 'h': return usage(0);
		default: return usage(2);
		bad:
			fprintf(stderr, "fi-bench: invalid value '%s' for -%c\n", optarg, c);
			return 2;
		}
	}
	if (!model || reps < 1 || batch < 1 || batch > 1024 || ubatch < 1 ||
	    (strcmp(fmt, "md") && strcmp(fmt, "csv") && strcmp(fmt, "json")))
		return usage(2);
	int nt = argc - optind ? argc - optind : 2;
	struct test *tests = calloc((size_t)nt, sizeof(*tests));
	if (!tests)
		return 1;
	for (int i = 0; i < nt; i++) {
		const char *s = argc - optind ? argv[optind + i] : (i ? "tg128" : "pp512");
		if (parse_test(s, &tests[i])) {
			fprintf(stderr, "fi-bench: bad test '%s' (ppN, tgN, optionally @dD)\n", s);
			return 2;
		}
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
	if (fi_backend_start(backend, threads, &bs))
		return fail(NULL);
	fi_err oe = fi_store_open(model, &im);
	ph[1] = fi_now();
	fi_err be_err = fi_backend_join(bs, &e.be, &be_secs);
	ph[2] = fi_now();
	if (be_err || oe) /* the backend's error first: it was recorded last */
		return fail(NULL);
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
				     cf->head_dim * fi_dtype_size(e.be->act);
		for (int i = 0; i < im->set.n; i++)
			w += (uint64_t)fi_tensor_numel(&im->set.t[i]) * fi_dtype_size(e.be->act);
		if (w + kv > e.be->mem_free) {
			fprintf(stderr, "fi-bench: %s needs %.2f GiB of weights + %.2f GiB of KV cache; "
				"%s has %.2f GiB free of %.2f GiB\n", model, w / 1073741824.0,
				kv / 1073741824.0, e.be->device, e.be->mem_free / 1073741824.0,
				e.be->mem_total / 1073741824.0);
			return 1;
		}
	}
	double tl = fi_now();
	if (fi_model_load(&im->config, &im->set, e.be, &e.m) || e.be->ops->sync(e.be))
		return fail("loading the model");
	tl = fi_now() - tl;
	uint64_t wbytes = 0;
	for (int i = 0; i < im->set.n; i++)
		wbytes += im->set.t[i].nbytes;
	if (fi_model_cache_init(e.m, need + 8, 16))
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
	const char *name = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
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
			       e.be->device, build_desc(), tests[i].tg ? batch : 1, tests[i].name,
			       reps, tests[i].mean, tests[i].sd, tl, gbs, first, e.peak_used);
		fflush(stdout);
	}
	fi_format_bytes(e.peak_used, pk, sizeof pk);
	if (!strcmp(fmt, "md")) {
		printf("\ndevice: %s; build: %s; reps: %d\n", e.be->device, build_desc(), reps);
		printf("load: %.3f s (%.1f GB/s); exec to first token: %.3f s; peak device memory: %s\n",
		       tl, gbs, first, e.peak_used ? pk : "n/a");
		printf("startup: exec to main %.3f s, backend %.3f s (image open %.3f s meanwhile), "
		       "weights %.3f s, first forward %.3f s\n",
		       t_main, be_secs, ph[1] - ph[0], tl, ph[3] - ph[2] - tl);
	} else if (!strcmp(fmt, "json")) {
		json_t *o = json_object(), *arr = json_array();
		json_object_set_new(o, "model", json_string(name));
		json_object_set_new(o, "size_bytes", json_integer((json_int_t)wbytes));
		json_object_set_new(o, "params", json_integer(fi_image_params(im)));
		json_object_set_new(o, "backend", json_string(e.be->ops->name));
		json_object_set_new(o, "device", json_string(e.be->device));
		json_object_set_new(o, "build", json_string(build_desc()));
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
