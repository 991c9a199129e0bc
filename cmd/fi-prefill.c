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
#include "serve/serve.h"
#include "model/store.h"
#include "frame/stream.h"
#include "text/tokenizer.h"
#include "serve/req_frame.h"
#include "text/tok_ident.h"
#include "worker.h"

struct opts {
	struct cmd_args a; /* the model, streams, backend, sampling defaults, arena, -f, -v */
	int batch;
	struct opt_kv_size kvsize; /* --kv-size */
	struct fi_kv_sizing kv;   /* --gpu-mem, --kv-size, --max-step-tokens; max_batch = -b */
	const char *router, *name; /* --router, --name */
	enum worker_mode mode;
};

/* A request in the scheduler: its frame, passed on once its prompt is computed, after the
 * first token when this stage draws it (draw). */
struct pre {
	struct fi_frame f;
	uint32_t token;
	int draw;
	int done;      /* its done event came: */
	fi_err err;    /* FI_OK, or why it failed (the forward pass) */
	uint32_t prompt_tokens, cached_tokens;
	size_t stored_blocks;
	double total_ms;
	/* a client's request (WORKER_CLIENTS): who sent it; the scheduler holds it as key */
	uint8_t peer[FI_STREAM_PEER_MAX];
	size_t peer_len;
	char key[FI_STREAM_KEY_MAX];
};

struct prefill {
	const struct opts *o;
	struct fi_model *m;
	struct fi_image *im;
	struct fi_tok *tok;
	struct fi_sched *s;
	struct fi_stream *out;
	fi_err fwd;   /* the forward pass failed: held requests get error frames */
	char fwd_msg[512];
	/* the requests of the batch in input order: the output keeps that order, so a run
	 * prints the same whatever the scheduler did first (a prompt waiting for a prefix
	 * another request computes comes out a step later) */
	struct pre **held;
	int n_held, cap_held;
	uint64_t n_req, n_tok, n_cached;
	double t_busy;
	struct fi_tok_ident ident; /* the model's tokenizer (has_ident) */
	int has_ident;
	unsigned told;             /* sampling conflicts reported (FI_REQ_* bits) */
	uint64_t n_failed, n_mismatch;
	double t_first;            /* the first request's arrival (0: none yet) */
	struct worker W;           /* the streams (worker.h) */
};

/* An answer about q (NULL: about the frame just read) to whoever sent it; a client that is
 * gone is no failure of the worker. */
static fi_err answer(struct prefill *P, const struct pre *q, const struct fi_frame *f)
{
	fi_err e = worker_reply(&P->W, q ? q->peer : NULL, q ? q->peer_len : 0, f);
	return e == FI_ENOTFOUND && P->W.mode == WORKER_CLIENTS ? FI_OK : e;
}

/* Fills the sampling keys a request leaves unset from the options, and marks them set: the
 * request passed on carries the parameters its first token was drawn with. */
static void resolve_sampling(const struct opts *o, struct fi_request *r)
{
	if (!(r->set & FI_REQ_TEMPERATURE))
		r->temperature = o->a.sp.temperature;
	if (!(r->set & FI_REQ_TOP_K))
		r->top_k = o->a.sp.top_k;
	if (!(r->set & FI_REQ_TOP_P))
		r->top_p = o->a.sp.top_p;
	if (!(r->set & FI_REQ_MIN_P))
		r->min_p = o->a.sp.min_p;
	if (!(r->set & FI_REQ_REPEAT_PENALTY))
		r->repeat_penalty = o->a.sp.repeat_penalty;
	if (!(r->set & FI_REQ_SEED))
		r->seed = o->a.sp.seed;
	r->set |= FI_REQ_TEMPERATURE | FI_REQ_TOP_K | FI_REQ_TOP_P | FI_REQ_MIN_P |
		  FI_REQ_REPEAT_PENALTY | FI_REQ_SEED;
}

