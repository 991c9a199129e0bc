/* KV arena under failure: a writer killed (SIGKILL) at each step of a block write, including
 * while it holds the arena's mutex; concurrent writers and readers over overlapping prefixes;
 * and the same with workers killed at random. After each, a fresh process must find every
 * published block intact (content checked against its key and its checksum), no block lost or
 * half-written, no lease of the dead left, and the internal invariants whole. */
#include <signal.h>
#include <time.h>

#include "base/settings.h"
#include "arena_test.h"
#include "util.h"

static void setup(void)
{
	t_mkdir();
	fi_clear_error();
}

static void teardown(void)
{
	t_rmdir();
}

/* Checks every published block of an arena: content against its key and checksum. Returns
 * the number of bad blocks; *n_ready gets the number checked. */
static int scan_blocks(struct fi_arena *a, uint32_t *n_ready)
{
	struct fi_arena_lease *l;
	uint32_t b, n = fi_arena_n_blocks(a), bad = 0, ready = 0;
	if (fi_arena_lease(a, &l))
		return -1;
	for (b = 0; b < n; b++) {
		fi_arena_key k, got;
		uint32_t blk;
		size_t nf;
		if (fi_arena_block_key(a, b, &k))
			return -1;
		/* Pin it by key; a free block's stale key is not found (or finds another block). */
		if (fi_arena_lookup(l, &k, 1, &blk, &nf) || nf != 1 || blk != b)
			continue;
		ready++;
		fi_arena_block_key(a, b, &got);
		if (memcmp(got.b, k.b, 32) || !t_data_ok(fi_arena_data(a, b), 4096, &k) ||
		    fi_arena_verify(a, b))
			bad++;
		fi_arena_unpin(l, b);
	}
	fi_arena_unlease(l);
	if (n_ready)
		*n_ready = ready;
	return (int)bad;
}

struct crash_case {
	const char *point;
	int nth;
};

static const struct crash_case cases[] = {
	{"reserve", 1}, {"reserve", 4},
	{"copy", 1}, {"copy", 4},
	{"publish", 1}, {"publish", 4},
	{"locked-reserve", 1}, {"locked-reserve", 4},
	{"locked-publish", 1}, {"locked-publish", 4},
	{"locked-unlease", 1}, {"locked-unlease", 3},
	{"locked-evict", 1}, {"locked-evict", 4},
};
#define N_CASES (int)(sizeof cases / sizeof cases[0])
#define C_BLOCKS 6 /* the writer's chain, put 2 blocks per round over 3 rounds */

/* The writer: 3 rounds of (lease, put 2 blocks of chain C, look up chain P, unlease). */
static void writer(const char *fp, const struct fi_arena_opts *o, const struct crash_case *c,
		   const fi_arena_key *ck, const fi_arena_key *pk, size_t np)
{
	struct fi_arena *a;
	struct fi_arena_lease *l;
	char env[64];
	uint32_t blk[32];
	size_t nf;
	int r;
	snprintf(env, sizeof env, "%s:%d", c->point, c->nth);
	setenv("FI_ARENA_CRASH", env, 1);
	fi_settings_reload();
	if (fi_arena_open(&a, fp, o))
		_exit(1);
	for (r = 0; r < 3; r++) {
		if (fi_arena_lease(a, &l) || t_put_chain(l, ck + 2 * r, 2, 4096) ||
		    fi_arena_lookup(l, pk, np, blk, &nf))
			_exit(2);
		fi_arena_unlease(l);
	}
	_exit(0); /* the crash point was never reached */
}

