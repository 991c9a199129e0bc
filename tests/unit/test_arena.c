/* KV arena: keys, create/attach, lookup and put, eviction and FI_EFULL, header validation,
 * leases of dead processes and reused pids, sharing across processes (fork and fork+exec),
 * concurrent creation, listing and removal. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "base/settings.h"
#include "kv/arena_shm.h"
#include "arena_test.h"
#include "util.h"

static const char *FP = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static void setup(void)
{
	t_mkdir();
	fi_clear_error();
}

static void teardown(void)
{
	t_rmdir();
}

static void hex(const fi_arena_key *k, char *out)
{
	fi_arena_key_hex(k, out);
}

START_TEST(test_keys)
{
	/* Reference: Python hashlib.sha256(b"fi-kv-1" + parent + fp + tokens as <u32). */
	uint32_t t[9] = {1, 2, 3, 4, 5, 6, 7, 0x12345678, 9};
	fi_arena_key k[2], n2, other, p;
	char h[65];
	ck_assert_int_eq(fi_arena_chain_keys(FP, t, 9, 4, k), FI_OK);
	hex(&k[0], h);
	ck_assert_str_eq(h, "4984ed174eb3cee5979e76060fe418e211a5ccf582e1254993a2669ef6383a50");
	hex(&k[1], h);
	ck_assert_str_eq(h, "cfa1907cffbf18b1fbea8aedc5efdefcb0c30b213d72f27ea819d8985d660dfb");
	ck_assert_int_eq(fi_arena_key_next(FP, &k[0], t + 4, 4, &n2), FI_OK);
	ck_assert_mem_eq(n2.b, k[1].b, 32);
	ck_assert_int_eq(fi_arena_key_parse(h, &p), FI_OK);
	ck_assert_mem_eq(p.b, k[1].b, 32);
	ck_assert_int_eq(fi_arena_key_parse("abc", &p), FI_EFORMAT);
	/* Another model gives other keys; a bad fingerprint is refused. */
	ck_assert_int_eq(fi_arena_chain_keys("1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
					     t, 4, 4, &other), FI_OK);
	ck_assert(memcmp(other.b, k[0].b, 32));
	ck_assert_int_eq(fi_arena_chain_keys("0123", t, 4, 4, &other), FI_EINVAL);
	ck_assert_int_eq(fi_arena_chain_keys(FP, t, 4, 0, &other), FI_EINVAL);
}
END_TEST

