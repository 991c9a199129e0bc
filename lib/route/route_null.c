/* route_null: a worker without a model, for tests and for measuring the router alone. It
 * speaks the worker side of the protocol (fi-frame(5)): hello (again every second), load
 * every 100 ms, bye; it answers each request with `tokens` tokens (the prompt's own ids, cycled) and a done frame,
 * one token per request per step of token_ms, and keeps a simulated prefix cache of
 * kv_blocks blocks (LRU, the scheduler's block keys) whose hits it reports as a real worker
 * does. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "base/log.h"
#include "frame/stream.h"
#include "frame/stream_int.h"
#include "route_int.h"

struct nreq {
	char *id;
	uint32_t *toks, ntoks, want, sent, cached;
	struct nreq *next;
};

struct nw {
	const struct fi_null_worker_opts *o;
	void *sock;
	char name[128];
	struct kset pool;
	struct nreq *run;
	uint64_t nrun, run_tokens, hits, lookups, n_req;
	struct fi_buf b;
};

static void send_buf(struct nw *w)
{
	zmq_send(w->sock, w->b.data, w->b.len, 0);
	w->b.len = 0;
}

static void send_ctl(struct nw *w, const char *type)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	static const uint8_t fp[32];
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
#define KEY(s) msgpack_pack_str_with_body(&pk, s, strlen(s))
	int hello = !strcmp(type, "hello"), load = !strcmp(type, "load");
	msgpack_pack_map(&pk, 3 + (hello ? 6 : 0) + (load ? 8 : 0));
	KEY("v"), msgpack_pack_uint32(&pk, 1);
	KEY("type"), KEY(type);
	KEY("id"), KEY(w->name);
	if (hello) {
		KEY("role"), KEY("decode");
		KEY("model"), KEY("null");
		KEY("fingerprint"), msgpack_pack_bin_with_body(&pk, fp, 32);
		KEY("block_tokens"), msgpack_pack_uint32(&pk, w->o->block_tokens);
		KEY("kv_blocks"), msgpack_pack_uint32(&pk, w->o->kv_blocks);
		KEY("max_batch"), msgpack_pack_uint32(&pk, w->o->max_batch);
	}
	if (load) {
		KEY("queued"), msgpack_pack_uint64(&pk, 0);
		KEY("queued_tokens"), msgpack_pack_uint64(&pk, 0);
		KEY("running"), msgpack_pack_uint64(&pk, w->nrun);
		KEY("running_tokens"), msgpack_pack_uint64(&pk, w->run_tokens);
		KEY("kv_used"), msgpack_pack_uint64(&pk, w->pool.map.n);
		KEY("kv_total"), msgpack_pack_uint64(&pk, w->o->kv_blocks);
		KEY("prefix_hits"), msgpack_pack_uint64(&pk, w->hits);
		KEY("prefix_lookups"), msgpack_pack_uint64(&pk, w->lookups);
	}
#undef KEY
	/* never waited for: with no router to take it (not connected, or refused in the CURVE
	 * handshake) a DEALER's send blocks, and the next hello says it again */
	zmq_send(w->sock, sb.data, sb.size, ZMQ_DONTWAIT);
	msgpack_sbuffer_destroy(&sb);
}

static void done(struct nw *w, struct nreq *q, enum fi_finish fin)
{
	struct fi_frame f;
	fi_frame_init(&f, FI_FRAME_DONE);
	f.id = q->id;
	f.done.finish = fin;
	f.done.prompt_tokens = q->ntoks;
	f.done.gen_tokens = q->sent;
	f.done.cached_tokens = q->cached;
	if (!fi_frame_encode(&f, &w->b))
		send_buf(w);
}

static void token(struct nw *w, struct nreq *q)
{
	struct fi_frame f;
	fi_frame_init(&f, FI_FRAME_TOKEN);
	f.id = q->id;
	f.tok.token = q->toks[q->sent % q->ntoks];
	f.tok.index = q->sent++;
	f.tok.logprob = -1.0f;
	f.tok.has_logprob = 1;
	if (!fi_frame_encode(&f, &w->b))
		send_buf(w);
}

static void nreq_free(struct nreq *q)
{
	free(q->id);
	free(q->toks);
	free(q);
}

static void take(struct nw *w, const uint8_t *d, size_t n)
{
	struct fi_frame f;
	fi_err e = fi_frame_decode(d, n, NULL, &f);
	if (e || (f.type == FI_FRAME_REQUEST && !f.req.tokens)) {
		w->b.len = 0;
		if (!fi_frame_encode_error(&w->b, f.id ? f.id : "", e ? e : FI_EINVAL,
					   e ? fi_errmsg() : "the null worker takes token prompts"))
			send_buf(w);
	} else if (f.type == FI_FRAME_REQUEST) {
		struct nreq *q = calloc(1, sizeof *q);
		fi_arena_key *keys = NULL;
		uint32_t nk = 0, h = 0;
		static const char root[65] = "0000000000000000000000000000000000000000000000000000000000000000";
		if (!q) {
			fi_frame_free(&f);
			return;
		}
		q->id = f.id;
		f.id = NULL;
		q->toks = f.req.tokens;
		q->ntoks = f.req.ntokens;
		f.req.tokens = NULL;
		q->want = f.req.max_tokens && f.req.max_tokens < w->o->tokens ? f.req.max_tokens : w->o->tokens;
		if (!route_prefix_keys(root, q->toks, q->ntoks, w->o->block_tokens, &keys, &nk)) {
			while (h < nk && kset_has(&w->pool, &keys[h]))
				h++;
			for (uint32_t i = 0; i < nk; i++)
				kset_touch(&w->pool, &keys[i]);
			w->hits += h;
			w->lookups += nk;
			q->cached = h * w->o->block_tokens;
			free(keys);
		}
		q->next = w->run;
		w->run = q;
		w->n_req++;
		w->nrun++;
		w->run_tokens += q->ntoks;
	} else if (f.type == FI_FRAME_CANCEL) {
		for (struct nreq **p = &w->run; *p; p = &(*p)->next)
			if (!strcmp((*p)->id, f.id)) {
				struct nreq *q = *p;
				*p = q->next;
				done(w, q, FI_FINISH_CANCEL);
				w->nrun--;
				w->run_tokens -= q->ntoks;
				nreq_free(q);
				break;
			}
	}
	fi_frame_free(&f);
}

