/* fi-decode: generate tokens. Reads request frames and feeds them to the scheduler
 * (lib/sched/scheduler.h: continuous batching, sampling, stops, KV from the arena), writing its
 * events as token, done and error frames. Text prompts are encoded with the model's
 * tokenizer; token frames carry text pieces. --tokens and --prompt run one request given
 * on the command line and print the generated ids or text. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend/backend.h"
#include "frame/frame.h"
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
	"usage: fi-decode -m MODEL [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P]\n"
	"                 [--repeat-penalty R] [--seed S] [--ignore-eos] [--backend auto|cuda|cpu]\n"
	"                 [--gpu-mem F] [--kv-size SIZE] [--max-batch N] [--max-step-tokens N]\n"
	"                 [--prefix-cache] [--arena-size SIZE] [--prefill-chunk N] [-t THREADS]\n"
	"                 [-i IN] [-o OUT] [-e N] [--stop STR] [--tokens ID,ID,... | --prompt TEXT]\n"
	"                 [-f] [-v]\n"
	"       fi-decode -h\n";

#define MAX_STOP 16     /* --stop strings */

struct opts {
	const char *model, *backend, *in, *out, *tokens, *prompt;
	int n, threads, verbose, prefix_cache, eos_count, chunk, force, ignore_eos;
	unsigned given; /* FI_REQ_* bits of the sampling options given */
	char *stop[MAX_STOP]; /* for requests that give none */
	int nstop;
	uint64_t arena_size;
	struct fi_kv_sizing kv; /* --gpu-mem, --kv-size, --max-batch, --max-step-tokens */
	struct fi_sample_params sp; /* defaults for requests that do not say */
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
};

static int usage(int rc)
{
	fputs(usage_text, rc ? stderr : stdout);
	return rc;
}

static int fail(void)
{
	fprintf(stderr, "fi-decode: %s\n", fi_errmsg());
	return 1;
}

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
		E->n_failed += ev->finish == FI_FINISH_ERROR;
		E->n_tokens += ev->gen_tokens;
		if (E->o->verbose) {
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
		if ((c = fi_req_sampling_conflicts(f, &o->sp, o->given) & ~E->told)) {
			char m[512];
			fi_req_conflict_message(f, &o->sp, c, m, sizeof m);
			fi_warn("%s", m);
			E->told |= c;
		}
		if (fi_sched_has(E->s, f->id))
			e = fi_fail(FI_EEXIST, "a request with this id is running");
		else if ((e = fi_req_check_tokenizer(f, E->has_ident ? &E->ident : NULL))) {
			/* One message for them all: every such request is refused the same way. */
			if (!E->n_mismatch++)
				fi_log(FI_LOG_ERROR, "%s; such requests get error frames (code mismatch)",
				       fi_errmsg());
		} else if (!(e = fi_sched_encode_prompt(E->tok, f)) && !(e = fi_req_echo_new(f, &echo))) {
			fi_sched_req_from_frame(f, &o->sp, o->ignore_eos ? FI_SCHED_IGNORE_EOS : 0, &r);
			r.user = echo;
			if (f->req.nstop)
				e = fi_serve_add(E->serve, E->s, &r, f->req.stop, f->req.nstop);
			else
				e = fi_serve_add(E->serve, E->s, &r, o->stop, (uint32_t)o->nstop);
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
		*fatal = fi_stream_write(E->out, f);
		break;
	default:
		*fatal = fi_stream_write_error(E->out, f->id, FI_EINVAL,
					       "fi-decode reads request, cancel and token frames");
	}
	return 0;
}

