/* bench: fi-bench's serving benchmark (fi-bench -m MODEL serve ...): a workload of requests
 * sent to an engine at chosen arrival times, every request's latencies measured as a client
 * sees them, and a report. fi-bench(1) documents the options and every figure.
 *
 *   serve.c     options, the run loop (arrivals, concurrency, warm-up), exit status
 *   workload.c  the requests (ShareGPT-like lengths, fixed lengths, a JSONL file, a shared
 *               prefix) and their arrival times (all at once, Poisson or gamma)
 *   engine.c    the in-process target: a scheduler over the model (lib/sched/scheduler.h)
 *   remote.c    the ZeroMQ target: request frames to an endpoint, replies from -i
 *   report.c    statistics; the md, csv and json report; the per-request JSONL
 *   plot.c      latency distributions and throughput over time, drawn by gnuplot
 *
 * Times are seconds after the start of the run (the first arrival) unless named _ms. */
#ifndef FI_BENCH_H
#define FI_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/err.h"
#include "frame/frame.h"
#include "model/image.h"

/* ---- options ---- */

enum bench_wl_kind { WL_SHAREGPT, WL_FIXED, WL_FILE, WL_PREFIX };

/* A length mix: lognormal with the given medians and spread (sigma of the log), every
 * length clamped to [lo, hi]; or fixed lengths (sigma < 0). */
struct bench_mix {
	double in_median, out_median, sigma;
	uint32_t lo, hi;
};

struct bench_workload_spec {
	enum bench_wl_kind kind;
	const char *text;     /* as given, for the report */
	struct bench_mix mix; /* sharegpt, fixed, and the part after a prefix */
	const char *path;     /* file */
	uint32_t prefix_len, groups; /* prefix: P tokens shared by each of G groups */
};

struct bench_opts {
	const char *model, *backend, *fmt;
	int threads;
	/* workload and arrivals */
	struct bench_workload_spec wl;
	long requests;        /* 0: the default (1000, or every line of a file) */
	double rate;          /* requests per second; INFINITY: all at once */
	double burstiness;    /* gamma shape of the gaps; 1: Poisson */
	int concurrency;      /* requests in flight at most; 0: no limit */
	uint64_t seed;
	int ignore_eos;
	float temp;
	int warmup;
	/* goodput: a request is good when every given SLO holds (< 0: not given) */
	double slo_ttft_ms, slo_tpot_ms;
	/* output */
	const char *plot, *save;
	int dry_run;          /* write the requests (JSONL) and run nothing */
	/* target: in-process (endpoint NULL) or ZeroMQ */
	const char *endpoint, *in;
	int dealer;           /* --endpoint: one DEALER socket, replies on it (fi-frame(5)) */
	double timeout;       /* -e: seconds without a reply before giving up */
	/* the in-process engine */
	int max_batch, prefill_chunk, prefix_cache;
	uint64_t kv_size;     /* bytes, or tokens with kv_tokens; 0: the default */
	int kv_tokens;
};

/* ---- the workload ---- */

enum bench_state { BR_WAIT, BR_SENT, BR_DONE, BR_FAILED };

struct bench_req {
	uint32_t *tokens;     /* the prompt [ntokens] (owned) */
	uint32_t ntokens, max_tokens;
	double arrival;       /* when the client means to send it */
	/* measured */
	enum bench_state state;
	double start;         /* sent: its arrival, or later when a concurrency slot freed */
	double first, end;    /* first token; done (or failed) */
	double *tt;           /* the time of every token [ntt] */
	uint32_t ntt, cap_tt;
	uint32_t prompt_tokens, gen_tokens, cached_tokens; /* as the engine's done reports */
	enum fi_finish finish;
	char *error;          /* why it failed (owned), or NULL */
};

struct fi_tok;
/* The requests of o->wl: lengths from o->seed, tokens drawn at random over the model's
 * vocabulary (special and end-of-generation ids left out), a file's prompts encoded with tok
 * (NULL: text prompts are refused); arrival times from o->rate and o->burstiness. Generated
 * lengths that do not fit the model's context are drawn again. */
fi_err bench_workload_make(const struct bench_opts *o, const struct fi_config *c,
			   const struct fi_tok *tok, struct bench_req **out, int *n);
/* A short request for warm-up k, unlike any of the workload's prompts. */
fi_err bench_workload_warmup(const struct bench_opts *o, const struct fi_config *c,
			     const struct fi_tok *tok, int k, struct bench_req *r);