START_TEST(test_create_put_lookup)
{
	struct fi_arena_opts o = t_opts(32);
	struct fi_arena *a, *b;
	struct fi_arena_lease *l, *m;
	struct fi_arena_stats st;
	uint32_t toks[40], blk[10];
	fi_arena_key keys[10], alt[10];
	size_t nf, i;
	char path[512];
	struct stat sb;
	void *base;
	size_t len;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	snprintf(path, sizeof path, "%s/%s.kv", t_dir, FP);
	ck_assert_str_eq(fi_arena_file(a), path);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_uint_eq(fi_arena_block_bytes(a), 4096);
	ck_assert_uint_eq(fi_arena_block_tokens(a), 4);
	ck_assert_uint_ge(fi_arena_n_blocks(a), 30);
	ck_assert_uint_le((uint64_t)sb.st_size, o.size_bytes);
	fi_arena_mapping(a, &base, &len);
	ck_assert_uint_eq(len, (size_t)sb.st_size);
	for (i = 0; i < fi_arena_n_blocks(a); i++)
		ck_assert_uint_eq((uintptr_t)fi_arena_data(a, (uint32_t)i) % FI_ARENA_ALIGN, 0);
	ck_assert_ptr_null(fi_arena_data(a, fi_arena_n_blocks(a)));

	for (i = 0; i < 40; i++)
		toks[i] = (uint32_t)i;
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 40, 4, keys), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(t_put_chain(l, keys, 10, 4096), 0);
	ck_assert_uint_eq(fi_arena_lease_pins(l), 10);
	fi_arena_unlease(l);

	/* A second attachment (same process, other handle) sees all ten. */
	o.size_bytes = 0;
	ck_assert_int_eq(fi_arena_open(&b, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(b, &m), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(m, keys, 10, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 10);
	for (i = 0; i < nf; i++) {
		fi_arena_key k;
		ck_assert(t_data_ok(fi_arena_data(b, blk[i]), 4096, &keys[i]));
		ck_assert_int_eq(fi_arena_verify(b, blk[i]), FI_OK);
		ck_assert_int_eq(fi_arena_block_key(b, blk[i], &k), FI_OK);
		ck_assert_mem_eq(k.b, keys[i].b, 32);
	}
	/* A prompt diverging in block 3 shares blocks 0..2 only. */
	toks[13] = 999;
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 40, 4, alt), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(m, alt, 10, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 3);
	/* Putting an existing key is a cached hit, pinned, with nothing to write. */
	{
		enum fi_arena_reserve_result r;
		uint32_t bb;
		void *p;
		ck_assert_int_eq(fi_arena_reserve(m, &keys[0], &bb, &p, &r), FI_OK);
		ck_assert_int_eq(r, FI_ARENA_CACHED);
		ck_assert_uint_eq(bb, blk[0]);
		ck_assert_uint_eq(fi_arena_lease_pins(m), 14);
		ck_assert_int_eq(fi_arena_unpin(m, bb), FI_OK);
		ck_assert_int_eq(fi_arena_unpin(m, fi_arena_n_blocks(b) - 1), FI_ENOTFOUND);
	}
	ck_assert_int_eq(fi_arena_stat(b, &st), FI_OK);
	ck_assert_str_eq(st.fingerprint, FP);
	ck_assert_uint_eq(st.ready, 10);
	ck_assert_uint_eq(st.writing, 0);
	ck_assert_uint_eq(st.free_blocks, st.n_blocks - 10);
	ck_assert_uint_eq(st.pinned, 10);
	ck_assert_uint_eq(st.hits, 13);
	ck_assert_uint_eq(st.misses, 7);
	ck_assert_uint_eq(st.inserts, 10);
	ck_assert_uint_eq(st.leases, 1);
	ck_assert_uint_eq(st.pins, 13);
	ck_assert_uint_eq(st.corrupt, 0);
	ck_assert_uint_eq(st.alloc_blocks, st.n_blocks); /* one extent of 64 MiB holds them */
	ck_assert_int_eq(fi_arena_check(b), FI_OK);
	fi_arena_close(b); /* releases m */
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.leases, 0);
	ck_assert_uint_eq(st.pinned, 0);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	fi_arena_close(a);
}
END_TEST

