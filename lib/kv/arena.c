/* arena: the KV arena's API (arena.h): open and close, layout, keys, stats and checks, the
 * directory of arenas. The top of the arena files: it calls arena_store.c (the file),
 * arena_lease.c and arena_index.c, and none of them calls it. */
#define _GNU_SOURCE
#include "arena_shm.h"
#include "base/log.h"
#include "base/settings.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

fi_err fi_arena_path(const char *dir, const char *fingerprint, char *buf, size_t n)
{
	char d[PATH_MAX];
	fi_err e;
	int r;
	if (!arena_fp_valid(fingerprint))
		return fi_fail(FI_EINVAL, "kv arena: model fingerprint '%.80s' is not 64 lowercase "
			       "hex characters", fingerprint ? fingerprint : "(null)");
	if ((e = arena_kv_dir(dir, d, sizeof d)))
		return e;
	r = snprintf(buf, n, "%s/%s.kv", d, fingerprint);
	if (r < 0 || (size_t)r >= n)
		return fi_fail(FI_ERANGE, "kv arena path too long");
	return FI_OK;
}

fi_err fi_arena_open(struct fi_arena **out, const char *fingerprint,
		     const struct fi_arena_opts *opts)
{
	struct fi_arena *a;
	char dir[PATH_MAX];
	fi_err e;
	int tries;
	*out = NULL;
	if ((e = fi_arena_path(opts ? opts->dir : NULL, fingerprint, dir, sizeof dir)))
		return e;
	if (!(a = arena_new()))
		return fi_fail(FI_ENOMEM, "kv arena");
	if (opts && opts->lock_timeout_ms > 0)
		a->lock_ms = opts->lock_timeout_ms;
	snprintf(a->path, sizeof a->path, "%s", dir);
	arena_kv_dir(opts ? opts->dir : NULL, dir, sizeof dir);
	/* Nothing is read from, or made in, a directory someone else could write. */
	e = arena_dir_check(opts ? opts->dir : NULL, dir);
	if (e == FI_ENOTFOUND && (!opts || !opts->no_create)) {
		fi_clear_error();
		e = FI_OK;
	} else if (e == FI_ENOTFOUND) {
		e = fi_fail(FI_ENOTFOUND, "kv arena '%s' does not exist", a->path);
	}
	/* A creator that loses the race to another one (FI_EEXIST) attaches to the winner's. */
	for (tries = 0; !e; tries++) {
		e = arena_attach(a, fingerprint, opts);
		if (e != FI_ENOTFOUND || (opts && opts->no_create) || tries == 4)
			break;
		e = arena_create(a, dir, fingerprint, opts);
		if (e != FI_EEXIST)
			break;
		e = FI_OK;
	}
	/* Tables damaged by anything but a death under the lock (which the lock reports) are
	 * rebuilt from the block table too, so a damaged file never takes its users down. */
	if (!e && !(e = arena_lock(a))) {
		if (arena_check_locked(a)) {
			fi_warn("%s", fi_errmsg());
			arena_repair(a);
		}
		sweep_locked(a);
		arena_unlock(a);
		fi_clear_error();
	}
	if (e) {
		arena_unmap(a);
		free(a);
		return e;
	}
	*out = a;
	return FI_OK;
}

void fi_arena_close(struct fi_arena *a)
{
	if (!a)
		return;
	while (a->n_leases)
		fi_arena_unlease(a->leases[a->n_leases - 1]);
	free(a->leases);
	arena_unmap(a);
	free(a);
}

uint32_t fi_arena_block_tokens(const struct fi_arena *a)
{
	return a->h->block_tokens;
}

uint64_t fi_arena_block_bytes(const struct fi_arena *a)
{
	return a->h->block_bytes;
}

uint32_t fi_arena_n_blocks(const struct fi_arena *a)
{
	return a->h->n_blocks;
}

const char *fi_arena_file(const struct fi_arena *a)
{
	return a->path;
}

void fi_arena_mapping(const struct fi_arena *a, void **base, size_t *len)
{
	*base = a->base;
	*len = a->len;
}

void *fi_arena_data(const struct fi_arena *a, uint32_t b)
{
	if (b >= a->h->n_blocks)
		return NULL;
	return arena_block_data(a, b);
}

fi_err fi_arena_extent(const struct fi_arena *a, uint32_t b, uint32_t *index, void **base,
		       size_t *len)
{
	const struct arena_hdr *h = a->h;
	uint32_t e, first, n;
	if (b >= __atomic_load_n(&h->n_alloc, __ATOMIC_ACQUIRE))
		return fi_fail(FI_ERANGE, "kv arena '%s': block %u is past the allocated data",
			       a->path, b);
	e = b / h->extent_blocks;
	first = e * h->extent_blocks;
	n = h->n_blocks - first < h->extent_blocks ? h->n_blocks - first : h->extent_blocks;
	*index = e;
	*base = arena_block_data(a, first);
	*len = (size_t)n * h->block_stride;
	return FI_OK;
}

