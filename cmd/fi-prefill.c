/* fi-prefill: compute the KV of prompts into the shared KV arena. Reads request frames and
 * runs them through the scheduler (lib/sched/scheduler.h) as one-token generations that look their
 * prefix up in the arena and publish their new full blocks; passes each request on with a
 * "kv" reference, preceded by a token frame with its first generated token. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "frame/frame.h"
#include "kv/kvxfer.h"
#include "base/log.h"
#include "api/llm.h"
#include "opt.h"
#include "model/model.h"
#include "backend/sample.h"
#include "sched/scheduler.h"
#include "model/store.h"
#include "frame/stream.h"
#include "text/tokenizer.h"

#define BLOCK_TOKENS 16 /* the cache's and the arena's block size */

struct opts {
	struct cmd_args a; /* the model, streams, backend, sampling defaults, arena, -v */
	int batch;
};

/* A request in the scheduler: its frame, passed on once its first token is drawn. */
struct pre {
	struct fi_frame f;
	uint32_t token;
};

struct prefill {
	const struct opts *o;
	struct fi_model *m;
	struct fi_image *im;
	struct fi_tok *tok;
	struct fi_sched *s;
	struct fi_kvx *x;
	struct fi_stream *out;
	fi_err werr;  /* the output failed (inside a scheduler event) */
	fi_err fwd;   /* the forward pass failed: held requests get error frames */
	char fwd_msg[512];
	uint64_t n_req, n_tok, n_cached;
	double t_busy;
};

/* Fills the sampling keys a request leaves unset from the options, and marks them set: the
 * request passed on carries the parameters its first token was drawn with. */
static void resolve_sampling(const struct opts *o, struct fi_request *r)
{
	const struct fi_sample_params *sp = &o->a.sp;
	if (!(r->set & FI_REQ_TEMPERATURE))
		r->temperature = sp->temperature;
	if (!(r->set & FI_REQ_TOP_K))
		r->top_k = sp->top_k;
	if (!(r->set & FI_REQ_TOP_P))
		r->top_p = sp->top_p;
	if (!(r->set & FI_REQ_MIN_P))
		r->min_p = sp->min_p;
	if (!(r->set & FI_REQ_REPEAT_PENALTY))
		r->repeat_penalty = sp->repeat_penalty;
	if (!(r->set & FI_REQ_SEED))
		r->seed = sp->seed;
	r->set |= FI_REQ_TEMPERATURE | FI_REQ_TOP_K | FI_REQ_TOP_P | FI_REQ_MIN_P |
		  FI_REQ_REPEAT_PENALTY | FI_REQ_SEED;
}

/* Emits the first token and the request with its kv reference. */
static fi_err emit(struct prefill *P, struct pre *q)
{
	struct fi_request *r = &q->f.req;
	struct fi_frame tf;
	fi_err e;
	fi_frame_init(&tf, FI_FRAME_TOKEN);
	tf.id = q->f.id;
	tf.tok.token = q->token;
	tf.tok.index = 0;
	free(r->kv.arena);
	free(r->kv.blocks);
	memset(&r->kv, 0, sizeof r->kv);
	if ((e = fi_kvx_make_ref(P->x, P->im->fingerprint, r->tokens, r->ntokens, &r->kv)))
		return e;
	r->set |= FI_REQ_KV;
	if ((e = fi_stream_write(P->out, &tf)))
		return e;
	return fi_stream_write(P->out, &q->f);
}

static void pre_free(struct pre *q)
{
	fi_frame_free(&q->f);
	free(q);
}

static fi_err on_event_(struct prefill *P, const struct fi_sched_event *ev)
{
	struct pre *q = ev->user;
	switch (ev->type) {
	case FI_SCHED_EV_WARN:
		fi_warn("%s", ev->message);
		return FI_OK;
	case FI_SCHED_EV_TOKEN:
		q->token = ev->token;
		return FI_OK;
	case FI_SCHED_EV_ERROR:
		return FI_OK; /* its done event answers */
	case FI_SCHED_EV_DONE:
		break;
	}
	if (P->werr)
		return FI_OK;
	if (ev->finish != FI_FINISH_LENGTH) /* cancelled after a failed forward pass */
		return fi_stream_write_error(P->out, ev->id, P->fwd, P->fwd_msg);
	if (P->o->a.verbose)
		fprintf(stderr, "fi-prefill: '%s': %u prompt tokens, %u cached, %u computed, "
			"%zu blocks stored, %.2f ms\n", ev->id, ev->prompt_tokens, ev->cached_tokens,
			ev->prompt_tokens - ev->cached_tokens, ev->stored_blocks, ev->total_ms);
	P->n_req++;
	P->n_tok += ev->prompt_tokens;
	P->n_cached += ev->cached_tokens;
	return emit(P, q);
}

