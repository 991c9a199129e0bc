/* engine: the in-process target of the serving benchmark: the model on a backend with a
 * scheduler over it (lib/sched/scheduler.h), set up as fi-decode sets up its own, so that
 * the figures are fi-decode's without the frame I/O. This file is the only one that knows
 * the scheduler's API: create, add, step, events. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef FI_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "api/llm.h"
#include "model/store.h"
#include "base/log.h"
#include "sched/scheduler.h"
#include "bench.h"
#include "serve/serve.h"
#include "text/tokenizer.h"

struct engine {
	struct bench_target t; /* first: the target is the engine */
	struct fi_backend *be;
	struct fi_image *im;
	struct fi_model *m;
	struct fi_tok *tok;
	struct fi_sched *s;
	struct fi_serve *serve; /* text pieces of token events, as fi-decode's */
	float temp;
	uint64_t seed;
	int ignore_eos;
	double mem_at; /* when the device memory was last looked at */
	char msg[1024];
};

static void note_mem(struct engine *E)
{
#ifdef FI_HAVE_CUDA
	size_t fr, tot;
	if (!strcmp(E->be->ops->name, "cuda") && cudaMemGetInfo(&fr, &tot) == cudaSuccess &&
	    tot - fr > E->t.peak_mem)
		E->t.peak_mem = tot - fr;
#endif
	(void)E;
}

static fi_err on_event(void *user, const struct fi_sched_event *ev)
{
	struct engine *E = user;
	struct bench_ev b = {.req = (int)(intptr_t)ev->user, .t = fi_now()};
	switch (ev->type) {
	case FI_SCHED_EV_WARN:
		fi_warn("%s", ev->message);
		return FI_OK;
	case FI_SCHED_EV_TOKEN:
		b.type = BENCH_EV_TOKEN;
		break;
	case FI_SCHED_EV_ERROR:
		b.type = BENCH_EV_ERROR;
		b.message = ev->message;
		break;
	case FI_SCHED_EV_DONE:
		b.type = BENCH_EV_DONE;
		b.finish = ev->finish;
		b.prompt_tokens = ev->prompt_tokens;
		b.gen_tokens = ev->gen_tokens;
		b.cached_tokens = ev->cached_tokens;
		break;
	}
	E->t.cb(E->t.cb_user, &b);
	return FI_OK;
}

static fi_err e_send(struct bench_target *t, int i, const struct bench_req *q)
{
	struct engine *E = (struct engine *)t;
	char id[32];
	struct fi_sched_req r = {.id = id, .tokens = q->tokens, .ntokens = q->ntokens,
				 .max_tokens = q->max_tokens, .stream = 1,
				 .user = (void *)(intptr_t)i};
	fi_err e;
	bench_req_id(i, id, sizeof id);
	fi_sample_defaults(&r.sp);
	r.sp.temperature = E->temp;
	r.sp.seed = E->seed + (uint64_t)(i < 0 ? -i : i);
	if (E->ignore_eos)
		r.flags |= FI_SCHED_IGNORE_EOS;
	if ((e = fi_serve_add(E->serve, E->s, &r, NULL, 0)) == FI_EBUSY)
		return e; /* the queue is full: a pipe would push back here too */
	if (e) {
		struct bench_ev b = {.type = BENCH_EV_ERROR, .req = i, .t = fi_now(),
				     .message = E->msg};
		snprintf(E->msg, sizeof E->msg, "%s", fi_errmsg());
		t->cb(t->cb_user, &b);
	}
	return FI_OK;
}

static fi_err e_poll(struct bench_target *t, double wait)
{
	struct engine *E = (struct engine *)t;
	fi_err e;
	if (fi_sched_pending(E->s)) {
		struct fi_sched_stats st;
		double t0 = fi_now(), t1;
		e = fi_sched_step(E->s);
		t1 = fi_now();
		t->step_s += t1 - t0;
		t->steps++;
		fi_sched_stats(E->s, &st);
		t->host_s += st.last_host_ms * 1e-3;
		if (t1 - E->mem_at > 0.05) { /* a driver call: not after every step */
			note_mem(E);
			E->mem_at = t1;
		}
		return e;
	}
	if (wait > 0) {
		struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
		nanosleep(&ts, NULL);
	}
	return FI_OK;
}

static void e_cancel(struct bench_target *t, int i)
{
	char id[32];
	bench_req_id(i, id, sizeof id);
	fi_sched_cancel(((struct engine *)t)->s, id);
}

static void e_close(struct bench_target *t)
{
	struct engine *E = (struct engine *)t;
	if (!E)
		return;
	fi_sched_destroy(E->s);
	fi_serve_free(E->serve);
	fi_tok_free(E->tok);
	fi_model_close(E->m);
	if (E->im)
		fi_image_close(E->im);
	fi_backend_destroy(E->be);
	free(E);
}

fi_err bench_engine_open(const struct bench_opts *o, struct bench_target **out)
{
	struct engine *E = calloc(1, sizeof *E);
	struct fi_sched_opts so;
	struct fi_serve_opts sv = {0};
	struct fi_kv_sizing z;
	fi_err e;
	*out = NULL;
	if (!E)
		return fi_fail(FI_ENOMEM, "out of memory");
	E->temp = o->temp;
	E->seed = o->seed;
	E->ignore_eos = o->ignore_eos;
	if ((e = fi_open_backend_model(o->backend, o->threads, o->model, &E->be, &E->im, &E->m))) {
		free(E);
		return e;
	}
	/* Token events carry text pieces when the model has a tokenizer, as fi-decode's do:
	 * detokenizing is part of the host's work per step. */
	if (fi_image_tokenizer(E->im, &E->tok))
		E->tok = NULL;
	fi_sched_opts_default(&so);
	so.max_batch = o->max_batch ? o->max_batch : fi_sched_default_batch(E->be);
	so.max_requests = so.max_batch + 1024;
	so.max_prefill_tokens = o->prefill_chunk;
	so.fingerprint = E->im->fingerprint;
	so.prefix_cache = o->prefix_cache;
	so.cb = fi_serve_event;
	sv.tok = E->tok;
	sv.cb = on_event;
	sv.cb_user = E;
	/* The pool as fi-decode sizes it: --kv-size, else the device's memory (or the CPU's). */
	fi_kv_sizing_default(&z);
	z.max_batch = so.max_batch;
	if (o->kv_size && o->kv_tokens)
		z.kv_tokens = o->kv_size;
	else
		z.kv_bytes = o->kv_size;
	if ((e = fi_serve_new(&sv, &E->serve)) || (e = fi_sched_cache_init(E->m, &z, NULL)) ||
	    (so.cb_user = E->serve, (e = fi_sched_create(E->m, &so, &E->s)))) {
		e_close(&E->t);
		return e;
	}
	E->t.send = e_send;
	E->t.poll = e_poll;
	E->t.cancel = e_cancel;
	E->t.close = e_close;
	E->t.config = &E->im->config;
	E->t.tok = E->tok;
	E->t.backend = E->be->ops->name;
	E->t.random_weights = E->im->random;
	if (E->im->random)
		fi_random_weights_notice("fi-bench", o->model);
	E->t.device = E->be->device;
	/* Host time per step: the scheduler's own count (scheduling, sampling bookkeeping,
	 * events; not the model), added up by e_poll. */
	E->t.host_s = 0;
	note_mem(E);
	*out = &E->t;
	return FI_OK;
}
