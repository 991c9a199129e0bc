/* kvcache (lib/kv/kvcache.h) on the CPU backend: block tables, the prefix cache (publish,
 * match, attach, idle blocks kept and evicted least recently used first, a block written
 * again unpublished, counts for planning), the backend's kv_copy block layout, and the
 * arena transfers' kv_copy calls (one extent each). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "base/settings.h"
#include "kv/arena.h"
#include "kv/kvcache.h"
#include "kv/kvxfer.h"
#include "util.h"

static struct fi_backend *be;

static fi_arena_key key(int i)
{
	fi_arena_key k;
	memset(&k, 0, sizeof k);
	/* the table hashes the first 4 bytes: equal ones for some keys test the probe runs */
	k.b[0] = (uint8_t)(i % 3);
	k.b[8] = (uint8_t)i;
	k.b[9] = (uint8_t)(i >> 8);
	return k;
}

/* A sequence of n tokens, committed. */
static int seq_of(struct fi_kvcache *c, int n)
{
	int s;
	ck_assert(!fi_kvcache_seq_new(c, &s));
	ck_assert_int_eq(fi_kvcache_blocks_needed(c, s, n), (n + 3) / 4);
	ck_assert_msg(!fi_kvcache_reserve(c, s, n), "%s", fi_errmsg());
	ck_assert(!fi_kvcache_set_len(c, s, n));
	return s;
}

START_TEST(test_prefix_cache)
{
	struct fi_kvcache *c;
	struct fi_kvcache_stats st;
	fi_arena_key k[8];
	int a, b, d, idle, n;
	for (int i = 0; i < 8; i++)
		k[i] = key(i);
	ck_assert(!fi_kvcache_create(be, 2, 1, 4, 8, 4, &c)); /* 8 blocks of 4 tokens */
	a = seq_of(c, 14);                                   /* 4 blocks, the last partial */
	ck_assert_int_eq(fi_kvcache_available(c), 4);
	/* only full committed blocks are published: 3 of them */
	ck_assert_int_eq(fi_kvcache_publish(c, a, 0, k, 4), 3);
	ck_assert_int_eq(fi_kvcache_match(c, k, 4, &idle), 3);
	ck_assert_int_eq(idle, 0);
	/* b attaches the first two */
	ck_assert(!fi_kvcache_seq_new(c, &b));
	ck_assert(!fi_kvcache_seq_attach(c, b, k, 2));
	ck_assert_int_eq(fi_kvcache_seq_len(c, b), 8);
	ck_assert_int_eq(fi_kvcache_blocks_needed(c, b, 9), 1);
	ck_assert(!fi_kvcache_reserve(c, b, 9));
	ck_assert(!fi_kvcache_set_len(c, b, 9));
	ck_assert_int_eq(fi_kvcache_available(c), 3);
	/* a alone holds its blocks 3 and 4 (block 3 published): freeing it gains 2 */
	ck_assert_int_eq(fi_kvcache_seq_gain(c, a), 2);
	fi_kvcache_seq_free(c, a);
	/* its published blocks stay: block 3 idle, blocks 1-2 held by b; the partial is free */
	fi_kvcache_stats(c, &st);
	ck_assert_int_eq(st.idle_blocks, 1);
	ck_assert_int_eq(st.cached_blocks, 3);
	ck_assert_int_eq(fi_kvcache_available(c), 5);
	ck_assert_int_eq(fi_kvcache_match(c, k, 4, &idle), 3);
	ck_assert_int_eq(idle, 1);
	/* b goes: every published block is idle now, nothing is lost */
	fi_kvcache_seq_free(c, b);
	fi_kvcache_stats(c, &st);
	ck_assert_int_eq(st.idle_blocks, 3);
	ck_assert_int_eq(fi_kvcache_available(c), 8);
	/* taking all 8 blocks evicts the 3 idle ones, least recently used first */
	d = seq_of(c, 32);
	fi_kvcache_stats(c, &st);
	ck_assert_int_eq(st.evictions, 3);
	ck_assert_int_eq(st.cached_blocks, 0);
	ck_assert_int_eq(fi_kvcache_match(c, k, 4, NULL), 0);
	ck_assert_int_eq(fi_kvcache_reserve(c, d, 33), FI_EFULL);
	ck_assert(!fi_kvcache_set_len(c, d, 32));
	/* a published block written again (after a truncation) is unpublished */
	ck_assert_int_eq(fi_kvcache_publish(c, d, 0, k, 8), 8);
	ck_assert(!fi_kvcache_set_len(c, d, 30));
	ck_assert(!fi_kvcache_reserve(c, d, 31));
	ck_assert_int_eq(fi_kvcache_match(c, k, 8, NULL), 7);
	/* a key already published elsewhere is left to its block */
	ck_assert_int_eq(fi_kvcache_publish(c, d, 0, k, 1), 0);
	fi_kvcache_seq_free(c, d);
	fi_kvcache_stats(c, &st);
	ck_assert_int_eq(st.idle_blocks, 7);
	fi_kvcache_clear(c);
	ck_assert_int_eq(fi_kvcache_free_blocks(c), 8);
	ck_assert_int_eq(fi_kvcache_match(c, k, 8, &n), 0);
	fi_kvcache_destroy(c);
}
END_TEST