START_TEST(test_write_states)
{
	struct fi_arena_opts o = t_opts(16);
	struct fi_arena *a;
	struct fi_arena_lease *l, *m;
	enum fi_arena_reserve_result r;
	uint32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b, b2, blk[2];
	fi_arena_key k[2];
	size_t nf;
	void *p;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 8, 4, k), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &m), FI_OK);
	ck_assert_int_eq(fi_arena_reserve(l, &k[0], &b, &p, &r), FI_OK);
	ck_assert_int_eq(r, FI_ARENA_WRITE);
	ck_assert_ptr_eq(p, fi_arena_data(a, b));
	/* Not visible while being written; a second writer is told it is busy. */
	ck_assert_int_eq(fi_arena_lookup(m, k, 1, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 0);
	ck_assert_int_eq(fi_arena_reserve(m, &k[0], &b2, NULL, &r), FI_OK);
	ck_assert_int_eq(r, FI_ARENA_BUSY);
	ck_assert_uint_eq(b2, FI_ARENA_NONE);
	/* Only the reserving lease may publish or abort. */
	ck_assert_int_eq(fi_arena_publish(m, b), FI_ESTATE);
	ck_assert_int_eq(fi_arena_abort(m, b), FI_ESTATE);
	t_fill(p, 4096, &k[0]);
	ck_assert_int_eq(fi_arena_publish(l, b), FI_OK);
	ck_assert_int_eq(fi_arena_publish(l, b), FI_ESTATE);
	ck_assert_int_eq(fi_arena_lookup(m, k, 2, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 1);
	ck_assert_uint_eq(blk[0], b);
	/* Abort gives the block back. */
	ck_assert_int_eq(fi_arena_reserve(l, &k[1], &b2, &p, &r), FI_OK);
	ck_assert_int_eq(r, FI_ARENA_WRITE);
	ck_assert_int_eq(fi_arena_abort(l, b2), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(m, k + 1, 1, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 0);
	/* Unlease of a writer drops its unpublished block. */
	ck_assert_int_eq(fi_arena_reserve(l, &k[1], &b2, &p, &r), FI_OK);
	fi_arena_unlease(l);
	ck_assert_int_eq(fi_arena_reserve(m, &k[1], &b2, &p, &r), FI_OK);
	ck_assert_int_eq(r, FI_ARENA_WRITE);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	/* A corrupted published block fails verification. */
	t_fill(p, 4096, &k[1]);
	ck_assert_int_eq(fi_arena_publish(m, b2), FI_OK);
	ck_assert_int_eq(fi_arena_verify(a, b2), FI_OK);
	((uint8_t *)p)[100] ^= 1;
	ck_assert_int_eq(fi_arena_verify(a, b2), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "checksum"));
	fi_arena_close(a);
}
END_TEST

START_TEST(test_evict_and_full)
{
	struct fi_arena_opts o = t_opts(8);
	struct fi_arena *a;
	struct fi_arena_lease *l, *m;
	struct fi_arena_stats st;
	enum fi_arena_reserve_result r;
	uint32_t toks[64], blk[16], n, b;
	fi_arena_key keys[16];
	size_t nf, i;
	void *p;
	for (i = 0; i < 64; i++)
		toks[i] = (uint32_t)(i * 7);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	n = fi_arena_n_blocks(a);
	ck_assert_uint_ge(n, 6);
	ck_assert_uint_le(n, 10);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 64, 4, keys), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(t_put_chain(l, keys, n, 4096), 0);
	fi_arena_unlease(l);
	/* Released newest first: the chain's end is least recently used. Touch the last block:
	 * blocks n-2 and n-3 are now the first to go. */
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(l, keys + n - 1, 1, blk, &nf), FI_OK);
	fi_arena_unlease(l);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(t_put_chain(l, keys + n, 2, 4096), 0);
	fi_arena_unlease(l);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(l, keys + n - 1, 1, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 1); /* recently used: kept */
	ck_assert_int_eq(fi_arena_lookup(l, keys + n - 2, 1, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 0); /* evicted */
	ck_assert_int_eq(fi_arena_lookup(l, keys + n - 3, 1, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 0); /* evicted */
	ck_assert_int_eq(fi_arena_lookup(l, keys, n - 3, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, n - 3);
	ck_assert_int_eq(fi_arena_lookup(l, keys + n, 2, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 2);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.evictions, 2);
	fi_arena_unlease(l);
	/* Everything pinned: FI_EFULL with a message, and nothing changes. */
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(l, keys, n - 3, blk, &nf), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(l, keys + n - 1, 3, blk + n - 3, &nf), FI_OK);
	ck_assert_uint_eq(fi_arena_lease_pins(l), n);
	ck_assert_int_eq(fi_arena_lease(a, &m), FI_OK);
	ck_assert_int_eq(fi_arena_reserve(m, &keys[15], &b, &p, &r), FI_EFULL);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "pinned"));
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	/* Unpinning one makes room again. */
	ck_assert_int_eq(fi_arena_unpin(l, blk[0]), FI_OK);
	ck_assert_int_eq(fi_arena_reserve(m, &keys[15], &b, &p, &r), FI_OK);
	ck_assert_int_eq(r, FI_ARENA_WRITE);
	ck_assert_uint_eq(b, blk[0]);
	fi_arena_close(a);
}
END_TEST

