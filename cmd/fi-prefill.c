/* fi-prefill: compute the KV of prompts into the shared KV arena. Reads request frames and
 * runs them through the scheduler (lib/sched/scheduler.h) as one-token generations that look their
 * prefix up in the arena and publish their new full blocks; passes each request on with a
 * "kv" reference, preceded by a token frame with its first generated token. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "frame/frame.h"
#include "kv/kvxfer.h"
#include "base/log.h"
#include "cmdutil.h"
#include "model/model.h"
#include "backend/sample.h"
#include "sched/scheduler.h"
#include "serve/serve.h"
#include "model/store.h"
#include "frame/stream.h"
#include "text/tokenizer.h"
#include "serve/req_frame.h"
#include "text/tok_ident.h"

static const char usage_text[] =
	"usage: fi-prefill -m MODEL [-b N] [--arena-size SIZE] [--temp T] [--top-k K]\n"
	"                  [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S]\n"
	"                  [--backend auto|cuda|cpu] [--gpu-mem F] [--kv-size SIZE]\n"
	"                  [--max-step-tokens N] [-t THREADS] [-i IN] [-o OUT] [-e N] [-f] [-v]\n"
	"       fi-prefill -h\n";

struct opts {
	const char *model, *backend, *in, *out;
	int batch, threads, verbose, eos_count, force;
	unsigned given; /* FI_REQ_* bits of the sampling options given */
	uint64_t arena_size;
	struct fi_kv_sizing kv; /* --gpu-mem, --kv-size, --max-step-tokens; max_batch = -b */
	struct fi_sample_params sp;
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
};

struct prefill {
	const struct opts *o;
	struct fi_model *m;
	struct fi_image *im;
	struct fi_tok *tok;
	struct fi_sched *s;
	struct fi_kvx *x;
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
};

static int usage(int rc)
{
	fputs(usage_text, rc ? stderr : stdout);
	return rc;
}

static int fail(void)
{
	fprintf(stderr, "fi-prefill: %s\n", fi_errmsg());
	return 1;
}

/* Fills the sampling keys a request leaves unset from the options, and marks them set: the
 * request passed on carries the parameters its first token was drawn with. */
static void resolve_sampling(const struct opts *o, struct fi_request *r)
{
	if (!(r->set & FI_REQ_TEMPERATURE))
		r->temperature = o->sp.temperature;
	if (!(r->set & FI_REQ_TOP_K))
		r->top_k = o->sp.top_k;
	if (!(r->set & FI_REQ_TOP_P))
		r->top_p = o->sp.top_p;
	if (!(r->set & FI_REQ_MIN_P))
		r->min_p = o->sp.min_p;
	if (!(r->set & FI_REQ_REPEAT_PENALTY))
		r->repeat_penalty = o->sp.repeat_penalty;
	if (!(r->set & FI_REQ_SEED))
		r->seed = o->sp.seed;
	r->set |= FI_REQ_TEMPERATURE | FI_REQ_TOP_K | FI_REQ_TOP_P | FI_REQ_MIN_P |
		  FI_REQ_REPEAT_PENALTY | FI_REQ_SEED;
}

/* Emits the first token (when this stage drew it) and the request with its kv reference. */
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
	if (q->draw && (e = fi_stream_write(P->out, &tf)))
		return e;
	return fi_stream_write(P->out, &q->f);
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
			e = fi_stream_write(P->out, &ef);
		} else if (!e) {
			if (P->o->verbose)
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
	if ((c = fi_req_sampling_conflicts(f, &P->o->sp, P->o->given) & ~P->told)) {
		char m[512];
		fi_req_conflict_message(f, &P->o->sp, c, m, sizeof m);
		fi_warn("%s", m);
		P->told |= c;
	}
	if ((e = fi_req_check_tokenizer(f, P->has_ident ? &P->ident : NULL))) {
		/* One message for them all: every such request is refused the same way. */
		if (!P->n_mismatch++)
			fi_log(FI_LOG_ERROR, "%s; such requests get error frames (code mismatch)",
			       fi_errmsg());
		return e;
	}
	if ((e = fi_sched_encode_prompt(P->tok, f)))
		return e;
	draw = P->o->given || (f->req.set & FI_REQ_SAMPLING);
	if (draw)
		resolve_sampling(P->o, &f->req);
	if (!(q = calloc(1, sizeof *q)))
		return fi_fail(FI_ENOMEM, "out of memory");
	q->draw = draw;
	fi_frame_move(&q->f, f);
	fi_sched_req_from_frame(&q->f, &P->o->sp, 0, &r);
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
		if (!(*fatal = run_batch(P)))
			*fatal = fi_stream_write(P->out, f);
		return 0;
	}
	if (!P->t_first)
		P->t_first = fi_now();
	if (fi_sched_pending(P->s) >= P->o->batch && (*fatal = run_batch(P)))
		return 0;
	if (add_req(P, f)) {
		struct fi_frame ef;
		P->n_failed++;
		fi_req_error_frame(f, fi_errcode(), fi_errmsg(), &ef);
		*fatal = fi_stream_write(P->out, &ef);
	}
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
		if (f.type == FI_FRAME_REQUEST) {
			struct fi_frame ef;
			fi_req_error_frame(&f, FI_EINTERRUPT, "fi-prefill is shutting down", &ef);
			e = fi_stream_write(P->out, &ef);
		} else
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
static void summary(struct prefill *P)
{
	double el = P->t_first ? fi_now() - P->t_first : 0;
	fi_live_clear();
	if (!P->t_first || fi_log_get_level() < FI_LOG_WARN)
		return;
	fprintf(stderr, "fi-prefill: %llu requests, %llu failed, %llu tokens (%llu cached) in "
		"%.2f s, %.1f tok/s\n", (unsigned long long)(P->n_req + P->n_failed),
		(unsigned long long)P->n_failed, (unsigned long long)P->n_tok,
		(unsigned long long)P->n_cached, el, el > 0 ? P->n_tok / el : 0.0);
}

