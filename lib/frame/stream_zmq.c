/* stream: ZeroMQ endpoints: parsing, bind/connect rules, socket options and CURVE keys. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>
#include <zmq.h>

#include "base/log.h"
#include "stream_int.h"

/* inproc:// only connects sockets of one context, so every stream that uses it shares one;
 * tcp and ipc streams get their own, whose termination at close is what waits (up to
 * linger_ms) for queued frames to leave. */
static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static void *inproc_ctx;
static int inproc_refs;

static void *ctx_get(int inproc)
{
	void *c;
	if (!inproc)
		return zmq_ctx_new();
	pthread_mutex_lock(&ctx_mu);
	if (!inproc_ctx)
		inproc_ctx = zmq_ctx_new();
	if ((c = inproc_ctx))
		inproc_refs++;
	pthread_mutex_unlock(&ctx_mu);
	return c;
}

static void ctx_put(void *c, int inproc)
{
	if (!c)
		return;
	if (!inproc) {
		zmq_ctx_term(c);
		return;
	}
	pthread_mutex_lock(&ctx_mu);
	if (--inproc_refs == 0) {
		zmq_ctx_term(inproc_ctx);
		inproc_ctx = NULL;
	}
	pthread_mutex_unlock(&ctx_mu);
}

static char *trim(char *p)
{
	char *e;
	while (isspace((unsigned char)*p))
		p++;
	e = p + strlen(p);
	while (e > p && isspace((unsigned char)e[-1]))
		*--e = 0;
	return p;
}

fi_err fi_curve_load(const char *path, uint8_t pub[32], uint8_t sec[32], uint8_t server[32],
		     int *has_server)
{
	FILE *f = fopen(path, "r");
	struct stat st;
	char line[512];
	int have = 0, ln = 0;

	*has_server = 0;
	if (!f)
		return fi_fail(FI_EIO, "cannot open '%s': %s", path, strerror(errno));
	if (!fstat(fileno(f), &st) && (st.st_mode & 077))
		fi_warn("'%s' holds a secret key and is readable by others (chmod 600)", path);
	while (fgets(line, sizeof line, f)) {
		char *eq, *name, *val;
		uint8_t *dst;
		size_t n;
		ln++;
		name = trim(line);
		if (!*name || *name == '#' || !(eq = strchr(name, '=')))
			continue;
		*eq = 0;
		name = trim(name);
		val = trim(eq + 1);
		n = strlen(val);
		if (n >= 2 && val[0] == '"' && val[n - 1] == '"') {
			val[n - 1] = 0;
			val++;
		}
		if (!strcmp(name, "public-key"))
			dst = pub, have |= 1;
		else if (!strcmp(name, "secret-key"))
			dst = sec, have |= 2;
		else if (!strcmp(name, "server-key"))
			dst = server, *has_server = 1;
		else
			continue;
		if (strlen(val) != 40 || !zmq_z85_decode(dst, val)) {
			fclose(f);
			return fi_fail(FI_EFORMAT, "'%s' line %d: %s is not a 40-character Z85 key", path, ln, name);
		}
	}
	fclose(f);
	if ((have & 3) != 3)
		return fi_fail(FI_EFORMAT, "'%s': needs a public-key and a secret-key line", path);
	return FI_OK;
}

static int is_loopback(const char *host, size_t n)
{
	return (n >= 4 && !memcmp(host, "127.", 4)) || (n == 9 && !memcmp(host, "localhost", 9)) ||
	       (n == 5 && !memcmp(host, "[::1]", 5));
}

/* An empty host or "*" binds loopback (tcp://:7000); an explicit address binds as given. */
static fi_err tcp_bind_addr(const char *ep, char *out, size_t cap, int *loopback, int *ipv6)
{
	const char *host = ep + 6, *colon = strrchr(host, ':');
	size_t hl;
	if (!colon || !colon[1])
		return fi_fail(FI_EINVAL, "'%s': a tcp endpoint needs a port (tcp://HOST:PORT)", ep);
	hl = (size_t)(colon - host);
	*ipv6 = hl && host[0] == '[';
	if (!hl || (hl == 1 && host[0] == '*')) {
		snprintf(out, cap, "tcp://127.0.0.1%s", colon);
		*loopback = 1;
		return FI_OK;
	}
	snprintf(out, cap, "%s", ep);
	*loopback = is_loopback(host, hl);
	return FI_OK;
}

