/* route_client: a DEALER client of fi-route for the tests and the measurements in
 * tests/cli/NOTES-route.md.
 *   route_client ENDPOINT < frames > replies     send every frame, write every reply, exit
 *                                                once each request has its done or error
 *                                                (3 if any error, 1 after 10 s of silence)
 *   route_client --bench N ENDPOINT              N requests of 64 tokens, 256 in flight:
 *                                                requests/s and TTFT percentiles
 *   route_client --direct --bench N ENDPOINT     the same straight to one worker: binds a
 *                                                ROUTER there and waits for its hello
 *   route_client --raw ENDPOINT < bytes          send stdin as one message, print replies
 *   route_client --prefix N ENDPOINT             the prefix-affinity workload: 60 prefixes of
 *                                                1024 tokens, N requests in random order
 *   route_client --keygen                        prints a CURVE key pair (fi-frame(5) key
 *                                                file lines); fails if libzmq has no CURVE
 * Options: --curve-key FILE (CURVE client keys, fi-frame(5)), --wait MS (the silence after
 * which a passthrough gives up, default 10000, exit 1). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "frame/frame.h"
#include "frame/stream.h"
#include "frame/stream_int.h"

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void *sock;
static char peer[256];
static size_t peer_len;
static int direct, wait_ms = 10000;

static void send_frame(const struct fi_buf *b)
{
	if (direct)
		zmq_send(sock, peer, peer_len, ZMQ_SNDMORE);
	zmq_send(sock, b->data, b->len, 0);
}

/* Next reply frame (decoded), waiting at most ms; 0 got one. */
static int recv_frame(struct fi_frame *f, int ms, uint8_t **raw, size_t *rawn)
{
	zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
	for (;;) {
		zmq_msg_t m;
		if (zmq_poll(&it, 1, ms) <= 0)
			return -1;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, 0) < 0)
			return -1;
		if (direct && zmq_msg_more(&m)) { /* the worker's identity */
			peer_len = zmq_msg_size(&m);
			memcpy(peer, zmq_msg_data(&m), peer_len);
			zmq_msg_close(&m);
			zmq_msg_init(&m);
			zmq_msg_recv(&m, sock, 0);
		}
		if (!zmq_msg_size(&m)) {
			zmq_msg_close(&m);
			continue;
		}
		if (raw) {
			*rawn = zmq_msg_size(&m);
			*raw = malloc(*rawn);
			memcpy(*raw, zmq_msg_data(&m), *rawn);
		}
		fi_err e = fi_frame_decode(zmq_msg_data(&m), zmq_msg_size(&m), NULL, f);
		zmq_msg_close(&m);
		if (e) { /* hello, load: not ours */
			fi_frame_free(f);
			if (raw)
				free(*raw);
			continue;
		}
		return 0;
	}
}

