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

#include "base/log.h"
#include "frame/frame.h"
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

static pid_t start_worker(const char *ep, const char *errfile)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		FILE *e = freopen(errfile, "w", stderr);
		(void)e;
		execl(bin, "fi-decode", "-m", "models/tiny", "--backend", "cpu", "-n", "6", "--temp",
		      "0", "--router", ep, "--name", "w0", (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void send_request(struct peer *p, const char *id, int ntok)
{
	uint32_t t[64];
	struct fi_frame f;
	for (int i = 0; i < ntok; i++)
		t[i] = 100u + (uint32_t)(i * 7 % 50);
	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = (char *)id;
	f.req.tokens = t;
	f.req.ntokens = (uint32_t)ntok;
	fi_stream_set_peer(p->out, p->worker, p->wlen);
	ck_assert_msg(!fi_stream_write(p->out, &f), "%s", fi_errmsg());
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
	pid = start_worker(ep, errf);

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
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
