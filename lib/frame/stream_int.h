/* stream: internals shared by stream.c and stream_zmq.c. */
#ifndef FI_STREAM_INT_H
#define FI_STREAM_INT_H

#include <msgpack.h>

#include "frame.h"
#include "stream.h"

#define FI_STREAM_MAX_EP 16

struct fi_stream {
	enum fi_stream_dir dir;
	struct fi_stream_opts o;
	/* pipes and files */
	int fd;
	int own_fd;           /* a file fi_stream_open opened: closed with the stream */
	struct fi_reader *rd; /* input */
	struct fi_buf wbuf;   /* output buffer (pipes), encode scratch (ZeroMQ) */
	/* ZeroMQ: an input has one PULL socket, an output one PUSH socket per endpoint */
	void *ctx;
	int shared_ctx;
	void *sock[FI_STREAM_MAX_EP];
	char *ep[FI_STREAM_MAX_EP];
	void *mon[FI_STREAM_MAX_EP]; /* output: PAIR sockets receiving each socket's events */
	int nsock, rr;
	msgpack_zone zone;
	int zone_ok;
	int eos_seen, done, broken;
	char last_ep[256];
};

/* Parses spec, creates the context and sockets, binds/connects, applies options. */
fi_err fi_stream_zmq_open(struct fi_stream *s, const char *spec);
/* Output: waits (up to linger_ms) until the frames sent so far have left this process. */
void fi_stream_zmq_drain(struct fi_stream *s);
/* Closes sockets (delivering queued output up to linger_ms) and the context. */
void fi_stream_zmq_close(struct fi_stream *s);

/* Reads a CURVE key file (fi-frame(5), CURVE KEYS): 32-byte keys; has_server tells whether
 * a server-key line was present. */
fi_err fi_curve_load(const char *path, uint8_t pub[32], uint8_t sec[32], uint8_t server[32],
		     int *has_server);

#endif
