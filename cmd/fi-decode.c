/* fi-decode: generate tokens. Reads request frames and feeds them to the scheduler
 * (lib/sched/scheduler.h: continuous batching, sampling, stops, KV from the arena), writing its
 * events as token, done and error frames. Text prompts are encoded with the model's
 * tokenizer; token frames carry text pieces. --tokens and --prompt run one request given
 * on the command line and print the generated ids or text. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "frame/frame.h"
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


struct opts {
	struct cmd_args a; /* the model, streams, backend, sampling defaults, arena, -f, -v */
	const char *tokens, *prompt;
	int n, prefix_cache, chunk;
	struct opt_list stop; /* for requests that give none */
	int ignore_eos;
	struct opt_kv_size kvsize; /* --kv-size */
	struct fi_kv_sizing kv;   /* --gpu-mem, --kv-size, --max-batch, --max-step-tokens */
};

struct engine {
	struct fi_model *m;
	struct fi_image *im;
	struct fi_tok *tok;
	struct fi_sched *s;
	struct fi_serve *serve; /* text pieces and stop strings over the scheduler */
	struct fi_stream *out;
	int ctx, vocab;
	/* --tokens, --prompt */
	int n_gen, text;
	struct fi_sched_event done;
	/* frames */
	const struct opts *o;
	struct fi_tok_ident ident; /* the model's tokenizer (has_ident) */
	int has_ident;
	unsigned told;          /* sampling conflicts reported (FI_REQ_* bits) */
	uint64_t n_done, n_failed, n_mismatch, n_tokens;
	double t_first;         /* the first request's arrival (0: none yet) */
	int shutdown;           /* a signal came: cancelled requests did not complete */
};

static int parse_ids(const char *s, uint32_t **ids, int *n, int vocab)
{
	int cap = 16;
	*n = 0;
	*ids = malloc(sizeof(uint32_t) * (size_t)cap);
	while (*ids && *s) {
		char *end;
		long v;
		errno = 0;
		v = strtol(s, &end, 10);
		if (errno || end == s || v < 0 || v >= vocab || (*end && *end != ',' && *end != ' '))
			return -1;
		if (*n == cap && !(*ids = realloc(*ids, sizeof(uint32_t) * (size_t)(cap *= 2))))
			return -1;
		(*ids)[(*n)++] = (uint32_t)v;
		s = *end ? end + 1 : end;
	}
	return *ids && *n ? 0 : -1;
}

/* Scheduler events as frames; done and error frames repeat the request's seq and text. */
static fi_err on_event(void *user, const struct fi_sched_event *ev)
{
	struct engine *E = user;
	struct fi_req_echo *echo = ev->user;
	struct fi_token_top top[FI_SCHED_MAX_TOP];
	struct fi_frame f;
	fi_err e;
	switch (ev->type) {
	case FI_SCHED_EV_WARN:
		fi_warn("%s", ev->message);
		return FI_OK;
	case FI_SCHED_EV_ERROR:
		fi_frame_init(&f, FI_FRAME_ERROR);
		f.id = (char *)ev->id;
		f.err.code = ev->code;
		f.err.message = (char *)ev->message;
		fi_req_echo_apply(echo, &f);
		return fi_stream_write(E->out, &f);
	case FI_SCHED_EV_DONE:
		E->n_done++;
		/* failed, or cut short by a signal (a cancel frame's cancel is no failure) */
		E->n_failed += ev->finish == FI_FINISH_ERROR ||
			       (ev->finish == FI_FINISH_CANCEL && E->shutdown);
		E->n_tokens += ev->gen_tokens;
		if (E->o->a.verbose) {
			fi_live_clear();
			fprintf(stderr, "fi-decode: '%s': %u prompt tokens (%u cached), %u generated, "
				"finish %s, ttft %.2f ms, tpot %.2f ms\n", ev->id, ev->prompt_tokens,
				ev->cached_tokens, ev->gen_tokens, fi_finish_name(ev->finish),
				ev->ttft_ms, ev->tpot_ms);
		}
		fi_sched_event_frame(ev, &f, top);
		fi_req_echo_apply(echo, &f);
		/* With a tokenizer the frames always carry text, "" when there is none (a token
		 * cut by a stop string, part of a character): readers then know the pieces are
		 * the text and do not decode the ids, which would bring the cut text back. */
		if (E->tok && !f.done.text)
			f.done.text = "";
		e = fi_stream_write(E->out, &f);
		fi_req_echo_free(echo);
		return e;
	default:
		if (!fi_sched_event_frame(ev, &f, top))
			return FI_OK;
		if (E->tok && !f.tok.text)
			f.tok.text = "";
		return fi_stream_write(E->out, &f);
	}
}

