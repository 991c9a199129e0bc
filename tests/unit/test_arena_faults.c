/* KV arena under faults: a lock held by a stopped process (a bounded wait that names it), KV
 * bytes and keys corrupted in place (caught by the checksums, withdrawn, written anew), data
 * grown by extents and a file system that refuses the next extent (eviction instead of
 * SIGBUS), and the cost of verifying a prefix. */
#define _GNU_SOURCE /* unshare */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>

#include "base/settings.h"
#include "kv/arena_shm.h"
#include "arena_test.h"
#include "base/log.h"
#include "util.h"

static const char *FP = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

static void setup(void)
{
	t_mkdir();
	fi_clear_error();
}

static void teardown(void)
{
	t_rmdir();
}

/* A child that takes a lease, starts a publish and stops inside the lock (FI_ARENA_STOP). */
static pid_t stopped_holder(const struct fi_arena_opts *o)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct fi_arena *c;
		struct fi_arena_lease *l;
		uint32_t toks[4] = {9, 8, 7, 6};
		fi_arena_key k;
		setenv("FI_ARENA_STOP", "locked-publish", 1);
		fi_settings_reload();
		if (fi_arena_open(&c, FP, o) || fi_arena_lease(c, &l) ||
		    fi_arena_chain_keys(FP, toks, 4, T_BLOCK_TOKENS, &k) || t_put_chain(l, &k, 1, 4096))
			_exit(1);
		_exit(0);
	}
	return pid;
}

/* A process that stops while holding the lock: waiters give up after the bound with FI_EBUSY
 * naming its pid (they used to wait forever); once it dies, the next locker repairs and goes
 * on. */
START_TEST(test_stopped_lock_owner)
{
	struct fi_arena_opts o = t_opts(16);
	struct fi_arena *a, *b;
	struct fi_arena_lease *l;
	struct fi_arena_stats st;
	char pidstr[32];
	double t0, dt;
	int status;
	pid_t pid;
	o.lock_timeout_ms = 400;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	pid = stopped_holder(&o);
	ck_assert_int_eq(waitpid(pid, &status, WUNTRACED), pid);
	ck_assert(WIFSTOPPED(status));
	snprintf(pidstr, sizeof pidstr, "by process %d ", (int)pid);
	t0 = fi_now();
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_EBUSY);
	dt = fi_now() - t0;
	ck_assert_msg(dt >= 0.39 && dt < 3, "waited %.3f s for a 0.4 s bound", dt);
	ck_assert_msg(strstr(fi_errmsg(), "held for more than 0.4 s") && strstr(fi_errmsg(), pidstr),
		      "%s", fi_errmsg());
	/* opening, stats and listing give up the same way */
	ck_assert_int_eq(fi_arena_open(&b, FP, &o), FI_EBUSY);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_EBUSY);
	/* the environment sets the bound when the options do not */
	setenv("FI_ARENA_LOCK_TIMEOUT", "0.2", 1);
	fi_settings_reload();
	o.lock_timeout_ms = 0;
	t0 = fi_now();
	ck_assert_int_eq(fi_arena_open(&b, FP, &o), FI_EBUSY);
	dt = fi_now() - t0;
	ck_assert_msg(dt >= 0.19 && dt < 2, "waited %.3f s for a 0.2 s bound", dt);
	unsetenv("FI_ARENA_LOCK_TIMEOUT");
	fi_settings_reload();
	/* it dies: the lock is repaired, its half publish undone */
	kill(pid, SIGKILL);
	ck_assert_int_eq(t_wait(pid), 128 + SIGKILL);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.recoveries, 1);
	ck_assert_uint_eq(st.writing, 0);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	fi_arena_close(a);
}
END_TEST

/* n blocks of a chain published through l; keys and blocks out. */
static void put_n(struct fi_arena_lease *l, size_t n, unsigned seed, fi_arena_key *k, uint32_t *blk)
{
	uint32_t toks[64 * T_BLOCK_TOKENS];
	size_t nf;
	t_tokens(toks, n * T_BLOCK_TOKENS, seed);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, n * T_BLOCK_TOKENS, T_BLOCK_TOKENS, k), FI_OK);
	ck_assert_int_eq(t_put_chain(l, k, n, 4096), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(l, k, n, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, n);
}

/* Each kind of corruption is caught by the checksum: a flipped bit, a zeroed block, a NaN
 * written over a value, keys swapped between two entries. The failing block is withdrawn:
 * lookups stop at it, a writer of its key gets a fresh block, it is freed when unpinned. */
