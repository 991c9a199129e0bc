/* stream: frames over pipes (self-delimiting msgpack) and ZeroMQ (one frame per message).
 *
 * ZeroMQ pattern (fi-frame(5), STREAMS): an input is one PULL socket that binds its
 * endpoints (fan-in: any number of producers connect); an output is one PUSH socket per
 * endpoint that connects (fan-out: frames go round-robin over the endpoints, skipping any
 * whose high-water mark is reached, and each gets its own eos at close). Bounded memory with
 * a slow consumer comes from SNDHWM/RCVHWM (frames) times max_frame (ZMQ_MAXMSGSIZE). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "frame_int.h"
#include "base/log.h"
#include "base/settings.h"
#include "stream.h"
#include "stream_int.h"
#include "stream_signal.h"

#define FLUSH_AT (64u << 10)

void fi_stream_opts_default(struct fi_stream_opts *o)
{
	memset(o, 0, sizeof *o);
	fi_frame_limits_default(&o->lim);
	o->hwm = 1000;
	o->linger_ms = 10000;
	o->eos_count = 1;
	o->send_eos = 1;
	o->connect_ms = (int)((fi_settings()->connect_timeout > 0 ? fi_settings()->connect_timeout : 10) * 1000);
	o->reply_ms = (int)((fi_settings()->reply_timeout > 0 ? fi_settings()->reply_timeout : 30) * 1000);
	o->idle_ms = -1;
}

static fi_err stream_new(struct fi_stream **sp, enum fi_stream_dir dir, const struct fi_stream_opts *o)
{
	struct fi_stream *s = calloc(1, sizeof *s);
	if (!s)
		return fi_fail(FI_ENOMEM, "stream");
	if (o)
		s->o = *o;
	else
		fi_stream_opts_default(&s->o);
	s->dir = dir;
	s->fd = -1;
	*sp = s;
	return FI_OK;
}

fi_err fi_stream_open_fd(struct fi_stream **sp, int fd, enum fi_stream_dir dir,
			 const struct fi_stream_opts *o)
{
	fi_err e = stream_new(sp, dir, o);
	if (e)
		return e;
	(*sp)->fd = fd;
	if (dir == FI_STREAM_IN && (e = fi_reader_open_fd(&(*sp)->rd, fd, &(*sp)->o.lim))) {
		free(*sp);
		*sp = NULL;
	}
	return e;
}

/* ZeroMQ endpoints have a scheme ("ipc://", "tcp://", lists of them) or a bind/connect
 * prefix; anything else is a file. */
static int is_endpoint(const char *spec)
{
	return spec[0] == '@' || spec[0] == '>' || strstr(spec, "://");
}

fi_err fi_stream_refuse_tty(const char *spec)
{
	if (spec && !strcmp(spec, "-") && isatty(1))
		return fi_fail(FI_EINVAL, "frames not written to a terminal: pipe them into fi-frame "
			       "or fi-tokenize -d, or use -f to force");
	return FI_OK;
}