/* Handles one input frame; returns 1 at the end of input. */
static int take_frame(struct engine *E, const struct opts *o, struct fi_frame *f, fi_err *fatal)
{
	struct fi_sched_req r;
	fi_err e;
	switch (f->type) {
	case FI_FRAME_EOS:
		return 1;
	case FI_FRAME_REQUEST: {
		struct fi_req_echo *echo = NULL;
		struct fi_frame ef;
		unsigned c;
		if (!E->t_first)
			E->t_first = fi_now();
		if ((c = fi_req_sampling_conflicts(f, &o->a.sp, o->a.given) & ~E->told)) {
			char m[512];
			fi_req_conflict_message(f, &o->a.sp, c, m, sizeof m);
			fi_warn("%s", m);
			E->told |= c;
		}
		if (fi_sched_has(E->s, f->id))
			e = fi_fail(FI_EEXIST, "a request with this id is running");
		else if ((e = fi_req_check_tokenizer(f, E->has_ident ? &E->ident : NULL))) {
			/* One message for them all: every such request is refused the same way. */
			if (!E->n_mismatch++)
				cmd_error("%s; such requests get error frames (code mismatch)",
					  fi_errmsg());
		} else if (!(e = fi_sched_encode_prompt(E->tok, f)) && !(e = fi_req_echo_new(f, &echo))) {
			fi_sched_req_from_frame(f, &o->a.sp, o->ignore_eos ? FI_SCHED_IGNORE_EOS : 0, &r);
			r.user = echo;
			if (f->req.nstop)
				e = fi_serve_add(E->serve, E->s, &r, f->req.stop, f->req.nstop);
			else
				e = fi_serve_add(E->serve, E->s, &r, o->stop.v, (uint32_t)o->stop.n);
			if (e)
				fi_req_echo_free(echo);
		}
		if (e) {
			E->n_done++;
			E->n_failed++;
			fi_req_error_frame(f, e, fi_errmsg(), &ef);
			*fatal = fi_stream_write(E->out, &ef);
		}
		break;
	}
	case FI_FRAME_CANCEL:
		if (fi_sched_has(E->s, f->id))
			*fatal = fi_sched_cancel(E->s, f->id);
		break;
	case FI_FRAME_TOKEN: /* fi-prefill's first token, ahead of its request */
		if (f->tok.index == 0)
			fi_sched_first_token(E->s, f->id, f->tok.token);
		break;
	case FI_FRAME_ERROR: /* from upstream (fi-prefill): passed on */
	case FI_FRAME_DONE:
		E->n_failed += f->type == FI_FRAME_ERROR;
		*fatal = fi_stream_write(E->out, f);
		break;
	default:
		E->n_failed++;
		*fatal = fi_stream_write_error(E->out, f->id, FI_EINVAL,
					       "fi-decode reads request, cancel and token frames");
	}
	return 0;
}

/* fi_stream_take's view of the engine. */
struct taker {
	struct engine *E;
	const struct opts *o;
};

static int busy(void *user)
{
	return fi_sched_pending(((struct taker *)user)->E->s) > 0;
}