static int passthrough(void)
{
	struct fi_reader *r;
	struct fi_frame f;
	struct fi_buf b = {0};
	int open = 0, failed = 0;
	if (fi_reader_open_fd(&r, 0, NULL))
		return 1;
	while (!fi_reader_next(r, &f) && f.type != FI_FRAME_EOS) {
		b.len = 0;
		if (!fi_frame_encode(&f, &b)) {
			send_frame(&b);
			open += f.type == FI_FRAME_REQUEST;
		}
		fi_frame_free(&f);
	}
	fi_reader_close(r);
	while (open > 0) {
		uint8_t *raw;
		size_t n;
		if (recv_frame(&f, wait_ms, &raw, &n)) {
			fprintf(stderr, "route_client: no reply for %d ms, %d requests open\n", wait_ms, open);
			return 1;
		}
		fwrite(raw, 1, n, stdout);
		free(raw);
		if (f.type == FI_FRAME_DONE || f.type == FI_FRAME_ERROR)
			open--;
		failed |= f.type == FI_FRAME_ERROR;
		fi_frame_free(&f);
	}
	fflush(stdout);
	return failed ? 3 : 0;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Requests with prompt(i) tokens, at most inflight at a time. */
static int run(int n, int inflight, int prefix)
{
	double *t0 = calloc((size_t)n, sizeof *t0), *ttft = calloc((size_t)n, sizeof *ttft);
	uint32_t *toks = malloc(sizeof *toks * 1100);
	int *order = malloc(sizeof *order * (size_t)n);
	int sent = 0, ended = 0, nt = 0;
	struct fi_buf b = {0};
	double start = now_ms();
	srand(7);
	for (int i = 0; i < n; i++)
		order[i] = i % 60;
	for (int i = n - 1; i > 0; i--) {
		int j = rand() % (i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	while (ended < n) {
		while (sent < n && sent - ended < inflight) {
			struct fi_frame f;
			char id[24];
			uint32_t len = prefix ? 1024 + 16 : 64;
			for (uint32_t k = 0; k < len; k++) /* prefix: 1024 tokens of its number, then unique */
				toks[k] = prefix ? (k < 1024 ? (uint32_t)(order[sent] * 7919 + k) % 30000 + 1
							     : (uint32_t)(sent * 31 + k) % 30000 + 1)
						 : (uint32_t)(k + 1);
			fi_frame_init(&f, FI_FRAME_REQUEST);
			snprintf(id, sizeof id, "%d", sent);
			f.id = id;
			f.req.tokens = toks;
			f.req.ntokens = len;
			f.req.max_tokens = 1;
			f.req.set |= FI_REQ_MAX_TOKENS;
			b.len = 0;
			fi_frame_encode(&f, &b);
			t0[sent] = now_ms();
			send_frame(&b);
			sent++;
		}
		struct fi_frame f;
		if (recv_frame(&f, 10000, NULL, NULL)) {
			fprintf(stderr, "route_client: stalled with %d of %d ended\n", ended, n);
			return 1;
		}
		int i = atoi(f.id);
		if (f.type == FI_FRAME_TOKEN && i >= 0 && i < n && !ttft[i])
			ttft[i] = now_ms() - t0[i];
		if (f.type == FI_FRAME_DONE || f.type == FI_FRAME_ERROR) {
			ended++;
			if (i >= 0 && i < n && !ttft[i])
				ttft[i] = now_ms() - t0[i];
		}
		nt += f.type == FI_FRAME_ERROR;
		fi_frame_free(&f);
	}
	double secs = (now_ms() - start) / 1e3;
	qsort(ttft, (size_t)n, sizeof *ttft, cmp);
	printf("requests %d errors %d secs %.3f rate %.0f/s ttft_p50_ms %.3f ttft_p90_ms %.3f\n", n, nt,
	       secs, n / secs, ttft[n / 2], ttft[n * 9 / 10]);
	return nt ? 3 : 0;
}

int main(int argc, char **argv)
{
	int bench = 0, prefix = 0, i = 1, inflight = 256, raw = 0;
	const char *curve = NULL;
	void *ctx = zmq_ctx_new();
	if (argc == 2 && !strcmp(argv[1], "--keygen")) {
		char pub[41], sec[41];
		if (zmq_curve_keypair(pub, sec)) {
			fprintf(stderr, "route_client: no CURVE key pair: %s (libzmq without libsodium?)\n",
				zmq_strerror(zmq_errno()));
			return 1;
		}
		printf("public-key = \"%s\"\nsecret-key = \"%s\"\n", pub, sec);
		return 0;
	}
	for (; i < argc - 1; i++) {
		if (!strcmp(argv[i], "--direct"))
			direct = 1;
		else if (!strcmp(argv[i], "--bench"))
			bench = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--prefix"))
			prefix = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--raw"))
			raw = 1;
		else if (!strcmp(argv[i], "--inflight"))
			inflight = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--curve-key"))
			curve = argv[++i];
		else if (!strcmp(argv[i], "--wait"))
			wait_ms = atoi(argv[++i]);
		else
			break;
	}
	if (i != argc - 1) {
		fprintf(stderr, "usage: route_client [--direct] [--raw | --bench N | --prefix N] [--inflight N] [--curve-key FILE] [--wait MS] ENDPOINT\n       route_client --keygen\n");
		return 2;
	}
	sock = zmq_socket(ctx, direct ? ZMQ_ROUTER : ZMQ_DEALER);
	int hwm = 100000, zero = 0;
	zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
	zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
	zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
	if (strstr(argv[i], "://[")) { /* an IPv6 address */
		int one = 1;
		zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one);
	}
	if (curve) { /* a CURVE client: its own keys and the server's public key */
		uint8_t pub[32], sec[32], srv[32];
		int has;
		if (fi_curve_load(curve, pub, sec, srv, &has)) {
			fprintf(stderr, "route_client: %s\n", fi_errmsg());
			return 1;
		}
		if (!has) {
			fprintf(stderr, "route_client: '%s': no server-key line\n", curve);
			return 1;
		}
		if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, srv, 32) ||
		    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 32) ||
		    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 32)) {
			fprintf(stderr, "route_client: CURVE: %s\n", zmq_strerror(zmq_errno()));
			return 1;
		}
	}
	if (direct ? zmq_bind(sock, argv[i]) : zmq_connect(sock, argv[i])) {
		fprintf(stderr, "route_client: '%s': %s\n", argv[i], zmq_strerror(zmq_errno()));
		return 1;
	}
	if (direct) { /* the worker's hello gives its identity */
		zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
		zmq_msg_t m;
		if (zmq_poll(&it, 1, 10000) <= 0)
			return 1;
		zmq_msg_init(&m);
		zmq_msg_recv(&m, sock, 0);
		peer_len = zmq_msg_size(&m);
		memcpy(peer, zmq_msg_data(&m), peer_len);
		zmq_msg_close(&m);
		zmq_msg_init(&m);
		zmq_msg_recv(&m, sock, 0);
		zmq_msg_close(&m);
	}
	if (raw) { /* stdin as one message, as it is (garbage for the tests), then a second of replies */
		static char buf[1 << 20];
		size_t n = fread(buf, 1, sizeof buf, stdin);
		struct fi_frame f;
		zmq_send(sock, buf, n, 0);
		while (!recv_frame(&f, 1000, NULL, NULL)) {
			printf("%s %s\n", fi_frame_type_name(f.type), f.type == FI_FRAME_ERROR ? f.err.message : "");
			fi_frame_free(&f);
		}
		zmq_close(sock);
		zmq_ctx_term(ctx);
		return 0;
	}
	int rc = bench ? run(bench, inflight, 0) : prefix ? run(prefix, inflight, 1) : passthrough();
	zmq_close(sock);
	zmq_ctx_term(ctx);
	return rc;
}
