/* route_core: fi-route's event loop (route.h): the client and worker sockets, the front's
 * queue, socket monitors; what happens to each request is route_req.c's. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "base/log.h"
#include "frame/stream.h"
#include "frame/stream_int.h"
#include "route_int.h"

void fi_route_opts_default(struct fi_route_opts *o)
{
	memset(o, 0, sizeof *o);
	o->http_queue = 256;
	o->max_pending = 1024;
	o->dead_ms = 1000;
}

/* ---- sockets ---- */

static fi_err bind_router(struct fi_route *r, void **sock, const char *ep, const char *what,
			  void **mon, const char *mon_ep)
{
	char addr[512];
	int one = 1, zero = 0, hwm = 100000, v6 = 0;
	if (strncmp(ep, "ipc://", 6) && strncmp(ep, "tcp://", 6) && strncmp(ep, "inproc://", 9))
		return fi_fail(FI_EINVAL, "'%s': %s needs a ZeroMQ endpoint (ipc://PATH or tcp://HOST:PORT)",
			       ep, what);
	snprintf(addr, sizeof addr, "%s", ep);
	if (!strncmp(ep, "tcp://", 6) && !route_tcp_loopback(ep, addr, sizeof addr, &v6) && !r->o.curve_key)
		return fi_fail(FI_EINVAL, "'%s': binding beyond loopback needs --curve-key", ep);
	if (!(*sock = zmq_socket(r->ctx, ZMQ_ROUTER)))
		return fi_fail(FI_EIO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
	if (v6)
		zmq_setsockopt(*sock, ZMQ_IPV6, &one, sizeof one);
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
		route_req_free(q);
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
			route_to_http(h, &f);
			hreq_put(h);
			continue;
		}
		q->http = h; /* the reference submit took */
		snprintf(q->session, sizeof q->session, "%s", h->session);
		if (route_admit(r, q, &h->f)) {
			struct fi_frame f;
			fi_frame_init(&f, FI_FRAME_ERROR);
			f.err.code = fi_errcode();
			f.err.message = (char *)fi_errmsg();
			route_to_http(h, &f);
			if (rmap_get(&r->by_rid, &q->rid, sizeof q->rid) == q)
				rmap_del(&r->by_rid, &q->rid, sizeof q->rid);
			hreq_put(h);
			route_req_free(q);
			continue;
		}
		pthread_mutex_lock(&h->mu);
		h->rid = q->rid;
		int gone = h->cancelled; /* before we saw it */
		pthread_mutex_unlock(&h->mu);
		if (gone)
			route_req_cancel(r, q, 0);
	}
	for (size_t i = 0; i < r->ncancel; i++) {
		struct rreq *q = rmap_get(&r->by_rid, &r->cancels[i], sizeof r->cancels[i]);
		if (q)
			route_req_cancel(r, q, 0);
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
			for (int k = 0; k < 4096 && route_worker_msg(r); k++)
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
				for (int k = 0; k < 4096 && r->npend < r->o.max_pending && route_client_msg(r); k++)
					;
			if (i_cm >= 0 && (it[i_cm].revents & ZMQ_POLLIN))
				for (int fd; (fd = monitor_fd(r->cmon)) != -2;)
					for (size_t i = 0; fd >= 0 && i < r->clients.cap; i++) {
						struct rclient *c = r->clients.slot[i].val;
						if (r->clients.slot[i].key && c->fd == fd) {
							c->fd = -1;
							route_client_gone(r, c);
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
		route_dispatch(r);
		pthread_mutex_unlock(&r->mu);
	}
	return FI_OK;
}