/* After a signal: requests still queued on the input get an error frame, not silence. */
static fi_err drain(struct engine *E, struct fi_stream *in)
{
	struct fi_frame f;
	fi_err e = FI_OK;
	for (int k = 0; !e && k < 100000; k++) {
		fi_frame_init(&f, FI_FRAME_NONE);
		if (fi_stream_read_timeout(in, &f, 0) || f.type == FI_FRAME_NONE ||
		    f.type == FI_FRAME_EOS) {
			fi_frame_free(&f);
			break;
		}
		if (f.type == FI_FRAME_REQUEST) {
			struct fi_frame ef;
			fi_req_error_frame(&f, FI_EINTERRUPT, "fi-decode is shutting down", &ef);
			e = fi_stream_write(E->out, &ef);
		}
		else if (f.type == FI_FRAME_ERROR || f.type == FI_FRAME_DONE)
			e = fi_stream_write(E->out, &f);
		fi_frame_free(&f);
	}
	return e;
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
static void summary(struct engine *E)
{
	double el = E->t_first ? fi_now() - E->t_first : 0;
	fi_live_clear();
	if (!E->t_first || fi_log_get_level() < FI_LOG_WARN)
		return;
	fprintf(stderr, "fi-decode: %llu requests, %llu failed, %llu tokens in %.2f s, %.1f tok/s\n",
		(unsigned long long)E->n_done, (unsigned long long)E->n_failed,
		(unsigned long long)E->n_tokens, el, el > 0 ? E->n_tokens / el : 0.0);
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
	so.eos_count = o->eos_count;
	if ((e = fi_stream_open(&in, o->in, FI_STREAM_IN, &so)))
		goto out;
	fi_stream_opts_default(&so);
	so.tty_ok = o->force;
	if ((e = fi_stream_open(&E->out, o->out, FI_STREAM_OUT, &so)))
		goto out;
	fi_stream_catch_signals();
	while (!e && (!eof || fi_sched_pending(E->s))) {
		/* Wait for work when idle; otherwise take what has arrived without waiting; never
		 * more than the scheduler has room for, so the input pushes back. */
		e = fi_stream_take(in, E->out, fi_sched_room(E->s), busy, take, &t, &eof, &broken,
				   &bad_frames);
		if (broken) {
			fprintf(stderr, "fi-decode: %s\n", fi_errmsg());
			rc = 1;
			broken = 0;
		}
		if (e)
			break;
		if (fi_stream_interrupted()) {
			if (!(e = fi_sched_cancel_all(E->s)))
				e = drain(E, in);
			break;
		}
		if ((e = fi_sched_step(E->s)) || (e = fi_stream_flush(E->out)))
			break;
		live_line(E, 0);
	}
out:
	if (e && e != FI_EINTERRUPT) {
		fprintf(stderr, "fi-decode: %s\n", fi_errmsg());
		rc = 1;
	}
	if (o->verbose)
		report(E);
	fi_sched_destroy(E->s);
	E->s = NULL;
	if (fi_stream_close(E->out) && !rc) {
		fprintf(stderr, "fi-decode: %s\n", fi_errmsg());
		rc = 1;
	}
	fi_stream_close(in);
	summary(E);
	/* Requests made with another tokenizer: exit 3, as for requests that failed. */
	return rc ? rc : E->n_mismatch ? 3 : 0;
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
		fprintf(stderr, "fi-decode: --tokens: expected comma-separated ids below %d\n",
			E->vocab);
		return 2;
	}
	if (!E->tok) {
		fprintf(stderr, "fi-decode: --prompt: %s\n", fi_errmsg());
		return 1;
	}
	if (fi_tok_encode(E->tok, o->prompt, strlen(o->prompt), FI_SCHED_ENCODE_FLAGS, &t))
		return fail();
	if (!t.n) {
		fprintf(stderr, "fi-decode: --prompt: empty prompt\n");
		fi_tok_ids_free(&t);
		return 2;
	}
	*ids = t.v;
	*n = (int)t.n;
	return 0;
}

