/* route_core: fi-route's event loop (route.h): the client and worker sockets, the queue of
 * requests waiting for a worker, replies going back, cancels, and worker faults. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "base/log.h"
#include "frame/stream.h"
#include "frame/stream_int.h"
#include "route_int.h"

const double route_buckets[ROUTE_NBUCKET] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					     0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void rhist_add(struct rhist *h, double sec)
{
	int i = 0;
	while (i < ROUTE_NBUCKET && sec > route_buckets[i])
		i++;
	h->b[i]++;
	h->sum += sec;
	h->n++;
}

double route_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

void fi_route_opts_default(struct fi_route_opts *o)
{
	memset(o, 0, sizeof *o);
	o->http_queue = 256;
	o->max_pending = 1024;
	o->dead_ms = 1000;
}

/* ---- sockets ---- */

static int is_loopback_tcp(const char *ep, char *out, size_t cap)
{
	const char *host = ep + 6, *colon = strrchr(host, ':');
	size_t hl = colon ? (size_t)(colon - host) : 0;
	if (!hl || (hl == 1 && host[0] == '*')) {
		snprintf(out, cap, "tcp://127.0.0.1%s", colon ? colon : "");
		return 1;
	}
	snprintf(out, cap, "%s", ep);
	return (hl >= 4 && !memcmp(host, "127.", 4)) || (hl == 9 && !memcmp(host, "localhost", 9)) ||
	       (hl == 5 && !memcmp(host, "[::1]", 5));
}