static int run(struct prefill *P)
{
	struct fi_stream_opts so;
	struct fi_stream *in = NULL;
	fi_err e;
	int eof = 0, rc = 0, bad_frames = 0, broken = 0;
	fi_stream_opts_default(&so);
	so.eos_count = P->o->eos_count;
	if ((e = fi_stream_open(&in, P->o->in, FI_STREAM_IN, &so)))
		goto out;
	fi_stream_opts_default(&so);
	so.tty_ok = P->o->force;
	if ((e = fi_stream_open(&P->out, P->o->out, FI_STREAM_OUT, &so)))
		goto out;
	fi_stream_catch_signals();
	while (!e && !eof) {
		/* Wait for the first request, then take what has already arrived, up to a batch. */
		e = fi_stream_take(in, P->out, 4 * P->o->batch, busy, take, P, &eof, &broken,
				   &bad_frames);
		if (broken) {
			fprintf(stderr, "fi-prefill: %s\n", fi_errmsg());
			rc = 1;
			broken = 0;
		}
		if (e == FI_EINTERRUPT)
			e = FI_OK;
		if (!e)
			e = run_batch(P);
		live_line(P);
		if (!e && fi_stream_interrupted()) {
			e = drain(P, in);
			break;
		}
	}
out:
	if (e && e != FI_EINTERRUPT) {
		fprintf(stderr, "fi-prefill: %s\n", fi_errmsg());
		rc = 1;
	}
	/* requests still held (a failed output) are dropped, their frames freed */
	fi_sched_cancel_all(P->s);
	for (int i = 0; i < P->n_held; i++)
		pre_free(P->held[i]);
	free(P->held);
	P->held = NULL;
	P->n_held = 0;
	if (fi_stream_close(P->out) && !rc) {
		fprintf(stderr, "fi-prefill: %s\n", fi_errmsg());
		rc = 1;
	}
	fi_stream_close(in);
	summary(P);
	/* Requests made with another tokenizer: exit 3, as for requests that failed. */
	return rc ? rc : P->n_mismatch ? 3 : 0;
}

