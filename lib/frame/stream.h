/* stream: where frames come from and go to: "-" (stdin/stdout), a file or a ZeroMQ endpoint.
 *
 * Every command's -i and -o go through fi_stream_open:
 *   "-"                   stdin (input) or stdout (output); a pipe or file; EOF ends input
 *   PATH                  a file (anything that is not "-" and not an endpoint below; a
 *                         name starting with '@' or '>' is written "./@name"): read to its
 *                         end, or created (truncated) for output
 *   ipc://PATH, tcp://HOST:PORT, inproc://NAME
 *                         ZeroMQ, one frame per message. Input is a PULL socket that binds;
 *                         output is a PUSH socket that connects. "@ENDPOINT" forces bind,
 *                         ">ENDPOINT" forces connect. Several endpoints separated by ','
 *                         (outputs: frames go round-robin over them, fan-out; inputs: fan-in).
 * Many producers may connect to one input (fan-in); one output connected to several
 * workers spreads frames over them (fan-out). Output streams end with an "eos" frame on
 * ZeroMQ (fi_stream_close); an input ends after opts.eos_count of them.
 *
 * Clients and servers (fi-frame(5), SOCKETS): an input opened with opts.router binds a
 * ROUTER socket: each frame read comes from a client (fi_stream_peer), and the reply stream
 * (fi_stream_open_reply) sends each frame back to the client set by fi_stream_set_peer,
 * waiting while that client is slow (never dropped) but failing with FI_ENOTFOUND once it
 * is gone or has not taken a frame for FI_REPLY_TIMEOUT. An input opened with opts.dealer
 * connects one DEALER socket that both reads and (through its reply stream) writes: a
 * client of such a worker, or a worker registered with fi-route.
 *
 * A stream that connects (an output, a DEALER) fails with "cannot connect to 'EP': nothing
 * is listening" when no peer has connected within FI_CONNECT_TIMEOUT of its first send
 * (opts.connect_ms). Binding an ipc:// path refuses one a live process serves ("address in
 * use") and replaces a stale socket file that a dead one left; a path that is not a socket
 * is never removed.
 *
 * tcp:// binds loopback unless an address is given: an empty host or "*" ("tcp://:7000")
 * binds 127.0.0.1:7000; "tcp://0.0.0.0:7000" binds every interface and, without a CURVE key,
 * warns through fi_warn. opts.curve_key names a key file (fi-frame(5), CURVE KEYS).
 *
 * Writes are buffered on pipes: call fi_stream_flush() after each batch of work (fi-decode:
 * after each step) so downstream sees tokens promptly; ZeroMQ sends each frame at once.
 *
 * Signals: fi_stream_catch_signals() makes SIGINT and SIGTERM set a flag; blocking reads and
 * writes then return FI_EINTERRUPT, and commands finish cleanly (done frames with finish
 * "cancel", fi_stream_close). */
#ifndef FI_STREAM_H
#define FI_STREAM_H

#include "base/err.h"
#include "frame.h"
#include "stream_signal.h"

enum fi_stream_dir { FI_STREAM_IN, FI_STREAM_OUT };

struct fi_stream_opts {
	struct fi_frame_limits lim; /* decode limits; lim.max_frame is also ZMQ_MAXMSGSIZE */
	int hwm;               /* ZeroMQ SNDHWM/RCVHWM in frames (default 1000) */
	int linger_ms;         /* output: how long close waits to deliver queued frames once no
				* consumer is connected (10000); a connected one is waited for */
	int eos_count;         /* ZeroMQ input ends after this many eos frames (default 1: one
				* producer; N for N producers; 0: never, run until a signal) */
	const char *curve_key; /* key file for CURVE (NULL: plaintext) */
	int send_eos;          /* ZeroMQ output sends an eos frame at close (default 1) */
	int tty_ok;            /* output "-" may be a terminal (the commands' -f; default 0) */
	int router;            /* input: a ROUTER socket that binds (clients get replies) */
	int dealer;            /* input: one DEALER socket that connects (reads and replies) */
	int connect_ms;        /* connecting sockets: how long a first send waits for a peer
				* (default FI_CONNECT_TIMEOUT, 10 s; -1: forever) */
	int reply_ms;          /* ROUTER replies: how long a slow client is waited for
				* (default FI_REPLY_TIMEOUT, 30 s) */
	int idle_ms;           /* fi_stream_take: the longest wait for a first frame (-1, the
				* default: until one comes) */
};

void fi_stream_opts_default(struct fi_stream_opts *o);

struct fi_stream;

/* Opens spec ("-" or endpoints) for reading or writing. opts NULL = defaults. */
fi_err fi_stream_open(struct fi_stream **s, const char *spec, enum fi_stream_dir dir,
		      const struct fi_stream_opts *opts);
/* Frames are binary: an output "-" that is a terminal is refused (FI_EINVAL, "frames not
 * written to a terminal ...") unless opts.tty_ok, as gzip refuses to write compressed data
 * there. fi_stream_refuse_tty(spec) is that check alone, for commands to fail before
 * loading a model. */
fi_err fi_stream_refuse_tty(const char *spec);
/* Over an existing descriptor (a pipe end, a socket): not closed by fi_stream_close. */
fi_err fi_stream_open_fd(struct fi_stream **s, int fd, enum fi_stream_dir dir,
			 const struct fi_stream_opts *opts);