/* Many keys sharing a hash prefix: lookups after deletions in the middle of probe runs. */
START_TEST(test_table_churn)
{
	struct fi_kvcache *c;
	fi_arena_key *k = malloc(sizeof *k * 400);
	int s[100];
	for (int i = 0; i < 400; i++)
		k[i] = key(i);
	ck_assert(!fi_kvcache_create(be, 1, 1, 4, 100, 4, &c));
	for (int round = 0; round < 4; round++) {
		/* 100 one-block sequences published under keys round*100 + i */
		for (int i = 0; i < 100; i++) {
			s[i] = seq_of(c, 4);
			ck_assert_int_eq(fi_kvcache_publish(c, s[i], 0, &k[round * 100 + i], 1), 1);
		}
		for (int i = 0; i < 100; i++)
			fi_kvcache_seq_free(c, s[i]);
		/* each key of this round is found; those of earlier rounds were evicted */
		for (int i = 0; i < 100; i++) {
			ck_assert_int_eq(fi_kvcache_match(c, &k[round * 100 + i], 1, NULL), 1);
			if (round)
				ck_assert_int_eq(fi_kvcache_match(c, &k[(round - 1) * 100 + i], 1, NULL), 0);
		}
	}
	fi_kvcache_destroy(c);
	free(k);
}
END_TEST

/* kv_copy: host block i holds, per layer, K then V of cache block blocks[i]. */
START_TEST(test_kv_copy_layout)
{
	struct fi_kv_cache kv = {.n_layers = 2, .n_blocks = 5, .block_size = 4, .n_kv_heads = 2,
				 .head_dim = 3};
	size_t part = 4 * 2 * 3, lay = 5 * part;
	float host[2][4 * 4 * 2 * 3];
	void *ptr[2] = {host[0], host[1]};
	int32_t bl[2] = {3, 1}, to[2] = {0, 4};
	ck_assert(be->ops->kv_copy);
	ck_assert(!be->ops->kv_alloc(be, &kv));
	for (int l = 0; l < 2; l++)
		for (size_t i = 0; i < lay; i++) {
			((float *)kv.k_d[l])[i] = (float)(1000 * l + i);
			((float *)kv.v_d[l])[i] = (float)(-1000 * l - (int)i - 1);
		}
	ck_assert(!be->ops->kv_copy(be, &kv, 0, 2, bl, ptr, NULL));
	for (int b = 0; b < 2; b++)
		for (int l = 0; l < 2; l++)
			for (size_t i = 0; i < part; i++) {
				ck_assert(host[b][2 * l * part + i] == (float)(1000 * l + bl[b] * part + i));
				ck_assert(host[b][(2 * l + 1) * part + i] ==
					  (float)(-1000 * l - (int)(bl[b] * part + i) - 1));
			}
	ck_assert(!be->ops->kv_copy(be, &kv, 1, 2, to, ptr, NULL));
	for (int b = 0; b < 2; b++)
		for (int l = 0; l < 2; l++)
			ck_assert(!memcmp((float *)kv.k_d[l] + to[b] * part, (float *)kv.k_d[l] + bl[b] * part,
					  part * sizeof(float)));
	bl[0] = 5;
	ck_assert_int_eq(be->ops->kv_copy(be, &kv, 0, 1, bl, ptr, NULL), FI_ERANGE);
	be->ops->kv_free(be, &kv);
}
END_TEST

