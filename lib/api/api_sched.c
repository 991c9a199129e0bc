/* api_sched: the public fi_scheduler of fi_sched.h, a thin layer over sched/scheduler.h:
 * the scheduler's event callback copies each event into a queue that
 * fi_scheduler_event() hands out, so a program polls instead of being called back. */
#include "fi/fi.h"

#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "llm.h"
#include "sched/scheduler.h"
#include "serve/serve.h"
#include "text/tokenizer.h"

/* One queued event: fi_gen_event with its strings owned. */
struct qev {
	struct fi_gen_event ev;
	char *id, *text, *message;
};

struct fi_scheduler {
	struct fi_llm *llm;
	struct fi_sched *s;
	struct fi_serve *serve;   /* text pieces and stop strings over the scheduler */
	const struct fi_tok *tok; /* NULL: the model has none (no text, no stop strings) */
	struct qev *q;            /* [cap], events head .. head + n (mod cap) */
	size_t head, n, cap;
	struct qev out;           /* the event last handed out */
	fi_err err;               /* out of memory while queueing */
};

void fi_scheduler_opts_default(struct fi_scheduler_opts *o)
{
	struct fi_sched_opts so;
	fi_sched_opts_default(&so);
	o->max_batch = 0; /* by the device (fi_sched_default_batch) */
	o->max_tokens = so.max_tokens;
	o->prefix_cache = 0;
}

void fi_gen_request_init(struct fi_gen_request *r)
{
	struct fi_sample_params sp;
	fi_sample_defaults(&sp);
	memset(r, 0, sizeof *r);
	r->temperature = sp.temperature;
	r->top_k = sp.top_k;
	r->top_p = sp.top_p;
	r->min_p = sp.min_p;
	r->repeat_penalty = sp.repeat_penalty;
	r->seed = sp.seed;
}

static void qev_free(struct qev *e)
{
	free(e->id);
	free(e->text);
	free(e->message);
	memset(e, 0, sizeof *e);
}

static char *dup_n(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d) {
		if (n)
			memcpy(d, s, n);
		d[n] = 0;
	}
	return d;
}

static fi_err on_event(void *user, const struct fi_sched_event *ev)
{
	struct fi_scheduler *S = user;
	struct qev e = {0};
	const char *text = NULL;
	size_t tlen = 0;
	if (S->n == S->cap) {
		size_t cap = S->cap ? 2 * S->cap : 64;
		struct qev *q = malloc(cap * sizeof *q);
		if (!q)
			return S->err = fi_fail(FI_ENOMEM, "scheduler: out of memory for events");
		for (size_t i = 0; i < S->n; i++)
			q[i] = S->q[(S->head + i) % S->cap];
		free(S->q);
		S->q = q;
		S->cap = cap;
		S->head = 0;
	}
	e.ev.ttft_ms = e.ev.total_ms = -1;
	switch (ev->type) {
	case FI_SCHED_EV_TOKEN:
		e.ev.kind = "token";
		e.ev.token = ev->token;
		e.ev.index = ev->index;
		text = ev->text;
		tlen = ev->text_len;
		break;
	case FI_SCHED_EV_DONE:
		e.ev.kind = "done";
		e.ev.finish = fi_finish_name(ev->finish);
		e.ev.prompt_tokens = ev->prompt_tokens;
		e.ev.gen_tokens = ev->gen_tokens;
		e.ev.cached_tokens = ev->cached_tokens;
		e.ev.ttft_ms = ev->ttft_ms;
		e.ev.total_ms = ev->total_ms;
		/* the text token events did not carry: a held-back tail */
		if (ev->text_len > ev->text_sent) {
			text = ev->text + ev->text_sent;
			tlen = ev->text_len - ev->text_sent;
		}
		break;
	case FI_SCHED_EV_ERROR:
		e.ev.kind = "error";
		break;
	case FI_SCHED_EV_WARN:
		e.ev.kind = "warning";
		break;
	}
	e.ev.code = ev->code;
	if (!(e.id = dup_n(ev->id ? ev->id : "", ev->id ? strlen(ev->id) : 0)) ||
	    !(e.text = dup_n(text, tlen)) ||
	    (ev->message && !(e.message = dup_n(ev->message, strlen(ev->message))))) {
		qev_free(&e);
		return S->err = fi_fail(FI_ENOMEM, "scheduler: out of memory for events");
	}
	e.ev.text_len = tlen;
	S->q[(S->head + S->n++) % S->cap] = e;
	return FI_OK;
}