static fi_err on_event(void *user, const struct fi_sched_event *ev)
{
	struct prefill *P = user;
	fi_err e = on_event_(P, ev);
	if (ev->type == FI_SCHED_EV_DONE)
		pre_free(ev->user);
	if (e && !P->werr)
		P->werr = e;
	return e;
}

/* Runs every held request. A failed forward pass is answered per request: each gets an
 * error frame and the stream goes on. */
static fi_err run_batch(struct prefill *P)
{
	double t0 = fi_now();
	fi_err e;
	if (!fi_sched_pending(P->s))
		return FI_OK;
	e = fi_sched_run(P->s);
	if (e && !P->werr) {
		P->fwd = e;
		snprintf(P->fwd_msg, sizeof P->fwd_msg, "%s", fi_errmsg());
		e = fi_sched_cancel_all(P->s);
		P->fwd = FI_OK;
	}
	P->t_busy += fi_now() - t0;
	if (!e)
		e = fi_stream_flush(P->out);
	return e;
}

/* Checks a request and queues it; an error is answered with an error frame. */
static fi_err add_req(struct prefill *P, struct fi_frame *f)
{
	struct fi_sched_req r;
	struct pre *q;
	fi_err e;
	if ((e = fi_sched_encode_prompt(P->tok, f)))
		return e;
	resolve_sampling(P->o, &f->req);
	if (!(q = calloc(1, sizeof *q)))
		return fi_fail(FI_ENOMEM, "out of memory");
	fi_frame_move(&q->f, f);
	fi_sched_req_from_frame(&q->f, &P->o->a.sp, &r);
	/* one token, whatever it is; stops are fi-decode's business */
	r.max_tokens = 1;
	r.flags = FI_SCHED_NO_STOP;
	r.stop = NULL;
	r.nstop = 0;
	r.user = q;
	if ((e = fi_sched_add(P->s, &r))) {
		fi_frame_move(f, &q->f);
		free(q);
	}
	return e;
}

/* Takes one input frame; returns 1 at the end of input. */
static int take_frame(struct prefill *P, struct fi_frame *f, fi_err *fatal)
{
	if (f->type == FI_FRAME_EOS)
		return 1;
	if (f->type != FI_FRAME_REQUEST) {
		/* cancel, token, done and error frames pass through, in order */
		if (!(*fatal = run_batch(P)))
			*fatal = fi_stream_write(P->out, f);
		return 0;
	}
	if (fi_sched_pending(P->s) >= P->o->batch && (*fatal = run_batch(P)))
		return 0;
	if (add_req(P, f))
		*fatal = fi_stream_write_error(P->out, f->id, fi_errcode(), fi_errmsg());
	return 0;
}

/* After a signal: requests already queued on the input get an error frame, not silence. */
static fi_err drain(struct prefill *P, struct fi_stream *in)
{
	struct fi_frame f;
	fi_err e = FI_OK, r;
	for (int k = 0; !e && k < 100000; k++) {
		fi_frame_init(&f, FI_FRAME_NONE);
		r = fi_stream_read_timeout(in, &f, 0);
		if (r || f.type == FI_FRAME_NONE || f.type == FI_FRAME_EOS) {
			fi_frame_free(&f);
			break;
		}
		if (f.type == FI_FRAME_REQUEST)
			e = fi_stream_write_error(P->out, f.id, FI_EINTERRUPT,
						  "fi-prefill is shutting down");
		else
			e = fi_stream_write(P->out, &f);
		fi_frame_free(&f);
	}
	return e;
}

/* fi_stream_take's view of the prefill state. */
static int busy(void *user)
{
	return fi_sched_pending(((struct prefill *)user)->s) > 0;
}

static int take(void *user, struct fi_frame *f, fi_err *fatal)
{
	return take_frame(user, f, fatal);
}