/* ---- the arena transfers: each kv_copy call inside one extent of the arena ---- */

static const struct fi_backend_ops *real_ops;
static struct fi_arena *rec_arena;
static size_t rec_block;
static int rec_segs, rec_spans;

/* The extent holding [p, p + rec_block), or -1. */
static int extent_at(const void *p)
{
	for (uint32_t b = 0;; b++) {
		uint32_t e;
		void *base;
		size_t len;
		if (fi_arena_extent(rec_arena, b, &e, &base, &len)) {
			fi_clear_error();
			return -1;
		}
		if ((const char *)p >= (char *)base && (const char *)p + rec_block <= (char *)base + len)
			return (int)e;
	}
}

/* rec_segs: the segments the copies were given (runs of blocks of one seg value, which a
 * strided copy may join); rec_spans: blocks whose segment holds blocks of another extent,
 * or that lie in none. */
static fi_err rec_copy(struct fi_backend *b, struct fi_kv_cache *kv, int to_cache, int n,
		       const int32_t *blocks, void *const *host, const int32_t *seg)
{
	ck_assert_ptr_nonnull(seg);
	for (int i = 0, e0 = -1; i < n; i++) {
		if (!i || seg[i] != seg[i - 1]) {
			rec_segs++;
			e0 = extent_at(host[i]);
		}
		if (e0 < 0 || extent_at(host[i]) != e0)
			rec_spans++;
	}
	return real_ops->kv_copy(b, kv, to_cache, n, blocks, host, seg);
}

/* Registrations (host_register, host_unregister) as the CPU backend has none: which bases,
 * how many twice, how many undone. The background thread of fi_kvx_open calls it too. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static void *reg_base[64];
static int reg_n, reg_dup, unreg_n;

static fi_err rec_register(struct fi_backend *b, void *p, size_t bytes)
{
	pthread_mutex_lock(&reg_mu);
	for (int i = 0; i < reg_n; i++)
		reg_dup += reg_base[i] == p;
	if (reg_n < 64)
		reg_base[reg_n++] = p;
	pthread_mutex_unlock(&reg_mu);
	usleep(3000); /* pinning takes time: a fetch meets the thread at work */
	return FI_OK;
}

static void rec_unregister(struct fi_backend *b, void *p)
{
	pthread_mutex_lock(&reg_mu);
	unreg_n++;
	pthread_mutex_unlock(&reg_mu);
}

/* The end of a test that made its own FI_HOME: removed, and the settings read again. */
static void home_done(const char *home)
{
	char cmd[64];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
	ck_assert(!system(cmd));
	unsetenv("FI_HOME");
	fi_settings_reload();
}