START_TEST(test_lease_slots_full)
{
	struct fi_arena_opts o = t_opts(8);
	struct fi_arena *a;
	struct fi_arena_lease *l[5];
	int i;
	o.max_leases = 4;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(fi_arena_lease(a, &l[i]), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l[4]), FI_EFULL);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "lease slots"));
	fi_arena_unlease(l[2]);
	ck_assert_int_eq(fi_arena_lease(a, &l[4]), FI_OK);
	fi_arena_close(a);
}
END_TEST

/* Patches a 32-bit field of the header of an arena file. */
static void patch_u32(const char *path, off_t off, uint32_t v)
{
	int fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, &v, 4, off), 4);
	close(fd);
}

START_TEST(test_attach_errors)
{
	struct fi_arena_opts o = t_opts(8), q;
	struct fi_arena *a;
	char path[512], other[512], fp2[65], cmd[1200];
	uint32_t n_index;
	int fd;
	t_fp(fp2, 5);
	ck_assert_int_eq(fi_arena_open(&a, "xyz", &o), FI_EINVAL);
	q = o;
	q.no_create = 1;
	ck_assert_int_eq(fi_arena_open(&a, FP, &q), FI_ENOTFOUND);
	q = o;
	q.token_bytes = 0;
	ck_assert_int_eq(fi_arena_open(&a, FP, &q), FI_EINVAL);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	fi_arena_close(a);
	snprintf(path, sizeof path, "%s/%s.kv", t_dir, FP);
	/* Layout requested differs from the arena's. */
	q = o;
	q.token_bytes = 2048;
	ck_assert_int_eq(fi_arena_open(&a, FP, &q), FI_EMISMATCH);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "bytes per token"));
	q = o;
	q.block_tokens = 16;
	ck_assert_int_eq(fi_arena_open(&a, FP, &q), FI_EMISMATCH);
	/* A file of another model under this model's name. */
	snprintf(other, sizeof other, "%s/%s.kv", t_dir, fp2);
	snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, other);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(fi_arena_open(&a, fp2, &o), FI_EMISMATCH);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "holds model 0123456789abcdef"));
	/* Another format version. */
	patch_u32(other, 8, ARENA_VERSION + 1);
	ck_assert_int_eq(fi_arena_open(&a, fp2, &o), FI_EMISMATCH);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "version"));
	/* Corrupt layout fields. */
	{
		int fd = open(path, O_RDONLY);
		ck_assert_int_eq(pread(fd, &n_index, 4, offsetof(struct arena_hdr, n_index)), 4);
		close(fd);
	}
	patch_u32(path, offsetof(struct arena_hdr, n_index), 7);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "corrupt layout"));
	patch_u32(path, offsetof(struct arena_hdr, n_index), n_index);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	fi_arena_close(a);
	/* Bad magic, a truncated file, an empty one, a directory. */
	patch_u32(path, 0, 0x41414141);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "magic"));
	patch_u32(path, 0, *(const uint32_t *)ARENA_MAGIC);
	ck_assert_int_eq(truncate(path, 20000), 0);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "truncated"));
	ck_assert_int_eq(truncate(path, 100), 0);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_EFORMAT);
	fd = open(other, O_WRONLY | O_TRUNC);
	close(fd);
	ck_assert_int_eq(fi_arena_open(&a, fp2, &o), FI_EFORMAT);
	/* fi_arena_remove, then a fresh arena. */
	ck_assert_int_eq(fi_arena_remove(t_dir, FP), FI_OK);
	ck_assert_int_eq(fi_arena_remove(t_dir, FP), FI_ENOTFOUND);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	fi_arena_close(a);
}
END_TEST