START_TEST(test_corruption_caught)
{
	struct fi_arena_opts o = t_opts(64);
	struct fi_arena *a;
	struct fi_arena_lease *l, *m;
	struct fi_arena_stats st;
	enum fi_arena_reserve_result r;
	fi_arena_key k[8], tmpk;
	uint32_t blk[8], b2, got[8];
	size_t bad, nf;
	uint8_t *p;
	const float nan = __builtin_nanf("");
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	put_n(l, 8, 1, k, blk);
	ck_assert_int_eq(fi_arena_verify_blocks(a, blk, 8, &bad), FI_OK);
	ck_assert_uint_eq(bad, 8);
	for (int kind = 0; kind < 4; kind++) {
		uint32_t v = (uint32_t)kind + 2; /* blocks 2..5 */
		p = fi_arena_data(a, blk[v]);
		switch (kind) {
		case 0: p[1234] ^= 0x10; break;
		case 1: memset(p, 0, 4096); break;
		case 2: memcpy(p + 64, &nan, 4); break;
		default: /* swap the keys of blocks 5 and 6 */
			memcpy(&tmpk, a->blk[blk[5]].key, 32);
			memcpy(a->blk[blk[5]].key, a->blk[blk[6]].key, 32);
			memcpy(a->blk[blk[6]].key, &tmpk, 32);
		}
		ck_assert_int_eq(fi_arena_verify_blocks(a, blk, 8, &bad), FI_OK);
		ck_assert_msg(bad == v, "kind %d: first bad %zu, want %u", kind, bad, v);
		ck_assert_int_eq(fi_arena_verify(a, blk[v]), FI_EFORMAT);
		if (kind == 3) { /* both swapped entries fail; both are withdrawn */
			ck_assert_int_eq(fi_arena_verify(a, blk[6]), FI_EFORMAT);
			ck_assert_int_eq(fi_arena_withdraw(l, blk[5]), FI_OK);
			ck_assert_int_eq(fi_arena_withdraw(l, blk[6]), FI_OK);
			ck_assert_int_eq(fi_arena_check(a), FI_OK);
			ck_assert_int_eq(fi_arena_lease(a, &m), FI_OK);
			ck_assert_int_eq(fi_arena_lookup(m, k, 8, got, &nf), FI_OK);
			ck_assert_uint_eq(nf, 5);
			fi_arena_unlease(m);
			break;
		}
		/* withdraw it: lookups now stop there */
		ck_assert_int_eq(fi_arena_withdraw(l, blk[v]), FI_OK);
		ck_assert_int_eq(fi_arena_lease(a, &m), FI_OK);
		ck_assert_int_eq(fi_arena_lookup(m, k, 8, got, &nf), FI_OK);
		ck_assert_uint_eq(nf, v);
		/* rewritten: the key gets a fresh block with good data */
		ck_assert_int_eq(fi_arena_reserve(m, &k[v], &b2, (void **)&p, &r), FI_OK);
		ck_assert_int_eq(r, FI_ARENA_WRITE);
		ck_assert_uint_ne(b2, blk[v]);
		t_fill(p, 4096, &k[v]);
		ck_assert_int_eq(fi_arena_publish(m, b2), FI_OK);
		ck_assert_int_eq(fi_arena_verify(a, b2), FI_OK);
		ck_assert_int_eq(fi_arena_check(a), FI_OK);
		fi_arena_unlease(m);
		/* the stale block is still pinned by l, and out of every list */
		ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
		ck_assert_uint_eq(st.stale, 1);
		ck_assert_uint_eq(st.corrupt, (uint64_t)kind + 1);
		while (fi_arena_unpin(l, blk[v]) == FI_OK) /* put's pin and lookups' */
			;
		ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
		ck_assert_uint_eq(st.stale, 0);
		ck_assert_int_eq(fi_arena_check(a), FI_OK);
		ck_assert_int_eq(fi_arena_lookup(l, k, 8, blk, &nf), FI_OK);
		ck_assert_uint_eq(nf, 8);
	}
	/* withdrawing what is not a pinned published block is refused */
	ck_assert_int_eq(fi_arena_withdraw(l, FI_ARENA_NONE - 1), FI_ESTATE);
	fi_arena_close(a);
}
END_TEST

/* A stale block pinned by a process that dies: the sweep frees it; a repair keeps the
 * invariants. */