/* Runs one case; returns 0 when recovery is complete, else a line number. */
static int run_case(int ci)
{
	const struct crash_case *c = &cases[ci];
	int evict = !strcmp(c->point, "locked-evict");
	int locked = !strncmp(c->point, "locked-", 7);
	struct fi_arena_opts o = t_opts(evict ? 16 : 64);
	struct fi_arena *a;
	struct fi_arena_lease *l;
	struct fi_arena_stats st;
	uint32_t toks[128], blk[32], np, n_ready;
	fi_arena_key ck[C_BLOCKS], pk[32];
	size_t nf, expect;
	char fp[65];
	pid_t pid;
	t_fp(fp, 100 + (unsigned)ci);
	if (fi_arena_open(&a, fp, &o))
		return __LINE__;
	np = evict ? fi_arena_n_blocks(a) : 8; /* evict: chain P fills the arena */
	t_tokens(toks, np * 4, 1000 + (unsigned)ci);
	if (fi_arena_chain_keys(fp, toks, np * 4, 4, pk) || fi_arena_lease(a, &l) ||
	    t_put_chain(l, pk, np, 4096))
		return __LINE__;
	fi_arena_close(a);
	t_tokens(toks, C_BLOCKS * 4, 2000 + (unsigned)ci);
	if (fi_arena_chain_keys(fp, toks, C_BLOCKS * 4, 4, ck))
		return __LINE__;

	pid = fork();
	if (pid == 0)
		writer(fp, &o, c, ck, pk, evict ? 0 : np);
	if (t_wait(pid) != 128 + SIGKILL)
		return __LINE__;

	/* The next process: attach (repairs after a death under the lock, sweeps leases). */
	if (fi_arena_open(&a, fp, &o) || fi_arena_stat(a, &st))
		return __LINE__;
	if (st.leases || st.pins || st.writing || st.swept_leases < 1 ||
	    st.recoveries != (uint64_t)locked)
		return __LINE__;
	if (fi_arena_check(a))
		return __LINE__;
	/* Blocks published before the kill are all there; none after. */
	expect = (size_t)c->nth - 1;
	if (!strcmp(c->point, "locked-publish"))
		expect = (size_t)c->nth;
	if (!strcmp(c->point, "locked-unlease"))
		expect = 2 * (size_t)c->nth;
	if (fi_arena_lease(a, &l) || fi_arena_lookup(l, ck, C_BLOCKS, blk, &nf) || nf != expect)
		return __LINE__;
	if (fi_arena_lookup(l, pk, np, blk, &nf) || nf != (evict ? np - expect : np))
		return __LINE__;
	if (st.evictions != (evict ? expect : 0))
		return __LINE__;
	fi_arena_unlease(l);
	if (scan_blocks(a, &n_ready) != 0 || n_ready != st.ready)
		return __LINE__;
	/* Still fully usable: the whole chain C goes in and comes back. */
	if (fi_arena_lease(a, &l) || t_put_chain(l, ck, C_BLOCKS, 4096))
		return __LINE__;
	fi_arena_unlease(l);
	if (fi_arena_lease(a, &l) || fi_arena_lookup(l, ck, C_BLOCKS, blk, &nf) || nf != C_BLOCKS)
		return __LINE__;
	fi_arena_unlease(l);
	if (fi_arena_check(a) || scan_blocks(a, NULL) != 0)
		return __LINE__;
	fi_arena_close(a);
	return 0;
}

START_TEST(test_crash_points)
{
	int i, passed = 0;
	for (i = 0; i < N_CASES; i++) {
		int line;
		fi_clear_error();
		line = run_case(i);
		if (line)
			printf("crash case %s:%d failed (test line %d)%s%s\n", cases[i].point,
			       cases[i].nth, line, fi_errcode() ? ": " : "",
			       fi_errcode() ? fi_errmsg() : "");
		else
			passed++;
	}
	printf("arena crash recovery: %d/%d cases passed\n", passed, N_CASES);
	ck_assert_int_eq(passed, N_CASES);
}
END_TEST

/* A worker of the concurrent tests: for `iters` random prompts of 8 blocks out of 32 prompts
 * that share prefixes, look up the chain, check what is found, put what is missing. Exit
 * status: 0, 1 (an error), 2 (a corrupt block seen). */
static void worker(const char *fp, const struct fi_arena_opts *o, unsigned seed, int iters)
{
	struct fi_arena *a;
	uint32_t toks[32], blk[8];
	fi_arena_key keys[8];
	int it;
	srand(seed);
	if (fi_arena_open(&a, fp, o))
		_exit(1);
	for (it = 0; it < iters; it++) {
		struct fi_arena_lease *l;
		size_t nf, i;
		t_tokens(toks, 32, (unsigned)rand() % 32);
		if (fi_arena_chain_keys(fp, toks, 32, 4, keys) || fi_arena_lease(a, &l) ||
		    fi_arena_lookup(l, keys, 8, blk, &nf))
			_exit(1);
		for (i = 0; i < nf; i++)
			if (!t_data_ok(fi_arena_data(a, blk[i]), 4096, &keys[i]) ||
			    fi_arena_verify(a, blk[i]))
				_exit(2);
		if (t_put_chain(l, keys + nf, 8 - nf, 4096))
			_exit(1);
		fi_arena_unlease(l);
	}
	fi_arena_close(a);
	_exit(0);
}