/* Emits the first token (when this stage drew it) and the request with its kv reference. */
static fi_err emit(struct prefill *P, struct pre *q)
{
	struct fi_request *r = &q->f.req;
	struct fi_kvx *x = fi_sched_kvx(P->s);
	struct fi_frame tf;
	fi_err e;
	fi_frame_init(&tf, FI_FRAME_TOKEN);
	tf.id = q->f.id;
	tf.tok.token = q->token;
	tf.tok.index = 0;
	free(r->kv.arena);
	free(r->kv.blocks);
	memset(&r->kv, 0, sizeof r->kv);
	r->set &= ~(uint32_t)FI_REQ_KV;
	/* Without the arena (it could not be had: no space, a stuck lock) the request goes on
	 * without a reference, and fi-decode computes its prompt. */
	if (x) {
		if ((e = fi_kvx_make_ref(x, P->im->fingerprint, r->tokens, r->ntokens, &r->kv)))
			return e;
		r->set |= FI_REQ_KV;
	}
	if (q->draw && (e = answer(P, q, &tf)))
		return e;
	return answer(P, q, &q->f);
}

static void pre_free(struct pre *q)
{
	fi_frame_free(&q->f);
	free(q);
}

static fi_err on_event(void *user, const struct fi_sched_event *ev)
{
	struct prefill *P = user;
	struct pre *q = ev->user;
	switch (ev->type) {
	case FI_SCHED_EV_WARN:
		fi_warn("%s", ev->message);
		break;
	case FI_SCHED_EV_TOKEN:
		q->token = ev->token;
		break;
	case FI_SCHED_EV_ERROR:
		break; /* its done event answers */
	case FI_SCHED_EV_DONE:
		q->done = 1;
		/* not "length": cancelled after a failed forward pass */
		q->err = ev->finish == FI_FINISH_LENGTH ? FI_OK : P->fwd ? P->fwd : FI_EINTERRUPT;
		q->prompt_tokens = ev->prompt_tokens;
		q->cached_tokens = ev->cached_tokens;
		q->stored_blocks = ev->stored_blocks;
		q->total_ms = ev->total_ms;
		break;
	}
	return FI_OK;
}

/* Writes the finished requests of the batch in input order and forgets them. */
static fi_err flush_held(struct prefill *P)
{
	fi_err e = FI_OK;
	int k = 0;
	for (int i = 0; i < P->n_held; i++) {
		struct pre *q = P->held[i];
		if (!q->done) {
			P->held[k++] = q;
			continue;
		}
		if (!e && q->err) {
			struct fi_frame ef;
			P->n_failed++;
			fi_req_error_frame(&q->f, q->err, P->fwd_msg[0] ? P->fwd_msg : "interrupted",
					   &ef);
			e = answer(P, q, &ef);
		} else if (!e) {
			if (P->o->a.verbose)
				fprintf(stderr, "fi-prefill: '%s': %u prompt tokens, %u cached, %u "
					"computed, %zu blocks stored, %.2f ms\n", q->f.id,
					q->prompt_tokens, q->cached_tokens,
					q->prompt_tokens - q->cached_tokens, q->stored_blocks, q->total_ms);
			P->n_req++;
			P->n_tok += q->prompt_tokens;
			P->n_cached += q->cached_tokens;
			e = emit(P, q);
		}
		pre_free(q);
	}
	P->n_held = k;
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
	P->fwd_msg[0] = 0;
	e = fi_sched_run(P->s);
	if (e) {
		P->fwd = e;
		snprintf(P->fwd_msg, sizeof P->fwd_msg, "%s", fi_errmsg());
		e = fi_sched_cancel_all(P->s);
		P->fwd = FI_OK;
	}
	P->t_busy += fi_now() - t0;
	if (!e)
		e = flush_held(P);
	if (!e)
		e = fi_stream_flush(P->out);
	return e;
}

/* Checks a request and queues it; an error is answered with an error frame.
 *
 * The first token is drawn here only when the sampling is known here: the request sets
 * sampling keys, or this stage was given sampling options. Then the request passes on with
 * every sampling key set to the value used, so the rest of the generation continues it.
 * Otherwise the request passes on without a token and with its keys as they were, and the
 * stage that has the options (fi-decode --temp 0) draws every token: a pipeline samples as
 * its last sampling options say (fi-frame(5), SAMPLING IN A PIPELINE). */