START_TEST(test_corrupt_tables)
{
	struct fi_arena_opts o = t_opts(16);
	struct fi_arena *a;
	struct fi_arena_lease *l;
	struct fi_arena_stats st;
	uint32_t toks[24], blk[6];
	fi_arena_key keys[6];
	size_t nf;
	t_tokens(toks, 24, 6);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 24, 4, keys), FI_OK);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(t_put_chain(l, keys, 6, 4096), 0);
	fi_arena_unlease(l);
	/* Scribble over the lists and the index (the block table stays truthful). */
	a->h->free_head = 123456;
	a->h->lru_head = 3;
	a->blk[2].next = 999999;
	memset(a->index, 0, (size_t)a->h->n_index * 4);
	a->h->pin_free = a->h->n_pins + 5;
	ck_assert_int_eq(fi_arena_check(a), FI_EFORMAT);
	fi_arena_close(a);
	/* The next attach notices and rebuilds everything from the block table. */
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.recoveries, 1);
	ck_assert_uint_eq(st.ready, 6);
	ck_assert_uint_eq(st.free_blocks, st.n_blocks - 6);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(l, keys, 6, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 6);
	ck_assert(t_data_ok(fi_arena_data(a, blk[5]), 4096, &keys[5]));
	fi_arena_close(a);
}
END_TEST

static int list_cb(const char *path, const struct fi_arena_stats *st, fi_err err, void *ctx)
{
	int *n = ctx;
	if (st && st->n_blocks > 0 && !err)
		n[0]++;
	else
		n[1]++;
	return 0;
}

START_TEST(test_list_stat_remove)
{
	struct fi_arena_opts o = t_opts(8);
	struct fi_arena *a, *b;
	struct fi_arena_stats st;
	char fp2[65], path[512];
	int n[2] = {0, 0}, fd;
	t_fp(fp2, 9);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_open(&b, fp2, &o), FI_OK);
	snprintf(path, sizeof path, "%s/junk.kv", t_dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	ck_assert_int_eq(write(fd, "junk", 4), 4);
	close(fd);
	ck_assert_int_eq(fi_arena_list(t_dir, list_cb, n), FI_OK);
	ck_assert_int_eq(n[0], 2);
	ck_assert_int_eq(n[1], 1);
	ck_assert_int_eq(fi_arena_path(t_dir, fp2, path, sizeof path), FI_OK);
	ck_assert_int_eq(fi_arena_stat_file(path, &st), FI_OK);
	ck_assert_str_eq(st.fingerprint, fp2);
	ck_assert_uint_eq(st.block_bytes, 4096);
	ck_assert_int_eq(fi_arena_remove(t_dir, fp2), FI_OK);
	ck_assert_int_eq(access(path, F_OK), -1);
	/* An attached process keeps working on the removed arena. */
	ck_assert_int_eq(fi_arena_stat(b, &st), FI_OK);
	fi_arena_close(b);
	fi_arena_close(a);
	/* $FI_HOME/kv is the default directory. */
	setenv("FI_HOME", t_dir, 1);
	fi_settings_reload();
	ck_assert_int_eq(fi_arena_path(NULL, FP, path, sizeof path), FI_OK);
	ck_assert_ptr_nonnull(strstr(path, "/kv/0123"));
	o.dir = NULL;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(access(path, R_OK | W_OK), 0);
	fi_arena_close(a);
	unsetenv("FI_HOME");
	fi_settings_reload();
}
END_TEST

/* Child mode of this program, run through fork+exec (an unrelated process image):
 * FI_ARENA_TEST_CHILD=find|put, FI_ARENA_TEST_DIR, FI_ARENA_TEST_SEED, FI_ARENA_TEST_N. */
