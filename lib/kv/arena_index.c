/* arena_index: the KV arena's hash index, LRU and free lists, locking and crash repair.
 *
 * All of it runs under the arena's robust mutex. Lists are threaded through block indices in the
 * block table; the index is linear probing with backward-shift deletion (no tombstones, so it
 * never degrades). A process that dies holding the mutex may leave any of these half-updated:
 * the next locker gets EOWNERDEAD and arena_repair() rebuilds them all from the block table,
 * which every operation keeps truthful (state, key, owner) before touching the derived
 * structures. */
#define _GNU_SOURCE /* qsort_r */
#include "arena_shm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/settings.h"

static uint32_t key_hash(const uint8_t *key)
{
	uint32_t h;
	/* The key is a SHA-256 digest: its bytes are already uniformly distributed. */
	memcpy(&h, key, sizeof h);
	return h;
}

uint32_t idx_find(struct fi_arena *a, const uint8_t *key)
{
	uint32_t mask = a->h->n_index - 1, i = key_hash(key) & mask, n;
	for (n = 0; n <= mask; n++, i = (i + 1) & mask) {
		uint32_t e = a->index[i];
		if (!e)
			return NIL;
		if (e - 1 < a->h->n_blocks && !memcmp(a->blk[e - 1].key, key, FI_ARENA_KEY_BYTES))
			return e - 1;
	}
	return NIL;
}

void idx_insert(struct fi_arena *a, uint32_t b)
{
	uint32_t mask = a->h->n_index - 1, i = key_hash(a->blk[b].key) & mask;
	/* n_index >= 2 * n_blocks, so a free slot always exists. */
	while (a->index[i])
		i = (i + 1) & mask;
	a->index[i] = b + 1;
}

void idx_remove(struct fi_arena *a, uint32_t b)
{
	uint32_t mask = a->h->n_index - 1, i = key_hash(a->blk[b].key) & mask, n, j;
	for (n = 0; n <= mask; n++, i = (i + 1) & mask) {
		if (!a->index[i])
			return; /* not indexed (a duplicate left by a repair) */
		if (a->index[i] == b + 1)
			break;
	}
	if (n > mask)
		return;
	/* Backward shift: move later entries of the cluster into the hole when their home slot
	 * does not lie cyclically in (hole, j]. */
	j = i;
	for (;;) {
		uint32_t e, home;
		a->index[i] = 0;
		for (;;) {
			j = (j + 1) & mask;
			e = a->index[j];
			if (!e)
				return;
			home = key_hash(a->blk[e - 1].key) & mask;
			if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
				break;
		}
		a->index[i] = e;
		i = j;
	}
}

void lru_remove(struct fi_arena *a, uint32_t b)
{
	struct arena_block *k = &a->blk[b];
	if (k->in_list != IN_LRU)
		return;
	if (k->prev != NIL)
		a->blk[k->prev].next = k->next;
	else
		a->h->lru_head = k->next;
	if (k->next != NIL)
		a->blk[k->next].prev = k->prev;
	else
		a->h->lru_tail = k->prev;
	k->prev = k->next = NIL;
	k->in_list = IN_NONE;
}

void lru_push_tail(struct fi_arena *a, uint32_t b)
{
	struct arena_block *k = &a->blk[b];
	if (k->in_list != IN_NONE)
		return;
	k->prev = a->h->lru_tail;
	k->next = NIL;
	if (a->h->lru_tail != NIL)
		a->blk[a->h->lru_tail].next = b;
	else
		a->h->lru_head = b;
	a->h->lru_tail = b;
	k->in_list = IN_LRU;
}

void free_push(struct fi_arena *a, uint32_t b)
{
	struct arena_block *k = &a->blk[b];
	k->state = BLK_FREE;
	k->refs = 0;
	k->owner = NIL;
	k->prev = NIL;
	k->next = a->h->free_head;
	k->in_list = IN_FREE;
	a->h->free_head = b;
	a->h->free_count++;
}

uint32_t block_take(struct fi_arena *a)
{
	struct arena_hdr *h = a->h;
	uint32_t b = h->free_head;
	if (b != NIL) {
		h->free_head = a->blk[b].next;
		h->free_count--;
		a->blk[b].next = NIL;
		a->blk[b].in_list = IN_NONE;
		return b;
	}
	b = h->lru_head;
	if (b == NIL)
		return NIL;
	/* Evict the least recently used unpinned block. The block table stays truthful: the block
	 * is still READY (and indexed) until it is unlinked from the index and marked free. */
	lru_remove(a, b);
	arena_crash_point("locked-evict");
	idx_remove(a, b);
	a->blk[b].state = BLK_FREE;
	h->evictions++;
	return b;
}

static int cmp_used(const void *x, const void *y, void *ctx)
{
	const struct arena_block *blk = ctx;
	uint64_t u = blk[*(const uint32_t *)x].used, v = blk[*(const uint32_t *)y].used;
	return u < v ? -1 : u > v;
}