static int take(void *user, struct fi_frame *f, fi_err *fatal)
{
	struct taker *t = user;
	return take_frame(t->E, t->o, f, fatal);
}

/* Requests done, running and queued, and tokens per second, on a terminal. */
static void live_line(struct engine *E, int force)
{
	double el = E->t_first ? fi_now() - E->t_first : 0;
	int held = E->s ? fi_sched_pending(E->s) : 0, run = E->s ? fi_sched_running(E->s) : 0;
	if (!E->t_first || !fi_live_active())
		return;
	fi_live(force, "%llu done, %d running, %d queued, %.1f tok/s",
		(unsigned long long)E->n_done, run, held - run, el > 0 ? E->n_tokens / el : 0.0);
}

/* The line at the end of a batch, on a terminal or not (quiet with FI_LOG=error). */
static int summary(struct engine *E)
{
	double el = E->t_first ? fi_now() - E->t_first : 0;
	fi_live_clear();
	if (!E->t_first || fi_log_get_level() < FI_LOG_WARN)
		return 0;
	fprintf(stderr, "fi-decode: %llu requests, %llu failed, %llu tokens in %.2f s, %.1f tok/s%s\n",
		(unsigned long long)E->n_done, (unsigned long long)E->n_failed,
		(unsigned long long)E->n_tokens, el, el > 0 ? E->n_tokens / el : 0.0,
		E->im && E->im->random ? " (RANDOM WEIGHTS)" : "");
	return 1;
}

/* -v: the scheduler's counters: where the time of a step went, what the caches saved. */
static void report(const struct engine *E)
{
	struct fi_sched_stats st;
	fi_sched_stats(E->s, &st);
	if (!st.steps)
		return;
	fprintf(stderr, "fi-decode: %llu requests, %llu steps (at most %d requests in one), "
		"%llu prompt + %llu decode tokens computed; host %.3f ms/step (planning %.3f), "
		"model %.3f ms/step; %llu prompt tokens from the prefix cache, %llu from the arena; "
		"%llu preemptions; kv pool %d blocks of %d tokens\n", (unsigned long long)st.done,
		(unsigned long long)st.steps, st.max_running, (unsigned long long)st.prompt_tokens,
		(unsigned long long)st.decode_tokens, st.host_ms / (double)st.steps,
		st.plan_ms / (double)st.steps, st.model_ms / (double)st.steps,
		(unsigned long long)st.cached_tokens, (unsigned long long)st.arena_tokens,
		(unsigned long long)st.preemptions, st.kv_blocks, st.kv_block_size);
}

