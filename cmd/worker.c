/* worker: the streams of fi-decode and fi-prefill: pipes, clients on a ROUTER, or a DEALER
 * registered with fi-route (worker.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "worker.h"

/* -i names one endpoint that binds: "ipc://x", "tcp://:7000", "@...", not ">..." or a list. */
static int bound_endpoint(const char *in)
{
	if (!strstr(in, "://") || strchr(in, ','))
		return 0;
	return in[0] != '>';
}

enum worker_mode worker_mode(struct cmd_args *a, const char *router)
{
	enum worker_mode m = WORKER_STREAMS;
	if (router) {
		if (cmd_given('i') || cmd_given('o'))
			usage_error("--router takes the place of -i and -o");
		m = WORKER_ROUTER;
	} else if (bound_endpoint(a->in) && !cmd_given('o')) {
		m = WORKER_CLIENTS;
	}
	/* A bound worker serves until a signal; a list of producers still counts eos frames. */
	if (m != WORKER_STREAMS && !cmd_given('e'))
		a->eos_count = 0;
	return m;
}

fi_err worker_open(struct worker *w, enum worker_mode mode, const struct cmd_args *a,
		   const char *router, const char *name)
{
	struct fi_stream_opts so;
	fi_err e;
	w->mode = mode;
	fi_stream_opts_default(&so);
	so.eos_count = a->eos_count;
	if (w->wake_ms > 0)
		so.idle_ms = w->wake_ms;
	if (mode == WORKER_STREAMS) {
		if ((e = fi_stream_open(&w->in, a->in, FI_STREAM_IN, &so)))
			return e;
		fi_stream_opts_default(&so);
		so.tty_ok = a->force;
		return fi_stream_open(&w->out, a->out, FI_STREAM_OUT, &so);
	}
	so.router = mode == WORKER_CLIENTS;
	so.dealer = mode == WORKER_ROUTER;
	/* Registered: wake every 100 ms for the load frame even when idle. */
	if (mode == WORKER_ROUTER)
		so.idle_ms = 100;
	else if (w->wake_ms > 0)
		so.idle_ms = w->wake_ms;
	if (name) {
		snprintf(w->name, sizeof w->name, "%s", name);
	} else {
		char host[200] = "localhost";
		gethostname(host, sizeof host - 1);
		snprintf(w->name, sizeof w->name, "%s:%ld", host, (long)getpid());
	}
	if ((e = fi_stream_open(&w->in, mode == WORKER_ROUTER ? router : a->in, FI_STREAM_IN, &so)))
		return e;
	return fi_stream_open_reply(&w->out, w->in);
}

static void hello_free(struct worker *w)
{
	free(w->hello.hello.role);
	free(w->hello.hello.model);
	free(w->hello.hello.kv_events);
	free(w->hello.hello.kv_replay);
	memset(&w->hello, 0, sizeof w->hello);
	w->have_hello = 0;
}

fi_err worker_close(struct worker *w)
{
	fi_err e = FI_OK;
	if (w->mode == WORKER_ROUTER && w->out) {
		/* best effort: the router notices the silence anyway */
		struct fi_frame f;
		fi_frame_init(&f, FI_FRAME_BYE);
		f.id = w->name;
		fi_stream_write_timeout(w->out, &f, 100);
	}
	if (w->out)
		e = fi_stream_close(w->out);
	fi_stream_close(w->in);
	w->in = w->out = NULL;
	hello_free(w);
	return e;
}

const char *worker_key(struct worker *w, const char *id, char buf[FI_STREAM_KEY_MAX])
{
	size_t n;
	const uint8_t *p = fi_stream_peer(w->in, &n);
	return fi_stream_key(p, n, id, buf);
}

int worker_is_gone(const struct worker *w, const uint8_t *peer, size_t len)
{
	for (int i = 0; i < w->n_gone; i++)
		if (w->gone[i].len == len && !memcmp(w->gone[i].id, peer, len))
			return 1;
	return 0;
}

void worker_forget_gone(struct worker *w)
{
	w->n_gone = 0;
}

fi_err worker_reply(struct worker *w, const uint8_t *peer, size_t peer_len, const struct fi_frame *f)
{
	fi_err e;
	if (w->mode != WORKER_CLIENTS)
		return fi_stream_write(w->out, f);
	if (!peer_len)
		peer = fi_stream_peer(w->in, &peer_len);
	if (worker_is_gone(w, peer, peer_len))
		return fi_fail(FI_ENOTFOUND, "client gone");
	fi_stream_set_peer(w->out, peer, peer_len);
	e = fi_stream_write(w->out, f);
	if (e == FI_ENOTFOUND && w->n_gone < WORKER_MAX_GONE) {
		memcpy(w->gone[w->n_gone].id, peer, peer_len);
		w->gone[w->n_gone++].len = peer_len;
		w->n_gone_total++;
	}
	return e;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

fi_err worker_hello(struct worker *w, const char *role, const char *model, const uint8_t fp[32],
		    const uint8_t kv_root[32], uint32_t block_tokens, uint64_t kv_blocks,
		    uint32_t max_batch, const char *kv_events, const char *kv_replay)
{
	struct fi_frame *f = &w->hello;
	if (w->mode != WORKER_ROUTER)
		return FI_OK;
	fi_frame_init(f, FI_FRAME_HELLO);
	f->id = w->name;
	f->hello.role = dup_or_null(role);
	f->hello.model = dup_or_null(model);
	memcpy(f->hello.fingerprint, fp, 32);
	if (kv_root) {
		memcpy(f->hello.kv_root, kv_root, 32);
		f->hello.has_kv_root = 1;
	}
	f->hello.block_tokens = block_tokens;
	f->hello.kv_blocks = kv_blocks;
	f->hello.max_batch = max_batch;
	f->hello.kv_events = dup_or_null(kv_events);
	f->hello.kv_replay = dup_or_null(kv_replay);
	if ((role && !f->hello.role) || (model && !f->hello.model) ||
	    (kv_events && !f->hello.kv_events) || (kv_replay && !f->hello.kv_replay)) {
		hello_free(w);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	w->have_hello = 1;
	w->t_load = w->t_hello = fi_now();
	return fi_stream_write(w->out, f);
}

fi_err worker_load(struct worker *w, const struct worker_load *ld)
{
	double now = fi_now(), since;
	struct fi_frame f;
	fi_err e;
	if (w->mode != WORKER_ROUTER)
		return FI_OK;
	/* The hello again every second, never waited for: the router knows this connection
	 * and only notes it alive, or (restarted, or having taken us for dead) registers it. */
	if (w->have_hello && now - w->t_hello >= 1.0) {
		w->t_hello = now;
		e = fi_stream_write_timeout(w->out, &w->hello, 0);
		if (e && e != FI_EFULL)
			return e;
	}
	since = (now - w->t_load) * 1000;
	if (since < 10 || (since < 100 && w->have_last && !memcmp(ld, &w->last, sizeof *ld)))
		return FI_OK;
	fi_frame_init(&f, FI_FRAME_LOAD);
	f.id = w->name;
	f.load = (struct fi_load){ld->queued, ld->queued_tokens, ld->running, ld->running_tokens,
				  ld->kv_used, ld->kv_total, ld->prefix_hits, ld->prefix_lookups};
	w->last = *ld;
	w->have_last = 1;
	w->t_load = now;
	/* Never waited for: with the router away (restarting) the worker goes on serving, and
	 * the silence is what the router sees. */
	e = fi_stream_write_timeout(w->out, &f, 0);
	return e == FI_EFULL ? FI_OK : e;
}