static fi_err sock_opts(struct fi_stream *s, void *sock, int ipv6)
{
	int64_t maxmsg = (int64_t)s->o.lim.max_frame;
	int hwm = s->o.hwm > 0 ? s->o.hwm : 1000;
	int linger = s->o.linger_ms;
	int one = 1;

	if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
	    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm) ||
	    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm) ||
	    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) ||
	    (ipv6 && zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one)) ||
	    /* Frames never queue for a peer that is not connected: with fan-out a dead worker
	     * does not swallow them, and a producer waits for its consumer. */
	    ((s->dir == FI_STREAM_OUT || s->dealer) &&
	     zmq_setsockopt(sock, ZMQ_IMMEDIATE, &one, sizeof one)))
		return fi_fail(FI_EIO, "zeromq socket options: %s", zmq_strerror(errno));
	return FI_OK;
}

static fi_err curve_opts(struct fi_stream *s, void *sock, int bind)
{
	uint8_t pub[32], sec[32], srv[32];
	int has_srv, one = 1;
	fi_err e;

	if (!s->o.curve_key)
		return FI_OK;
	if (!zmq_has("curve"))
		return fi_fail(FI_EUNSUPPORTED, "this libzmq has no CURVE support");
	if ((e = fi_curve_load(s->o.curve_key, pub, sec, srv, &has_srv)))
		return e;
	if (bind) {
		if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
		    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 32))
			return fi_fail(FI_EIO, "zeromq CURVE server: %s", zmq_strerror(errno));
		return FI_OK;
	}
	if (!has_srv)
		return fi_fail(FI_EINVAL, "'%s': connecting with CURVE needs a server-key line", s->o.curve_key);
	if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, srv, 32) ||
	    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 32) ||
	    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 32))
		return fi_fail(FI_EIO, "zeromq CURVE client: %s", zmq_strerror(errno));
	return FI_OK;
}

/* libzmq's linger counts a frame as delivered once its engine has taken it from the queue,
 * not once the kernel has it: over ipc:// (small socket buffers) frames queued behind a slow
 * consumer are dropped when the producer closes (libzmq issue 4660). So outputs watch their
 * connections (the socket monitor reports each one's descriptor) and close waits until the
 * kernel holds nothing unread by the consumer (SIOCOUTQ == 0). */
static fi_err monitor(struct fi_stream *s, int i)
{
	char addr[64];
	snprintf(addr, sizeof addr, "inproc://fi-monitor-%p-%d", (void *)s, i);
	if (zmq_socket_monitor(s->sock[i], addr, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_ACCEPTED |
			       ZMQ_EVENT_DISCONNECTED) ||
	    !(s->mon[i] = zmq_socket(s->ctx, ZMQ_PAIR)) || zmq_connect(s->mon[i], addr))
		return fi_fail(FI_EIO, "zeromq monitor: %s", zmq_strerror(errno));
	return FI_OK;
}

#define MAX_CONN FI_STREAM_MAX_CONN

/* Applies pending monitor events to the set of connected descriptors. */
static void monitor_poll(void *mon, int *fds, int *nfd)
{
	for (;;) {
		uint8_t ev[6];
		uint16_t id;
		uint32_t fd;
		int more = 0;
		size_t ml = sizeof more;
		if (zmq_recv(mon, ev, sizeof ev, ZMQ_DONTWAIT) != 6)
			return;
		zmq_getsockopt(mon, ZMQ_RCVMORE, &more, &ml);
		if (more) {
			char ep[8];
			zmq_recv(mon, ep, sizeof ep, 0);
		}
		memcpy(&id, ev, 2);
		memcpy(&fd, ev + 2, 4);
		if (id == ZMQ_EVENT_DISCONNECTED) {
			for (int k = 0; k < *nfd; k++)
				if (fds[k] == (int)fd)
					fds[k] = fds[--*nfd];
		} else if (*nfd < MAX_CONN) {
			fds[(*nfd)++] = (int)fd;
		}
	}
}

int fi_stream_zmq_connected(struct fi_stream *s, int i)
{
	if (s->mon[i])
		monitor_poll(s->mon[i], s->conn[i], &s->nconn[i]);
	return s->nconn[i];
}

