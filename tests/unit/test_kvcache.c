/* kvcache (lib/kv/kvcache.h) on the CPU backend: block tables, the prefix cache (publish,
 * match, attach, idle blocks kept and evicted least recently used first, a block written
 * again unpublished, counts for planning), and the backend's kv_copy block layout. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "kv/kvcache.h"
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
	ck_assert(!be->ops->kv_copy(be, &kv, 0, 2, bl, ptr));
	for (int b = 0; b < 2; b++)
		for (int l = 0; l < 2; l++)
			for (size_t i = 0; i < part; i++) {
				ck_assert(host[b][2 * l * part + i] == (float)(1000 * l + bl[b] * part + i));
				ck_assert(host[b][(2 * l + 1) * part + i] ==
					  (float)(-1000 * l - (int)(bl[b] * part + i) - 1));
			}
	ck_assert(!be->ops->kv_copy(be, &kv, 1, 2, to, ptr));
	for (int b = 0; b < 2; b++)
		for (int l = 0; l < 2; l++)
			ck_assert(!memcmp((float *)kv.k_d[l] + to[b] * part, (float *)kv.k_d[l] + bl[b] * part,
					  part * sizeof(float)));
	bl[0] = 5;
	ck_assert_int_eq(be->ops->kv_copy(be, &kv, 0, 1, bl, ptr), FI_ERANGE);
	be->ops->kv_free(be, &kv);
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
	suite_add_tcase(s, tc);
	rc = fi_test_run(s);
	fi_backend_destroy(be);
	return rc;
}