static fi_err add_req(struct prefill *P, struct fi_frame *f)
{
	struct fi_sched_req r;
	struct pre *q;
	unsigned c;
	int draw;
	fi_err e;
	if ((c = fi_req_sampling_conflicts(f, &P->o->a.sp, P->o->a.given) & ~P->told)) {
		char m[512];
		fi_req_conflict_message(f, &P->o->a.sp, c, m, sizeof m);
		fi_warn("%s", m);
		P->told |= c;
	}
	if ((e = fi_req_check_tokenizer(f, P->has_ident ? &P->ident : NULL))) {
		/* One message for them all: every such request is refused the same way. */
		if (!P->n_mismatch++)
			cmd_error("%s; such requests get error frames (code mismatch)", fi_errmsg());
		return e;
	}
	if ((e = fi_sched_encode_prompt(P->tok, f)))
		return e;
	draw = P->o->a.given || (f->req.set & FI_REQ_SAMPLING);
	if (draw)
		resolve_sampling(P->o, &f->req);
	if (!(q = calloc(1, sizeof *q)))
		return fi_fail(FI_ENOMEM, "out of memory");
	q->draw = draw;
	if (P->W.mode == WORKER_CLIENTS) {
		const uint8_t *peer = fi_stream_peer(P->W.in, &q->peer_len);
		memcpy(q->peer, peer, q->peer_len);
		fi_stream_key(q->peer, q->peer_len, f->id, q->key);
	}
	fi_frame_move(&q->f, f);
	fi_sched_req_from_frame(&q->f, &P->o->a.sp, 0, &r);
	if (q->peer_len)
		r.id = q->key;
	/* one token, whatever it is; stops are fi-decode's business */
	r.max_tokens = 1;
	r.flags = FI_SCHED_NO_STOP;
	r.logprobs = r.top_logprobs = 0;
	r.user = q;
	if (P->n_held == P->cap_held) {
		int cap = P->cap_held ? 2 * P->cap_held : 64;
		struct pre **h = realloc(P->held, sizeof *h * (size_t)cap);
		if (!h) {
			fi_frame_move(f, &q->f);
			free(q);
			return fi_fail(FI_ENOMEM, "out of memory");
		}
		P->held = h;
		P->cap_held = cap;
	}
	if ((e = fi_sched_add(P->s, &r))) {
		fi_frame_move(f, &q->f);
		free(q);
		return e;
	}
	P->held[P->n_held++] = q;
	return FI_OK;
}

