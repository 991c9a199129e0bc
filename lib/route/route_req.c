/* route_req: a request's way through fi-route (route.h): the pending list and the workers'
 * lists, frames from clients in, frames from workers back, replies, cancels, dispatch to the
 * cheapest worker, and the requests of a worker that leaves. route_core.c's event loop calls
 * in here; the worker registry (route_workers.c) is below. */
#define _GNU_SOURCE
#include <errno.h>
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

void route_req_free(struct rreq *q)
{
	if (!q)
		return;
	free(q->cid);
	free(q->frame);
	free(q->keys);
	free(q);
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

static void pend_front(struct fi_route *r, struct rreq *q)
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


/* Sends one encoded frame to a frame client: blocking, never dropped (ROUTER_MANDATORY);
 * a client that is gone has its requests cancelled. */
static void to_client(struct fi_route *r, struct rclient *c, const struct fi_buf *b)
{
	if (zmq_send(r->csock, c->ident, c->ilen, ZMQ_SNDMORE) < 0 ||
	    zmq_send(r->csock, b->data, b->len, 0) < 0) {
		if (zmq_errno() == EHOSTUNREACH)
			route_client_gone(r, c);
	}
}

void route_to_http(struct hreq *h, const struct fi_frame *f)
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
	route_req_free(q);
}

/* Sends f (a reply, id already the client's) to q's client. */
static void reply(struct fi_route *r, struct rreq *q, struct fi_frame *f)
{
	if (q->http) {
		route_to_http(q->http, f);
		return;
	}
	r->buf.len = 0;
	if (fi_frame_encode(f, &r->buf))
		return;
	to_client(r, q->client, &r->buf);
}

static void req_fail(struct fi_route *r, struct rreq *q, fi_err code, const char *msg)
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
void route_req_cancel(struct fi_route *r, struct rreq *q, int tell)
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

void route_client_gone(struct fi_route *r, struct rclient *c)
{
	/* every request of c: nobody will read their replies */
	for (size_t i = 0; i < r->by_rid.cap && c->active; i++) {
		struct rreq *q = r->by_rid.slot[i].val;
		if (r->by_rid.slot[i].key && q->client == c) {
			if (!q->w) {
				route_req_cancel(r, q, 0);
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
fi_err route_admit(struct fi_route *r, struct rreq *q, struct fi_frame *f)
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
			if ((e = route_admit(r, q, &f))) {
				reply_error(r, c, f.id, e, fi_errmsg());
				if (rmap_get(&r->by_rid, &q->rid, sizeof q->rid) == q)
					rmap_del(&r->by_rid, &q->rid, sizeof q->rid);
				route_req_free(q);
			} else {
				rmap_put(&r->by_cid, key, kn, q);
				c->active++;
			}
		}
	} else if (f.type == FI_FRAME_CANCEL) {
		struct rreq *q = rmap_get(&r->by_cid, key, kn);
		if (q)
			route_req_cancel(r, q, 1);
	} else if (f.type != FI_FRAME_EOS) {
		reply_error(r, c, f.id, FI_EINVAL, "fi-route takes request and cancel frames");
	}
	fi_frame_free(&f);
}

/* Reads one message from the client socket: [identity] [empty]? frame... */
int route_client_msg(struct fi_route *r)
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

/* A worker's token, done or error frame for one of its requests: back to the client. */
static void pass_back(struct fi_route *r, struct rworker *w, struct fi_frame *f)
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
		route_note_work(r, w, f->done.gen_tokens);
		reply(r, q, f);
		req_end(r, q);
	} else if (f->type == FI_FRAME_ERROR) {
		w->n_failed++;
		r->n_err++;
		reply(r, q, f);
		req_end(r, q);
	}
}

/* A worker leaves: its requests that got no token yet go back to the head of the queue
 * (retried on another worker), the others fail with an error frame; then the registry
 * forgets it. */
void route_worker_dead(struct fi_route *r, struct rworker *w, const char *why)
{
	if (r->o.verbose >= 0)
		fi_warn("worker %s left: %s", w->name, why);
	while (w->reqs) {
		struct rreq *q = w->reqs;
		w->reqs = q->next;
		if (w->reqs)
			w->reqs->prev = NULL;
		q->prev = q->next = NULL;
		q->w = NULL;
		if (!q->ntok_out && !q->cancelled) {
			r->n_retry++;
			pend_front(r, q);
		} else {
			char msg[200];
			snprintf(msg, sizeof msg, "worker %s failed during the request: %s", w->name, why);
			req_fail(r, q, FI_EIO, msg);
		}
	}
	route_worker_remove(r, w);
}

/* A worker's hello, load or bye (m, of type type). */
static void control(struct fi_route *r, const uint8_t *ident, size_t ilen, int fd,
		    const msgpack_object *m, const char *type)
{
	struct rworker *w = rmap_get(&r->by_ident, ident, ilen);
	/* Workers say hello again every second on the same connection (the same ident; a
	 * worker that restarts connects anew and gets another): from one we know it is only
	 * a heartbeat. One we do not know registers: it is new, or it was here before we
	 * restarted, or before we took it for dead. */
	if (!strcmp(type, "hello") && !w) {
		route_worker_hello(r, ident, ilen, fd, m);
		return;
	}
	if (!w)
		return; /* not registered yet (its next hello registers it): ignored */
	w->last_seen = route_now_ms();
	if (fd >= 0)
		w->fd = fd;
	if (!strcmp(type, "load"))
		route_worker_load(w, m);
	else if (!strcmp(type, "bye"))
		route_worker_dead(r, w, "it said bye");
}

int route_worker_msg(struct fi_route *r)
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
					pass_back(r, w, &f);
				}
			} else if (!e || e == FI_EUNSUPPORTED) {
				/* hello, load, bye: read from the msgpack itself, whether or not the
				 * frame decoder knows these types */
				msgpack_unpacked u;
				char type[16];
				if (!mp_unpack(d, n, &u)) {
					if (!mp_str(&u.data, "type", type, sizeof type))
						control(r, zmq_msg_data(&id), zmq_msg_size(&id), fd, &u.data,
							type);
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

void route_dispatch(struct fi_route *r)
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