static int run_frames(struct engine *E, const struct opts *o)
{
	struct taker t = {E, o};
	struct fi_stream_opts so;
	struct fi_stream *in = NULL;
	fi_err e = FI_OK;
	int eof = 0, rc = 0, bad_frames = 0, broken = 0;
	fi_stream_opts_default(&so);
	so.eos_count = o->a.eos_count;
	if ((e = fi_stream_open(&in, o->a.in, FI_STREAM_IN, &so)))
		goto out;
	fi_stream_opts_default(&so);
	so.tty_ok = o->a.force;
	if ((e = fi_stream_open(&E->out, o->a.out, FI_STREAM_OUT, &so)))
		goto out;
	fi_stream_catch_signals();
	while (!e && (!eof || fi_sched_pending(E->s))) {
		/* Wait for work when idle; otherwise take what has arrived without waiting. Only
		 * as many frames as the queue has room for: a full queue leaves the input unread,
		 * so the pipe or socket pushes back and no request is turned away busy. */
		int room = fi_sched_room(E->s);
		e = fi_stream_take(in, E->out, room < 256 ? room : 256, busy, take, &t, &eof,
				   &broken, &bad_frames);
		if (broken) {
			rc = cmd_error(NULL);
			broken = 0;
		}
		if (e && e != FI_EINTERRUPT)
			break;
		if (fi_stream_interrupted()) {
			/* Held requests end with finish "cancel"; what is still on the input gets
			 * an error frame each, so every request sent is answered. */
			E->shutdown = 1;
			if (!(e = fi_sched_cancel_all(E->s)) && !eof && !broken)
				e = fi_stream_drain(in, E->out, "fi-decode",
						    1u << FI_FRAME_ERROR | 1u << FI_FRAME_DONE,
						    FI_STREAM_DRAIN_QUIET_MS, &E->n_failed);
			break;
		}
		if ((e = fi_sched_step(E->s)) || (e = fi_stream_flush(E->out)))
			break;
		live_line(E, 0);
	}
out:
	if (e && e != FI_EINTERRUPT)
		rc = cmd_error(NULL);
	E->n_failed += (unsigned long)bad_frames;
	if (o->a.verbose)
		report(E);
	fi_sched_destroy(E->s);
	E->s = NULL;
	if (fi_stream_close(E->out) && !rc)
		rc = cmd_error(NULL);
	fi_stream_close(in);
	/* The summary counts failures; without it (FI_LOG=error) they are said alone. */
	if (!summary(E) && !rc && E->n_failed)
		fprintf(stderr, "fi-decode: %llu requests failed or were cut short (see their "
			"error and done frames)\n", (unsigned long long)E->n_failed);
	if (!rc && E->n_failed)
		rc = EXIT_FAILED;
	return rc;
}

/* --tokens: generated ids on one line; --prompt: the text as it comes, then a newline. */
static fi_err on_token_event(void *user, const struct fi_sched_event *ev)
{
	struct engine *E = user;
	if (ev->type == FI_SCHED_EV_WARN) {
		fi_warn("%s", ev->message);
	} else if (ev->type == FI_SCHED_EV_TOKEN && E->text) {
		fwrite(ev->text, 1, ev->text_len, stdout);
		fflush(stdout);
	} else if (ev->type == FI_SCHED_EV_TOKEN) {
		printf("%s%u", E->n_gen++ ? " " : "", ev->token);
	} else if (ev->type == FI_SCHED_EV_DONE) {
		if (E->text)
			fwrite(ev->text + ev->text_sent, 1, ev->text_len - ev->text_sent, stdout);
		E->done = *ev;
	}
	return FI_OK;
}

/* The prompt of --tokens or --prompt; 2 for a usage error, 1 for a runtime failure. */
static int one_prompt(struct engine *E, const struct opts *o, uint32_t **ids, int *n)
{
	struct fi_tok_ids t = {0};
	if (o->tokens) {
		if (!parse_ids(o->tokens, ids, n, E->vocab))
			return 0;
		cmd_error("--tokens: expected comma-separated ids below %d", E->vocab);
		return EXIT_USAGE;
	}
	if (!E->tok)
		return cmd_error("--prompt: %s", fi_errmsg());
	if (fi_tok_encode(E->tok, o->prompt, strlen(o->prompt), FI_SCHED_ENCODE_FLAGS, &t))
		return cmd_error(NULL);
	if (!t.n) {
		cmd_error("--prompt: empty prompt");
		fi_tok_ids_free(&t);
		return EXIT_USAGE;
	}
	*ids = t.v;
	*n = (int)t.n;
	return 0;
}