static int arena_child_main(void)
{
	const char *mode = getenv("FI_ARENA_TEST_CHILD");
	unsigned seed = (unsigned)atoi(getenv("FI_ARENA_TEST_SEED"));
	size_t n = (size_t)atoi(getenv("FI_ARENA_TEST_N")), nf, i;
	struct fi_arena_opts o = {0};
	struct fi_arena *a;
	struct fi_arena_lease *l;
	uint32_t toks[256], blk[64];
	fi_arena_key keys[64];
	int rc = 0;
	snprintf(t_dir, sizeof t_dir, "%s", getenv("FI_ARENA_TEST_DIR"));
	o.dir = t_dir;
	o.no_create = 1;
	t_tokens(toks, n * T_BLOCK_TOKENS, seed);
	if (fi_arena_open(&a, FP, &o) || fi_arena_lease(a, &l) ||
	    fi_arena_chain_keys(FP, toks, n * T_BLOCK_TOKENS, T_BLOCK_TOKENS, keys)) {
		fprintf(stderr, "child: %s\n", fi_errmsg());
		return 10;
	}
	if (!strcmp(mode, "put"))
		rc = t_put_chain(l, keys, n, fi_arena_block_bytes(a)) ? 11 : 0;
	else if (fi_arena_lookup(l, keys, n, blk, &nf) || nf != n)
		rc = 12;
	for (i = 0; !rc && !strcmp(mode, "find") && i < n; i++)
		if (!t_data_ok(fi_arena_data(a, blk[i]), 4096, &keys[i]) ||
		    fi_arena_verify(a, blk[i]))
			rc = 13;
	fi_arena_close(a);
	return rc;
}

static int run_child(const char *mode, unsigned seed, size_t n)
{
	char s[16], nn[16];
	pid_t pid;
	snprintf(s, sizeof s, "%u", seed);
	snprintf(nn, sizeof nn, "%zu", n);
	pid = fork();
	if (pid == 0) {
		setenv("FI_ARENA_TEST_CHILD", mode, 1);
		setenv("FI_ARENA_TEST_DIR", t_dir, 1);
		setenv("FI_ARENA_TEST_SEED", s, 1);
		setenv("FI_ARENA_TEST_N", nn, 1);
		execl("/proc/self/exe", "test_arena", (char *)NULL);
		_exit(127);
	}
	return t_wait(pid);
}

START_TEST(test_exec_reuse)
{
	struct fi_arena_opts o = t_opts(64);
	struct fi_arena *a;
	struct fi_arena_lease *l;
	struct fi_arena_stats st;
	uint32_t toks[48], blk[12];
	fi_arena_key keys[12];
	size_t nf;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	t_tokens(toks, 48, 1);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 48, 4, keys), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(t_put_chain(l, keys, 12, 4096), 0);
	fi_arena_unlease(l);
	fi_arena_close(a);
	/* B, another program image, finds all of A's blocks; then writes its own chain. */
	ck_assert_int_eq(run_child("find", 1, 12), 0);
	ck_assert_int_eq(run_child("find", 2, 12), 12);
	ck_assert_int_eq(run_child("put", 2, 12), 0);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	t_tokens(toks, 48, 2);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 48, 4, keys), FI_OK);
	ck_assert_int_eq(fi_arena_lookup(l, keys, 12, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 12);
	ck_assert(t_data_ok(fi_arena_data(a, blk[11]), 4096, &keys[11]));
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.inserts, 12 + 12 - 6); /* seeds 1 and 2 share the first half */
	fi_arena_close(a);
}
END_TEST

START_TEST(test_dead_process_leases)
{
	struct fi_arena_opts o = t_opts(16);
	struct fi_arena *a;
	struct fi_arena_stats st;
	uint32_t toks[32];
	fi_arena_key keys[8];
	pid_t pid;
	t_tokens(toks, 32, 3);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 32, 4, keys), FI_OK);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	pid = fork();
	if (pid == 0) {
		/* Pin 6 published blocks, leave one being written, and die without cleanup. */
		struct fi_arena *c;
		struct fi_arena_lease *l;
		enum fi_arena_reserve_result r;
		uint32_t b;
		void *p;
		if (fi_arena_open(&c, FP, &o) || fi_arena_lease(c, &l) || t_put_chain(l, keys, 6, 4096) ||
		    fi_arena_reserve(l, &keys[6], &b, &p, &r) || r != FI_ARENA_WRITE)
			_exit(1);
		_exit(0);
	}
	ck_assert_int_eq(t_wait(pid), 0);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.leases, 1);
	ck_assert_uint_eq(st.pinned, 6);
	ck_assert_uint_eq(st.writing, 1);
	fi_arena_close(a);
	/* The next attach sweeps the dead lease: pins gone, the unpublished block freed. */
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	ck_assert_uint_eq(st.leases, 0);
	ck_assert_uint_eq(st.pinned, 0);
	ck_assert_uint_eq(st.writing, 0);
	ck_assert_uint_eq(st.ready, 6);
	ck_assert_uint_eq(st.swept_leases, 1);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	fi_arena_close(a);
}
END_TEST