fi_err fi_scheduler_new(struct fi_llm *m, const struct fi_scheduler_opts *o,
			struct fi_scheduler **out)
{
	struct fi_scheduler_opts d;
	struct fi_sched_opts so;
	struct fi_serve_opts sv = {0};
	struct fi_kv_sizing z;
	struct fi_scheduler *S;
	fi_err e;
	*out = NULL;
	if (!o) {
		fi_scheduler_opts_default(&d);
		o = &d;
	}
	if (!(S = calloc(1, sizeof *S)))
		return fi_fail(FI_ENOMEM, "scheduler: out of memory");
	S->llm = m;
	if (fi_llm_tokenizer(m, &S->tok))
		fi_clear_error(); /* token ids only */
	fi_sched_opts_default(&so);
	so.max_batch = o->max_batch > 0 ? o->max_batch : fi_sched_default_batch(fi_model_backend(m->m));
	/* The KV pool as fi-decode sizes it by default (from the device's memory, or the CPU's). */
	fi_kv_sizing_default(&z);
	z.max_batch = so.max_batch;
	if (!fi_model_cache(m->m) && (e = fi_sched_cache_init(m->m, &z, NULL))) {
		free(S);
		return e;
	}
	so.max_requests = so.max_batch + 1024;
	if (o->max_tokens > 0)
		so.max_tokens = o->max_tokens;
	so.fingerprint = m->im->fingerprint;
	so.prefix_cache = o->prefix_cache;
	sv.tok = S->tok;
	sv.cb = on_event;
	sv.cb_user = S;
	so.cb = fi_serve_event;
	if ((e = fi_serve_new(&sv, &S->serve)) ||
	    (so.cb_user = S->serve, (e = fi_sched_create(m->m, &so, &S->s)))) {
		fi_serve_free(S->serve);
		free(S);
		return e;
	}
	*out = S;
	return FI_OK;
}

void fi_scheduler_free(struct fi_scheduler *S)
{
	if (!S)
		return;
	fi_sched_destroy(S->s);
	fi_serve_free(S->serve);
	for (size_t i = 0; i < S->n; i++)
		qev_free(&S->q[(S->head + i) % S->cap]);
	free(S->q);
	qev_free(&S->out);
	free(S);
}

fi_err fi_scheduler_add(struct fi_scheduler *S, const struct fi_gen_request *g)
{
	struct fi_sched_req r = {0};
	struct fi_tok_ids ids = {0};
	fi_err e;
	if (!g->id)
		return fi_fail(FI_EINVAL, "request: no id");
	if (g->n_stop > UINT32_MAX || g->n_tokens > UINT32_MAX)
		return fi_fail(FI_ERANGE, "request '%s': too many tokens or stop strings", g->id);
	r.id = g->id;
	r.tokens = g->tokens;
	r.ntokens = (uint32_t)g->n_tokens;
	if (!g->tokens && g->prompt) {
		if (!S->tok)
			return fi_fail(FI_EUNSUPPORTED, "request '%s': a text prompt, and the model has "
				       "no tokenizer to encode it (give token ids)", g->id);
		if ((e = fi_tok_encode(S->tok, g->prompt, strlen(g->prompt), FI_SCHED_ENCODE_FLAGS,
				       &ids))) {
			fi_tok_ids_free(&ids);
			return fi_fail_ctx(e, "request '%s'", g->id);
		}
		r.tokens = ids.v;
		r.ntokens = (uint32_t)ids.n;
	}
	fi_sample_defaults(&r.sp);
	r.sp.temperature = g->temperature;
	r.sp.top_k = g->top_k;
	r.sp.top_p = g->top_p;
	r.sp.min_p = g->min_p;
	r.sp.repeat_penalty = g->repeat_penalty;
	r.sp.seed = g->seed;
	r.max_tokens = g->max_tokens;
	r.stream = 1;
	e = fi_serve_add(S->serve, S->s, &r, (char *const *)g->stop, (uint32_t)g->n_stop);
	fi_tok_ids_free(&ids);
	return e;
}