START_TEST(test_stale_block_of_dead_reader)
{
	struct fi_arena_opts o = t_opts(16);
	struct fi_arena *a;
	struct fi_arena_lease *l;
	struct fi_arena_stats st;
	fi_arena_key k[2];
	uint32_t blk[2];
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	put_n(l, 2, 5, k, blk);
	ck_assert_int_eq(fi_arena_withdraw(l, blk[1]), FI_OK);
	/* pretend its lease belongs to a dead process */
	a->ls[l->slot].pid = 1 << 30;
	ck_assert_int_eq(fi_arena_sweep(a, NULL), FI_OK);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.stale, 0);
	ck_assert_uint_eq(st.ready, 1);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	fi_arena_close(a);
}
END_TEST

/* Data grows by extents: 4 blocks allocated at a time (here), the file's blocks on disk
 * follow, and listing shows allocated and maximum sizes. */
START_TEST(test_extents)
{
	struct fi_arena_opts o = t_opts(40);
	struct fi_arena *a;
	struct fi_arena_lease *l;
	struct fi_arena_stats st;
	struct stat fs;
	fi_arena_key k[40];
	uint32_t blk[40], e;
	uint64_t small;
	void *base;
	size_t len;
	o.extent_bytes = 4 * 4096;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_ge(st.n_blocks, 40);
	ck_assert_uint_eq(st.alloc_blocks, 4);
	ck_assert_uint_lt(st.alloc_bytes, st.file_bytes);
	ck_assert_int_eq(stat(fi_arena_file(a), &fs), 0);
	small = (uint64_t)fs.st_blocks * 512;
	ck_assert_msg(small <= st.alloc_bytes + 4096, "%llu bytes on disk for %llu allocated",
		      (unsigned long long)small, (unsigned long long)st.alloc_bytes);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	put_n(l, 9, 2, k, blk);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.alloc_blocks, 12);
	ck_assert_uint_eq(st.evictions, 0);
	ck_assert_int_eq(stat(fi_arena_file(a), &fs), 0);
	ck_assert_uint_gt((uint64_t)fs.st_blocks * 512, small);
	/* extents: block 9 is in extent 2, 4 blocks from block 8 on */
	ck_assert_int_eq(fi_arena_extent(a, blk[8], &e, &base, &len), FI_OK);
	ck_assert_uint_eq(e, blk[8] / 4);
	ck_assert_ptr_eq(base, fi_arena_data(a, e * 4));
	ck_assert_uint_eq(len, 4 * 4096);
	ck_assert_int_eq(fi_arena_extent(a, 12, &e, &base, &len), FI_ERANGE);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	/* another process sees the grown data */
	fi_arena_unlease(l);
	fi_arena_close(a);
	o.no_create = 1;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(l, k, 9, blk, &len), FI_OK);
	ck_assert_uint_eq(len, 9);
	for (int i = 0; i < 9; i++)
		ck_assert(t_data_ok(fi_arena_data(a, blk[i]), 4096, &k[i]));
	fi_arena_close(a);
}
END_TEST

/* A tmpfs of 48 KiB mounted on the arena's directory, in a mount namespace of a child (as
 * root, or in a user namespace); 0 when that cannot be had here. */
static int small_tmpfs(const char *dir)
{
	char map[64];
	int fd;
	if (unshare(CLONE_NEWNS)) {
		uid_t uid = geteuid();
		gid_t gid = getegid();
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS))
			return 0;
		if ((fd = open("/proc/self/setgroups", O_WRONLY)) >= 0) {
			(void)!write(fd, "deny", 4);
			close(fd);
		}
		snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
		if ((fd = open("/proc/self/uid_map", O_WRONLY)) < 0 ||
		    write(fd, map, strlen(map)) < 0)
			return 0;
		close(fd);
		snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
		if ((fd = open("/proc/self/gid_map", O_WRONLY)) < 0 ||
		    write(fd, map, strlen(map)) < 0)
			return 0;
		close(fd);
	}
	mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
	return !mount("none", dir, "tmpfs", 0, "size=48k,mode=0700");
}

/* No room for the next extent (ENOSPC on a full tmpfs): the arena evicts instead of growing,
 * and nothing faults (a sparse mapping would raise SIGBUS on the write). */