fi_err fi_stream_open(struct fi_stream **sp, const char *spec, enum fi_stream_dir dir,
		      const struct fi_stream_opts *o)
{
	fi_err e;
	*sp = NULL;
	if (!spec || !*spec)
		return fi_fail(FI_EINVAL, "empty stream name");
	if (dir == FI_STREAM_OUT && !(o && o->tty_ok) && (e = fi_stream_refuse_tty(spec)))
		return e;
	if (!strcmp(spec, "-"))
		return fi_stream_open_fd(sp, dir == FI_STREAM_IN ? 0 : 1, dir, o);
	if (!is_endpoint(spec)) {
		int fd = dir == FI_STREAM_IN ? open(spec, O_RDONLY | O_CLOEXEC)
					     : open(spec, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
		if (fd < 0)
			return fi_fail(errno == ENOENT ? FI_ENOTFOUND : FI_EIO, "cannot open '%s': %s",
				       spec, strerror(errno));
		if ((e = fi_stream_open_fd(sp, fd, dir, o))) {
			close(fd);
			return e;
		}
		(*sp)->own_fd = 1;
		return FI_OK;
	}
	if ((e = stream_new(sp, dir, o)))
		return e;
	(*sp)->t_open = fi_now();
	if ((e = fi_stream_zmq_open(*sp, spec))) {
		fi_stream_zmq_close(*sp);
		free(*sp);
		*sp = NULL;
	}
	return e;
}

int fi_stream_broken(const struct fi_stream *s)
{
	return s->broken || (s->rd && fi_reader_broken(s->rd));
}

/* One ZeroMQ message is one frame, so its extent is always known: a bad message is a
 * per-frame error and the stream goes on. */
static fi_err zmq_read(struct fi_stream *s, struct fi_frame *f, int timeout_ms)
{
	double t0 = fi_now();
	memset(f, 0, sizeof *f);
	for (;;) {
		zmq_msg_t m;
		int more = 0, slice = 250;
		size_t ml = sizeof more;
		fi_err e;

		if (s->done) {
			f->type = FI_FRAME_EOS;
			return FI_OK;
		}
		if (fi_stream_interrupted() && !s->drain)
			return fi_fail(FI_EINTERRUPT, "interrupted");
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, s->sock[0], ZMQ_DONTWAIT) < 0) {
			zmq_pollitem_t it = { .socket = s->sock[0], .events = ZMQ_POLLIN };
			int err = errno;
			zmq_msg_close(&m);
			if (err != EAGAIN && err != EINTR)
				return fi_fail(FI_EIO, "zeromq receive: %s", zmq_strerror(err));
			if (timeout_ms >= 0) {
				int left = timeout_ms - (int)((fi_now() - t0) * 1000);
				if (left <= 0)
					return FI_OK; /* FI_FRAME_NONE */
				if (left < slice)
					slice = left;
			}
			if (zmq_poll(&it, 1, slice) < 0 && errno != EINTR)
				return fi_fail(FI_EIO, "zeromq poll: %s", zmq_strerror(errno));
			continue;
		}
		zmq_getsockopt(s->sock[0], ZMQ_RCVMORE, &more, &ml);
		if (s->router) {
			/* [identity, frame]: the first part says who sent it. */
			size_t n = zmq_msg_size(&m);
			s->peer_len = n <= sizeof s->peer ? n : 0;
			memcpy(s->peer, zmq_msg_data(&m), s->peer_len);
			zmq_msg_close(&m);
			zmq_msg_init(&m);
			if (!more || zmq_msg_recv(&m, s->sock[0], 0) < 0) {
				zmq_msg_close(&m);
				continue;
			}
			zmq_getsockopt(s->sock[0], ZMQ_RCVMORE, &more, &ml);
		}
		if (more) {
			/* Frames are single-part; drop the rest of a multipart message. */
			while (more) {
				zmq_msg_close(&m);
				zmq_msg_init(&m);
				if (zmq_msg_recv(&m, s->sock[0], 0) < 0)
					break;
				zmq_getsockopt(s->sock[0], ZMQ_RCVMORE, &more, &ml);
			}
			zmq_msg_close(&m);
			return fi_fail(FI_EFORMAT, "frame: multipart zeromq message");
		}
		msgpack_zone_clear(&s->zone);
		e = fi_frame_decode_zone(zmq_msg_data(&m), zmq_msg_size(&m), &s->o.lim, &s->zone, f);
		zmq_msg_close(&m);
		if (e)
			return e;
		if (f->type != FI_FRAME_EOS)
			return FI_OK;
		/* With N producers (fan-in) the input ends at the N-th eos; 0: never. */
		s->eos_seen++;
		if (s->o.eos_count > 0 && s->eos_seen >= s->o.eos_count)
			s->done = 1;
	}
}