/* --tokens, --prompt: one request. */
static int run_one(struct engine *E, const struct opts *o)
{
	struct fi_sched_req r = {.id = o->tokens ? "--tokens" : "--prompt", .sp = o->sp,
				 .stream = 1, .flags = o->ignore_eos ? FI_SCHED_IGNORE_EOS : 0};
	uint32_t *ids = NULL;
	int n = 0, rc;
	if ((rc = one_prompt(E, o, &ids, &n))) {
		free(ids);
		return rc;
	}
	if (n >= E->ctx) {
		fprintf(stderr, "fi-decode: prompt of %d tokens does not fit the context of %d\n", n,
			E->ctx);
		free(ids);
		return 1;
	}
	E->text = !o->tokens;
	r.tokens = ids;
	r.ntokens = (uint32_t)n;
	if (fi_serve_add(E->serve, E->s, &r, o->stop, (uint32_t)o->nstop) || fi_sched_run(E->s)) {
		free(ids);
		return fail();
	}
	printf("\n");
	fflush(stdout);
	if (o->verbose) {
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

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"temp", required_argument, NULL, 'T'},
		{"top-k", required_argument, NULL, 'K'},
		{"top-p", required_argument, NULL, 'P'},
		{"min-p", required_argument, NULL, 'M'},
		{"repeat-penalty", required_argument, NULL, 'R'},
		{"seed", required_argument, NULL, 'S'},
		{"backend", required_argument, NULL, 'B'},
		{"tokens", required_argument, NULL, 'k'},
		{"prompt", required_argument, NULL, 'p'},
		{"prefill-chunk", required_argument, NULL, 'c'},
		{"stop", required_argument, NULL, 's'},
		{"prefix-cache", no_argument, NULL, 'C'},
		{"arena-size", required_argument, NULL, 'A'},
		{"force", no_argument, NULL, 'f'},
		{"ignore-eos", no_argument, NULL, 'I'},
		{"gpu-mem", required_argument, NULL, 'G'},
		{"kv-size", required_argument, NULL, 'Z'},
		{"max-batch", required_argument, NULL, 'b'},
		{"max-step-tokens", required_argument, NULL, 'X'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {.backend = "auto", .in = "-", .out = "-", .n = 256, .eos_count = 1};
	struct engine E = {0};
	struct fi_backend *be = NULL;
	int be_failed = 0;
	struct fi_image *im = NULL;
	struct fi_sched_opts so;
	struct fi_serve_opts sv = {0};
	int c, rc;
	double v;
	fi_log_set_prog("fi-decode");
	fi_sample_defaults(&o.sp);
	fi_kv_sizing_default(&o.kv);
	while ((c = getopt_long(argc, argv, "m:n:t:i:o:e:fvh", lo, NULL)) != -1) {
		switch (c) {
		case 'm': o.model = optarg; break;
		case 'i': o.in = optarg; break;
		case 'o': o.out = optarg; break;
		case 'B': o.backend = optarg; break;
		case 'k': o.tokens = optarg; break;
		case 'p': o.prompt = optarg; break;
		case 'c':
			if (fi_parse_num(optarg, 0, 1 << 30, &v))
				goto bad;
			o.chunk = (int)v;
			break;
		case 's':
			if (o.nstop == MAX_STOP || !*optarg)
				goto bad;
			o.stop[o.nstop++] = optarg;
			break;
		case 'C': o.prefix_cache = 1; break;
		case 'A':
			if (fi_parse_size(optarg, &o.arena_size))
				goto bad;
			break;
		case 'e':
			if (fi_parse_num(optarg, 0, 1 << 20, &v))
				goto bad;
			o.eos_count = (int)v;
			break;
		case 'v': o.verbose = 1; break;
		case 'f': o.force = 1; break;
		case 'I': o.ignore_eos = 1; break;
		case 'G':
			if (fi_parse_num(optarg, 0.01, 1, &v))
				goto bad;
			o.kv.gpu_mem = v;
			break;
		case 'Z':
			if (fi_parse_kv_size(optarg, &o.kv.kv_bytes, &o.kv.kv_tokens))
				goto bad;
			break;
		case 'b':
			if (fi_parse_num(optarg, 1, 1 << 16, &v))
				goto bad;
			o.kv.max_batch = (int)v;
			break;
		case 'X':
			if (fi_parse_num(optarg, 1, 1 << 24, &v))
				goto bad;
			o.kv.max_step_tokens = (int)v;
			break;
		case 'h': return usage(0);
		case 'n':
			if (fi_parse_num(optarg, 1, 1 << 30, &v))
				goto bad;
			o.n = (int)v;
			break;
		case 't':
			if (fi_parse_num(optarg, 1, 1024, &v))
				goto bad;
			o.threads = (int)v;
			break;
		case 'T':
			if (fi_parse_num(optarg, 0, 1e6, &v))
				goto bad;
			o.sp.temperature = (float)v;
			o.given |= FI_REQ_TEMPERATURE;
			break;
		case 'K':
			if (fi_parse_num(optarg, 0, 1 << 30, &v))
				goto bad;
			o.sp.top_k = (int)v;
			o.given |= FI_REQ_TOP_K;
			break;
		case 'P':
			if (fi_parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.top_p = (float)v;
			o.given |= FI_REQ_TOP_P;
			break;
		case 'M':
			if (fi_parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.min_p = (float)v;
			o.given |= FI_REQ_MIN_P;
			break;
		case 'R':
			if (fi_parse_num(optarg, 1e-6, 1e6, &v))
				goto bad;
			o.sp.repeat_penalty = (float)v;
			o.given |= FI_REQ_REPEAT_PENALTY;
			break;
		case 'S':
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
		fprintf(stderr, "fi-decode: invalid value '%s' for %s\n", optarg,
			optarg == argv[optind - 1] && optind > 1 ? argv[optind - 2] : argv[optind - 1]);
		return 2;
	}
	if (!o.model || optind != argc || (o.tokens && o.prompt))
		return usage(2);
	/* Frames are binary: refused on a terminal before the model is loaded. */
	if (!o.tokens && !o.prompt && !o.force && fi_stream_refuse_tty(o.out))
		return fail();
	if (fi_open_backend_model(o.backend, o.threads, o.model, &be, &im, &E.m, &be_failed))
		return fail() + be_failed; /* an unknown backend name is a usage error */
	E.im = im;
	E.vocab = fi_model_config(E.m)->vocab;
	E.ctx = fi_model_config(E.m)->max_pos > 0 ? fi_model_config(E.m)->max_pos : 4096;
	/* Text prompts and pieces need the tokenizer; without one, token ids still work. */
	if ((!o.tokens || o.nstop) && fi_image_tokenizer(im, &E.tok) &&
	    fi_errcode() != FI_ENOTFOUND && !o.prompt)
		fi_warn("%s: text prompts are refused", fi_errmsg());
	/* Requests whose tokens another tokenizer made are refused (tok_ident.h). */
	E.o = &o;
	E.has_ident = E.tok && !fi_tok_ident(E.tok, o.model, &E.ident);
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
	so.arena_size = o.arena_size;
	so.cb = fi_serve_event;
	sv.tok = E.tok;
	sv.cb = o.tokens || o.prompt ? on_token_event : on_event;
	sv.cb_user = &E;
	if (so.max_step_tokens < so.max_batch) {
		fprintf(stderr, "fi-decode: --max-step-tokens %d is below --max-batch %d: a step "
			"must hold one token of every sequence\n", so.max_step_tokens, so.max_batch);
		rc = 2;
		goto out;
	}
	if (fi_serve_new(&sv, &E.serve) || fi_sched_cache_init(E.m, &o.kv, NULL) ||
	    (so.cb_user = E.serve, fi_sched_create(E.m, &so, &E.s))) {
		rc = fail();
		goto out;
	}
	fi_info("%s on %s", o.model, be->device);
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