START_TEST(test_concurrent_writers_readers)
{
	struct fi_arena_opts o = t_opts(96);
	struct fi_arena *a;
	struct fi_arena_stats st;
	pid_t pids[6];
	uint32_t n_ready;
	char fp[65];
	int i;
	t_fp(fp, 7);
	ck_assert_int_eq(fi_arena_open(&a, fp, &o), FI_OK);
	for (i = 0; i < 6; i++)
		if ((pids[i] = fork()) == 0)
			worker(fp, &o, 17u * (unsigned)i + 1, 300);
	for (i = 0; i < 6; i++)
		ck_assert_int_eq(t_wait(pids[i]), 0);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	printf("arena concurrent: %llu hits, %llu misses, %llu inserts, %llu evictions\n",
	       (unsigned long long)st.hits, (unsigned long long)st.misses,
	       (unsigned long long)st.inserts, (unsigned long long)st.evictions);
	ck_assert_uint_eq(st.leases, 0);
	ck_assert_uint_gt(st.evictions, 0);
	ck_assert_uint_gt(st.hits, 0);
	ck_assert_uint_eq(st.hits + st.misses, 6 * 300 * 8);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	ck_assert_int_eq(scan_blocks(a, &n_ready), 0);
	ck_assert_uint_eq(n_ready, st.ready);
	fi_arena_close(a);
}
END_TEST

START_TEST(test_random_kills)
{
	struct fi_arena_opts o = t_opts(96);
	struct fi_arena *a;
	struct fi_arena_stats st;
	pid_t pids[6];
	uint32_t n_ready;
	char fp[65];
	int i, kills = 0, round;
	t_fp(fp, 8);
	ck_assert_int_eq(fi_arena_open(&a, fp, &o), FI_OK);
	fi_arena_close(a);
	srand(12345);
	for (i = 0; i < 6; i++)
		if ((pids[i] = fork()) == 0)
			worker(fp, &o, 31u * (unsigned)i + 3, 1000000);
	/* Kill a random worker every 2-6 ms and start another, 300 times. */
	for (round = 0; round < 300; round++) {
		struct timespec ts = {0, (2 + rand() % 5) * 1000000L};
		int status;
		nanosleep(&ts, NULL);
		i = rand() % 6;
		kill(pids[i], SIGKILL);
		status = t_wait(pids[i]);
		ck_assert_int_eq(status, 128 + SIGKILL); /* not a failure exit before the kill */
		kills++;
		if ((pids[i] = fork()) == 0)
			worker(fp, &o, 1000u + (unsigned)round, 1000000);
	}
	for (i = 0; i < 6; i++) {
		kill(pids[i], SIGKILL);
		ck_assert_int_eq(t_wait(pids[i]), 128 + SIGKILL);
		kills++;
	}
	ck_assert_int_eq(fi_arena_open(&a, fp, &o), FI_OK);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	printf("arena random kills: %d kills, %llu lock recoveries, %llu leases swept, %llu "
	       "inserts, %llu evictions\n", kills, (unsigned long long)st.recoveries,
	       (unsigned long long)st.swept_leases, (unsigned long long)st.inserts,
	       (unsigned long long)st.evictions);
	ck_assert_uint_eq(st.leases, 0);
	ck_assert_uint_eq(st.writing, 0);
	ck_assert_uint_eq(st.pins, 0);
	ck_assert_uint_gt(st.inserts, 0);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	ck_assert_int_eq(scan_blocks(a, &n_ready), 0);
	ck_assert_uint_eq(n_ready, st.ready);
	fi_arena_close(a);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("arena_crash");
	TCase *tc = tcase_create("arena_crash");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_crash_points);
	tcase_add_test(tc, test_concurrent_writers_readers);
	tcase_add_test(tc, test_random_kills);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