START_TEST(test_arena_extents)
{
	static struct fi_backend_ops rec;
	uint8_t fp[32] = {7, 1, 2};
	char id[2 * FI_ARENA_KEY_BYTES + 1], home[] = "/tmp/fi-kvx-XXXXXX";
	struct fi_kvcache *c;
	struct fi_arena *a;
	struct fi_kvx *x;
	uint32_t toks[40];
	size_t stored = 0;
	int s, s2, got = 0;
	ck_assert(mkdtemp(home));
	setenv("FI_HOME", home, 1);
	fi_settings_reload();
	ck_assert(!fi_kvcache_create(be, 2, 1, 4, 24, 4, &c)); /* 24 blocks of 4 tokens */
	rec_block = 2 * 2 * fi_kv_block_bytes(&c->kv, be->act);
	/* the arena made first with extents of 3 blocks (of 4 KiB each), so that a prefix of 10
	 * blocks spans four of them */
	struct fi_arena_opts o = {.block_tokens = 4, .token_bytes = rec_block / 4,
				  .size_bytes = 1 << 20, .extent_bytes = 3 * 4096};
	ck_assert(!fi_kvx_id(fp, &c->kv, be->act, id));
	ck_assert_msg(!fi_arena_open(&a, id, &o), "%s", fi_errmsg());
	fi_arena_close(a);
	real_ops = be->ops;
	rec = *be->ops;
	rec.kv_copy = rec_copy;
	rec.host_register = rec_register;
	rec.host_unregister = rec_unregister;
	be->ops = &rec;
	ck_assert_msg(!fi_kvx_open(&x, c, fp, 0, 0), "%s", fi_errmsg());
	rec_arena = fi_kvx_arena(x);
	for (int i = 0; i < 40; i++)
		toks[i] = 100 + (uint32_t)i * 7;
	s = seq_of(c, 40);
	for (int l = 0; l < 2; l++) /* distinct K and V everywhere */
		for (size_t i = 0; i < 24 * 16; i++) {
			((float *)c->kv.k_d[l])[i] = (float)(l * 100000 + (int)i);
			((float *)c->kv.v_d[l])[i] = -(float)(l * 100000 + (int)i) - 1;
		}
	ck_assert_msg(!fi_kvx_store(x, s, toks, 40, &stored), "%s", fi_errmsg());
	ck_assert_int_eq(stored, 10);
	ck_assert_int_ge(rec_segs, 4);
	ck_assert_int_eq(rec_spans, 0);
	/* 10 blocks in extents of 3: four extents, each registered once as first used, and
	 * undone at close */
	fi_kvx_close(x);
	ck_assert_int_eq(reg_n, 4);
	ck_assert_int_eq(reg_dup, 0);
	ck_assert_int_eq(unreg_n, 4);
	/* A later process: the four extents are registered by the thread fi_kvx_open starts,
	 * with no copy asking for them */
	reg_n = unreg_n = 0;
	ck_assert_msg(!fi_kvx_open(&x, c, fp, 0, 0), "%s", fi_errmsg());
	for (int i = 0, n = 0; i < 400 && n < 4; i++) {
		usleep(5000);
		pthread_mutex_lock(&reg_mu);
		n = reg_n;
		pthread_mutex_unlock(&reg_mu);
	}
	fi_kvx_close(x);
	ck_assert_int_eq(reg_n, 4);
	ck_assert_int_eq(unreg_n, 4);
	/* and while the fetch below wants them (it waits for, or takes, each one: still once) */
	reg_n = unreg_n = 0;
	ck_assert_msg(!fi_kvx_open(&x, c, fp, 0, 0), "%s", fi_errmsg());
	rec_arena = fi_kvx_arena(x);
	/* back into another sequence: the same K and V */
	ck_assert(!fi_kvcache_seq_new(c, &s2));
	rec_segs = 0;
	ck_assert_msg(!fi_kvx_fetch(x, s2, toks, 40, 10, &got), "%s", fi_errmsg());
	ck_assert_int_eq(got, 40);
	ck_assert_int_ge(rec_segs, 4);
	ck_assert_int_eq(rec_spans, 0);
	for (int p = 0; p < 40; p += 4) {
		int32_t b1 = fi_kvcache_slot(c, s, p) / 4, b2 = fi_kvcache_slot(c, s2, p) / 4;
		ck_assert_int_ne(b1, b2);
		for (int l = 0; l < 2; l++) {
			ck_assert(!memcmp((float *)c->kv.k_d[l] + b1 * 16, (float *)c->kv.k_d[l] + b2 * 16,
					  16 * sizeof(float)));
			ck_assert(!memcmp((float *)c->kv.v_d[l] + b1 * 16, (float *)c->kv.v_d[l] + b2 * 16,
					  16 * sizeof(float)));
		}
	}
	fi_kvx_close(x);
	ck_assert_int_eq(reg_n, 4);
	ck_assert_int_eq(reg_dup, 0);
	ck_assert_int_eq(unreg_n, 4);
	be->ops = real_ops;
	fi_kvcache_destroy(c);
	home_done(home);
}
END_TEST

/* fi_kvx_fetch in two halves, as the scheduler runs it under a step: begin commits every
 * block found; the step grows the sequence; end finds the corrupt block (checked meanwhile)
 * and says how many tokens were good, leaving the length to the caller; the bad block is
 * withdrawn, so the next fetch stops before it. */