/* --tokens, --prompt: one request. */
static int run_one(struct engine *E, const struct opts *o)
{
	struct fi_sched_req r = {.id = o->tokens ? "--tokens" : "--prompt", .sp = o->a.sp,
				 .stream = 1, .flags = o->ignore_eos ? FI_SCHED_IGNORE_EOS : 0};
	uint32_t *ids = NULL;
	int n = 0, rc;
	if ((rc = one_prompt(E, o, &ids, &n))) {
		free(ids);
		return rc;
	}
	if (n >= E->ctx) {
		free(ids);
		return cmd_error("prompt of %d tokens does not fit the context of %d", n, E->ctx);
	}
	E->text = !o->tokens;
	r.tokens = ids;
	r.ntokens = (uint32_t)n;
	if (fi_serve_add(E->serve, E->s, &r, o->stop.v, (uint32_t)o->stop.n) || fi_sched_run(E->s)) {
		free(ids);
		return cmd_error(NULL);
	}
	printf("\n");
	fflush(stdout);
	if (o->a.verbose) {
		const struct fi_sched_event *d = &E->done;
		double t1 = d->ttft_ms >= 0 ? d->ttft_ms : d->total_ms, t2 = d->total_ms - t1;
		fprintf(stderr, "fi-decode: prompt %d tokens (%u cached) in %.2f ms (%.1f tok/s); "
			"generated %u tokens in %.2f ms (%.1f tok/s)\n", n, d->cached_tokens, t1,
			(n - (int)d->cached_tokens) / (t1 * 1e-3), d->gen_tokens, t2,
			d->gen_tokens > 1 ? (d->gen_tokens - 1) / (t2 * 1e-3) : 0.0);
	}
	free(ids);
	return 0;
}

enum {
	O_TOKENS = OPT_LONG, O_PROMPT, O_CHUNK, O_STOP, O_PREFIX_CACHE, O_LOAD_FORMAT, O_IGNORE_EOS,
	O_KV_DTYPE,
	O_GPU_MEM, O_KV_SIZE, O_MAX_BATCH, O_MAX_STEP,
};