uint32_t fi_arena_extent_blocks(const struct fi_arena *a)
{
	return a->h->extent_blocks;
}

/* One block's key: SHA-256("fi-kv-1" || parent || fingerprint || tokens as LE uint32). */
static int key_block(EVP_MD_CTX *ctx, const char *fp, const uint8_t *parent,
		     const uint32_t *tokens, uint32_t n, uint8_t *out)
{
	static const uint8_t zero[FI_ARENA_KEY_BYTES];
	uint8_t buf[256];
	unsigned int len = 0;
	uint32_t i, j;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, "fi-kv-1", 7) != 1 ||
	    EVP_DigestUpdate(ctx, parent ? parent : zero, FI_ARENA_KEY_BYTES) != 1 ||
	    EVP_DigestUpdate(ctx, fp, FI_ARENA_FP_CHARS) != 1)
		return -1;
	for (i = 0; i < n; i += sizeof buf / 4) {
		uint32_t m = n - i < sizeof buf / 4 ? n - i : (uint32_t)(sizeof buf / 4);
		for (j = 0; j < m; j++) {
			uint32_t t = tokens[i + j];
			buf[4 * j] = (uint8_t)t;
			buf[4 * j + 1] = (uint8_t)(t >> 8);
			buf[4 * j + 2] = (uint8_t)(t >> 16);
			buf[4 * j + 3] = (uint8_t)(t >> 24);
		}
		if (EVP_DigestUpdate(ctx, buf, 4 * (size_t)m) != 1)
			return -1;
	}
	return EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == FI_ARENA_KEY_BYTES ? 0 : -1;
}

static fi_err chain(const char *fp, const fi_arena_key *parent, const uint32_t *tokens,
		    size_t n, uint32_t block_tokens, fi_arena_key *keys)
{
	EVP_MD_CTX *ctx;
	size_t i, nb;
	if (!arena_fp_valid(fp))
		return fi_fail(FI_EINVAL, "kv arena: model fingerprint '%.80s' is not 64 lowercase "
			       "hex characters", fp ? fp : "(null)");
	if (!block_tokens)
		return fi_fail(FI_EINVAL, "kv arena: block of 0 tokens");
	nb = n / block_tokens;
	if (!nb)
		return FI_OK;
	if (!(ctx = EVP_MD_CTX_new()))
		return fi_fail(FI_ENOMEM, "kv arena: sha-256 context");
	for (i = 0; i < nb; i++) {
		const uint8_t *par = i ? keys[i - 1].b : parent ? parent->b : NULL;
		if (key_block(ctx, fp, par, tokens + i * block_tokens, block_tokens, keys[i].b)) {
			EVP_MD_CTX_free(ctx);
			return fi_fail(FI_EIO, "kv arena: sha-256 failed");
		}
	}
	EVP_MD_CTX_free(ctx);
	return FI_OK;
}

fi_err fi_arena_chain_keys(const char *fingerprint, const uint32_t *tokens, size_t n,
			   uint32_t block_tokens, fi_arena_key *keys_out)
{
	return chain(fingerprint, NULL, tokens, n, block_tokens, keys_out);
}

fi_err fi_arena_key_next(const char *fingerprint, const fi_arena_key *parent,
			 const uint32_t *tokens, uint32_t block_tokens, fi_arena_key *out)
{
	return chain(fingerprint, parent, tokens, block_tokens, block_tokens, out);
}