void bench_req_free(struct bench_req *r, int n); /* frees the array too */
/* Parses a --workload SPEC; 0 or -1 (the detail in msg). */
int bench_workload_parse(const char *s, struct bench_workload_spec *w, char *msg, size_t msgsz);

/* ---- targets ---- */

enum bench_ev_type { BENCH_EV_TOKEN, BENCH_EV_DONE, BENCH_EV_ERROR };

struct bench_ev {
	enum bench_ev_type type;
	int req;              /* index in the workload; < 0: warm-up -1-k */
	double t;             /* fi_now() when the client saw it */
	/* done */
	enum fi_finish finish;
	uint32_t prompt_tokens, gen_tokens, cached_tokens;
	/* error */
	const char *message;
};

struct bench_target;
typedef void (*bench_ev_fn)(void *user, const struct bench_ev *ev);

struct bench_target {
	/* Sends request i (warm-up: i < 0). FI_EBUSY: not taken now (the engine's queue or the
	 * socket is full): send it again after a poll. A request the engine refuses is not an
	 * error here: it comes back as an error event. */
	fi_err (*send)(struct bench_target *t, int i, const struct bench_req *r);
	/* Makes progress, reporting events through cb: the in-process engine runs one step when
	 * it holds requests, else sleeps up to wait seconds; a remote one reads replies, waiting
	 * up to wait seconds for the first (wait < 0: until something arrives, in slices). */
	fi_err (*poll)(struct bench_target *t, double wait);
	/* Ends request i now, when the run stops early. */
	void (*cancel)(struct bench_target *t, int i);
	void (*close)(struct bench_target *t);
	bench_ev_fn cb;
	void *cb_user;
	int ended;            /* no more events will come (the reply stream ended) */
	/* for the report */
	const struct fi_config *config;
	const struct fi_tok *tok;    /* NULL when the model has none */
	const char *backend, *device; /* "cpu", "cpu (2 threads)"; the endpoint for -e */
	size_t peak_mem;      /* device memory in use at the most (0: not known) */
	long steps;           /* forward steps (-1: not known) */
	double step_s;        /* their wall time */
	double host_s;        /* host time in them, when the engine reports it (< 0: not) */
	int random_weights;   /* --load-format dummy: marked in every report */
};

fi_err bench_engine_open(const struct bench_opts *o, struct bench_target **t);
fi_err bench_remote_open(const struct bench_opts *o, struct bench_target **t);
/* "r12" for request 12, "warmup0" for warm-up 0; the index from an id, or INT32_MIN. */
void bench_req_id(int i, char *buf, size_t n);
int bench_req_index(const char *id);

/* ---- the report ---- */

struct bench_stat {
	int n;
	double mean, median, p90, p99; /* NAN when n is 0 */
};

struct bench_result {
	int requests, completed, failed;
	double duration;      /* first arrival to last done */
	uint64_t input_tokens, output_tokens, cached_tokens;
	double request_throughput, output_throughput, total_token_throughput;
	struct bench_stat ttft, tpot, itl, e2el; /* milliseconds */
	int good;             /* completed within every SLO given */
	double request_goodput;
};

void bench_result_compute(const struct bench_req *r, int n, const struct bench_opts *o,
			  struct bench_result *res);
/* The report in o->fmt on f. */
void bench_report(FILE *f, const struct bench_opts *o, const struct bench_target *t,
		  const struct bench_result *res);
/* One JSON object a line per request, to a file or to f (path names it in messages). */
fi_err bench_save_requests(const char *path, const struct bench_req *r, int n);
fi_err bench_write_requests(FILE *f, const char *path, const struct bench_req *r, int n);
/* Output tokens per second and requests in flight over [0, duration] in nb windows:
 * tput[nb], running[nb] (the caller's arrays). */
void bench_timeline(const struct bench_req *r, int n, double duration, int nb, double *tput,
		    double *running);

/* ---- the plot ---- */

/* 0 when gnuplot can be run; else the reason is recorded. */
fi_err bench_plot_check(void);
fi_err bench_plot(const char *png, const struct bench_opts *o, const struct bench_req *r,
		  int n, const struct bench_result *res, const char *model);

/* The entry point: fi-bench.c parses the options (cmd/opt.c's table, with the checks that
 * tie them together) and runs the serving benchmark when the test is `serve`; returns the
 * exit status. */
int fi_bench_serve(const struct bench_opts *o);
const char *fi_bench_build(void); /* report.c: "fi 0.1.0, cuda 12.8" */

#endif