/* One step: a token for every running request; the finished ones end. */
static void step(struct nw *w)
{
	for (struct nreq **p = &w->run; *p;) {
		struct nreq *q = *p;
		if (q->sent < q->want)
			token(w, q);
		if (q->sent >= q->want) {
			*p = q->next;
			done(w, q, FI_FINISH_LENGTH);
			w->nrun--;
			w->run_tokens -= q->ntoks;
			nreq_free(q);
		} else {
			p = &q->next;
		}
	}
}

fi_err fi_null_worker_run(struct fi_null_worker_opts *o)
{
	struct nw w = {.o = o};
	void *ctx = zmq_ctx_new();
	int zero = 0, hwm = 100000;
	double last_load = 0, last_step = 0, last_hello;
	char host[64] = "localhost";
	if (o->name)
		snprintf(w.name, sizeof w.name, "%s", o->name);
	else {
		gethostname(host, sizeof host - 1);
		snprintf(w.name, sizeof w.name, "%s:%d", host, (int)getpid());
	}
	kset_init(&w.pool, o->kv_blocks);
	if (!ctx || !(w.sock = zmq_socket(ctx, ZMQ_DEALER)))
		return fi_fail(FI_EIO, "zmq: %s", zmq_strerror(zmq_errno()));
	zmq_setsockopt(w.sock, ZMQ_LINGER, &zero, sizeof zero);
	zmq_setsockopt(w.sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_setsockopt(w.sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
	if (strstr(o->router, "://[")) { /* an IPv6 address */
		int one = 1;
		zmq_setsockopt(w.sock, ZMQ_IPV6, &one, sizeof one);
	}
	if (o->curve_key) {
		uint8_t pub[32], sec[32], srv[32];
		int has;
		fi_err e = fi_curve_load(o->curve_key, pub, sec, srv, &has);
		if (!e && !has)
			e = fi_fail(FI_EINVAL, "'%s': connecting with CURVE needs a server-key line", o->curve_key);
		if (!e && (zmq_setsockopt(w.sock, ZMQ_CURVE_SERVERKEY, srv, 32) ||
			   zmq_setsockopt(w.sock, ZMQ_CURVE_PUBLICKEY, pub, 32) ||
			   zmq_setsockopt(w.sock, ZMQ_CURVE_SECRETKEY, sec, 32)))
			e = fi_fail(FI_EUNSUPPORTED, "CURVE: %s (libzmq without libsodium?)",
				    zmq_strerror(zmq_errno()));
		if (e) {
			kset_clear(&w.pool);
			rmap_free(&w.pool.map);
			zmq_close(w.sock);
			zmq_ctx_term(ctx);
			return e;
		}
	}
	if (zmq_connect(w.sock, o->router)) {
		fi_err e = fi_fail(FI_EIO, "cannot connect '%s': %s", o->router, zmq_strerror(zmq_errno()));
		zmq_close(w.sock);
		zmq_ctx_term(ctx);
		return e;
	}
	send_ctl(&w, "hello");
	last_hello = route_now_ms();
	while (!fi_stream_interrupted()) {
		zmq_pollitem_t it = {w.sock, 0, ZMQ_POLLIN, 0};
		double now = route_now_ms();
		int wait = w.run ? (o->token_ms > 0 ? (int)(o->token_ms - (now - last_step)) : 0) : 20;
		if (wait < 0)
			wait = 0;
		zmq_poll(&it, 1, wait);
		for (int k = 0; k < 4096; k++) {
			zmq_msg_t m;
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, w.sock, ZMQ_DONTWAIT) < 0) {
				zmq_msg_close(&m);
				break;
			}
			if (zmq_msg_size(&m))
				take(&w, zmq_msg_data(&m), zmq_msg_size(&m));
			zmq_msg_close(&m);
		}
		now = route_now_ms();
		if (w.run && (o->token_ms <= 0 || now - last_step >= o->token_ms)) {
			step(&w);
			last_step = now;
		}
		if (now - last_hello >= 1000) { /* as fi-decode: a restarted router registers us */
			send_ctl(&w, "hello");
			last_hello = now;
		}
		if (now - last_load >= 100) {
			send_ctl(&w, "load");
			last_load = now;
		}
	}
	send_ctl(&w, "bye");
	o->n_req = w.n_req;
	o->lookups = w.lookups;
	o->hits = w.hits;
	while (w.run) {
		struct nreq *q = w.run;
		w.run = q->next;
		nreq_free(q);
	}
	kset_clear(&w.pool);
	rmap_free(&w.pool.map);
	fi_buf_free(&w.b);
	zmq_close(w.sock);
	zmq_ctx_term(ctx);
	return FI_OK;
}
