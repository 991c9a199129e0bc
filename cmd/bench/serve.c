/* serve: `fi-bench -m MODEL serve [OPTIONS]`, the serving benchmark (bench.h, fi-bench(1)):
 * options, warm-up, the run loop (arrivals and concurrency as a client sees them), the
 * report and the exit status (0, 1 runtime failure, 2 usage, 3 some requests failed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../opt.h"
#include "base/log.h"
#include "frame/stream.h"
#include "model/store.h"
#include "bench.h"
#include "text/tokenizer.h"

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
		cmd_error(NULL);
		rc = 1;
	}
	bench_req_free(r, n);
	fi_tok_free(tok);
	if (im)
		fi_image_close(im);
	return rc;
}

int fi_bench_serve(const struct bench_opts *op)
{
	const struct bench_opts o = *op;
	struct bench_target *t = NULL;
	struct bench_result res;
	struct run R = {0};
	int rc = 0;
	fi_err e;
	if (o.dry_run)
		return dry_run(&o);
	if (o.plot && bench_plot_check()) {
		cmd_error(NULL);
		return 1;
	}
	fi_stream_catch_signals();
	if ((e = o.endpoint ? bench_remote_open(&o, &t) : bench_engine_open(&o, &t))) {
		cmd_error(NULL);
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
			cmd_error(NULL);
			goto out;
		}
		/* interrupted: what finished is reported; what is running is cancelled */
		R.stopped = 1;
		for (int i = 0; i < R.n; i++)
			if (R.r[i].state == BR_SENT)
				t->cancel(t, i);
		cmd_error("interrupted after %d of %d requests", R.finished, R.n);
	}
	bench_result_compute(R.r, R.n, &o, &res);
	bench_report(stdout, &o, t, &res);
	if (res.failed) {
		for (int i = 0, shown = 0; i < R.n && shown < 3; i++)
			if (R.r[i].state == BR_FAILED && R.r[i].error) {
				cmd_error("request %d: %s", i, R.r[i].error);
				shown++;
			}
		cmd_error("%d of %d requests failed", res.failed, R.n);
		rc = rc ? rc : 3;
	}
	if (o.save && (e = bench_save_requests(o.save, R.r, R.n))) {
		cmd_error(NULL);
		rc = 1;
	}
	char title[512];
	snprintf(title, sizeof title, "%s%s", o.model, t->random_weights ? " (RANDOM WEIGHTS)" : "");
	if (o.plot && (e = bench_plot(o.plot, &o, R.r, R.n, &res, title))) {
		cmd_error(NULL);
		rc = 1;
	}
out:
	bench_req_free(R.r, R.n);
	free(R.slots);
	if (t)
		t->close(t);
	return rc;
}