void fi_stream_zmq_drain(struct fi_stream *s)
{
	for (int i = 0; i < s->nsock; i++) {
		double gone = 0; /* when the last consumer left (0: one is connected) */
		int quiet = 0;
		if (!s->mon[i])
			continue;
		while (quiet < 2 && !fi_stream_interrupted()) {
			struct timespec ts = { 0, 10 * 1000 * 1000 };
			int busy = 0, n = fi_stream_zmq_connected(s, i);
			for (int k = 0; k < n; k++) {
				int q = 0;
				if (!ioctl(s->conn[i][k], SIOCOUTQ, &q) && q > 0)
					busy = 1;
			}
			/* A slow consumer is waited for; with none connected, linger_ms. */
			if (n)
				gone = 0;
			else if (!gone)
				gone = fi_now();
			else if ((fi_now() - gone) * 1000 > s->o.linger_ms)
				break;
			quiet = busy ? 0 : quiet + 1;
			nanosleep(&ts, NULL);
		}
	}
}

/* Before binding ipc://PATH. libzmq removes whatever is at PATH before it binds, which
 * would silently take the endpoint from a live worker (whose clients then hang) or delete a
 * file given by mistake. So: a socket someone accepts on is "address in use"; a socket file
 * nobody listens on (its owner died) is stale and is replaced; anything else is refused. */
static fi_err ipc_check(const char *ep)
{
	const char *path = ep + 6;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r, err;

	if (lstat(path, &st))
		return FI_OK;
	if (!S_ISSOCK(st.st_mode))
		return fi_fail(FI_EEXIST, "cannot bind '%s': '%s' exists and is not a socket", ep, path);
	if (strlen(path) >= sizeof sa.sun_path)
		return FI_OK; /* libzmq refuses it with its own message */
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return FI_OK;
	r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
	err = errno;
	close(fd);
	if (!r)
		return fi_fail(FI_EBUSY, "cannot bind '%s': address in use (a live process serves it)", ep);
	if (err == ECONNREFUSED) {
		fi_info("'%s': removing a stale socket file (its owner is gone)", path);
		unlink(path);
	}
	return FI_OK;
}

static fi_err attach(struct fi_stream *s, void *sock, const char *ep, int bind)
{
	char addr[512];
	int loop = 1, ipv6 = 0;
	fi_err e;

	if (strlen(ep) >= sizeof addr - 16)
		return fi_fail(FI_EINVAL, "'%.64s...': endpoint too long", ep);
	snprintf(addr, sizeof addr, "%s", ep);
	if (bind && !strncmp(ep, "tcp://", 6) && (e = tcp_bind_addr(ep, addr, sizeof addr, &loop, &ipv6)))
		return e;
	if (!bind && !strncmp(ep, "tcp://", 6) && ep[6] == '[')
		ipv6 = 1;
	if ((e = sock_opts(s, sock, ipv6)) || (e = curve_opts(s, sock, bind)))
		return e;
	if (bind && !strncmp(ep, "ipc://", 6) && (e = ipc_check(ep)))
		return e;
	if (!bind)
		s->connecting = 1;
	if (bind && !loop && !s->o.curve_key)
		fi_warn("binding '%s' beyond loopback without CURVE keys: anyone who reaches it can send frames (--curve-key)",
			addr);
	if ((bind ? zmq_bind(sock, addr) : zmq_connect(sock, addr)) < 0)
		return fi_fail(FI_EIO, "cannot %s '%s': %s", bind ? "bind" : "connect to", addr,
			       zmq_strerror(errno));
	/* libzmq leaves the socket file behind; a later client would connect to it and wait */
	if (bind && !strncmp(ep, "ipc://", 6) && s->n_ipc < FI_STREAM_MAX_EP)
		s->ipc_files[s->n_ipc++] = strdup(ep + 6);
	return FI_OK;
}