fi_err fi_scheduler_add_frame(struct fi_scheduler *S, const struct fi_frame *f)
{
	struct fi_sample_params d;
	struct fi_sched_req r;
	struct fi_tok_ids ids = {0};
	fi_err e;
	if (f->type != FI_FRAME_REQUEST)
		return fi_fail(FI_EINVAL, "frame '%s' is a %s frame, not a request",
			       f->id ? f->id : "", fi_frame_type_name(f->type));
	fi_sample_defaults(&d);
	fi_sched_req_from_frame(f, &d, 0, &r);
	if (!r.tokens && f->req.text) {
		if (!S->tok)
			return fi_fail(FI_EUNSUPPORTED, "request '%s': a text prompt, and the model has "
				       "no tokenizer to encode it (send token ids)", r.id);
		if ((e = fi_tok_encode(S->tok, f->req.text, f->req.text_len, FI_SCHED_ENCODE_FLAGS,
				       &ids))) {
			fi_tok_ids_free(&ids);
			return fi_fail_ctx(e, "request '%s'", r.id);
		}
		r.tokens = ids.v;
		r.ntokens = (uint32_t)ids.n;
	}
	r.stream = 1;
	e = fi_serve_add(S->serve, S->s, &r, f->req.stop, f->req.nstop);
	fi_tok_ids_free(&ids);
	return e;
}

fi_err fi_scheduler_cancel(struct fi_scheduler *S, const char *id)
{
	return fi_sched_cancel(S->s, id);
}

fi_err fi_scheduler_step(struct fi_scheduler *S)
{
	fi_err e = fi_sched_step(S->s);
	if (S->err) { /* an event could not be queued: report it, once */
		e = S->err;
		S->err = FI_OK;
	}
	return e;
}

int fi_scheduler_pending(const struct fi_scheduler *S)
{
	return fi_sched_pending(S->s);
}

int fi_scheduler_event(struct fi_scheduler *S, struct fi_gen_event *ev)
{
	qev_free(&S->out);
	if (!S->n)
		return 0;
	S->out = S->q[S->head];
	S->head = (S->head + 1) % S->cap;
	S->n--;
	*ev = S->out.ev;
	ev->id = S->out.id;
	ev->text = S->out.text;
	ev->message = S->out.message;
	return 1;
}

fi_err fi_gen_event_frame(const struct fi_gen_event *ev, struct fi_frame **out)
{
	struct fi_frame *f;
	enum fi_frame_type t = !strcmp(ev->kind, "token") ? FI_FRAME_TOKEN
			       : !strcmp(ev->kind, "done") ? FI_FRAME_DONE
			       : !strcmp(ev->kind, "error") ? FI_FRAME_ERROR : FI_FRAME_NONE;
	*out = NULL;
	if (t == FI_FRAME_NONE)
		return fi_fail(FI_EINVAL, "a %s event makes no frame", ev->kind);
	if (!(f = calloc(1, sizeof *f)))
		return fi_fail(FI_ENOMEM, "frame: out of memory");
	fi_frame_init(f, t);
	if (!(f->id = dup_n(ev->id ? ev->id : "", ev->id ? strlen(ev->id) : 0)))
		goto oom;
	if (t == FI_FRAME_TOKEN) {
		f->tok.token = ev->token;
		f->tok.index = ev->index;
		if (ev->text_len && !(f->tok.text = dup_n(ev->text, ev->text_len)))
			goto oom;
		f->tok.text_len = ev->text_len;
	} else if (t == FI_FRAME_DONE) {
		for (int k = 0; k < FI_FINISH_COUNT; k++)
			if (ev->finish && !strcmp(ev->finish, fi_finish_name((enum fi_finish)k)))
				f->done.finish = (enum fi_finish)k;
		f->done.prompt_tokens = ev->prompt_tokens;
		f->done.gen_tokens = ev->gen_tokens;
		f->done.cached_tokens = ev->cached_tokens;
		f->done.ttft_ms = ev->ttft_ms;
		f->done.total_ms = ev->total_ms;
		if (ev->text_len && !(f->done.text = dup_n(ev->text, ev->text_len)))
			goto oom;
		f->done.text_len = ev->text_len;
	} else {
		f->err.code = ev->code;
		if (!(f->err.message = dup_n(ev->message ? ev->message : "",
					     ev->message ? strlen(ev->message) : 0)))
			goto oom;
	}
	*out = f;
	return FI_OK;
oom:
	fi_frame_free(f);
	free(f);
	return fi_fail(FI_ENOMEM, "frame: out of memory");
}