START_TEST(test_pid_reuse)
{
	struct fi_arena_opts o = t_opts(16);
	struct fi_arena *a;
	struct fi_arena_lease *l, *m;
	uint32_t toks[8], blk[2], n;
	uint64_t start;
	fi_arena_key keys[2];
	size_t nf;
	t_tokens(toks, 8, 4);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 8, 4, keys), FI_OK);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &m), FI_OK);
	ck_assert_int_eq(t_put_chain(l, keys, 2, 4096), 0);
	/* l now claims a live pid (our parent) with the right start time: alive. */
	ck_assert_int_eq(proc_start_time(getppid(), &start), 0);
	a->ls[l->slot].pid = (int32_t)getppid();
	a->ls[l->slot].start = start;
	ck_assert_int_eq(fi_arena_sweep(a, &n), FI_OK);
	ck_assert_uint_eq(n, 0);
	/* ... and with another start time: that pid was reused, the lease is dead. */
	a->ls[l->slot].start = start + 1;
	ck_assert_int_eq(fi_arena_sweep(a, &n), FI_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(fi_arena_lookup(l, keys, 2, blk, &nf), FI_ESTATE);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "reclaimed"));
	/* Our own live lease with a wrong start time is dead too. */
	a->ls[m->slot].start++;
	ck_assert_int_eq(fi_arena_sweep(a, &n), FI_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	fi_arena_close(a);
}
END_TEST

START_TEST(test_fork_inherited_handle)
{
	struct fi_arena_opts o = t_opts(16);
	struct fi_arena *a;
	struct fi_arena_lease *l;
	uint32_t toks[8], blk[2];
	fi_arena_key keys[2];
	size_t nf;
	pid_t pid;
	t_tokens(toks, 8, 5);
	ck_assert_int_eq(fi_arena_chain_keys(FP, toks, 8, 4, keys), FI_OK);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_int_eq(t_put_chain(l, keys, 2, 4096), 0);
	pid = fork();
	if (pid == 0) {
		struct fi_arena_lease *k;
		int bad = fi_arena_lookup(l, keys, 2, blk, &nf) != FI_ESTATE ||
			  fi_arena_lease(a, &k) != FI_ESTATE;
		fi_arena_close(a); /* must not release the parent's lease */
		_exit(bad);
	}
	ck_assert_int_eq(t_wait(pid), 0);
	ck_assert_uint_eq(fi_arena_lease_pins(l), 2);
	ck_assert_int_eq(fi_arena_lookup(l, keys, 2, blk, &nf), FI_OK);
	ck_assert_uint_eq(nf, 2);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	fi_arena_close(a);
}
END_TEST

