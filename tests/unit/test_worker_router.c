/* A worker registered with a router (fi-frame(5), WORKERS AND ROUTERS), against a ROUTER
 * socket played by this test: fi-decode --router sends hello, then load frames every
 * 100 ms whose numbers are the scheduler's (the KV pool, prefix hits after a repeated
 * prompt), serves requests sent on that socket and says bye on SIGTERM. Runs the
 * fi-decode built beside this test (../bin) on the embedded model. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msgpack.h>
#include <zmq.h>

#include "base/log.h"
#include "frame/frame.h"
#include "sched/scheduler.h"
#include "frame/stream.h"
#include "util.h"

static char bin[PATH_MAX];

struct peer {
	struct fi_stream *in, *out;
	uint8_t worker[FI_STREAM_PEER_MAX];
	size_t wlen;
};

/* The next frame of type want (others are skipped, load frames counted) within ms. */
static int next_of(struct peer *p, enum fi_frame_type want, struct fi_frame *f, int ms, int *loads)
{
	double t0 = fi_now();
	while ((fi_now() - t0) * 1000 < ms) {
		fi_frame_init(f, FI_FRAME_NONE);
		ck_assert_msg(!fi_stream_read_timeout(p->in, f, 50), "%s", fi_errmsg());
		if (f->type == FI_FRAME_LOAD && loads)
			(*loads)++;
		if (f->type == want) {
			size_t n;
			const uint8_t *id = fi_stream_peer(p->in, &n);
			memcpy(p->worker, id, n);
			p->wlen = n;
			return 1;
		}
		fi_frame_free(f);
	}
	return 0;
}