/* Next frame; the contract of fi_reader_next (frame.h): FI_OK with FI_FRAME_EOS at the end,
 * a per-frame error (answer with an error frame and go on) or, when fi_stream_broken(), the
 * end of a corrupt stream. */
fi_err fi_stream_read(struct fi_stream *s, struct fi_frame *f);
/* The same, waiting at most timeout_ms (-1: forever): FI_OK with FI_FRAME_NONE when nothing
 * arrived in time. */
fi_err fi_stream_read_timeout(struct fi_stream *s, struct fi_frame *f, int timeout_ms);
int fi_stream_broken(const struct fi_stream *s);

/* The input side of a worker (fi-decode, fi-prefill): reads up to max frames and hands each
 * readable one to take(), which returns 1 at the end of input (an eos frame) and may set
 * *fatal. The first read waits while busy(user) is 0 (nothing to work on); later ones take
 * only what has already arrived, so the caller gets back to its work. A frame that cannot be
 * read is answered with an error frame on out and the stream goes on (the first one is also
 * reported through fi_warn: it usually means text was piped in where frames were expected,
 * and *bad counts them). A corrupt stream ends the input: *eof and *broken are set, the
 * detail is in fi_errmsg(). Returns the first fatal error (FI_EINTERRUPT on a signal). */
fi_err fi_stream_take(struct fi_stream *in, struct fi_stream *out, int max,
		      int (*busy)(void *user), int (*take)(void *user, struct fi_frame *f, fi_err *fatal),
		      void *user, int *eof, int *broken, int *bad);

/* After a signal, so that no request sent is left without an answer: reads what is left on
 * the input, whatever the signal flag says, until its end (EOF, the last eos) or until
 * nothing has arrived for quiet_ms, answering each request with an error frame (code
 * interrupt, message "WHO is shutting down") and writing on the frames whose type bit
 * (1u << FI_FRAME_*) is set in pass; others are dropped. *n_failed counts the requests so
 * answered and the error frames passed on. A second signal ends the process (the handler's
 * default action). Returns the first output error. */
#define FI_STREAM_DRAIN_QUIET_MS 2000
fi_err fi_stream_drain(struct fi_stream *in, struct fi_stream *out, const char *who,
		       unsigned pass, int quiet_ms, unsigned long *n_failed);

/* Encodes and sends (ZeroMQ) or buffers (pipes) one frame. Blocks while the consumer is
 * slow (high-water mark reached / pipe full). On ZeroMQ a signal ends the wait with
 * FI_EINTERRUPT (nothing is sent); a pipe write always completes, so that no half frame is
 * left and the done frames of a shutdown get out (a second signal ends the process). */
fi_err fi_stream_write(struct fi_stream *s, const struct fi_frame *f);
/* The same with a bound on the wait: FI_EFULL when the frame could not be queued within
 * timeout_ms (0: try once). */
fi_err fi_stream_write_timeout(struct fi_stream *s, const struct fi_frame *f, int timeout_ms);
/* One already-encoded frame (exactly one msgpack map). */
fi_err fi_stream_write_raw(struct fi_stream *s, const void *buf, size_t len);
/* Shorthand: an error frame for id (NULL or "" when unknown) with code and message. */
fi_err fi_stream_write_error(struct fi_stream *s, const char *id, fi_err code, const char *msg);
fi_err fi_stream_flush(struct fi_stream *s);

/* Flushes, sends eos on a ZeroMQ output, waits until connected consumers have read what was
 * sent (up to linger_ms when none is connected; a signal ends the wait), frees s.
 * Returns the first write error. NULL is a no-op. */
fi_err fi_stream_close(struct fi_stream *s);

/* The ZeroMQ socket of s (for zmq_poll with other sockets), or NULL for pipes; and the file
 * descriptor of a pipe stream, or -1. */
void *fi_stream_zmq_socket(struct fi_stream *s);
int fi_stream_fd(const struct fi_stream *s);
/* The endpoint the (first) socket last bound or connected, with the port resolved
 * ("tcp://127.0.0.1:*" -> "tcp://127.0.0.1:41234"); "-" for pipes. */
const char *fi_stream_endpoint(struct fi_stream *s);

/* The reply stream of a ROUTER or DEALER input: an output over the same socket, closed
 * (before in) with fi_stream_close; it sends no eos. FI_EINVAL for other inputs. */
fi_err fi_stream_open_reply(struct fi_stream **out, struct fi_stream *in);
/* ROUTER: the identity of the client that sent the last frame read (*len 0: none, or not a
 * ROUTER); writes on a reply stream go to the client set here. */
const uint8_t *fi_stream_peer(const struct fi_stream *in, size_t *len);
void fi_stream_set_peer(struct fi_stream *out, const uint8_t *peer, size_t len);
/* 1 when s is the reply stream of a ROUTER input (writes need a peer). */
int fi_stream_is_router(const struct fi_stream *s);
/* A request's key for a worker's scheduler: its id when peer is empty, else the peer in hex,
 * '/', the id (so that ids need only be unique per client). buf holds at least
 * FI_STREAM_KEY_MAX bytes; the id is cut there. */
#define FI_STREAM_PEER_MAX 255
#define FI_STREAM_KEY_MAX (2 * FI_STREAM_PEER_MAX + 2 + 1024)
const char *fi_stream_key(const uint8_t *peer, size_t len, const char *id, char *buf);

/* Signals: fi_stream_catch_signals, fi_stream_interrupted, fi_stream_set_interrupted are
 * declared in stream_signal.h (included above). */

#endif