void fi_arena_key_hex(const fi_arena_key *k, char out[2 * FI_ARENA_KEY_BYTES + 1])
{
	static const char hex[] = "0123456789abcdef";
	int i;
	for (i = 0; i < FI_ARENA_KEY_BYTES; i++) {
		out[2 * i] = hex[k->b[i] >> 4];
		out[2 * i + 1] = hex[k->b[i] & 15];
	}
	out[2 * FI_ARENA_KEY_BYTES] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

fi_err fi_arena_key_parse(const char *hex, fi_arena_key *out)
{
	int i;
	for (i = 0; i < 2 * FI_ARENA_KEY_BYTES; i++)
		if (hexval(hex[i]) < 0)
			break;
	if (i != 2 * FI_ARENA_KEY_BYTES || hex[i])
		return fi_fail(FI_EFORMAT, "kv block key '%.80s' is not 64 hex characters", hex);
	for (i = 0; i < FI_ARENA_KEY_BYTES; i++)
		out->b[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
	return FI_OK;
}

fi_err fi_arena_block_key(struct fi_arena *a, uint32_t b, fi_arena_key *out)
{
	if (b >= a->h->n_blocks)
		return fi_fail(FI_ERANGE, "kv arena '%s': block %u of %u", a->path, b,
			       a->h->n_blocks);
	memcpy(out->b, a->blk[b].key, FI_ARENA_KEY_BYTES);
	return FI_OK;
}

fi_err fi_arena_sweep(struct fi_arena *a, uint32_t *n_reclaimed)
{
	uint32_t n;
	fi_err e;
	if (a->pid != getpid())
		return fi_fail(FI_ESTATE, "kv arena '%s': handle inherited across fork", a->path);
	if ((e = arena_lock(a)))
		return e;
	n = sweep_locked(a);
	arena_unlock(a);
	if (n_reclaimed)
		*n_reclaimed = n;
	return FI_OK;
}

fi_err fi_arena_check(struct fi_arena *a)
{
	fi_err e = arena_lock(a);
	if (e)
		return e;
	e = arena_check_locked(a);
	arena_unlock(a);
	return e;
}

fi_err fi_arena_stat(struct fi_arena *a, struct fi_arena_stats *st)
{
	struct arena_hdr *h = a->h;
	uint32_t b, s;
	fi_err e;
	memset(st, 0, sizeof *st);
	if ((e = arena_lock(a)))
		return e;
	memcpy(st->fingerprint, h->fingerprint, FI_ARENA_FP_CHARS);
	st->version = h->version;
	st->block_tokens = h->block_tokens;
	st->token_bytes = h->token_bytes;
	st->block_bytes = h->block_bytes;
	st->file_bytes = h->file_bytes;
	st->n_blocks = h->n_blocks;
	st->alloc_blocks = h->n_alloc;
	st->alloc_bytes = h->off_data + (uint64_t)h->n_alloc * h->block_stride;
	for (b = 0; b < h->n_blocks; b++) {
		const struct arena_block *k = &a->blk[b];
		st->ready += k->state == BLK_READY;
		st->writing += k->state == BLK_WRITING;
		st->free_blocks += k->state == BLK_FREE;
		st->stale += k->state == BLK_STALE;
		st->pinned += k->state == BLK_READY && k->refs;
	}
	st->lease_slots = h->n_leases;
	for (s = 0; s < h->n_leases; s++) {
		if (a->ls[s].live) {
			st->leases++;
			st->pins += a->ls[s].n_pins;
		}
	}
	st->pin_slots = h->n_pins;
	st->hits = h->hits;
	st->misses = h->misses;
	st->inserts = h->inserts;
	st->evictions = h->evictions;
	st->swept_leases = h->swept;
	st->recoveries = h->recoveries;
	st->corrupt = h->corrupt;
	st->lock_timeout_ms = a->lock_ms;
	arena_unlock(a);
	return FI_OK;
}

fi_err fi_arena_stat_file(const char *path, struct fi_arena_stats *st)
{
	struct fi_arena *a = arena_new();
	fi_err e;
	if (!a)
		return fi_fail(FI_ENOMEM, "kv arena");
	snprintf(a->path, sizeof a->path, "%s", path);
	if (!(e = arena_attach(a, NULL, NULL)))
		e = fi_arena_stat(a, st);
	fi_arena_close(a);
	return e;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

fi_err fi_arena_list(const char *dir, fi_arena_list_fn fn, void *ctx)
{
	char d[PATH_MAX], path[PATH_MAX * 2];
	char **names = NULL;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	DIR *dp;
	fi_err e;
	if ((e = arena_kv_dir(dir, d, sizeof d)))
		return e;
	if ((e = arena_dir_check(dir, d)))
		return e == FI_ENOTFOUND ? (fi_clear_error(), FI_OK) : e; /* none yet */
	if (!(dp = opendir(d))) {
		if (errno == ENOENT)
			return FI_OK; /* no arena yet */
		return fi_fail(FI_EIO, "cannot open '%s': %s", d, strerror(errno));
	}
	while ((de = readdir(dp))) {
		size_t len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len < 4 || strcmp(de->d_name + len - 3, ".kv"))
			continue;
		if (n == cap) {
			char **v = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *v);
			if (!v)
				break;
			names = v;
		}
		if (!(names[n] = strdup(de->d_name)))
			break;
		n++;
	}
	closedir(dp);
	qsort(names, n, sizeof *names, cmp_str);
	for (i = 0; i < n; i++) {
		struct fi_arena_stats st;
		snprintf(path, sizeof path, "%s/%s", d, names[i]);
		e = fi_arena_stat_file(path, &st);
		if (fn(path, e ? NULL : &st, e, ctx))
			break;
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return FI_OK;
}

fi_err fi_arena_remove(const char *dir, const char *fingerprint)
{
	char path[PATH_MAX];
	fi_err e = fi_arena_path(dir, fingerprint, path, sizeof path);
	if (e)
		return e;
	if (unlink(path)) {
		if (errno == ENOENT)
			return fi_fail(FI_ENOTFOUND, "kv arena '%s' does not exist", path);
		return fi_fail(FI_EIO, "cannot remove '%s': %s", path, strerror(errno));
	}
	return FI_OK;
}