static pid_t start_worker(const char *ep, const char *errfile, const char *kv_ev,
			  const char *kv_replay)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		FILE *e = freopen(errfile, "w", stderr);
		(void)e;
		if (kv_ev)
			execl(bin, "fi-decode", "-m", "models/tiny", "--backend", "cpu", "-n", "6",
			      "--temp", "0", "--router", ep, "--name", "w0", "--kv-size", "96t",
			      "--kv-events", kv_ev, "--kv-events-replay", kv_replay, (char *)NULL);
		else
			execl(bin, "fi-decode", "-m", "models/tiny", "--backend", "cpu", "-n", "6",
			      "--temp", "0", "--router", ep, "--name", "w0", (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void prompt(uint32_t *t, int ntok, uint32_t base)
{
	for (int i = 0; i < ntok; i++)
		t[i] = base + (uint32_t)(i * 7 % 50);
}

static void send_request_from(struct peer *p, const char *id, int ntok, uint32_t base)
{
	uint32_t t[128];
	struct fi_frame f;
	prompt(t, ntok, base);
	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = (char *)id;
	f.req.tokens = t;
	f.req.ntokens = (uint32_t)ntok;
	fi_stream_set_peer(p->out, p->worker, p->wlen);
	ck_assert_msg(!fi_stream_write(p->out, &f), "%s", fi_errmsg());
}

static void send_request(struct peer *p, const char *id, int ntok)
{
	send_request_from(p, id, ntok, 100);
}

START_TEST(registered_worker)
{
	char dir[] = "/tmp/fi-router-XXXXXX", ep[128], errf[160];
	struct fi_stream_opts so;
	struct peer p = {0};
	struct fi_frame f;
	uint64_t kv_blocks;
	int loads = 0, tokens = 0, st;
	pid_t pid;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(ep, sizeof ep, "ipc://%s/r", dir);
	snprintf(errf, sizeof errf, "%s/err", dir);
	setenv("FI_HOME", dir, 1);
	fi_stream_opts_default(&so);
	so.router = 1;
	so.eos_count = 0;
	ck_assert_msg(!fi_stream_open(&p.in, ep, FI_STREAM_IN, &so), "%s", fi_errmsg());
	ck_assert(!fi_stream_open_reply(&p.out, p.in));
	pid = start_worker(ep, errf, NULL, NULL);

	/* hello first: what it serves */
	ck_assert_msg(next_of(&p, FI_FRAME_HELLO, &f, 60000, NULL), "no hello (see %s)", errf);
	ck_assert_str_eq(f.id, "w0");
	ck_assert_str_eq(f.hello.role, "decode");
	ck_assert_str_eq(f.hello.model, "models/tiny");
	ck_assert_uint_eq(f.hello.block_tokens, 16);
	ck_assert_uint_gt(f.hello.kv_blocks, 0);
	ck_assert(f.hello.has_kv_root);
	kv_blocks = f.hello.kv_blocks;
	fi_frame_free(&f);

	/* heartbeats: about every 100 ms while idle, the pool as in hello */
	double t0 = fi_now();
	for (int i = 0; i < 5; i++) {
		ck_assert_msg(next_of(&p, FI_FRAME_LOAD, &f, 1000, NULL), "no load frame");
		ck_assert_str_eq(f.id, "w0");
		ck_assert_uint_eq(f.load.kv_total, kv_blocks);
		ck_assert_uint_eq(f.load.kv_used, 0);
		ck_assert_uint_eq(f.load.running + f.load.queued, 0);
		fi_frame_free(&f);
	}
	ck_assert_msg(fi_now() - t0 > 0.3 && fi_now() - t0 < 1.5, "5 load frames in %.3f s", fi_now() - t0);

	/* a request of 40 tokens (2 full blocks to look up), then the same prompt again: the
	 * second finds both blocks in the prefix cache */
	send_request(&p, "r1", 40);
	ck_assert(next_of(&p, FI_FRAME_DONE, &f, 20000, &loads));
	ck_assert_str_eq(f.id, "r1");
	ck_assert_uint_eq(f.done.gen_tokens, 6);
	ck_assert_uint_eq(f.done.cached_tokens, 0);
	fi_frame_free(&f);
	send_request(&p, "r2", 40);
	for (;;) {
		fi_frame_init(&f, FI_FRAME_NONE);
		ck_assert(!fi_stream_read_timeout(p.in, &f, 20000));
		ck_assert(f.type != FI_FRAME_NONE);
		if (f.type == FI_FRAME_TOKEN) {
			ck_assert_str_eq(f.id, "r2");
			tokens++;
		}
		if (f.type == FI_FRAME_DONE) {
			ck_assert_str_eq(f.id, "r2");
			ck_assert_uint_eq(f.done.cached_tokens, 32);
			fi_frame_free(&f);
			break;
		}
		fi_frame_free(&f);
	}
	ck_assert_int_eq(tokens, 6);
	ck_assert(next_of(&p, FI_FRAME_LOAD, &f, 1000, NULL));
	ck_assert_uint_eq(f.load.prefix_lookups, 4);
	ck_assert_uint_eq(f.load.prefix_hits, 2);
	ck_assert_uint_eq(f.load.running + f.load.queued, 0);
	fi_frame_free(&f);

	/* SIGTERM: bye */
	kill(pid, SIGTERM);
	ck_assert_msg(next_of(&p, FI_FRAME_BYE, &f, 10000, NULL), "no bye");
	ck_assert_str_eq(f.id, "w0");
	fi_frame_free(&f);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fi-decode status %d", st);
	fi_stream_close(p.out);
	fi_stream_close(p.in);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- KV events ---- */

struct seen {
	int cleared, stored_batches;
	uint8_t stored[64][32], removed[64][32];
	int n_stored, n_removed;
	uint64_t last_seq;
};

static int str_is(const msgpack_object *o, const char *s)
{
	return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
	       !memcmp(o->via.str.ptr, s, o->via.str.size);
}

/* One batch payload: [ts, [event...]]. */
static void parse_batch(const void *data, size_t len, struct seen *sn)
{
	msgpack_unpacked u;
	const msgpack_object *ev;
	msgpack_unpacked_init(&u);
	ck_assert(msgpack_unpack_next(&u, data, len, NULL) == MSGPACK_UNPACK_SUCCESS);
	ck_assert(u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2);
	ck_assert(u.data.via.array.ptr[0].type == MSGPACK_OBJECT_FLOAT64);
	ev = &u.data.via.array.ptr[1];
	ck_assert(ev->type == MSGPACK_OBJECT_ARRAY);
	for (uint32_t i = 0; i < ev->via.array.size; i++) {
		const msgpack_object *e = &ev->via.array.ptr[i], *h;
		ck_assert(e->type == MSGPACK_OBJECT_ARRAY && e->via.array.size >= 1);
		if (str_is(&e->via.array.ptr[0], "AllBlocksCleared")) {
			sn->cleared++;
			continue;
		}
		h = &e->via.array.ptr[1];
		ck_assert(h->type == MSGPACK_OBJECT_ARRAY);
		if (str_is(&e->via.array.ptr[0], "BlockStored")) {
			ck_assert_int_eq(e->via.array.size, 7);
			ck_assert_uint_eq(e->via.array.ptr[3].via.array.size, 16 * h->via.array.size);
			ck_assert_uint_eq(e->via.array.ptr[4].via.u64, 16);
			ck_assert(str_is(&e->via.array.ptr[6], "CPU"));
			sn->stored_batches++;
			for (uint32_t k = 0; k < h->via.array.size && sn->n_stored < 64; k++) {
				ck_assert(h->via.array.ptr[k].type == MSGPACK_OBJECT_BIN &&
					  h->via.array.ptr[k].via.bin.size == 32);
				memcpy(sn->stored[sn->n_stored++], h->via.array.ptr[k].via.bin.ptr, 32);
			}
		} else {
			ck_assert(str_is(&e->via.array.ptr[0], "BlockRemoved"));
			for (uint32_t k = 0; k < h->via.array.size && sn->n_removed < 64; k++)
				memcpy(sn->removed[sn->n_removed++], h->via.array.ptr[k].via.bin.ptr, 32);
		}
	}
	msgpack_unpacked_destroy(&u);
}

static int has_key(uint8_t (*set)[32], int n, const uint8_t *k)
{
	for (int i = 0; i < n; i++)
		if (!memcmp(set[i], k, 32))
			return 1;
	return 0;
}

/* Reads the published batches that have arrived into sn; returns how many. */
static int read_pub(void *sub, struct seen *sn, int ms)
{
	int n = 0;
	zmq_pollitem_t it = {.socket = sub, .events = ZMQ_POLLIN};
	while (zmq_poll(&it, 1, n ? 0 : ms) > 0) {
		zmq_msg_t m[3];
		for (int i = 0; i < 3; i++) {
			zmq_msg_init(&m[i]);
			ck_assert_int_ge(zmq_msg_recv(&m[i], sub, 0), 0);
		}
		ck_assert_uint_eq(zmq_msg_size(&m[1]), 8);
		const uint8_t *sq = zmq_msg_data(&m[1]);
		sn->last_seq = 0;
		for (int i = 0; i < 8; i++)
			sn->last_seq = sn->last_seq << 8 | sq[i];
		parse_batch(zmq_msg_data(&m[2]), zmq_msg_size(&m[2]), sn);
		for (int i = 0; i < 3; i++)
			zmq_msg_close(&m[i]);
		n++;
	}
	return n;
}

static void wait_done(struct peer *p, const char *id)
{
	struct fi_frame f;
	ck_assert_msg(next_of(p, FI_FRAME_DONE, &f, 20000, NULL), "no done for %s", id);
	ck_assert_str_eq(f.id, id);
	fi_frame_free(&f);
}

START_TEST(kv_events)
{
	char dir[] = "/tmp/fi-kvev-XXXXXX", ep[128], ev[128], rp[128], errf[160], root[65];
	struct fi_stream_opts so;
	struct peer p = {0};
	struct seen live = {0}, replay = {0};
	struct fi_frame f;
	fi_arena_key keys_a[2], keys_b[5];
	uint32_t ta[40], tb[80];
	void *ctx, *sub, *req;
	pid_t pid;
	int st;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(ep, sizeof ep, "ipc://%s/r", dir);
	snprintf(ev, sizeof ev, "ipc://%s/ev", dir);
	snprintf(rp, sizeof rp, "ipc://%s/rp", dir);
	snprintf(errf, sizeof errf, "%s/err", dir);
	setenv("FI_HOME", dir, 1);
	fi_stream_opts_default(&so);
	so.router = 1;
	so.eos_count = 0;
	ck_assert(!fi_stream_open(&p.in, ep, FI_STREAM_IN, &so));
	ck_assert(!fi_stream_open_reply(&p.out, p.in));
	pid = start_worker(ep, errf, ev, rp);
	ck_assert_msg(next_of(&p, FI_FRAME_HELLO, &f, 60000, NULL), "no hello (see %s)", errf);
	ck_assert_uint_eq(f.hello.kv_blocks, 6);
	ck_assert_ptr_nonnull(f.hello.kv_events);
	ck_assert_str_eq(f.hello.kv_events, ev);
	for (int i = 0; i < 32; i++)
		snprintf(root + 2 * i, 3, "%02x", f.hello.kv_root[i]);
	fi_frame_free(&f);
	ctx = zmq_ctx_new();
	sub = zmq_socket(ctx, ZMQ_SUB);
	ck_assert(!zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0));
	ck_assert(!zmq_connect(sub, ev));
	usleep(300 * 1000); /* the subscription reaches the publisher */

	/* A (40 tokens, 6 generated: 2 full blocks) is stored under the keys anyone computes
	 * from its tokens with fi_prefix_block_keys */
	prompt(ta, 40, 100);
	ck_assert(!fi_prefix_block_keys(root, ta, 40, 16, keys_a));
	send_request_from(&p, "a", 40, 100);
	wait_done(&p, "a");
	read_pub(sub, &live, 2000);
	ck_assert_int_ge(live.n_stored, 2);
	ck_assert(has_key(live.stored, live.n_stored, keys_a[0].b));
	ck_assert(has_key(live.stored, live.n_stored, keys_a[1].b));
	ck_assert_int_eq(live.n_removed, 0);

	/* B (80 tokens, 6 blocks in all) needs the whole pool of 6: A's idle blocks are evicted */
	prompt(tb, 80, 300);
	ck_assert(!fi_prefix_block_keys(root, tb, 80, 16, keys_b));
	send_request_from(&p, "b", 80, 300);
	wait_done(&p, "b");
	read_pub(sub, &live, 2000);
	ck_assert(has_key(live.removed, live.n_removed, keys_a[0].b));
	ck_assert(has_key(live.removed, live.n_removed, keys_a[1].b));
	for (int i = 0; i < 5; i++)
		ck_assert(has_key(live.stored, live.n_stored, keys_b[i].b));

	/* replay from 0: every batch, AllBlocksCleared (the new cache) first, then the end */
	req = zmq_socket(ctx, ZMQ_DEALER);
	ck_assert(!zmq_connect(req, rp));
	uint8_t zero[8] = {0};
	ck_assert_int_ge(zmq_send(req, "", 0, ZMQ_SNDMORE), 0);
	ck_assert_int_eq(zmq_send(req, zero, 8, 0), 8);
	for (uint64_t want = 0;; want++) {
		zmq_msg_t m[3];
		zmq_pollitem_t it = {.socket = req, .events = ZMQ_POLLIN};
		ck_assert_msg(zmq_poll(&it, 1, 5000) == 1, "replay: no answer");
		for (int i = 0; i < 3; i++) {
			zmq_msg_init(&m[i]);
			ck_assert_int_ge(zmq_msg_recv(&m[i], req, 0), 0);
		}
		const uint8_t *sq = zmq_msg_data(&m[1]);
		uint64_t seq = 0;
		for (int i = 0; i < 8; i++)
			seq = seq << 8 | sq[i];
		if (seq == UINT64_MAX) {
			ck_assert_uint_eq(zmq_msg_size(&m[2]), 0);
			ck_assert_uint_eq(want, live.last_seq + 1);
			for (int i = 0; i < 3; i++)
				zmq_msg_close(&m[i]);
			break;
		}
		ck_assert_uint_eq(seq, want);
		parse_batch(zmq_msg_data(&m[2]), zmq_msg_size(&m[2]), &replay);
		if (want == 0)
			ck_assert_int_eq(replay.cleared, 1);
		for (int i = 0; i < 3; i++)
			zmq_msg_close(&m[i]);
	}
	ck_assert_int_eq(replay.n_stored, live.n_stored);
	ck_assert_int_eq(replay.n_removed, live.n_removed);

	zmq_close(req);
	zmq_close(sub);
	zmq_ctx_term(ctx);
	kill(pid, SIGTERM);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fi-decode status %d", st);
	fi_stream_close(p.out);
	fi_stream_close(p.in);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s = suite_create("worker_router");
	TCase *tc = tcase_create("router");
	char *slash;
	snprintf(bin, sizeof bin, "%s", argv[0]);
	slash = strrchr(bin, '/');
	snprintf(slash ? slash + 1 : bin, sizeof bin - (size_t)(slash ? slash + 1 - bin : 0), "../bin/fi-decode");
	(void)argc;
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, registered_worker);
	tcase_add_test(tc, kv_events);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