START_TEST(test_concurrent_create)
{
	struct fi_arena_opts o = t_opts(64);
	struct fi_arena *a;
	struct fi_arena_stats st;
	pid_t pids[8];
	int fds[2], i, nfiles = 0;
	char cmd[400];
	FILE *f;
	ck_assert_int_eq(pipe(fds), 0);
	for (i = 0; i < 8; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct fi_arena *c;
			struct fi_arena_lease *l;
			uint32_t toks[32];
			fi_arena_key keys[8];
			char ch;
			close(fds[1]);
			if (read(fds[0], &ch, 1) != 0) /* all start together at EOF */
				_exit(2);
			t_tokens(toks, 32, (unsigned)i);
			if (fi_arena_open(&c, FP, &o) || fi_arena_lease(c, &l) ||
			    fi_arena_chain_keys(FP, toks, 32, 4, keys) || t_put_chain(l, keys, 8, 4096)) {
				fprintf(stderr, "child %d: %s\n", i, fi_errmsg());
				_exit(1);
			}
			fi_arena_close(c);
			_exit(0);
		}
	}
	close(fds[0]);
	close(fds[1]);
	for (i = 0; i < 8; i++)
		ck_assert_int_eq(t_wait(pids[i]), 0);
	/* One arena file, no temporary left, every block present once. */
	snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", t_dir);
	f = popen(cmd, "r");
	ck_assert_int_eq(fscanf(f, "%d", &nfiles), 1);
	pclose(f);
	ck_assert_int_eq(nfiles, 1);
	o.no_create = 1;
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(fi_arena_stat(a, &st), FI_OK);
	/* 8 prompts of 8 blocks; prompts 4k..4k+3 share their first 4 blocks. */
	ck_assert_uint_eq(st.ready, 8 * 8 - 2 * 3 * 4);
	ck_assert_uint_eq(st.leases, 0);
	ck_assert_int_eq(fi_arena_check(a), FI_OK);
	fi_arena_close(a);
}
END_TEST

START_TEST(test_stale_tmp_and_pidns)
{
	struct fi_arena_opts o = t_opts(16);
	struct fi_arena *a;
	struct fi_arena_lease *l;
	char dead_tmp[512], live_tmp[512];
	uint32_t n;
	pid_t dead = fork();
	int fd;
	if (dead == 0)
		_exit(0);
	ck_assert_int_eq(t_wait(dead), 0);
	/* A creator that died mid-creation left its temporary file; a live one's stays. */
	snprintf(dead_tmp, sizeof dead_tmp, "%s/.%s.kv.%d.0.tmp", t_dir, FP, (int)dead);
	snprintf(live_tmp, sizeof live_tmp, "%s/.%s.kv.%d.77.tmp", t_dir, FP, (int)getpid());
	fd = open(dead_tmp, O_CREAT | O_WRONLY, 0600);
	close(fd);
	fd = open(live_tmp, O_CREAT | O_WRONLY, 0600);
	close(fd);
	ck_assert_int_eq(fi_arena_open(&a, FP, &o), FI_OK);
	ck_assert_int_eq(access(dead_tmp, F_OK), -1);
	ck_assert_int_eq(access(live_tmp, F_OK), 0);
	unlink(live_tmp);
	/* A dead pid in another pid namespace cannot be checked: the lease is kept. */
	ck_assert_int_eq(fi_arena_lease(a, &l), FI_OK);
	ck_assert_uint_ne(a->ls[l->slot].pidns, 0);
	a->ls[l->slot].pid = (int32_t)dead;
	a->ls[l->slot].pidns++;
	ck_assert_int_eq(fi_arena_sweep(a, &n), FI_OK);
	ck_assert_uint_eq(n, 0);
	a->ls[l->slot].pidns--;
	ck_assert_int_eq(fi_arena_sweep(a, &n), FI_OK);
	ck_assert_uint_eq(n, 1);
	fi_arena_close(a);
}
END_TEST

static void arena_proc_tests(TCase *tc)
{
	tcase_add_test(tc, test_stale_tmp_and_pidns);
	tcase_add_test(tc, test_exec_reuse);
	tcase_add_test(tc, test_dead_process_leases);
	tcase_add_test(tc, test_pid_reuse);
	tcase_add_test(tc, test_fork_inherited_handle);
	tcase_add_test(tc, test_concurrent_create);
}

int main(int argc, char **argv)
{
	Suite *s = suite_create("arena");
	TCase *tc = tcase_create("arena");
	if (getenv("FI_ARENA_TEST_CHILD"))
		return arena_child_main();
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_keys);
	tcase_add_test(tc, test_create_put_lookup);
	tcase_add_test(tc, test_write_states);
	tcase_add_test(tc, test_evict_and_full);
	tcase_add_test(tc, test_lease_slots_full);
	tcase_add_test(tc, test_attach_errors);
	tcase_add_test(tc, test_list_stat_remove);
	tcase_add_test(tc, test_corrupt_tables);
	arena_proc_tests(tc);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
