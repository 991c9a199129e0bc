/* arena_store: stats and invariant checks of an arena, and the directory of arenas (list, stat,
 * remove) behind `fi-load --arena`. */
#include "arena_shm.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	for (b = 0; b < h->n_blocks; b++) {
		const struct arena_block *k = &a->blk[b];
		st->ready += k->state == BLK_READY;
		st->writing += k->state == BLK_WRITING;
		st->free_blocks += k->state == BLK_FREE;
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
	st->checksum = !!(h->flags & ARENA_F_CHECKSUM);
	arena_unlock(a);
	return FI_OK;
}

#define BAD(...) do { e = fi_fail(FI_EFORMAT, __VA_ARGS__); goto out; } while (0)

fi_err arena_check_locked(struct fi_arena *a)
{
	struct arena_hdr *h = a->h;
	uint32_t n = h->n_blocks, b, s, p, cnt, prev, *refs = calloc(n, sizeof *refs);
	uint8_t *mark = calloc(n > h->n_pins ? n : h->n_pins, 1);
	fi_err e = FI_OK;
	if (!refs || !mark) {
		free(refs);
		free(mark);
		return fi_fail(FI_ENOMEM, "kv arena check");
	}
	if (h->free_head != NIL && h->free_head >= n)
		BAD("free list head %u", h->free_head);
	if (h->lru_head != NIL && h->lru_head >= n)
		BAD("lru head %u", h->lru_head);
	for (s = 0; s < h->n_leases; s++)
		if (a->ls[s].live && a->ls[s].pin_head != NIL && a->ls[s].pin_head >= h->n_pins)
			BAD("lease %u: pin list head %u", s, a->ls[s].pin_head);
	/* Free list: exactly the free blocks. */
	for (cnt = 0, b = h->free_head; b != NIL; b = a->blk[b].next, cnt++) {
		if (cnt >= n || (a->blk[b].next != NIL && a->blk[b].next >= n) || a->blk[b].state != BLK_FREE || a->blk[b].in_list != IN_FREE)
			BAD("free list: bad entry %u", b);
	}
	if (cnt != h->free_count)
		BAD("free list holds %u blocks, count says %u", cnt, h->free_count);
	/* LRU: ready unpinned blocks, doubly linked. */
	for (cnt = 0, prev = NIL, b = h->lru_head; b != NIL; prev = b, b = a->blk[b].next, cnt++) {
		if (cnt >= n || (a->blk[b].next != NIL && a->blk[b].next >= n) || a->blk[b].state != BLK_READY || a->blk[b].refs ||
		    a->blk[b].in_list != IN_LRU || a->blk[b].prev != prev)
			BAD("lru list: bad entry %u", b);
	}
	if (prev != h->lru_tail)
		BAD("lru tail is %u, list ends at %u", h->lru_tail, prev);
	/* Pins: each live lease's list, and the free pins, cover every pin once. */
	for (s = 0; s < h->n_leases; s++) {
		if (!a->ls[s].live)
			continue;
		for (cnt = 0, p = a->ls[s].pin_head; p != NIL; p = a->pins[p].next, cnt++) {
			if (p >= h->n_pins || mark[p] || a->pins[p].block >= n ||
			    (a->pins[p].next != NIL && a->pins[p].next >= h->n_pins))
				BAD("lease %u: bad pin %u", s, p);
			mark[p] = 1;
			refs[a->pins[p].block]++;
		}
		if (cnt != a->ls[s].n_pins)
			BAD("lease %u: %u pins, count says %u", s, cnt, a->ls[s].n_pins);
	}
	if (h->pin_free != NIL && h->pin_free >= h->n_pins)
		BAD("pin free list head %u", h->pin_free);
	for (p = h->pin_free; p != NIL; p = a->pins[p].next) {
		if (mark[p] || (a->pins[p].next != NIL && a->pins[p].next >= h->n_pins))
			BAD("pin free list: bad entry %u", p);
		mark[p] = 1;
	}
	for (p = 0; p < h->n_pins; p++)
		if (!mark[p])
			BAD("pin %u is lost", p);
	/* Blocks: refcounts match pins; non-free blocks are indexed; evictable ones in the LRU. */
	for (b = 0; b < n; b++) {
		const struct arena_block *k = &a->blk[b];
		if (k->refs != refs[b])
			BAD("block %u: refcount %u, pinned %u times", b, k->refs, refs[b]);
		if (k->state == BLK_FREE)
			continue;
		if (k->state != BLK_READY && k->state != BLK_WRITING)
			BAD("block %u: bad state %u", b, k->state);
		if (idx_find(a, k->key) != b)
			BAD("block %u: not found by its key", b);
		if (k->state == BLK_READY && !k->refs && k->in_list != IN_LRU)
			BAD("block %u: unpinned but not evictable", b);
		if (k->state == BLK_WRITING && (k->owner >= h->n_leases || !a->ls[k->owner].live ||
						a->ls[k->owner].gen != k->owner_gen))
			BAD("block %u: written by a lease that is gone", b);
	}
	for (cnt = 0, p = 0; p < h->n_index; p++)
		if (a->index[p] && (a->index[p] - 1 >= n || a->blk[a->index[p] - 1].state == BLK_FREE))
			BAD("index slot %u: stale entry", p);
out:
	free(refs);
	free(mark);
	if (e)
		fi_fail_ctx(e, "kv arena '%s'", a->path);
	return e;
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

fi_err fi_arena_stat_file(const char *path, struct fi_arena_stats *st)
{
	struct fi_arena *a;
	fi_err e = arena_attach_path(path, &a);
	if (e)
		return e;
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