fi_err fi_stream_read_timeout(struct fi_stream *s, struct fi_frame *f, int timeout_ms)
{
	if (s->dir != FI_STREAM_IN) {
		memset(f, 0, sizeof *f);
		return fi_fail(FI_ESTATE, "stream: reading an output stream");
	}
	if (s->rd)
		return fi_reader_next_timeout(s->rd, f, timeout_ms);
	return zmq_read(s, f, timeout_ms);
}

fi_err fi_stream_read(struct fi_stream *s, struct fi_frame *f)
{
	return fi_stream_read_timeout(s, f, -1);
}

static fi_err fd_write_all(struct fi_stream *s, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(s->fd, p, n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = s->fd, .events = POLLOUT };
			poll(&pf, 1, 250);
		} else if (w < 0 && errno != EINTR) {
			return fi_fail(FI_EIO, "stream: write: %s", strerror(errno));
		}
		/* Not stopped by a signal: half a frame would break the reader downstream, and the
		 * frames of a clean shutdown (done/cancel) must get out. A second signal ends us. */
	}
	return FI_OK;
}

fi_err fi_stream_flush(struct fi_stream *s)
{
	fi_err e;
	if (s->dir != FI_STREAM_OUT || s->nsock || !s->wbuf.len)
		return FI_OK;
	e = fd_write_all(s, s->wbuf.data, s->wbuf.len);
	s->wbuf.len = 0;
	return e;
}

/* A connecting stream whose first send has waited connect_ms with no peer connected: the
 * endpoint has no listener (a worker not started, a stale socket file). */
static int nobody_listening(struct fi_stream *s, const struct fi_stream *mon)
{
	if (s->sent || !mon->connecting || s->o.connect_ms < 0 ||
	    (fi_now() - s->t_open) * 1000 < s->o.connect_ms)
		return 0;
	for (int i = 0; i < mon->nsock; i++)
		if (!mon->mon[i] || fi_stream_zmq_connected((struct fi_stream *)mon, i))
			return 0;
	return 1;
}

/* A reply on a ROUTER: [peer, frame] to the client set by fi_stream_set_peer. The router is
 * mandatory: a client that is gone fails at once (EHOSTUNREACH); one at its high-water mark
 * is waited for, up to reply_ms. */