static int run(struct prefill *P)
{
	struct fi_stream_opts so;
	struct fi_stream *in = NULL;
	fi_err e;
	int eof = 0, rc = 0, bad_frames = 0, broken = 0;
	fi_stream_opts_default(&so);
	so.eos_count = P->o->a.eos_count;
	if ((e = fi_stream_open(&in, P->o->a.in, FI_STREAM_IN, &so)) ||
	    (e = fi_stream_open(&P->out, P->o->a.out, FI_STREAM_OUT, NULL)))
		goto out;
	fi_stream_catch_signals();
	while (!e && !eof) {
		/* Wait for the first request, then take what has already arrived, up to a batch. */
		e = fi_stream_take(in, P->out, 4 * P->o->batch, busy, take, P, &eof, &broken,
				   &bad_frames);
		if (broken) {
			rc = cmd_error(NULL);
			broken = 0;
		}
		if (e == FI_EINTERRUPT)
			e = FI_OK;
		if (!e)
			e = run_batch(P);
		if (!e && fi_stream_interrupted()) {
			e = drain(P, in);
			break;
		}
	}
out:
	if (e && e != FI_EINTERRUPT)
		rc = cmd_error(NULL);
	/* requests still held (a failed output) are dropped, their frames freed */
	P->werr = P->werr ? P->werr : FI_EIO;
	fi_sched_cancel_all(P->s);
	if (fi_stream_close(P->out) && !rc)
		rc = cmd_error(NULL);
	fi_stream_close(in);
	if (P->o->a.verbose && P->n_req)
		fprintf(stderr, "fi-prefill: %llu requests, %llu prompt tokens, %llu cached, "
			"%.1f tok/s computed\n", (unsigned long long)P->n_req,
			(unsigned long long)P->n_tok, (unsigned long long)P->n_cached,
			P->t_busy > 0 ? (double)(P->n_tok - P->n_cached) / P->t_busy : 0.0);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o = {.batch = 16};
	const struct opt own[] = {
		{'b', NULL, "N", OPT_INT, 1, 256, &o.batch},
		{0},
	};
	static const char *const usage[] = {
		"-m [-b] [--arena-size] @sampling [--backend] [-t] [-i] [-o] [-e] [-v]",
		NULL,
	};
	const struct cmd cmd = {.name = "fi-prefill", .groups = CMD_MODEL | CMD_STREAMS | CMD_EOS | CMD_BACKEND |
				CMD_SAMPLING | CMD_ARENA | CMD_VERBOSE, .opts = own, .usage = usage};
	struct prefill P = {.o = &o};
	struct fi_backend *be = NULL;
	struct fi_sched_opts so;
	int rc = 1, ctx;
	if (cmd_parse(&cmd, &o.a, argc, argv) != argc)
		usage_error("unexpected operand '%s'", argv[optind]);
	if (fi_open_backend_model(o.a.backend, o.a.threads, o.a.model, &be, &P.im, &P.m))
		return cmd_error(NULL);
	ctx = fi_model_config(P.m)->max_pos > 0 ? fi_model_config(P.m)->max_pos : 4096;
	/* Room for a batch of o.batch full-context prompts, or 4 contexts, whichever is less. */
	if (fi_model_cache_init(P.m, (ctx + BLOCK_TOKENS - 1) / BLOCK_TOKENS *
				(o.batch < 4 ? o.batch : 4), BLOCK_TOKENS))
		goto fail;
	if (fi_image_tokenizer(P.im, &P.tok) && fi_errcode() != FI_ENOTFOUND)
		fi_warn("%s: text prompts are refused", fi_errmsg());
	fi_sched_opts_default(&so);
	so.max_batch = o.batch;
	so.max_requests = o.batch;
	so.fingerprint = P.im->fingerprint;
	so.prefix_cache = 1;
	so.arena_size = o.a.arena_size;
	so.cb = on_event;
	so.cb_user = &P;
	if (fi_sched_create(P.m, &so, &P.s) || fi_sched_arena(P.s, 1, &P.x))
		goto fail;
	fi_info("%s on %s, arena %s", o.a.model, be->device, fi_arena_file(fi_kvx_arena(P.x)));
	rc = run(&P);
	goto out;
fail:
	rc = cmd_error(NULL);
out:
	fi_sched_destroy(P.s);
	fi_tok_free(P.tok);
	fi_model_close(P.m);
	if (P.im)
		fi_image_close(P.im);
	fi_backend_destroy(be);
	return rc;
}
