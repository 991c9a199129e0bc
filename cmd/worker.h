/* worker: the streams of a worker (fi-decode, fi-prefill), shared by both commands.
 *
 * Three ways to serve (fi-frame(5), SOCKETS):
 *   WORKER_STREAMS  -i and -o as given: pipes, files, PULL/PUSH sockets (-o given, or -i
 *                   not a bound endpoint);
 *   WORKER_CLIENTS  -i a bound endpoint and no -o: a ROUTER socket; each reply goes to the
 *                   client that sent the request, requests are keyed by (client, id), and a
 *                   client that is gone has its requests dropped (their KV freed);
 *   WORKER_ROUTER   --router ENDPOINT: a DEALER registered with fi-route (hello, load every
 *                   100 ms, bye), requests and replies on that one socket. */
#ifndef FI_CMD_WORKER_H
#define FI_CMD_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "frame/stream.h"
#include "opt.h"

enum worker_mode { WORKER_STREAMS, WORKER_CLIENTS, WORKER_ROUTER };

#define WORKER_MAX_GONE 64

struct worker_load {
	uint64_t queued, queued_tokens, running, running_tokens, kv_used, kv_total,
		prefix_hits, prefix_lookups;
};

struct worker {
	enum worker_mode mode;
	struct fi_stream *in, *out;
	int wake_ms;         /* set before worker_open: the longest idle wait (0: forever) */
	/* WORKER_CLIENTS: clients whose reply failed since the last sweep */
	struct {
		uint8_t id[FI_STREAM_PEER_MAX];
		size_t len;
	} gone[WORKER_MAX_GONE];
	int n_gone;
	uint64_t n_gone_total;
	/* WORKER_ROUTER */
	char name[256];
	struct fi_frame hello; /* its hello (strings its own), said again every second */
	int have_hello;
	double t_load, t_hello;
	struct worker_load last;
	int have_last;
};

/* The mode a's -i/-o and --router (NULL: none) ask for; sets a->eos_count to 0 for a bound
 * worker when -e was not given. Usage errors exit 2. */
enum worker_mode worker_mode(struct cmd_args *a, const char *router);
/* Opens w->in and w->out for mode (name: --name, NULL for HOSTNAME:PID). */
fi_err worker_open(struct worker *w, enum worker_mode mode, const struct cmd_args *a,
		   const char *router, const char *name);
/* Closes both (sending bye first in WORKER_ROUTER). */
fi_err worker_close(struct worker *w);

/* WORKER_CLIENTS: the peer of the last frame read, its key for id. */
const char *worker_key(struct worker *w, const char *id, char buf[FI_STREAM_KEY_MAX]);
/* Sets the reply's destination (peer_len 0: the sender of the last frame read) and writes
 * f; a client that is gone is remembered (worker_is_gone) and FI_ENOTFOUND returned. */
fi_err worker_reply(struct worker *w, const uint8_t *peer, size_t peer_len, const struct fi_frame *f);
int worker_is_gone(const struct worker *w, const uint8_t *peer, size_t len);
void worker_forget_gone(struct worker *w);

/* WORKER_ROUTER: hello (at start, and again every second from worker_load: a router that
 * restarted, or that took the worker for dead, registers it again) and load frames (every
 * 100 ms, and at most every 10 ms when ld changed). */
fi_err worker_hello(struct worker *w, const char *role, const char *model, const uint8_t fp[32],
		    const uint8_t kv_root[32], uint32_t block_tokens, uint64_t kv_blocks,
		    uint32_t max_batch, const char *kv_events, const char *kv_replay);
fi_err worker_load(struct worker *w, const struct worker_load *ld);

#endif