static fi_err bind_router(struct fi_route *r, void **sock, const char *ep, const char *what,
			  void **mon, const char *mon_ep)
{
	char addr[512];
	int one = 1, zero = 0, hwm = 100000;
	if (strncmp(ep, "ipc://", 6) && strncmp(ep, "tcp://", 6) && strncmp(ep, "inproc://", 9))
		return fi_fail(FI_EINVAL, "'%s': %s needs a ZeroMQ endpoint (ipc://PATH or tcp://HOST:PORT)",
			       ep, what);
	snprintf(addr, sizeof addr, "%s", ep);
	if (!strncmp(ep, "tcp://", 6) && !is_loopback_tcp(ep, addr, sizeof addr) && !r->o.curve_key)
		return fi_fail(FI_EINVAL, "'%s': binding beyond loopback needs --curve-key", ep);
	if (!(*sock = zmq_socket(r->ctx, ZMQ_ROUTER)))
		return fi_fail(FI_EIO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
	zmq_setsockopt(*sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
	zmq_setsockopt(*sock, ZMQ_LINGER, &zero, sizeof zero);
	zmq_setsockopt(*sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_setsockopt(*sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
	{
		int64_t max = 64 << 20;
		zmq_setsockopt(*sock, ZMQ_MAXMSGSIZE, &max, sizeof max);
	}
	if (r->o.curve_key) {
		uint8_t pub[32], sec[32], srv[32];
		int has;
		fi_err e = fi_curve_load(r->o.curve_key, pub, sec, srv, &has);
		if (e)
			return e;
		if (zmq_setsockopt(*sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
		    zmq_setsockopt(*sock, ZMQ_CURVE_SECRETKEY, sec, 32))
			return fi_fail(FI_EUNSUPPORTED, "CURVE: %s (libzmq without libsodium?)",
				       zmq_strerror(zmq_errno()));
	}
	if (zmq_bind(*sock, addr))
		return fi_fail(FI_EIO, "cannot bind '%s': %s", ep, zmq_strerror(zmq_errno()));
	if (!strncmp(ep, "inproc://", 9))
		return FI_OK; /* no connections to watch */
	if (zmq_socket_monitor(*sock, mon_ep, ZMQ_EVENT_DISCONNECTED) ||
	    !(*mon = zmq_socket(r->ctx, ZMQ_PAIR)) || zmq_connect(*mon, mon_ep))
		return fi_fail(FI_EIO, "socket monitor: %s", zmq_strerror(zmq_errno()));
	return FI_OK;
}

fi_err fi_route_new(struct fi_route **out, const struct fi_route_opts *o)
{
	struct fi_route *r = calloc(1, sizeof *r);
	char mon[64];
	fi_err e;
	*out = NULL;
	if (!r)
		return fi_fail(FI_ENOMEM, "out of memory");
	r->o = *o;
	r->efd = -1;
	r->next_rid = 1;
	pthread_mutex_init(&r->mu, NULL);
	if (!(r->ctx = zmq_ctx_new()) || (r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		fi_route_free(r);
		return fi_fail(FI_EIO, "cannot start: %s", strerror(errno));
	}
	snprintf(mon, sizeof mon, "inproc://fi-route-wmon-%p", (void *)r);
	if ((e = bind_router(r, &r->wsock, o->worker_ep, "--workers", &r->wmon, mon))) {
		fi_route_free(r);
		return e;
	}
	snprintf(mon, sizeof mon, "inproc://fi-route-cmon-%p", (void *)r);
	if (o->client_ep && (e = bind_router(r, &r->csock, o->client_ep, "-i", &r->cmon, mon))) {
		fi_route_free(r);
		return e;
	}
	*out = r;
	return FI_OK;
}

static void req_free(struct rreq *q)
{
	if (!q)
		return;
	free(q->cid);
	free(q->frame);
	free(q->keys);
	free(q);
}

void fi_route_free(struct fi_route *r)
{
	if (!r)
		return;
	r->o.verbose = -1; /* quiet: every worker leaves now */
	while (r->nw)
		route_worker_dead(r, r->w[r->nw - 1], "fi-route stopped");
	for (size_t i = 0; i < r->by_rid.cap; i++) {
		struct rreq *q = r->by_rid.slot[i].val;
		if (!q)
			continue;
		if (q->http)
			hreq_put(q->http);
		req_free(q);
	}
	for (size_t i = 0; i < r->clients.cap; i++)
		free(r->clients.slot[i].val);
	while (r->sub_head) {
		struct hreq *h = r->sub_head;
		r->sub_head = h->next;
		hreq_put(h);
	}
	rmap_free(&r->by_rid);
	rmap_free(&r->by_cid);
	rmap_free(&r->clients);
	rmap_free(&r->sessions);
	rmap_free(&r->by_ident);
	free(r->cancels);
	fi_buf_free(&r->buf);
	if (r->cmon)
		zmq_close(r->cmon);
	if (r->wmon)
		zmq_close(r->wmon);
	if (r->csock)
		zmq_close(r->csock);
	if (r->wsock)
		zmq_close(r->wsock);
	if (r->ctx)
		zmq_ctx_term(r->ctx);
	if (r->efd >= 0)
		close(r->efd);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

void fi_route_summary(const struct fi_route *r, char *buf, size_t cap)
{
	snprintf(buf, cap, "%" PRIu64 " requests (%" PRIu64 " over HTTP), %" PRIu64 " done, %" PRIu64
		 " failed, %" PRIu64 " retried, %" PRIu64 " cancelled, %" PRIu64 " refused (429)",
		 r->n_req, r->n_http, r->n_done, r->n_err, r->n_retry, r->n_cancel, r->n_429);
}

/* ---- the pending list and worker lists ---- */

static void list_unlink(struct rreq **head, struct rreq **tail, struct rreq *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		*head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else if (tail)
		*tail = q->prev;
	q->prev = q->next = NULL;
}

static void pend_back(struct fi_route *r, struct rreq *q)
{
	q->prev = r->pend_tail;
	q->next = NULL;
	if (r->pend_tail)
		r->pend_tail->next = q;
	else
		r->pend_head = q;
	r->pend_tail = q;
	r->npend++;
	if (q->http)
		r->http_waiting++;
}

void route_pend_front(struct fi_route *r, struct rreq *q)
{
	q->prev = NULL;
	q->next = r->pend_head;
	if (r->pend_head)
		r->pend_head->prev = q;
	else
		r->pend_tail = q;
	r->pend_head = q;
	r->npend++;
	if (q->http)
		r->http_waiting++;
}

static void pend_remove(struct fi_route *r, struct rreq *q)
{
	list_unlink(&r->pend_head, &r->pend_tail, q);
	r->npend--;
	if (q->http)
		r->http_waiting--;
}

/* ---- replies ---- */

static void client_gone(struct fi_route *r, struct rclient *c);

/* Sends one encoded frame to a frame client: blocking, never dropped (ROUTER_MANDATORY);
 * a client that is gone has its requests cancelled. */
static void to_client(struct fi_route *r, struct rclient *c, const struct fi_buf *b)
{
	if (zmq_send(r->csock, c->ident, c->ilen, ZMQ_SNDMORE) < 0 ||
	    zmq_send(r->csock, b->data, b->len, 0) < 0) {
		if (zmq_errno() == EHOSTUNREACH)
			client_gone(r, c);
	}
}

static void to_http(struct hreq *h, const struct fi_frame *f)
{
	struct hevent *e = calloc(1, sizeof *e);
	if (!e)
		return;
	e->type = f->type;
	if (f->type == FI_FRAME_TOKEN) {
		e->token = f->tok.token;
		e->logprob = f->tok.logprob;
		e->has_logprob = f->tok.has_logprob;
		e->ntop = f->tok.ntop < FI_FRAME_MAX_TOP ? f->tok.ntop : FI_FRAME_MAX_TOP;
		if (e->ntop)
			memcpy(e->top, f->tok.top, sizeof *e->top * e->ntop);
	} else if (f->type == FI_FRAME_DONE) {
		e->prompt_tokens = f->done.prompt_tokens;
		e->gen_tokens = f->done.gen_tokens;
		e->cached_tokens = f->done.cached_tokens;
		e->finish = f->done.finish;
	} else if (f->type == FI_FRAME_ERROR) {
		e->code = f->err.code;
		e->message = strdup(f->err.message ? f->err.message : "failed");
	}
	pthread_mutex_lock(&h->mu);
	if (h->tail)
		h->tail->next = e;
	else
		h->head = e;
	h->tail = e;
	if (f->type != FI_FRAME_TOKEN)
		h->ended = 1;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

/* The request ends: out of every table, its client told when it has one. */
static void req_end(struct fi_route *r, struct rreq *q)
{
	char key[512];
	if (q->w) {
		list_unlink(&q->w->reqs, NULL, q);
		q->w->inflight--;
		q->w->inflight_tokens -= q->miss_tokens;
		q->w = NULL;
	}
	rmap_del(&r->by_rid, &q->rid, sizeof q->rid);
	if (q->client) {
		size_t n = q->client->ilen;
		memcpy(key, q->client->ident, n);
		key[n++] = 0;
		n += (size_t)snprintf(key + n, sizeof key - n, "%s", q->cid);
		rmap_del(&r->by_cid, key, n);
		q->client->active--;
	}
	if (q->http)
		hreq_put(q->http);
	req_free(q);
}

/* Sends f (a reply, id already the client's) to q's client. */
static void reply(struct fi_route *r, struct rreq *q, struct fi_frame *f)
{
	if (q->http) {
		to_http(q->http, f);
		return;
	}
	r->buf.len = 0;
	if (fi_frame_encode(f, &r->buf))
		return;
	to_client(r, q->client, &r->buf);
}

void route_req_fail(struct fi_route *r, struct rreq *q, fi_err code, const char *msg)
{
	struct fi_frame f;
	fi_frame_init(&f, FI_FRAME_ERROR);
	f.id = q->cid;
	f.err.code = code;
	f.err.message = (char *)msg;
	r->n_err++;
	reply(r, q, &f);
	req_end(r, q);
}

static void send_cancel(struct fi_route *r, struct rreq *q)
{
	struct fi_frame f;
	char id[24];
	struct fi_buf b = {0};
	if (q->cancelled || !q->w)
		return;
	q->cancelled = 1;
	r->n_cancel++;
	snprintf(id, sizeof id, "%" PRIx64, q->rid);
	fi_frame_init(&f, FI_FRAME_CANCEL);
	f.id = id;
	if (!fi_frame_encode(&f, &b)) {
		zmq_send(r->wsock, q->w->ident, q->w->ilen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
		zmq_send(r->wsock, b.data, b.len, ZMQ_DONTWAIT);
	}
	fi_buf_free(&b);
}

/* A request cancelled by its client: pending ones end here, with a done frame "cancel";
 * running ones get a cancel frame on their worker, whose done frame ends them. */
static void cancel(struct fi_route *r, struct rreq *q, int tell)
{
	if (!q->w) {
		pend_remove(r, q);
		r->n_cancel++;
		if (tell) {
			struct fi_frame f;
			fi_frame_init(&f, FI_FRAME_DONE);
			f.id = q->cid;
			f.done.finish = FI_FINISH_CANCEL;
			f.done.prompt_tokens = q->ntokens;
			reply(r, q, &f);
		}
		req_end(r, q);
		return;
	}
	send_cancel(r, q);
}

static void client_gone(struct fi_route *r, struct rclient *c)
{
	/* every request of c: nobody will read their replies */
	for (size_t i = 0; i < r->by_rid.cap && c->active; i++) {
		struct rreq *q = r->by_rid.slot[i].val;
		if (r->by_rid.slot[i].key && q->client == c) {
			if (!q->w) {
				cancel(r, q, 0);
				i = (size_t)-1; /* the table moved under us: start over */
				continue;
			}
			send_cancel(r, q);
		}
	}
}

/* ---- requests in ---- */

static void reply_error(struct fi_route *r, struct rclient *c, const char *id, fi_err code,
			const char *msg)
{
	r->buf.len = 0;
	r->n_badframe++;
	if (!fi_frame_encode_error(&r->buf, id ? id : "", code, msg))
		to_client(r, c, &r->buf);
}

/* Gives q its number, its worker-side frame, tokens and prefix keys; then queues it. */
static fi_err admit(struct fi_route *r, struct rreq *q, struct fi_frame *f)
{
	char id[24];
	fi_err e;
	struct fi_tok_ids ids = {0};
	q->rid = r->next_rid++;
	q->t_arrive = route_now_ms();
	if (!f->req.tokens && f->req.text && r->o.model) {
		struct fi_route_model *m = r->o.model;
		pthread_mutex_lock(&m->mu);
		e = fi_tok_encode(m->tok, f->req.text, f->req.text_len, FI_TOK_HF_DEFAULT | FI_TOK_REPLACE_INVALID, &ids);
		pthread_mutex_unlock(&m->mu);
		if (e)
			return e;
		if (!ids.n) {
			fi_tok_ids_free(&ids);
			return fi_fail(FI_EINVAL, "empty prompt");
		}
		f->req.tokens = ids.v;
		f->req.ntokens = (uint32_t)ids.n;
		memcpy(f->req.tok_sha256, m->ident.sha256, 32);
		f->req.set |= FI_REQ_TOKENIZER;
		ids.v = NULL; /* the frame owns them now */
	}
	if (f->req.tokens) {
		q->ntokens = f->req.ntokens;
		/* keys under the first worker's root; workers of one model share it */
		const char *root = r->nw ? r->w[0]->root : NULL;
		uint32_t bt = r->nw ? r->w[0]->block_tokens : 16;
		static const char zero_root[65] =
			"0000000000000000000000000000000000000000000000000000000000000000";
		if ((e = route_prefix_keys(root ? root : zero_root, f->req.tokens, f->req.ntokens, bt,
					   &q->keys, &q->nkeys)))
			return e;
	} else {
		q->ntokens = (uint32_t)(f->req.text_len / 4 + 1); /* a guess, for the load only */
	}
	snprintf(id, sizeof id, "%" PRIx64, q->rid);
	{
		char *cid = f->id;
		struct fi_buf b = {0};
		f->id = id;
		e = fi_frame_encode(f, &b);
		f->id = cid;
		if (e) {
			fi_buf_free(&b);
			return e;
		}
		q->frame = b.data;
		q->flen = b.len;
	}
	if (rmap_put(&r->by_rid, &q->rid, sizeof q->rid, q))
		return fi_fail(FI_ENOMEM, "out of memory");
	r->n_req++;
	pend_back(r, q);
	return FI_OK;
}

static struct rclient *client_of(struct fi_route *r, const uint8_t *ident, size_t n, int fd)
{
	struct rclient *c = rmap_get(&r->clients, ident, n);
	if (c) {
		if (fd >= 0)
			c->fd = fd;
		return c;
	}
	if (n > sizeof c->ident || !(c = calloc(1, sizeof *c)))
		return NULL;
	memcpy(c->ident, ident, n);
	c->ilen = n;
	c->fd = fd;
	if (rmap_put(&r->clients, ident, n, c)) {
		free(c);
		return NULL;
	}
	return c;
}

static void client_frame(struct fi_route *r, struct rclient *c, const uint8_t *data, size_t len)
{
	struct fi_frame f;
	char key[512];
	size_t kn;
	fi_err e = fi_frame_decode(data, len, NULL, &f);
	if (e) {
		reply_error(r, c, f.id, e, fi_errmsg());
		fi_frame_free(&f);
		return;
	}
	kn = c->ilen;
	memcpy(key, c->ident, kn);
	key[kn++] = 0;
	if (f.id)
		kn += (size_t)snprintf(key + kn, sizeof key - kn, "%s", f.id);
	if (f.type == FI_FRAME_REQUEST) {
		struct rreq *q;
		if (rmap_get(&r->by_cid, key, kn)) {
			reply_error(r, c, f.id, FI_EINVAL, "a request with this id is running");
		} else if (!(q = calloc(1, sizeof *q)) || !(q->cid = strdup(f.id))) {
			free(q);
			reply_error(r, c, f.id, FI_ENOMEM, "out of memory");
		} else {
			msgpack_unpacked u;
			q->client = c;
			if (!mp_unpack(data, len, &u)) { /* "session": stickiness (fi-route(1)) */
				mp_str(&u.data, "session", q->session, sizeof q->session);
				msgpack_unpacked_destroy(&u);
			}
			if ((e = admit(r, q, &f))) {
				reply_error(r, c, f.id, e, fi_errmsg());
				if (rmap_get(&r->by_rid, &q->rid, sizeof q->rid) == q)
					rmap_del(&r->by_rid, &q->rid, sizeof q->rid);
				req_free(q);
			} else {
				rmap_put(&r->by_cid, key, kn, q);
				c->active++;
			}
		}
	} else if (f.type == FI_FRAME_CANCEL) {
		struct rreq *q = rmap_get(&r->by_cid, key, kn);
		if (q)
			cancel(r, q, 1);
	} else if (f.type != FI_FRAME_EOS) {
		reply_error(r, c, f.id, FI_EINVAL, "fi-route takes request and cancel frames");
	}
	fi_frame_free(&f);
}

/* Reads one message from the client socket: [identity] [empty]? frame... */
static int client_msg(struct fi_route *r)
{
	zmq_msg_t m;
	struct rclient *c = NULL;
	int more, first = 1;
	do {
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, r->csock, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			return 0;
		}
		more = zmq_msg_more(&m);
		if (first) {
			int fd = zmq_msg_get(&m, ZMQ_SRCFD);
			c = client_of(r, zmq_msg_data(&m), zmq_msg_size(&m), fd);
			first = 0;
		} else if (c && zmq_msg_size(&m)) {
			client_frame(r, c, zmq_msg_data(&m), zmq_msg_size(&m));
		}
		zmq_msg_close(&m);
	} while (more);
	return 1;
}

/* ---- frames from workers ---- */

static void worker_reply(struct fi_route *r, struct rworker *w, struct fi_frame *f)
{
	char *end;
	uint64_t rid;
	struct rreq *q;
	if (!f->id || !*f->id)
		return;
	rid = strtoull(f->id, &end, 16);
	if (*end || !(q = rmap_get(&r->by_rid, &rid, sizeof rid)) || q->w != w)
		return; /* not ours, or already ended (a late reply after a retry) */
	free(f->id);
	f->id = strdup(q->cid);
	if (f->type == FI_FRAME_TOKEN) {
		double now = route_now_ms();
		if (!q->ntok_out++)
			rhist_add(&r->ttft, (now - q->t_arrive) / 1e3);
		else
			rhist_add(&r->itl, (now - q->t_last) / 1e3);
		q->t_last = now;
		if (!q->cancelled || q->http)
			reply(r, q, f);
		return;
	}
	if (f->type == FI_FRAME_DONE) {
		/* a done frame carrying the output (stream false) is the first token's time */
		if (!q->ntok_out && f->done.gen_tokens)
			rhist_add(&r->ttft, (route_now_ms() - q->t_arrive) / 1e3);
		w->n_done++;
		r->n_done++;
		reply(r, q, f);
		req_end(r, q);
	} else if (f->type == FI_FRAME_ERROR) {
		w->n_failed++;
		r->n_err++;
		reply(r, q, f);
		req_end(r, q);
	}
}

static int worker_msg(struct fi_route *r)
{
	zmq_msg_t id, m;
	int more, fd;
	zmq_msg_init(&id);
	if (zmq_msg_recv(&id, r->wsock, ZMQ_DONTWAIT) < 0) {
		zmq_msg_close(&id);
		return 0;
	}
	fd = zmq_msg_get(&id, ZMQ_SRCFD);
	more = zmq_msg_more(&id);
	while (more) {
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, r->wsock, 0) < 0) {
			zmq_msg_close(&m);
			break;
		}
		more = zmq_msg_more(&m);
		if (zmq_msg_size(&m)) {
			struct fi_frame f;
			const uint8_t *d = zmq_msg_data(&m);
			size_t n = zmq_msg_size(&m);
			fi_err e = fi_frame_decode(d, n, NULL, &f);
			struct rworker *w = rmap_get(&r->by_ident, zmq_msg_data(&id), zmq_msg_size(&id));
			int reply_type = !e && (f.type == FI_FRAME_TOKEN || f.type == FI_FRAME_DONE ||
						f.type == FI_FRAME_ERROR);
			if (reply_type) {
				if (w) {
					w->last_seen = route_now_ms();
					worker_reply(r, w, &f);
				}
			} else if (!e || e == FI_EUNSUPPORTED) {
				/* hello, load, bye: read from the msgpack itself, whether or not the
				 * frame decoder knows these types */
				msgpack_unpacked u;
				char type[16];
				if (!mp_unpack(d, n, &u)) {
					if (!mp_str(&u.data, "type", type, sizeof type))
						route_worker_frame(r, zmq_msg_data(&id), zmq_msg_size(&id), fd,
								   &u.data, type);
					msgpack_unpacked_destroy(&u);
				}
			} else {
				r->n_badframe++;
			}
			fi_frame_free(&f);
		}
		zmq_msg_close(&m);
	}
	zmq_msg_close(&id);
	return 1;
}

/* ---- dispatch ---- */

static void dispatch(struct fi_route *r)
{
	while (r->pend_head) {
		struct rreq *q = r->pend_head;
		struct rworker *w = route_pick(r, q);
		if (!w)
			return;
		if (zmq_send(r->wsock, w->ident, w->ilen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
		    zmq_send(r->wsock, q->frame, q->flen, ZMQ_DONTWAIT) < 0) {
			if (zmq_errno() == EHOSTUNREACH)
				route_worker_dead(r, w, "its connection is gone");
			else
				return; /* its queue is full: later */
			continue;
		}
		pend_remove(r, q);
		route_note_sent(r, w, q);
		q->w = w;
		q->next = w->reqs;
		if (w->reqs)
			w->reqs->prev = q;
		w->reqs = q;
		w->inflight++;
		w->inflight_tokens += q->miss_tokens;
		w->n_sent++;
	}
}

/* ---- the front's queue ---- */

fi_err route_submit(struct fi_route *r, struct hreq *h)
{
	uint64_t one = 1;
	pthread_mutex_lock(&r->mu);
	if (r->http_waiting >= r->o.http_queue) {
		r->n_429++;
		pthread_mutex_unlock(&r->mu);
		return FI_EFULL;
	}
	h->refs++;
	h->next = NULL;
	if (r->sub_tail)
		r->sub_tail->next = h;
	else
		r->sub_head = h;
	r->sub_tail = h;
	r->http_waiting++;
	pthread_mutex_unlock(&r->mu);
	if (write(r->efd, &one, sizeof one) < 0) {
		/* the counter is full: the loop is awake already */
	}
	return FI_OK;
}

void route_cancel(struct fi_route *r, struct hreq *h)
{
	uint64_t one = 1;
	pthread_mutex_lock(&h->mu);
	h->cancelled = 1;
	pthread_mutex_unlock(&h->mu);
	pthread_mutex_lock(&r->mu);
	if (h->rid) {
		if (r->ncancel == r->capcancel) {
			size_t cap = r->capcancel ? 2 * r->capcancel : 16;
			uint64_t *c = realloc(r->cancels, sizeof *c * cap);
			if (c) {
				r->cancels = c;
				r->capcancel = cap;
			}
		}
		if (r->ncancel < r->capcancel)
			r->cancels[r->ncancel++] = h->rid;
	}
	pthread_mutex_unlock(&r->mu);
	if (write(r->efd, &one, sizeof one) < 0) {
	}
}

int route_workers_alive(struct fi_route *r)
{
	pthread_mutex_lock(&r->mu);
	int n = r->nw;
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* Takes what the front submitted and cancelled (r->mu held). */
static void front(struct fi_route *r)
{
	uint64_t v;
	if (read(r->efd, &v, sizeof v) < 0) {
	}
	while (r->sub_head) {
		struct hreq *h = r->sub_head;
		struct rreq *q = calloc(1, sizeof *q);
		r->sub_head = h->next;
		if (!r->sub_head)
			r->sub_tail = NULL;
		r->http_waiting--;
		r->n_http++;
		if (!q || !(q->cid = strdup(h->f.id ? h->f.id : ""))) {
			struct fi_frame f;
			free(q);
			fi_frame_init(&f, FI_FRAME_ERROR);
			f.err.code = FI_ENOMEM;
			f.err.message = "out of memory";
			to_http(h, &f);
			hreq_put(h);
			continue;
		}
		q->http = h; /* the reference submit took */
		snprintf(q->session, sizeof q->session, "%s", h->session);
		if (admit(r, q, &h->f)) {
			struct fi_frame f;
			fi_frame_init(&f, FI_FRAME_ERROR);
			f.err.code = fi_errcode();
			f.err.message = (char *)fi_errmsg();
			to_http(h, &f);
			if (rmap_get(&r->by_rid, &q->rid, sizeof q->rid) == q)
				rmap_del(&r->by_rid, &q->rid, sizeof q->rid);
			hreq_put(h);
			req_free(q);
			continue;
		}
		pthread_mutex_lock(&h->mu);
		h->rid = q->rid;
		int gone = h->cancelled; /* before we saw it */
		pthread_mutex_unlock(&h->mu);
		if (gone)
			cancel(r, q, 0);
	}
	for (size_t i = 0; i < r->ncancel; i++) {
		struct rreq *q = rmap_get(&r->by_rid, &r->cancels[i], sizeof r->cancels[i]);
		if (q)
			cancel(r, q, 0);
	}
	r->ncancel = 0;
}

/* A disconnect on a monitored socket: the fd of the connection that closed. */
static int monitor_fd(void *mon)
{
	zmq_msg_t a, b;
	int fd = -1;
	zmq_msg_init(&a);
	zmq_msg_init(&b);
	if (zmq_msg_recv(&a, mon, ZMQ_DONTWAIT) >= 0) {
		if (zmq_msg_size(&a) >= 6) {
			const uint8_t *d = zmq_msg_data(&a);
			uint16_t ev;
			int32_t val;
			memcpy(&ev, d, 2);
			memcpy(&val, d + 2, 4);
			if (ev == ZMQ_EVENT_DISCONNECTED)
				fd = val;
		}
		if (zmq_msg_more(&a))
			zmq_msg_recv(&b, mon, 0);
	} else {
		fd = -2;
	}
	zmq_msg_close(&a);
	zmq_msg_close(&b);
	return fd;
}

fi_err fi_route_run(struct fi_route *r)
{
	zmq_pollitem_t it[5 + 2 * ROUTE_MAX_WORKERS];
	struct rworker *subw[ROUTE_MAX_WORKERS], *repw[ROUTE_MAX_WORKERS];
	while (!fi_stream_interrupted()) {
		int n = 0, nsub = 0, nrep = 0, i_c = -1, i_cm = -1, i_wm = -1, rc;
		it[n++] = (zmq_pollitem_t){r->wsock, 0, ZMQ_POLLIN, 0};
		it[n++] = (zmq_pollitem_t){NULL, r->efd, ZMQ_POLLIN, 0};
		if (r->wmon)
			i_wm = n, it[n++] = (zmq_pollitem_t){r->wmon, 0, ZMQ_POLLIN, 0};
		/* backpressure: clients are read only while the queue has room */
		if (r->csock && r->npend < r->o.max_pending)
			i_c = n, it[n++] = (zmq_pollitem_t){r->csock, 0, ZMQ_POLLIN, 0};
		if (r->cmon)
			i_cm = n, it[n++] = (zmq_pollitem_t){r->cmon, 0, ZMQ_POLLIN, 0};
		for (int i = 0; i < r->nw; i++)
			if (r->w[i]->sub) {
				subw[nsub++] = r->w[i];
				it[n++] = (zmq_pollitem_t){r->w[i]->sub, 0, ZMQ_POLLIN, 0};
			}
		for (int i = 0; i < r->nw; i++)
			if (r->w[i]->rep) {
				repw[nrep++] = r->w[i];
				it[n++] = (zmq_pollitem_t){r->w[i]->rep, 0, ZMQ_POLLIN, 0};
			}
		rc = zmq_poll(it, n, 50);
		if (rc < 0 && zmq_errno() != EINTR)
			return fi_fail(FI_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
		pthread_mutex_lock(&r->mu);
		if (rc > 0) {
			int base = n - nsub - nrep;
			for (int k = 0; k < 4096 && worker_msg(r); k++)
				;
			for (int k = 0; k < nsub; k++)
				if (it[base + k].revents & ZMQ_POLLIN)
					for (int j = 0; j < 64; j++) {
						int ev = 0;
						size_t el = sizeof ev;
						route_kv_event(r, subw[k]);
						if (zmq_getsockopt(subw[k]->sub, ZMQ_EVENTS, &ev, &el) ||
						    !(ev & ZMQ_POLLIN))
							break;
					}
			for (int k = 0; k < nrep; k++)
				if (it[base + nsub + k].revents & ZMQ_POLLIN)
					for (int j = 0; j < 1100; j++) {
						int ev = 0;
						size_t el = sizeof ev;
						route_kv_replay(r, repw[k]);
						if (zmq_getsockopt(repw[k]->rep, ZMQ_EVENTS, &ev, &el) ||
						    !(ev & ZMQ_POLLIN))
							break;
					}
			if (i_wm >= 0 && (it[i_wm].revents & ZMQ_POLLIN))
				for (int fd; (fd = monitor_fd(r->wmon)) != -2;)
					for (int i = 0; fd >= 0 && i < r->nw; i++)
						if (r->w[i]->fd == fd) {
							route_worker_dead(r, r->w[i], "its connection closed");
							break;
						}
			if (i_c >= 0 && (it[i_c].revents & ZMQ_POLLIN))
				for (int k = 0; k < 4096 && r->npend < r->o.max_pending && client_msg(r); k++)
					;
			if (i_cm >= 0 && (it[i_cm].revents & ZMQ_POLLIN))
				for (int fd; (fd = monitor_fd(r->cmon)) != -2;)
					for (size_t i = 0; fd >= 0 && i < r->clients.cap; i++) {
						struct rclient *c = r->clients.slot[i].val;
						if (r->clients.slot[i].key && c->fd == fd) {
							c->fd = -1;
							client_gone(r, c);
						}
					}
			if (it[1].revents & ZMQ_POLLIN)
				front(r);
		}
		{
			double now = route_now_ms();
			for (int i = 0; i < r->nw; i++)
				if (r->w[i]->replaying && now - r->w[i]->replay_t > 1000)
					r->w[i]->replaying = 0; /* unanswered: the next gap asks again */
			for (int i = 0; i < r->nw; i++)
				if (now - r->w[i]->last_seen > r->o.dead_ms) {
					route_worker_dead(r, r->w[i], "silent for a second");
					i = -1;
				}
		}
		dispatch(r);
		pthread_mutex_unlock(&r->mu);
	}
	return FI_OK;
}