START_TEST(test_extent_refused)
{
	struct fi_arena_opts o = t_opts(40);
	int fds[2], rc;
	char why = 0;
	pid_t pid;
	o.extent_bytes = 4 * 4096;
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		struct fi_arena *a;
		struct fi_arena_lease *l;
		struct fi_arena_stats st;
		fi_arena_key k[20];
		uint32_t toks[20 * T_BLOCK_TOKENS], b;
		uint8_t buf[4096];
		close(fds[0]);
		if (!small_tmpfs(t_dir)) {
			(void)!write(fds[1], "s", 1);
			_exit(0);
		}
		if (fi_arena_open(&a, FP, &o) || fi_arena_lease(a, &l))
			_exit(1);
		t_tokens(toks, sizeof toks / 4, 3);
		if (fi_arena_chain_keys(FP, toks, sizeof toks / 4, T_BLOCK_TOKENS, k))
			_exit(2);
		for (int i = 0; i < 20; i++) {
			t_fill(buf, sizeof buf, &k[i]);
			if (fi_arena_put(l, &k[i], buf, sizeof buf, &b, NULL) || fi_arena_unpin(l, b))
				_exit(3);
		}
		fi_arena_unlease(l);
		if (fi_arena_stat(a, &st))
			_exit(4);
		if (st.alloc_blocks != 4 || st.evictions != 16 || st.ready != 4 || fi_arena_check(a)) {
			fprintf(stderr, "alloc %u evictions %llu ready %u\n", st.alloc_blocks,
				(unsigned long long)st.evictions, st.ready);
			_exit(5);
		}
		fi_arena_close(a);
		_exit(0);
	}
	close(fds[1]);
	rc = t_wait(pid);
	if (read(fds[0], &why, 1) == 1 && why == 's')
		printf("SKIPPED: extent refused: no tmpfs mount here (needs root or user namespaces)\n");
	close(fds[0]);
	ck_assert_int_eq(rc, 0);
}
END_TEST

/* The cost of verifying a prefix: 64 MiB here in 2 MiB blocks (an 8B model's block of 16
 * tokens); FI_TEST_ARENA_MIB=512 measures the 4096-token prefix. Printed, not asserted: the
 * numbers are for the notes. */
START_TEST(test_verify_cost)
{
	const char *env = getenv("FI_TEST_ARENA_MIB");
	size_t mib = env ? (size_t)atoi(env) : 64, n = mib / 2, bad, i;
	struct fi_arena_opts o = {0};
	struct fi_arena *a;
	struct fi_arena_lease *l;
	uint32_t *blk = malloc(n * sizeof *blk), *toks = malloc(n * 16 * sizeof *toks);
	fi_arena_key *k = malloc(n * sizeof *k);
	uint8_t *buf = malloc(2u << 20);
	double t0, one, par;
	ck_assert(blk && toks && k && buf && n);
	o.dir = t_dir;
	o.block_tokens = 16;
	o.token_bytes = 128 << 10; /* 8B: 32 layers x 2 x 8 heads x 128 x bf16 */
	o.size_bytes = (uint64_t)(mib + 8) << 20;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	for (i = 0; i < n * 16; i++)
		toks[i] = (uint32_t)i;
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, n * 16, 16, k), FI_OK);
	for (i = 0; i < n; i++) {
		memset(buf, (int)i, 2u << 20);
		ck_assert_int_eq(fi_arena_put(l, &k[i], buf, 2u << 20, &blk[i], NULL), FI_OK);
	}
	t0 = fi_now();
	for (i = 0; i < n; i++)
		ck_assert_int_eq(fi_arena_verify(a, blk[i]), FI_OK);
	one = fi_now() - t0;
	t0 = fi_now();
	ck_assert_int_eq(fi_arena_verify_blocks(a, blk, n, &bad), FI_OK);
	par = fi_now() - t0;
	ck_assert_uint_eq(bad, n);
	printf("arena verify: %zu MiB in %zu blocks: %.1f ms on one thread (%.1f GB/s), %.1f ms "
	       "spread over threads (%ld CPUs)\n", mib, n, one * 1e3, mib / 1024.0 / one * 1.073741824,
	       par * 1e3, sysconf(_SC_NPROCESSORS_ONLN));
	fi_arena_close(a);
	free(blk);
	free(toks);
	free(k);
	free(buf);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("arena_faults");
	TCase *tc = tcase_create("arena_faults");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_stopped_lock_owner);
	tcase_add_test(tc, test_corruption_caught);
	tcase_add_test(tc, test_stale_block_of_dead_reader);
	tcase_add_test(tc, test_extents);
	tcase_add_test(tc, test_extent_refused);
	tcase_add_test(tc, test_verify_cost);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