START_TEST(test_fetch_halves)
{
	uint8_t fp[32] = {9, 4, 1};
	char home[] = "/tmp/fi-kvx-XXXXXX";
	struct fi_kvcache *c;
	struct fi_kvx *x;
	struct fi_kvx_fetch *f = NULL;
	struct fi_arena_lease *l;
	fi_arena_key *keys;
	uint32_t toks[40], blk[10];
	size_t stored = 0, nk, found = 0;
	int s, s2, s3, got = 0, good = -1;
	ck_assert(mkdtemp(home));
	setenv("FI_HOME", home, 1);
	fi_settings_reload();
	ck_assert(!fi_kvcache_create(be, 2, 1, 4, 40, 4, &c)); /* 40 blocks of 4 tokens */
	ck_assert_msg(!fi_kvx_open(&x, c, fp, 1 << 20, 1), "%s", fi_errmsg());
	for (int i = 0; i < 40; i++)
		toks[i] = 300 + (uint32_t)i * 3;
	s = seq_of(c, 40);
	for (int l = 0; l < 2; l++)
		for (size_t i = 0; i < 40 * 16; i++) {
			((float *)c->kv.k_d[l])[i] = (float)i;
			((float *)c->kv.v_d[l])[i] = -(float)i;
		}
	ck_assert_msg(!fi_kvx_store(x, s, toks, 40, &stored), "%s", fi_errmsg());
	ck_assert_int_eq(stored, 10);
	/* a byte of the fifth block flipped in the arena */
	ck_assert(!fi_kvx_keys(x, toks, 40, &keys, &nk) && nk == 10);
	ck_assert(!fi_arena_lease(fi_kvx_arena(x), &l));
	ck_assert(!fi_arena_lookup(l, keys, nk, blk, &found) && found == 10);
	((uint8_t *)fi_arena_data(fi_kvx_arena(x), blk[4]))[5] ^= 0x40;
	fi_arena_unlease(l);
	free(keys);

	ck_assert(!fi_kvcache_seq_new(c, &s2));
	ck_assert_msg(!fi_kvx_fetch_begin(x, s2, toks, 40, 10, &got, &f), "%s", fi_errmsg());
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(got, 40); /* optimistic: checksums not yet known */
	ck_assert_int_eq(fi_kvcache_seq_len(c, s2), 40);
	ck_assert(!fi_kvcache_reserve(c, s2, 44) && !fi_kvcache_set_len(c, s2, 44)); /* a step */
	ck_assert_int_eq(fi_kvx_fetch_end(f, &good), FI_EFORMAT);
	ck_assert_int_eq(good, 16);
	ck_assert_int_eq(fi_kvcache_seq_len(c, s2), 44); /* the caller's to cut */
	ck_assert_msg(strstr(fi_errmsg(), "failed its checksum"), "%s", fi_errmsg());
	/* the good blocks hold the stored K and V */
	for (int p = 0; p < 16; p += 4)
		ck_assert(!memcmp((float *)c->kv.k_d[1] + fi_kvcache_slot(c, s2, p) * 4,
				  (float *)c->kv.k_d[1] + fi_kvcache_slot(c, s, p) * 4, 16 * sizeof(float)));
	/* withdrawn: the next fetch stops before it; nothing found is no fetch at all */
	ck_assert(!fi_kvcache_seq_new(c, &s3));
	ck_assert_msg(!fi_kvx_fetch(x, s3, toks, 40, 10, &got), "%s", fi_errmsg());
	ck_assert_int_eq(got, 16);
	ck_assert_msg(!fi_kvx_fetch_begin(x, s3, toks, 40, 10, &got, &f), "%s", fi_errmsg());
	ck_assert_ptr_null(f);
	ck_assert_int_eq(got, 0);
	ck_assert_int_eq(fi_kvx_fetch_end(NULL, &good), FI_OK);
	fi_kvx_close(x);
	fi_kvcache_destroy(c);
	home_done(home);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("kvcache");
	TCase *tc = tcase_create("kvcache");
	int rc;
	if (fi_backend_cpu_create(1, &be))
		return 1;
	tcase_add_test(tc, test_prefix_cache);
	tcase_add_test(tc, test_table_churn);
	tcase_add_test(tc, test_kv_copy_layout);
	tcase_add_test(tc, test_arena_extents);
	tcase_add_test(tc, test_fetch_halves);
	suite_add_tcase(s, tc);
	rc = fi_test_run(s);
	fi_backend_destroy(be);
	return rc;
}