int main(int argc, char **argv)
{
	enum { O_TEMP = 256, O_TOPK, O_TOPP, O_MINP, O_REP, O_SEED, O_BACKEND, O_ASIZE, O_GPUMEM,
	       O_KVSIZE, O_STEP };
	static const struct option lo[] = {
		{"temp", required_argument, NULL, O_TEMP},
		{"top-k", required_argument, NULL, O_TOPK},
		{"top-p", required_argument, NULL, O_TOPP},
		{"min-p", required_argument, NULL, O_MINP},
		{"repeat-penalty", required_argument, NULL, O_REP},
		{"seed", required_argument, NULL, O_SEED},
		{"backend", required_argument, NULL, O_BACKEND},
		{"arena-size", required_argument, NULL, O_ASIZE},
		{"gpu-mem", required_argument, NULL, O_GPUMEM},
		{"kv-size", required_argument, NULL, O_KVSIZE},
		{"max-step-tokens", required_argument, NULL, O_STEP},
		{"max-batch", required_argument, NULL, 'b'},
		{"force", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {.backend = "auto", .in = "-", .out = "-", .batch = 16, .eos_count = 1};
	struct prefill P = {.o = &o};
	struct fi_backend *be = NULL;
	int be_failed = 0;
	struct fi_sched_opts so;
	int c, rc = 1;
	double v;
	fi_log_set_prog("fi-prefill");
	fi_sample_defaults(&o.sp);
	fi_kv_sizing_default(&o.kv);
	while ((c = getopt_long(argc, argv, "m:b:t:i:o:e:fvh", lo, NULL)) != -1) {
		switch (c) {
		case 'm': o.model = optarg; break;
		case 'i': o.in = optarg; break;
		case 'o': o.out = optarg; break;
		case O_BACKEND: o.backend = optarg; break;
		case 'v': o.verbose = 1; break;
		case 'f': o.force = 1; break;
		case 'h': return usage(0);
		case 'b':
			if (fi_parse_num(optarg, 1, 256, &v))
				goto bad;
			o.batch = (int)v;
			break;
		case 'e':
			if (fi_parse_num(optarg, 0, 1 << 20, &v))
				goto bad;
			o.eos_count = (int)v;
			break;
		case 't':
			if (fi_parse_num(optarg, 1, 1024, &v))
				goto bad;
			o.threads = (int)v;
			break;
		case O_ASIZE:
			if (fi_parse_size(optarg, &o.arena_size))
				goto bad;
			break;
		case O_GPUMEM:
			if (fi_parse_num(optarg, 0.01, 1, &v))
				goto bad;
			o.kv.gpu_mem = v;
			break;
		case O_KVSIZE:
			if (fi_parse_kv_size(optarg, &o.kv.kv_bytes, &o.kv.kv_tokens))
				goto bad;
			break;
		case O_STEP:
			if (fi_parse_num(optarg, 1, 1 << 24, &v))
				goto bad;
			o.kv.max_step_tokens = (int)v;
			break;
		case O_TEMP:
			if (fi_parse_num(optarg, 0, 1e6, &v))
				goto bad;
			o.sp.temperature = (float)v;
			o.given |= FI_REQ_TEMPERATURE;
			break;
		case O_TOPK:
			if (fi_parse_num(optarg, 0, 1 << 30, &v))
				goto bad;
			o.sp.top_k = (int)v;
			o.given |= FI_REQ_TOP_K;
			break;
		case O_TOPP:
			if (fi_parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.top_p = (float)v;
			o.given |= FI_REQ_TOP_P;
			break;
		case O_MINP:
			if (fi_parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.min_p = (float)v;
			o.given |= FI_REQ_MIN_P;
			break;
		case O_REP:
			if (fi_parse_num(optarg, 1e-6, 1e6, &v))
				goto bad;
			o.sp.repeat_penalty = (float)v;
			o.given |= FI_REQ_REPEAT_PENALTY;
			break;
		case O_SEED:
			if (fi_parse_u64(optarg, &o.sp.seed))
				goto bad;
			o.given |= FI_REQ_SEED;
			break;
		default:
			return usage(2);
		}
		continue;
bad:
		/* "--seed x": the option is the word before its value; "--seed=x": the same word */
		fprintf(stderr, "fi-prefill: invalid value '%s' for %s\n", optarg,
			optarg == argv[optind - 1] && optind > 1 ? argv[optind - 2] : argv[optind - 1]);
		return 2;
	}
	if (!o.model || optind != argc)
		return usage(2);
	/* Frames are binary: refused on a terminal before the model is loaded. */
	if (!o.force && fi_stream_refuse_tty(o.out))
		return fail();
	if (fi_open_backend_model(o.backend, o.threads, o.model, &be, &P.im, &P.m, &be_failed))
		return fail() + be_failed; /* an unknown backend name is a usage error */
	o.kv.max_batch = o.batch;
	if (o.kv.max_step_tokens && o.kv.max_step_tokens < o.batch) {
		fprintf(stderr, "fi-prefill: --max-step-tokens %d is below -b %d: a step must hold "
			"one token of every request\n", o.kv.max_step_tokens, o.batch);
		rc = 2;
		goto out;
	}
	if (fi_sched_cache_init(P.m, &o.kv, NULL))
		goto fail;
	if (fi_image_tokenizer(P.im, &P.tok) && fi_errcode() != FI_ENOTFOUND)
		fi_warn("%s: text prompts are refused", fi_errmsg());
	/* Requests whose tokens another tokenizer made are refused (tok_ident.h). */
	P.has_ident = P.tok && !fi_tok_ident(P.tok, o.model, &P.ident);
	fi_sched_opts_default(&so);
	so.max_batch = o.batch;
	so.max_requests = o.batch;
	if (o.kv.max_step_tokens)
		so.max_step_tokens = o.kv.max_step_tokens;
	so.arena_sync = 1; /* the kv reference passed on must find the blocks */
	so.fingerprint = P.im->fingerprint;
	so.prefix_cache = 1;
	so.arena_size = o.arena_size;
	so.cb = on_event;
	so.cb_user = &P;
	if (fi_sched_create(P.m, &so, &P.s) || fi_sched_arena(P.s, 1, &P.x))
		goto fail;
	fi_info("%s on %s, arena %s", o.model, be->device, fi_arena_file(fi_kvx_arena(P.x)));
	rc = run(&P);
	goto out;
fail:
	rc = fail();
out:
	fi_sched_destroy(P.s);
	fi_tok_free(P.tok);
	fi_model_close(P.m);
	if (P.im)
		fi_image_close(P.im);
	fi_backend_destroy(be);
	return rc;
}
