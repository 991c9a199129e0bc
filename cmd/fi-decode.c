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
#include "steplog.h"
#include "worker.h"
#include "frame/kv_events.h"


struct opts {
	struct cmd_args a; /* the model, streams, backend, sampling defaults, arena, -f, -v */
	const char *tokens, *prompt;
	int n, prefix_cache, chunk;
	struct opt_list stop; /* for requests that give none */
	int ignore_eos;
	struct opt_kv_size kvsize; /* --kv-size */
	struct fi_kv_sizing kv;   /* --gpu-mem, --kv-size, --max-batch, --max-step-tokens */
	const char *router, *name; /* --router, --name */
	const char *kv_events, *kv_replay; /* --kv-events, --kv-events-replay */
	enum worker_mode mode;
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
	struct worker W;        /* the streams: pipes, clients, or fi-route (worker.h) */
	struct fi_req_echo *clients; /* the clients' requests held (WORKER_CLIENTS) */
	uint64_t n_dropped;     /* requests of clients gone */
	struct fi_kv_pub *kvp;  /* --kv-events */
	FILE *steplog;          /* FI_STEP_LOG */
};

/* The prefix cache's changes into the batch of KV events (sent after each step). */
static void on_kv_event(void *user, const struct fi_kv_event *ev)
{
	struct engine *E = user;
	switch (ev->type) {
	case FI_KV_EV_STORED:
		fi_kv_pub_stored(E->kvp, ev->keys[0].b, ev->n, ev->parent ? ev->parent->b : NULL,
				 ev->tokens, ev->block_tokens);
		break;
	case FI_KV_EV_REMOVED:
		for (int i = 0; i < ev->n; i++)
			fi_kv_pub_removed(E->kvp, ev->keys[i].b);
		break;
	case FI_KV_EV_CLEARED:
		fi_kv_pub_cleared(E->kvp);
		break;
	}
}