static fi_err zmq_send_peer(struct fi_stream *s, const void *p, size_t n)
{
	double t0 = fi_now();
	if (!s->to_len)
		return fi_fail(FI_EINVAL, "stream: a reply with no client");
	for (;;) {
		struct timespec ts = { 0, 1000 * 1000 };
		if (zmq_send(s->sock[0], s->to, s->to_len, ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0) {
			if (zmq_send(s->sock[0], p, n, 0) < 0)
				return fi_fail(FI_EIO, "zeromq send: %s", zmq_strerror(errno));
			return FI_OK;
		}
		if (errno == EHOSTUNREACH)
			return fi_fail(FI_ENOTFOUND, "client gone");
		if (errno != EAGAIN && errno != EINTR)
			return fi_fail(FI_EIO, "zeromq send: %s", zmq_strerror(errno));
		if (fi_stream_interrupted())
			return fi_fail(FI_EINTERRUPT, "interrupted");
		if ((fi_now() - t0) * 1000 > s->o.reply_ms)
			return fi_fail(FI_ENOTFOUND, "client not taking replies for %d s", s->o.reply_ms / 1000);
		nanosleep(&ts, NULL);
	}
}

/* Sends one message on the first output socket that takes it without blocking, starting
 * after the last one used; waits (zmq_poll) while all are at their high-water mark. */
static fi_err zmq_send_rr(struct fi_stream *s, const void *p, size_t n, int timeout_ms)
{
	double t0 = fi_now();
	const struct fi_stream *mon = s->borrowed ? s->src : s;
	if (s->router)
		return zmq_send_peer(s, p, n);
	for (;;) {
		zmq_pollitem_t it[FI_STREAM_MAX_EP];
		int slice = 250;
		for (int k = 0; k < s->nsock; k++) {
			int i = (s->rr + k) % s->nsock;
			if (zmq_send(s->sock[i], p, n, ZMQ_DONTWAIT) >= 0) {
				s->rr = i + 1;
				s->sent = 1;
				return FI_OK;
			}
			if (errno != EAGAIN && errno != EINTR)
				return fi_fail(FI_EIO, "zeromq send: %s", zmq_strerror(errno));
		}
		if (fi_stream_interrupted())
			return fi_fail(FI_EINTERRUPT, "interrupted");
		if (nobody_listening(s, mon))
			return fi_fail(FI_EIO, "cannot connect to '%s': nothing is listening (waited %d s)",
				       mon->ep[0], s->o.connect_ms / 1000);
		if (timeout_ms >= 0) {
			int left = timeout_ms - (int)((fi_now() - t0) * 1000);
			if (left <= 0)
				return fi_fail(FI_EFULL, "stream: consumer not taking frames (high-water mark reached)");
			if (left < slice)
				slice = left;
		}
		for (int i = 0; i < s->nsock; i++)
			it[i] = (zmq_pollitem_t){ .socket = s->sock[i], .events = ZMQ_POLLOUT };
		if (zmq_poll(it, s->nsock, slice) < 0 && errno != EINTR)
			return fi_fail(FI_EIO, "zeromq poll: %s", zmq_strerror(errno));
	}
}

static fi_err write_raw(struct fi_stream *s, const void *buf, size_t len, int timeout_ms)
{
	if (s->dir != FI_STREAM_OUT)
		return fi_fail(FI_ESTATE, "stream: writing an input stream");
	if (len > s->o.lim.max_frame)
		return fi_fail(FI_ERANGE, "stream: frame of %zu bytes exceeds the limit of %zu", len,
			       s->o.lim.max_frame);
	if (s->nsock)
		return zmq_send_rr(s, buf, len, timeout_ms);
	if (buf != s->wbuf.data) {
		fi_err e = fi_buf_append(&s->wbuf, buf, len);
		if (e)
			return e;
	}
	return s->wbuf.len >= FLUSH_AT ? fi_stream_flush(s) : FI_OK;
}

fi_err fi_stream_write_raw(struct fi_stream *s, const void *buf, size_t len)
{
	return write_raw(s, buf, len, -1);
}

fi_err fi_stream_write_timeout(struct fi_stream *s, const struct fi_frame *f, int timeout_ms)
{
	fi_err e;
	if (s->dir != FI_STREAM_OUT)
		return fi_fail(FI_ESTATE, "stream: writing an input stream");
	if (s->nsock) {
		s->wbuf.len = 0;
		if ((e = fi_frame_encode(f, &s->wbuf)))
			return e;
		return zmq_send_rr(s, s->wbuf.data, s->wbuf.len, timeout_ms);
	}
	/* Pipes: encode straight into the write buffer. */
	if ((e = fi_frame_encode(f, &s->wbuf)))
		return e;
	return s->wbuf.len >= FLUSH_AT ? fi_stream_flush(s) : FI_OK;
}

fi_err fi_stream_write(struct fi_stream *s, const struct fi_frame *f)
{
	return fi_stream_write_timeout(s, f, -1);
}

fi_err fi_stream_write_error(struct fi_stream *s, const char *id, fi_err code, const char *msg)
{
	struct fi_frame f;
	char idbuf[FI_FRAME_ERROR_ID_MAX + 1];
	fi_frame_init(&f, FI_FRAME_ERROR);
	f.id = (char *)fi_frame_error_id(id, idbuf);
	f.err.code = (unsigned)code < FI_ENCODE_COUNT ? code : FI_EINVAL;
	f.err.message = (char *)(msg ? msg : fi_strerror(code));
	return fi_stream_write(s, &f);
}

fi_err fi_stream_close(struct fi_stream *s)
{
	fi_err e = FI_OK;
	if (!s)
		return FI_OK;
	if (s->dir == FI_STREAM_OUT && !s->nsock)
		e = fi_stream_flush(s);
	if (s->dir == FI_STREAM_OUT && s->nsock && s->o.send_eos) {
		/* Every endpoint gets its eos, so each downstream stage finishes. */
		struct fi_buf b = { 0 };
		struct fi_frame f;
		fi_frame_init(&f, FI_FRAME_EOS);
		if (!fi_frame_encode(&f, &b)) {
			for (int i = 0; i < s->nsock; i++) {
				double t0 = fi_now();
				while (zmq_send(s->sock[i], b.data, b.len, ZMQ_DONTWAIT) < 0 &&
				       (errno == EAGAIN || errno == EINTR)) {
					zmq_pollitem_t it = { .socket = s->sock[i], .events = ZMQ_POLLOUT };
					/* A connected consumer is only slow (its queue is full): wait
					 * for it as for the frames before; linger_ms once none is. */
					if (fi_stream_zmq_connected(s, i))
						t0 = fi_now();
					if ((fi_now() - t0) * 1000 > s->o.linger_ms || fi_stream_interrupted()) {
						fi_warn("%s: consumer gone, end of stream not delivered", s->ep[i]);
						break;
					}
					zmq_poll(&it, 1, 100);
				}
			}
		}
		fi_buf_free(&b);
	}
	if (s->dir == FI_STREAM_OUT && s->nsock)
		fi_stream_zmq_drain(s);
	fi_stream_zmq_close(s);
	fi_reader_close(s->rd);
	if (s->own_fd && close(s->fd) && !e && s->dir == FI_STREAM_OUT)
		e = fi_fail(FI_EIO, "closing the output: %s", strerror(errno));
	fi_buf_free(&s->wbuf);
	free(s);
	return e;
}

fi_err fi_stream_open_reply(struct fi_stream **out, struct fi_stream *in)
{
	struct fi_stream *s;
	fi_err e;
	*out = NULL;
	if (!in->router && !in->dealer)
		return fi_fail(FI_EINVAL, "stream: replies need a ROUTER or DEALER input");
	if ((e = stream_new(&s, FI_STREAM_OUT, &in->o)))
		return e;
	s->o.send_eos = 0;
	s->borrowed = 1;
	s->src = in;
	s->router = in->router;
	s->dealer = in->dealer;
	s->ctx = in->ctx;
	s->sock[0] = in->sock[0];
	s->nsock = 1;
	s->t_open = in->t_open;
	*out = s;
	return FI_OK;
}

const uint8_t *fi_stream_peer(const struct fi_stream *in, size_t *len)
{
	*len = in->router ? in->peer_len : 0;
	return in->peer;
}

void fi_stream_set_peer(struct fi_stream *out, const uint8_t *peer, size_t len)
{
	out->to_len = len <= sizeof out->to ? len : 0;
	if (out->to_len)
		memcpy(out->to, peer, out->to_len);
}

int fi_stream_is_router(const struct fi_stream *s)
{
	return s->router;
}

const char *fi_stream_key(const uint8_t *peer, size_t len, const char *id, char *buf)
{
	static const char hex[] = "0123456789abcdef";
	size_t k = 0;
	if (!len)
		return id;
	for (size_t i = 0; i < len && i < FI_STREAM_PEER_MAX; i++) {
		buf[k++] = hex[peer[i] >> 4];
		buf[k++] = hex[peer[i] & 15];
	}
	buf[k++] = '/';
	snprintf(buf + k, FI_STREAM_KEY_MAX - k, "%s", id ? id : "");
	return buf;
}

void *fi_stream_zmq_socket(struct fi_stream *s)
{
	return s->nsock ? s->sock[0] : NULL;
}

int fi_stream_fd(const struct fi_stream *s)
{
	return s->nsock ? -1 : s->fd;
}

const char *fi_stream_endpoint(struct fi_stream *s)
{
	size_t n = sizeof s->last_ep;
	if (!s->nsock || zmq_getsockopt(s->sock[0], ZMQ_LAST_ENDPOINT, s->last_ep, &n))
		return "-";
	return s->last_ep;
}

fi_err fi_stream_take(struct fi_stream *in, struct fi_stream *out, int max,
		      int (*busy)(void *user), int (*take)(void *user, struct fi_frame *f, fi_err *fatal),
		      void *user, int *eof, int *broken, int *bad)
{
	struct fi_frame f;
	fi_err e = FI_OK;
	for (int k = 0; !*eof && !e && k < max; k++) {
		fi_frame_init(&f, FI_FRAME_NONE);
		e = fi_stream_read_timeout(in, &f, busy(user) ? 0 : in->o.idle_ms);
		if (out->router)
			fi_stream_set_peer(out, in->peer, in->peer_len);
		if (e == FI_EFORMAT || e == FI_ERANGE || e == FI_EUNSUPPORTED) {
			if (fi_stream_broken(in)) {
				*eof = *broken = 1;
				e = FI_OK;
				fi_frame_free(&f);
				break;
			}
			if (!(*bad)++)
				fi_warn("unreadable frame: %s (text goes through fi-tokenize first)",
					fi_errmsg());
			e = fi_stream_write_error(out, f.id, e, fi_errmsg());
			if (e == FI_ENOTFOUND && out->router)
				e = FI_OK; /* its sender is gone */
			fi_frame_free(&f);
			continue;
		}
		if (e || f.type == FI_FRAME_NONE) {
			fi_frame_free(&f);
			break;
		}
		*eof = take(user, &f, &e);
		fi_frame_free(&f);
	}
	return e;
}

fi_err fi_stream_drain(struct fi_stream *in, struct fi_stream *out, const char *who,
		       unsigned pass, int quiet_ms, unsigned long *n_failed)
{
	char msg[128];
	struct fi_frame f;
	fi_err e = FI_OK, r;
	snprintf(msg, sizeof msg, "%s is shutting down", who);
	in->drain = 1;
	if (in->rd)
		fi_reader_set_drain(in->rd, 1);
	while (!e) {
		fi_frame_init(&f, FI_FRAME_NONE);
		r = fi_stream_read_timeout(in, &f, quiet_ms);
		if (out->router)
			fi_stream_set_peer(out, in->peer, in->peer_len);
		if (r == FI_EFORMAT || r == FI_ERANGE || r == FI_EUNSUPPORTED) {
			/* an unreadable frame is answered as fi_stream_take answers it */
			if (!fi_stream_broken(in)) {
				e = fi_stream_write_error(out, f.id, r, fi_errmsg());
				if (e == FI_ENOTFOUND && out->router)
					e = FI_OK;
				(*n_failed)++;
				fi_frame_free(&f);
				continue;
			}
		}
		if (r || f.type == FI_FRAME_NONE || f.type == FI_FRAME_EOS) {
			fi_frame_free(&f);
			break;
		}
		if (f.type == FI_FRAME_REQUEST) {
			e = fi_stream_write_error(out, f.id, FI_EINTERRUPT, msg);
			if (e == FI_ENOTFOUND && out->router)
				e = FI_OK;
			(*n_failed)++;
		} else if (pass & (1u << f.type)) {
			e = fi_stream_write(out, &f);
			*n_failed += f.type == FI_FRAME_ERROR;
		}
		fi_frame_free(&f);
	}
	in->drain = 0;
	if (in->rd)
		fi_reader_set_drain(in->rd, 0);
	if (!e)
		e = fi_stream_flush(out);
	return e;
}