/* Takes one input frame; returns 1 at the end of input. */
static int take_frame(struct prefill *P, struct fi_frame *f, fi_err *fatal)
{
	if (f->type == FI_FRAME_EOS)
		return 1;
	if (f->type != FI_FRAME_REQUEST) {
		/* cancel, token, done and error frames pass through, in order */
		P->n_failed += f->type == FI_FRAME_ERROR;
		if (!(*fatal = run_batch(P)))
			*fatal = answer(P, NULL, f);
		return 0;
	}
	if (!P->t_first)
		P->t_first = fi_now();
	/* A full batch runs before the next request is added: the scheduler never holds more
	 * than a batch, so it never refuses one busy. */
	if (fi_sched_room(P->s) <= 0 && (*fatal = run_batch(P)))
		return 0;
	if (add_req(P, f)) {
		struct fi_frame ef;
		P->n_failed++;
		fi_req_error_frame(f, fi_errcode(), fi_errmsg(), &ef);
		*fatal = answer(P, NULL, &ef);
	}
	return 0;
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

/* Requests done, running and queued, and prompt tokens per second, on a terminal. */
static void live_line(struct prefill *P)
{
	double el = P->t_first ? fi_now() - P->t_first : 0;
	int held = fi_sched_pending(P->s), run = fi_sched_running(P->s);
	if (!P->t_first || !fi_live_active())
		return;
	fi_live(0, "%llu done, %d running, %d queued, %.1f tok/s",
		(unsigned long long)(P->n_req + P->n_failed), run, held - run,
		el > 0 ? P->n_tok / el : 0.0);
}

/* The line at the end of a batch, on a terminal or not (quiet with FI_LOG=error). */
static int summary(struct prefill *P)
{
	double el = P->t_first ? fi_now() - P->t_first : 0;
	fi_live_clear();
	if (!P->t_first || fi_log_get_level() < FI_LOG_WARN)
		return 0;
	fprintf(stderr, "fi-prefill: %llu requests, %llu failed, %llu tokens (%llu cached) in "
		"%.2f s, %.1f tok/s\n", (unsigned long long)(P->n_req + P->n_failed),
		(unsigned long long)P->n_failed, (unsigned long long)P->n_tok,
		(unsigned long long)P->n_cached, el, el > 0 ? P->n_tok / el : 0.0);
	return 1;
}

static int run(struct prefill *P)
{
	struct fi_stream *in = NULL;
	struct fi_sched_stats st;
	fi_err e;
	int eof = 0, rc = 0, bad_frames = 0, broken = 0;
	if ((e = worker_open(&P->W, P->o->mode, &P->o->a, P->o->router, P->o->name)))
		goto out;
	in = P->W.in;
	P->out = P->W.out;
	fi_sched_stats(P->s, &st);
	if ((e = worker_hello(&P->W, "prefill", P->o->a.model, P->im->fingerprint, NULL,
			      (uint32_t)st.kv_block_size, (uint64_t)st.kv_blocks,
			      (uint32_t)P->o->batch, NULL, NULL)))
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
		if (!e && P->W.mode == WORKER_ROUTER) {
			struct worker_load ld;
			fi_sched_stats(P->s, &st);
			ld = (struct worker_load){(uint64_t)(st.waiting + st.preempted), st.queued_tokens,
						  (uint64_t)st.running, st.running_tokens,
						  (uint64_t)(st.kv_blocks - st.kv_available),
						  (uint64_t)st.kv_blocks, st.prefix_hits, st.prefix_lookups};
			e = worker_load(&P->W, &ld);
		}
		worker_forget_gone(&P->W); /* a prefill request is answered once: nothing to drop */
		live_line(P);
		if (!e && fi_stream_interrupted()) {
			/* The requests read are done (a batch is short); what is still on the input
			 * gets an error frame each, so every request sent is answered. */
			if (!eof && !broken)
				e = fi_stream_drain(in, P->out, "fi-prefill", ~(1u << FI_FRAME_REQUEST),
						    FI_STREAM_DRAIN_QUIET_MS, &P->n_failed);
			break;
		}
	}
out:
	if (e && e != FI_EINTERRUPT)
		rc = cmd_error(NULL);
	P->n_failed += (unsigned long)bad_frames;
	/* requests still held (a failed output) are dropped, their frames freed */
	fi_sched_cancel_all(P->s);
	for (int i = 0; i < P->n_held; i++)
		pre_free(P->held[i]);
	free(P->held);
	P->held = NULL;
	P->n_held = 0;
	if ((P->W.in || P->W.out) && worker_close(&P->W) && !rc)
		rc = cmd_error(NULL);
	(void)in;
	/* The summary counts failures; without it (FI_LOG=error) they are said alone. */
	if (!summary(P) && !rc && P->n_failed)
		fprintf(stderr, "fi-prefill: %llu requests failed (see their error frames)\n", (unsigned long long)P->n_failed);
	if (!rc && P->n_failed)
		rc = EXIT_FAILED;
	return rc;
}

enum { O_GPU_MEM = OPT_LONG, O_KV_SIZE, O_MAX_STEP, O_KV_DTYPE, O_ROUTER, O_NAME };