void arena_repair(struct fi_arena *a)
{
	struct arena_hdr *h = a->h;
	uint32_t n = h->n_blocks, b, s, p, nl = 0, kept = 0, dropped = 0;
	uint32_t *order = malloc((size_t)n * sizeof *order);
	uint8_t *seen = calloc(h->n_pins ? h->n_pins : 1, 1);

	/* 1. Leases: a dead process's leases go away; a live lease keeps the pins reachable from
	 *    its list (bounded walk: a list being edited when its owner died may be cut short). */
	for (s = 0; s < h->n_leases; s++) {
		struct arena_lease_slot *ls = &a->ls[s];
		uint32_t cnt = 0, *link;
		if (!ls->live)
			continue;
		if (!lease_alive(ls)) {
			ls->live = 0;
			ls->gen++;
			h->swept++;
			continue;
		}
		link = &ls->pin_head;
		while (*link != NIL) {
			p = *link;
			if (p >= h->n_pins || cnt >= h->n_pins || (seen && seen[p]) ||
			    a->pins[p].block >= n) {
				*link = NIL;
				break;
			}
			if (seen)
				seen[p] = 1;
			cnt++;
			link = &a->pins[p].next;
		}
		ls->n_pins = cnt;
	}
	/* 2. Blocks: keep published ones and those a live lease is writing; free the rest. */
	for (b = 0; b < n; b++) {
		struct arena_block *k = &a->blk[b];
		k->refs = 0;
		k->prev = k->next = NIL;
		k->in_list = IN_NONE;
		if (k->state == BLK_WRITING) {
			if (k->owner < h->n_leases && a->ls[k->owner].live &&
			    a->ls[k->owner].gen == k->owner_gen)
				continue;
			k->state = BLK_FREE;
		} else if (k->state != BLK_READY) {
			k->state = BLK_FREE;
		}
	}
	/* 3. Refcounts from live leases; a pin on a block that did not survive is dropped. */
	for (s = 0; s < h->n_leases; s++) {
		struct arena_lease_slot *ls = &a->ls[s];
		uint32_t *link;
		if (!ls->live)
			continue;
		link = &ls->pin_head;
		while (*link != NIL) {
			p = *link;
			if (a->blk[a->pins[p].block].state == BLK_FREE) {
				*link = a->pins[p].next;
				if (seen)
					seen[p] = 0;
				ls->n_pins--;
				continue;
			}
			a->blk[a->pins[p].block].refs++;
			link = &a->pins[p].next;
		}
	}
	/* A block being written whose writer's pin was lost cannot be published safely. */
	for (b = 0; b < n; b++)
		if (a->blk[b].state == BLK_WRITING && !a->blk[b].refs)
			a->blk[b].state = BLK_FREE;
	/* 4. Pin free list: every pin no live lease reaches. */
	h->pin_free = NIL;
	for (p = h->n_pins; p-- > 0;) {
		if (seen && seen[p])
			continue;
		a->pins[p].block = NIL;
		a->pins[p].next = h->pin_free;
		h->pin_free = p;
	}
	/* 5. Index, free list and LRU (oldest use first) from the surviving blocks. */
	memset(a->index, 0, (size_t)h->n_index * sizeof *a->index);
	h->free_head = NIL;
	h->free_count = 0;
	h->lru_head = h->lru_tail = NIL;
	for (b = n; b-- > 0;) {
		struct arena_block *k = &a->blk[b];
		if (k->state != BLK_FREE && idx_find(a, k->key) != NIL) {
			/* Same key twice (a writer died between checks): keep one copy. */
			if (!k->refs) {
				k->state = BLK_FREE;
				dropped++;
			}
		} else if (k->state != BLK_FREE) {
			idx_insert(a, b);
		}
		if (k->state == BLK_FREE) {
			free_push(a, b);
			continue;
		}
		kept++;
		if (k->state == BLK_READY && !k->refs) {
			if (order)
				order[nl++] = b;
			else
				lru_push_tail(a, b);
		}
	}
	if (order) {
		qsort_r(order, nl, sizeof *order, cmp_used, a->blk);
		for (b = 0; b < nl; b++)
			lru_push_tail(a, order[b]);
	}
	h->recoveries++;
	free(order);
	free(seen);
	fi_warn("kv arena '%s': rebuilt its index and lists (%u blocks kept, %u duplicates "
		"dropped)", a->path, kept, dropped);
}

fi_err arena_lock(struct fi_arena *a)
{
	int r = pthread_mutex_lock(&a->h->lock.m);
	if (r == EOWNERDEAD) {
		fi_warn("kv arena '%s': a process died holding its lock; repairing", a->path);
		arena_repair(a);
		pthread_mutex_consistent(&a->h->lock.m);
		return FI_OK;
	}
	if (r == ENOTRECOVERABLE)
		return fi_fail(FI_EBUSY, "kv arena '%s': lock is unrecoverable; remove the arena",
			       a->path);
	if (r)
		return fi_fail(FI_EIO, "kv arena '%s': lock: %s", a->path, strerror(r));
	return FI_OK;
}

void arena_unlock(struct fi_arena *a)
{
	pthread_mutex_unlock(&a->h->lock.m);
}

void arena_crash_point(const char *name)
{
	/* Taken once per process (a forked child that sets FI_ARENA_CRASH reloads the
	 * settings, settings.h). */
	static pid_t pid;
	static char spec[64];
	static long count, want;
	static size_t len;
	const char *colon;
	if (pid != getpid()) {
		pid = getpid();
		count = 0;
		snprintf(spec, sizeof spec, "%s", fi_settings()->arena_crash);
		colon = strchr(spec, ':');
		len = colon ? (size_t)(colon - spec) : strlen(spec);
		want = colon ? strtol(colon + 1, NULL, 10) : 1;
	}
	if (!len || len != strlen(name) || memcmp(spec, name, len))
		return;
	if (++count >= want)
		raise(SIGKILL);
}