fi_err fi_stream_zmq_open(struct fi_stream *s, const char *spec)
{
	char *copy = strdup(spec), *save = NULL, *tok;
	const char *eps[FI_STREAM_MAX_EP];
	int bind[FI_STREAM_MAX_EP], n = 0, inproc = 0, nbind = 0;
	fi_err e = FI_OK;

	if (!copy)
		return fi_fail(FI_ENOMEM, "stream");
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int b = s->dir == FI_STREAM_IN && !s->o.dealer;
		if (*tok == '@' || *tok == '>')
			b = *tok++ == '@';
		if (strncmp(tok, "ipc://", 6) && strncmp(tok, "tcp://", 6) && strncmp(tok, "inproc://", 9)) {
			e = fi_fail(FI_EINVAL, "'%s': not '-' or a ZeroMQ endpoint (ipc://, tcp://, inproc://)", tok);
			goto out;
		}
		if (n == FI_STREAM_MAX_EP) {
			e = fi_fail(FI_ERANGE, "'%s': more than %d endpoints", spec, FI_STREAM_MAX_EP);
			goto out;
		}
		inproc |= !strncmp(tok, "inproc://", 9);
		nbind += b;
		bind[n] = b;
		eps[n++] = tok;
	}
	if (!n) {
		e = fi_fail(FI_EINVAL, "'%s': no endpoint", spec);
		goto out;
	}
	if (s->o.curve_key && nbind && nbind != n) {
		e = fi_fail(FI_EINVAL, "'%s': with CURVE keys a stream either binds or connects, not both", spec);
		goto out;
	}
	if (!msgpack_zone_init(&s->zone, 4096)) {
		e = fi_fail(FI_ENOMEM, "msgpack zone");
		goto out;
	}
	s->zone_ok = 1;
	s->shared_ctx = inproc;
	if (!(s->ctx = ctx_get(inproc))) {
		e = fi_fail(FI_EIO, "zeromq context: %s", zmq_strerror(errno));
		goto out;
	}
	s->router = s->dir == FI_STREAM_IN && s->o.router;
	s->dealer = s->dir == FI_STREAM_IN && !s->router && s->o.dealer;
	for (int i = 0; i < n && !e; i++) {
		void *sock;
		if (s->dir == FI_STREAM_OUT || i == 0) {
			int type = s->dir == FI_STREAM_OUT ? ZMQ_PUSH : s->router ? ZMQ_ROUTER
				 : s->dealer ? ZMQ_DEALER : ZMQ_PULL, one = 1;
			if (!(sock = zmq_socket(s->ctx, type))) {
				e = fi_fail(FI_EIO, "zeromq socket: %s", zmq_strerror(errno));
				break;
			}
			s->ep[s->nsock] = strdup(eps[i]);
			s->sock[s->nsock++] = sock;
			/* A reply to a client that is gone fails (EHOSTUNREACH) instead of vanishing,
			 * and one at a slow client's high-water mark waits (EAGAIN) instead of being
			 * dropped: nothing is lost silently. */
			if (s->router && zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one)) {
				e = fi_fail(FI_EIO, "zeromq socket options: %s", zmq_strerror(errno));
				break;
			}
			if ((s->dir == FI_STREAM_OUT || s->dealer) && strncmp(eps[i], "inproc://", 9) &&
			    (e = monitor(s, s->nsock - 1)))
				break;
		}
		if (s->dealer && i > 0) {
			e = fi_fail(FI_EINVAL, "'%s': a client connects to one endpoint", spec);
			break;
		}
		e = attach(s, s->sock[s->nsock - 1], eps[i], bind[i]);
	}
out:
	free(copy);
	return e;
}

void fi_stream_zmq_close(struct fi_stream *s)
{
	if (s->borrowed) {
		s->nsock = 0;
		return;
	}
	for (int i = 0; i < s->nsock; i++) {
		if (s->mon[i]) {
			zmq_socket_monitor(s->sock[i], NULL, 0);
			zmq_close(s->mon[i]);
			s->mon[i] = NULL;
		}
		zmq_close(s->sock[i]);
		free(s->ep[i]);
	}
	s->nsock = 0;
	ctx_put(s->ctx, s->shared_ctx);
	for (int i = 0; i < s->n_ipc; i++) {
		struct stat st;
		if (s->ipc_files[i] && !lstat(s->ipc_files[i], &st) && S_ISSOCK(st.st_mode))
			unlink(s->ipc_files[i]);
		free(s->ipc_files[i]);
	}
	s->n_ipc = 0;
	s->ctx = NULL;
	if (s->zone_ok)
		msgpack_zone_destroy(&s->zone);
	s->zone_ok = 0;
}