static fi_err kv_events_send(struct engine *E)
{
	fi_err e;
	if (!E->kvp)
		return FI_OK;
	if ((e = fi_kv_pub_flush(E->kvp)))
		return e;
	return fi_kv_pub_poll(E->kvp);
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

/* Writes an answer about the request of echo: to its client when it has one. A client that
 * is gone is no failure of the worker: FI_ENOTFOUND, and its requests are dropped after the
 * step (sweep_gone). */
static fi_err answer(struct engine *E, const struct fi_req_echo *echo, struct fi_frame *f)
{
	if (!echo || !echo->peer_len)
		return fi_stream_write(E->out, f);
	f->id = echo->id;
	return worker_reply(&E->W, echo->peer, echo->peer_len, f);
}

static void unlink_echo(struct engine *E, struct fi_req_echo *e)
{
	if (!e || !e->peer_len)
		return;
	if (e->prev)
		e->prev->next = e->next;
	else if (E->clients == e)
		E->clients = e->next;
	if (e->next)
		e->next->prev = e->prev;
	e->prev = e->next = NULL;
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
		e = answer(E, echo, &f);
		return e == FI_ENOTFOUND ? FI_OK : e;
	case FI_SCHED_EV_DONE:
		E->n_done++;
		/* failed, or cut short by a signal (a cancel frame's cancel is no failure) */
		E->n_failed += ev->finish == FI_FINISH_ERROR ||
			       (ev->finish == FI_FINISH_CANCEL && E->shutdown);
		E->n_tokens += ev->gen_tokens;
		if (E->o->a.verbose) {
			fi_live_clear();
			fprintf(stderr, "fi-decode: '%s': %u prompt tokens (%u cached), %u generated, "
				"finish %s, ttft %.2f ms, tpot %.2f ms\n", echo && echo->id ? echo->id : ev->id, ev->prompt_tokens,
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
		e = answer(E, echo, &f);
		if (e == FI_ENOTFOUND) {
			E->n_dropped++;
			e = FI_OK;
		}
		unlink_echo(E, echo);
		fi_req_echo_free(echo);
		return e;
	default:
		if (!fi_sched_event_frame(ev, &f, top))
			return FI_OK;
		if (E->tok && !f.tok.text)
			f.tok.text = "";
		e = answer(E, echo, &f);
		/* its client is gone: end it now, freeing its KV */
		return e == FI_ENOTFOUND ? FI_SCHED_STOP : e;
	}
}

/* Handles one input frame; returns 1 at the end of input. */
static int take_frame(struct engine *E, const struct opts *o, struct fi_frame *f, fi_err *fatal)
{
	struct fi_sched_req r;
	char kb[FI_STREAM_KEY_MAX];
	const char *key = E->W.mode == WORKER_CLIENTS ? worker_key(&E->W, f->id, kb) : f->id;
	size_t plen = 0;
	const uint8_t *peer = E->W.mode == WORKER_CLIENTS ? fi_stream_peer(E->W.in, &plen) : NULL;
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
		if (fi_sched_has(E->s, key))
			e = fi_fail(FI_EEXIST, "a request with this id is running");
		else if ((e = fi_req_check_tokenizer(f, E->has_ident ? &E->ident : NULL))) {
			/* One message for them all: every such request is refused the same way. */
			if (!E->n_mismatch++)
				cmd_error("%s; such requests get error frames (code mismatch)",
					  fi_errmsg());
		} else if (!(e = fi_sched_encode_prompt(E->tok, f)) &&
			   !(e = fi_req_echo_new_peer(f, peer, plen, key, &echo))) {
			fi_sched_req_from_frame(f, &o->a.sp, o->ignore_eos ? FI_SCHED_IGNORE_EOS : 0, &r);
			r.id = key;
			r.user = echo;
			if (f->req.nstop)
				e = fi_serve_add(E->serve, E->s, &r, f->req.stop, f->req.nstop);
			else
				e = fi_serve_add(E->serve, E->s, &r, o->stop.v, (uint32_t)o->stop.n);
			if (e) {
				fi_req_echo_free(echo);
			} else if (echo && echo->peer_len) {
				echo->next = E->clients;
				if (E->clients)
					E->clients->prev = echo;
				E->clients = echo;
			}
		}
		if (e) {
			E->n_done++;
			E->n_failed++;
			fi_req_error_frame(f, e, fi_errmsg(), &ef);
			*fatal = worker_reply(&E->W, NULL, 0, &ef);
		}
		break;
	}
	case FI_FRAME_CANCEL:
		if (fi_sched_has(E->s, key))
			*fatal = fi_sched_cancel(E->s, key);
		break;
	case FI_FRAME_TOKEN: /* fi-prefill's first token, ahead of its request */
		if (f->tok.index == 0)
			fi_sched_first_token(E->s, key, f->tok.token);
		break;
	case FI_FRAME_ERROR: /* from upstream (fi-prefill): passed on */
	case FI_FRAME_DONE:
		E->n_failed += f->type == FI_FRAME_ERROR;
		*fatal = worker_reply(&E->W, NULL, 0, f);
		break;
	default: {
		struct fi_frame ef;
		fi_frame_init(&ef, FI_FRAME_ERROR);
		ef.id = f->id ? f->id : (char *)"";
		ef.err.code = FI_EINVAL;
		ef.err.message = (char *)"fi-decode reads request, cancel and token frames";
		E->n_failed++;
		*fatal = worker_reply(&E->W, NULL, 0, &ef);
	}
	}
	if (*fatal == FI_ENOTFOUND) /* the sender is gone already */
		*fatal = FI_OK;
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

/* Requests of clients that are gone (a reply to them failed) end now, freeing their KV. */
static fi_err sweep_gone(struct engine *E)
{
	char **keys;
	int n = 0, cap = 0;
	fi_err e = FI_OK;
	struct fi_sched_stats st;
	if (!E->W.n_gone)
		return FI_OK;
	for (struct fi_req_echo *c = E->clients; c; c = c->next)
		cap++;
	keys = calloc((size_t)cap + 1, sizeof *keys);
	for (struct fi_req_echo *c = E->clients; keys && c; c = c->next)
		if (worker_is_gone(&E->W, c->peer, c->peer_len) && (keys[n] = strdup(c->key)))
			n++;
	/* cancelling reports their done events, which free the echoes: keys first */
	for (int i = 0; i < n; i++) {
		if (!e && fi_sched_has(E->s, keys[i]))
			e = fi_sched_cancel(E->s, keys[i]);
		free(keys[i]);
	}
	free(keys);
	if (E->o->a.verbose) {
		fi_sched_stats(E->s, &st);
		fi_live_clear();
		fprintf(stderr, "fi-decode: %d client%s gone, %llu requests dropped in all; kv %d of %d "
			"blocks free\n", E->W.n_gone, E->W.n_gone == 1 ? "" : "s",
			(unsigned long long)E->n_dropped, st.kv_available, st.kv_blocks);
	}
	worker_forget_gone(&E->W);
	return e;
}

/* The load frame's numbers, from the scheduler's counters. */
static fi_err send_load(struct engine *E)
{
	struct fi_sched_stats st;
	struct worker_load ld;
	if (E->W.mode != WORKER_ROUTER)
		return FI_OK;
	fi_sched_stats(E->s, &st);
	ld = (struct worker_load){(uint64_t)(st.waiting + st.preempted), st.queued_tokens,
				  (uint64_t)st.running, st.running_tokens,
				  (uint64_t)(st.kv_blocks - st.kv_available), (uint64_t)st.kv_blocks,
				  st.prefix_hits, st.prefix_lookups};
	return worker_load(&E->W, &ld);
}

static fi_err send_hello(struct engine *E, const struct opts *o)
{
	struct fi_sched_stats st;
	uint8_t root[32];
	const char *h = fi_sched_kv_root(E->s);
	for (int i = 0; i < 32; i++) {
		unsigned v = 0;
		sscanf(h + 2 * i, "%2x", &v);
		root[i] = (uint8_t)v;
	}
	fi_sched_stats(E->s, &st);
	return worker_hello(&E->W, "decode", o->a.model, E->im->fingerprint, root,
			    (uint32_t)st.kv_block_size, (uint64_t)st.kv_blocks,
			    (uint32_t)o->kv.max_batch,
			    E->kvp ? fi_kv_pub_endpoint(E->kvp) : NULL,
			    E->kvp ? fi_kv_pub_replay_endpoint(E->kvp) : NULL);
}

static int run_frames(struct engine *E, const struct opts *o)
{
	struct taker t = {E, o};
	struct fi_stream *in = NULL;
	fi_err e = FI_OK;
	int eof = 0, rc = 0, bad_frames = 0, broken = 0;
	if (E->kvp)
		E->W.wake_ms = 100; /* replay requests are answered while idle too */
	if ((e = worker_open(&E->W, o->mode, &o->a, o->router, o->name)))
		goto out;
	in = E->W.in;
	E->out = E->W.out;
	if ((e = send_hello(E, o)))
		goto out;
	fi_stream_catch_signals();
	E->steplog = steplog_open("fi-decode");
	double t_start = fi_now();
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
		if ((e = fi_sched_step(E->s)) || (e = fi_stream_flush(E->out)) ||
		    (e = sweep_gone(E)) || (e = send_load(E)) || (e = kv_events_send(E)))
			break;
		steplog_line(E->steplog, E->s, t_start);
		live_line(E, 0);
	}
out:
	if (e && e != FI_EINTERRUPT)
		rc = cmd_error(NULL);
	E->n_failed += (unsigned long)bad_frames;
	if (o->a.verbose)
		report(E);
	steplog_close(E->steplog);
	E->steplog = NULL;
	fi_sched_destroy(E->s);
	E->s = NULL;
	if (E->kvp) {
		kv_events_send(E);
		fi_kv_pub_close(E->kvp);
		E->kvp = NULL;
	}
	while (E->clients) { /* dropped with the scheduler, without events */
		struct fi_req_echo *c = E->clients;
		E->clients = c->next;
		fi_req_echo_free(c);
	}
	if (E->W.in || E->W.out) {
		if (worker_close(&E->W) && !rc)
			rc = cmd_error(NULL);
	}
	(void)in;
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
	O_KV_DTYPE, O_ROUTER, O_NAME, O_KV_EVENTS, O_KV_REPLAY,
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
		{O_ROUTER, "router", "ENDPOINT", OPT_STR, 0, 0, &o.router},
		{O_NAME, "name", "NAME", OPT_STR, 0, 0, &o.name},
		{O_KV_EVENTS, "kv-events", "ENDPOINT", OPT_STR, 0, 0, &o.kv_events},
		{O_KV_REPLAY, "kv-events-replay", "ENDPOINT", OPT_STR, 0, 0, &o.kv_replay},
		{0},
	};
	static const char *const usage[] = {
		"-m [-n] @sampling [--ignore-eos] [--backend] [--gpu-mem] [--kv-size] [--max-batch]"
		" [--max-step-tokens] [--prefix-cache] [--arena-size] [--kv-dtype] [--prefill-chunk] [-t] [--tp]"
		" [-i] [-o] [--router] [--name] [--kv-events] [--kv-events-replay]"
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
	if ((o.router || o.name) && (o.tokens || o.prompt))
		usage_error("--router and --name serve frames, not --tokens or --prompt");
	if (o.name && !o.router)
		usage_error("--name names a worker registered with --router");
	if ((o.kv_events || o.kv_replay) && (o.tokens || o.prompt))
		usage_error("--kv-events is for a worker serving frames");
	if (o.kv_replay && !o.kv_events)
		usage_error("--kv-events-replay needs --kv-events");
	o.mode = worker_mode(&o.a, o.router);
	o.kv.kv_bytes = o.kvsize.bytes;
	o.kv.kv_tokens = o.kvsize.tokens;
	fi_random_weights = !strcmp(load_format, "dummy");
	/* Frames are binary: refused on a terminal before the model is loaded. */
	if (!o.tokens && !o.prompt && o.mode == WORKER_STREAMS && !o.a.force &&
	    fi_stream_refuse_tty(o.a.out))
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
	/* the backend's default, once: the pool, the scheduler and the hello see the same; a
	 * default never exceeds a --max-step-tokens given (only both given can conflict) */
	if (!o.kv.max_batch) {
		o.kv.max_batch = fi_sched_default_batch(be);
		if (o.kv.max_step_tokens && o.kv.max_batch > o.kv.max_step_tokens)
			o.kv.max_batch = o.kv.max_step_tokens;
	}
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
	if (o.kv_events) {
		if (fi_kv_pub_open(&E.kvp, o.kv_events, o.kv_replay, "kv-events",
				   strncmp(be->device, "cpu", 3) ? "GPU" : "CPU")) {
			rc = cmd_error(NULL);
			goto out;
		}
		so.kv_cb = on_kv_event;
		so.kv_user = &E;
	}
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
	fi_kv_pub_close(E.kvp);
	fi_serve_free(E.serve);
	fi_tok_free(E.tok);
	fi_model_close(E.m);
	if (im)
		fi_image_close(im);
	fi_backend_destroy(be);
	return rc;
}
