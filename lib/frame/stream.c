/* stream: frames over pipes (self-delimiting msgpack) and ZeroMQ (one frame per message).
 *
 * ZeroMQ pattern (fi-frame(5), STREAMS): an input is one PULL socket that binds its
 * endpoints (fan-in: any number of producers connect); an output is one PUSH socket per
 * endpoint that connects (fan-out: frames go round-robin over the endpoints, skipping any
 * whose high-water mark is reached, and each gets its own eos at close). Bounded memory with
 * a slow consumer comes from SNDHWM/RCVHWM (frames) times max_frame (ZMQ_MAXMSGSIZE). */
#include <errno.h>
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
#include "stream.h"
#include "stream_int.h"

#define FLUSH_AT (64u << 10)

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	/* A second signal while shutting down is not ignored: the default action ends us. */
	if (interrupted) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
	interrupted = 1;
}

void fi_stream_catch_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int fi_stream_interrupted(void)
{
	return interrupted;
}

void fi_stream_set_interrupted(int on)
{
	interrupted = on ? 1 : 0;
}

void fi_stream_opts_default(struct fi_stream_opts *o)
{
	memset(o, 0, sizeof *o);
	fi_frame_limits_default(&o->lim);
	o->hwm = 1000;
	o->linger_ms = 10000;
	o->eos_count = 1;
	o->send_eos = 1;
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
	if ((e = stream_new(sp, dir, o)))
		return e;
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
		if (interrupted)
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

/* Sends one message on the first output socket that takes it without blocking, starting
 * after the last one used; waits (zmq_poll) while all are at their high-water mark. */
static fi_err zmq_send_rr(struct fi_stream *s, const void *p, size_t n, int timeout_ms)
{
	double t0 = fi_now();
	for (;;) {
		zmq_pollitem_t it[FI_STREAM_MAX_EP];
		int slice = 250;
		for (int k = 0; k < s->nsock; k++) {
			int i = (s->rr + k) % s->nsock;
			if (zmq_send(s->sock[i], p, n, ZMQ_DONTWAIT) >= 0) {
				s->rr = i + 1;
				return FI_OK;
			}
			if (errno != EAGAIN && errno != EINTR)
				return fi_fail(FI_EIO, "zeromq send: %s", zmq_strerror(errno));
		}
		if (interrupted)
			return fi_fail(FI_EINTERRUPT, "interrupted");
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
	char idbuf[257];
	fi_frame_init(&f, FI_FRAME_ERROR);
	snprintf(idbuf, sizeof idbuf, "%s", id ? id : "");
	f.id = idbuf;
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
					if ((fi_now() - t0) * 1000 > s->o.linger_ms) {
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
	fi_buf_free(&s->wbuf);
	free(s);
	return e;
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
		e = busy(user) ? fi_stream_read_timeout(in, &f, 0) : fi_stream_read(in, &f);
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
