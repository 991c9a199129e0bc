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
#include "serve.h"
#include "text/tokenizer.h"

#define BLOCK_TOKENS 16 /* the cache's block size, equal to the arena's (fi-decode's) */

struct engine {
	struct bench_target t; /* first: the target is the engine */
	struct fi_backend *be;
	struct fi_image *im;
	struct fi_model *m;
	struct fi_tok *tok;
	struct fi_sched *s;
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
	if ((e = fi_sched_add(E->s, &r)) == FI_EBUSY)
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
		double t0 = fi_now(), t1;
		e = fi_sched_step(E->s);
		t1 = fi_now();
		t->step_s += t1 - t0;
		t->steps++;
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
	fi_tok_free(E->tok);
	fi_model_close(E->m);
	if (E->im)
		fi_image_close(E->im);
	fi_backend_destroy(E->be);
	free(E);
}

/* KV cache blocks: --kv-size (tokens, or bytes of K and V over all layers), else what
 * fi-decode makes: four sequences of the context, at most 4096 tokens each. */
static int cache_blocks(const struct bench_opts *o, const struct fi_config *c,
			const struct fi_backend *be)
{
	int ctx = c->max_pos > 0 ? c->max_pos : 4096;
	uint64_t tokens = 4 * (uint64_t)(ctx < 4096 ? ctx : 4096);
	if (o->kv_size && o->kv_tokens)
		tokens = o->kv_size;
	else if (o->kv_size)
		tokens = o->kv_size / ((uint64_t)c->n_layers * 2 * c->n_kv_heads * c->head_dim *
				       fi_dtype_size(be->act));
	tokens = (tokens + BLOCK_TOKENS - 1) / BLOCK_TOKENS;
	return tokens > INT32_MAX / 2 ? INT32_MAX / 2 : tokens < 1 ? 1 : (int)tokens;
}

fi_err bench_engine_open(const struct bench_opts *o, struct bench_target **out)
{
	struct engine *E = calloc(1, sizeof *E);
	struct fi_sched_opts so;
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
	if (o->max_batch)
		so.max_batch = o->max_batch;
	so.max_requests = so.max_batch + 1024;
	so.max_prefill_tokens = o->prefill_chunk;
	so.tok = E->tok;
	so.fingerprint = E->im->fingerprint;
	so.prefix_cache = o->prefix_cache;
	so.cb = on_event;
	so.cb_user = E;
	if ((e = fi_model_cache_init(E->m, cache_blocks(o, &E->im->config, E->be), BLOCK_TOKENS)) ||
	    (e = fi_sched_create(E->m, &so, &E->s))) {
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
	E->t.device = E->be->device;
	/* Host time per step: the scheduler does not report it yet; when scheduler.h has it,
	 * e_poll adds it up here and the report prints it. */
	E->t.host_s = -1;
	note_mem(E);
	*out = &E->t;
	return FI_OK;
}