int main(int argc, char **argv)
{
	struct opts o = {.batch = 16};
	const char *kv_dtype = "auto";
	const struct opt own[] = {
		{'b', NULL, "N", OPT_INT, 1, 256, &o.batch},
		{O_GPU_MEM, "gpu-mem", "F", OPT_DOUBLE, 0.01, 1, &o.kv.gpu_mem},
		{O_KV_SIZE, "kv-size", "SIZE", OPT_KVSIZE, 0, 0, &o.kvsize},
		{O_MAX_STEP, "max-step-tokens", "N", OPT_INT, 1, 1 << 24, &o.kv.max_step_tokens},
		{O_KV_DTYPE, "kv-dtype", "auto|fp8", OPT_CHOICE, 0, 0, &kv_dtype},
		{O_ROUTER, "router", "ENDPOINT", OPT_STR, 0, 0, &o.router},
		{O_NAME, "name", "NAME", OPT_STR, 0, 0, &o.name},
		{0},
	};
	/* -b is the batch: --max-batch, as fi-decode names it */
	static const struct opt_alias aliases[] = {{"max-batch", 'b'}, {0}};
	static const char *const usage[] = {
		"-m [-b] [--arena-size] [--kv-dtype] @sampling [--backend] [--gpu-mem] [--kv-size]"
		" [--max-step-tokens] [-t] [--tp] [-i] [-o] [--router] [--name] [-e] [-f] [-v]",
		NULL,
	};
	const struct cmd cmd = {.name = "fi-prefill", .groups = CMD_MODEL | CMD_STREAMS | CMD_EOS |
				CMD_BACKEND | CMD_SAMPLING | CMD_ARENA | CMD_FORCE | CMD_VERBOSE,
				.opts = own, .usage = usage, .aliases = aliases};
	struct prefill P = {.o = &o};
	struct fi_backend *be = NULL;
	struct fi_sched_opts so;
	struct fi_kvx *x = NULL;
	int rc = 1;
	fi_kv_sizing_default(&o.kv);
	if (cmd_parse(&cmd, &o.a, argc, argv) != argc)
		usage_error("unexpected operand '%s'", argv[optind]);
	o.kv.kv_bytes = o.kvsize.bytes;
	o.kv.kv_tokens = o.kvsize.tokens;
	o.kv.max_batch = o.batch;
	if (o.name && !o.router)
		usage_error("--name names a worker registered with --router");
	o.mode = worker_mode(&o.a, o.router);
	if (o.kv.max_step_tokens && o.kv.max_step_tokens < o.batch)
		usage_error("--max-step-tokens %d is below -b %d: a step must hold one token of "
			    "every request", o.kv.max_step_tokens, o.batch);
	/* Frames are binary: refused on a terminal before the model is loaded. */
	if (o.mode == WORKER_STREAMS && !o.a.force && fi_stream_refuse_tty(o.a.out))
		return cmd_error(NULL);
	fi_tp_size = o.a.tp;
	if (fi_open_backend_model(o.a.backend, o.a.threads, o.a.model, &be, &P.im, &P.m))
		return cmd_error(NULL);
	if ((!strcmp(kv_dtype, "fp8") && fi_model_set_kv_dtype(P.m, FI_DT_F8_E4M3)) ||
	    fi_sched_cache_init(P.m, &o.kv, NULL))
		goto fail;
	if (fi_image_tokenizer(P.im, &P.tok) && fi_errcode() != FI_ENOTFOUND)
		fi_warn("%s: text prompts are refused", fi_errmsg());
	/* Requests whose tokens another tokenizer made are refused (tok_ident.h). */
	P.has_ident = P.tok && !fi_tok_ident(P.tok, o.a.model, &P.ident);
	fi_sched_opts_default(&so);
	so.max_batch = o.batch;
	so.max_requests = o.batch;
	if (o.kv.max_step_tokens)
		so.max_step_tokens = o.kv.max_step_tokens;
	so.arena_sync = 1; /* the kv reference passed on must find the blocks */
	so.fingerprint = P.im->fingerprint;
	so.prefix_cache = 1;
	so.arena_size = o.a.arena_size;
	so.cb = on_event;
	so.cb_user = &P;
	if (fi_sched_create(P.m, &so, &P.s))
		goto fail;
	/* Without the arena (no space for it, a lock held by a stuck process, ...) prompts are
	 * still computed and passed on, without a kv reference: fi-decode computes them again. */
	if (fi_sched_arena(P.s, 1, &x))
		fi_warn("%s; passing requests on without KV", fi_errmsg());
	fi_info("%s on %s, arena %s", o.a.model, be->device,
		x ? fi_arena_file(fi_kvx_arena(x)) : "none");
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