int main(int argc, char **argv)
{
	struct opts o = {.n = 256};
	const char *load_format = "auto", *kv_dtype = "auto";
	const struct opt own[] = {
		{'n', NULL, "N", OPT_INT, 1, 1 << 30, &o.n},
		{O_PREFIX_CACHE, "prefix-cache", NULL, OPT_FLAG, 0, 0, &o.prefix_cache},
		{O_CHUNK, "prefill-chunk", "N", OPT_INT, 0, 1 << 30, &o.chunk},
		{O_STOP, "stop", "STR", OPT_LIST, 0, 16, &o.stop},
		{O_TOKENS, "tokens", "ID,ID,...", OPT_STR, 0, 0, &o.tokens},
		{O_PROMPT, "prompt", "TEXT", OPT_STR, 0, 0, &o.prompt},
		{O_LOAD_FORMAT, "load-format", "auto|dummy", OPT_CHOICE, 0, 0, &load_format},
		{O_KV_DTYPE, "kv-dtype", "auto|fp8", OPT_CHOICE, 0, 0, &kv_dtype},
		{O_IGNORE_EOS, "ignore-eos", NULL, OPT_FLAG, 0, 0, &o.ignore_eos},
		{O_GPU_MEM, "gpu-mem", "F", OPT_DOUBLE, 0.01, 1, &o.kv.gpu_mem},
		{O_KV_SIZE, "kv-size", "SIZE", OPT_KVSIZE, 0, 0, &o.kvsize},
		{O_MAX_BATCH, "max-batch", "N", OPT_INT, 1, 1 << 16, &o.kv.max_batch},
		{O_MAX_STEP, "max-step-tokens", "N", OPT_INT, 1, 1 << 24, &o.kv.max_step_tokens},
		{0},
	};
	static const char *const usage[] = {
		"-m [-n] @sampling [--ignore-eos] [--backend] [--gpu-mem] [--kv-size] [--max-batch]"
		" [--max-step-tokens] [--prefix-cache] [--arena-size] [--kv-dtype] [--prefill-chunk] [-t] [--tp]"
		" [-i] [-o]"
		" [-e] [--stop] [--tokens | --prompt] [--load-format] [-f] [-v]",
		NULL,
	};
	const struct cmd cmd = {.name = "fi-decode", .groups = CMD_MODEL | CMD_STREAMS | CMD_EOS |
				CMD_BACKEND | CMD_SAMPLING | CMD_ARENA | CMD_FORCE | CMD_VERBOSE,
				.opts = own, .usage = usage};
	struct engine E = {0};
	struct fi_backend *be = NULL;
	struct fi_image *im = NULL;
	struct fi_sched_opts so;
	struct fi_serve_opts sv = {0};
	int rc;
	fi_kv_sizing_default(&o.kv);
	if (cmd_parse(&cmd, &o.a, argc, argv) != argc)
		usage_error("unexpected operand '%s'", argv[optind]);
	if (o.tokens && o.prompt)
		usage_error("--tokens and --prompt exclude each other");
	o.kv.kv_bytes = o.kvsize.bytes;
	o.kv.kv_tokens = o.kvsize.tokens;
	fi_random_weights = !strcmp(load_format, "dummy");
	/* Frames are binary: refused on a terminal before the model is loaded. */
	if (!o.tokens && !o.prompt && !o.a.force && fi_stream_refuse_tty(o.a.out))
		return cmd_error(NULL);
	fi_tp_size = o.a.tp;
	if (fi_open_backend_model(o.a.backend, o.a.threads, o.a.model, &be, &im, &E.m))
		return cmd_error(NULL);
	E.im = im;
	E.vocab = fi_model_config(E.m)->vocab;
	E.ctx = fi_model_config(E.m)->max_pos > 0 ? fi_model_config(E.m)->max_pos : 4096;
	/* Text prompts and pieces need the tokenizer; without one, token ids still work. */
	if ((!o.tokens || o.stop.n) && fi_image_tokenizer(im, &E.tok) &&
	    fi_errcode() != FI_ENOTFOUND && !o.prompt)
		fi_warn("%s: text prompts are refused", fi_errmsg());
	/* Requests whose tokens another tokenizer made are refused (tok_ident.h). */
	E.o = &o;
	E.has_ident = E.tok && !fi_tok_ident(E.tok, o.a.model, &E.ident);
	fi_sched_opts_default(&so);
	if (o.kv.max_batch)
		so.max_batch = o.kv.max_batch;
	so.max_requests = so.max_batch + 1024;
	if (o.kv.max_step_tokens)
		so.max_step_tokens = o.kv.max_step_tokens;
	so.max_tokens = (uint32_t)o.n;
	so.max_prefill_tokens = o.chunk;
	so.fingerprint = im->fingerprint;
	so.prefix_cache = o.prefix_cache;
	so.arena_size = o.a.arena_size;
	so.cb = fi_serve_event;
	sv.tok = E.tok;
	sv.cb = o.tokens || o.prompt ? on_token_event : on_event;
	sv.cb_user = &E;
	if (so.max_step_tokens < so.max_batch) {
		rc = EXIT_USAGE;
		cmd_error("--max-step-tokens %d is below --max-batch %d: a step must hold one "
			  "token of every sequence", so.max_step_tokens, so.max_batch);
		goto out;
	}
	if (fi_serve_new(&sv, &E.serve) ||
	    (!strcmp(kv_dtype, "fp8") && fi_model_set_kv_dtype(E.m, FI_DT_F8_E4M3)) ||
	    fi_sched_cache_init(E.m, &o.kv, NULL) ||
	    (so.cb_user = E.serve, fi_sched_create(E.m, &so, &E.s))) {
		rc = cmd_error(NULL);
		goto out;
	}
	fi_info("%s on %s", o.a.model, be->device);
	if (im->random)
		fi_random_weights_notice("fi-decode", o.a.model);
	rc = o.tokens || o.prompt ? run_one(&E, &o) : run_frames(&E, &o);
out:
	fi_sched_destroy(E.s);
	fi_serve_free(E.serve);
	fi_tok_free(E.tok);
	fi_model_close(E.m);
	if (im)
		fi_image_close(im);
	fi_backend_destroy(be);
	return rc;
}
