/* stream: internals shared by stream.c and stream_zmq.c. */
#ifndef FI_STREAM_INT_H
#define FI_STREAM_INT_H

#include <msgpack.h>

#include "frame.h"
#include "stream.h"

#define FI_STREAM_MAX_EP 16
#define FI_STREAM_MAX_CONN 64 /* connections watched per output socket */

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
	int conn[FI_STREAM_MAX_EP][FI_STREAM_MAX_CONN]; /* their connected descriptors */
	int nconn[FI_STREAM_MAX_EP];
	int nsock, rr;
	msgpack_zone zone;
	int zone_ok;
	int eos_seen, done, broken;
	int drain; /* input: reading what is left after a signal (fi_stream_drain) */
	char last_ep[256];
	/* clients and servers (stream.h) */
	int router, dealer;   /* sock[0] is a ROUTER (identity parts) / a DEALER */
	int borrowed;         /* a reply stream: sock[0] and ctx belong to its input, src */
	struct fi_stream *src;
	uint8_t peer[FI_STREAM_PEER_MAX]; /* input: the sender of the last frame read */
	size_t peer_len;
	uint8_t to[FI_STREAM_PEER_MAX];   /* reply: where writes go */
	size_t to_len;
	int connecting, sent;  /* a socket that connects; a send got through */
	char *ipc_files[FI_STREAM_MAX_EP]; /* ipc paths bound: removed at close */
	int n_ipc;
	double t_open;
};

/* Parses spec, creates the context and sockets, binds/connects, applies options. */
fi_err fi_stream_zmq_open(struct fi_stream *s, const char *spec);
/* Output: waits until the frames sent so far have been read by their consumers. A connected
 * consumer is waited for however slow it is (backpressure: a pipe's writer waits too); with
 * none connected, close gives up after linger_ms. A signal ends the wait. */
void fi_stream_zmq_drain(struct fi_stream *s);
/* Output socket i: the number of consumers connected now (after the monitor's events). */
int fi_stream_zmq_connected(struct fi_stream *s, int i);
/* Closes sockets (delivering queued output up to linger_ms) and the context. */
void fi_stream_zmq_close(struct fi_stream *s);

/* Reads a CURVE key file (fi-frame(5), CURVE KEYS): 32-byte keys; has_server tells whether
 * a server-key line was present. */
fi_err fi_curve_load(const char *path, uint8_t pub[32], uint8_t sec[32], uint8_t server[32],
		     int *has_server);

#endif
