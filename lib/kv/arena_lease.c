/* arena_lease: leases and pins, lookup, reserve/publish, block checksums, and the sweep of
 * dead processes. Calls arena_index.c only.
 *
 * A lease slot records (pid, start time) of the process that took it and a list of pins; a
 * block's refcount is the number of pins on it. A slot whose process is gone, or whose pid now
 * belongs to a process started at another time (pid reuse), is dead: the sweep drops its pins,
 * frees the blocks it was writing and frees the slot.
 *
 * Checksums. Publish stores sum = XXH3-64(key || XXH3-64(data)) in the block's entry, so a
 * flipped, zeroed or NaN'd byte of data and a key swapped between entries are both caught
 * when the block is verified; readers verify what they fetch (fi_arena_verify_blocks, in
 * parallel threads: XXH3 runs at memory speed, and a 512 MiB prefix is 256 blocks of 2 MiB)
 * and withdraw a block that fails, which is then computed again. */
#include "arena_shm.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

/* Drops one reference to b taken through lease slot s. */
static void unref_locked(struct fi_arena *a, uint32_t b, uint32_t s)
{
	struct arena_block *k;
	if (b >= a->h->n_blocks)
		return;
	k = &a->blk[b];
	if (k->refs)
		k->refs--;
	if (k->state == BLK_WRITING && k->owner == s) {
		idx_remove(a, b);
		free_push(a, b);
	} else if (k->state == BLK_STALE && !k->refs) {
		free_push(a, b); /* withdrawn, and no longer read */
	} else if (k->state == BLK_READY && !k->refs) {
		k->used = ++a->h->tick;
		lru_push_tail(a, b);
	}
}

static void pin_free_locked(struct fi_arena *a, uint32_t p)
{
	a->pins[p].block = NIL;
	a->pins[p].next = a->h->pin_free;
	a->h->pin_free = p;
}

/* Pins are released newest first, so a chain's last blocks become the least recently used:
 * eviction trims chains from their ends and keeps the shared prefixes longest. */
void lease_release_locked(struct fi_arena *a, uint32_t s)
{
	struct arena_lease_slot *ls = &a->ls[s];
	int first = 1;
	while (ls->pin_head != NIL) {
		uint32_t p = ls->pin_head, b = a->pins[p].block;
		ls->pin_head = a->pins[p].next;
		ls->n_pins--;
		pin_free_locked(a, p);
		unref_locked(a, b, s);
		if (first)
			arena_crash_point("locked-unlease");
		first = 0;
	}
	ls->n_pins = 0;
	ls->live = 0;
	ls->gen++;
}

uint32_t sweep_locked(struct fi_arena *a)
{
	uint32_t s, n = 0;
	for (s = 0; s < a->h->n_leases; s++) {
		if (a->ls[s].live && !lease_alive(&a->ls[s])) {
			lease_release_locked(a, s);
			n++;
		}
	}
	a->h->swept += n;
	return n;
}

static uint32_t pin_add_locked(struct fi_arena *a, uint32_t s, uint32_t b)
{
	struct arena_lease_slot *ls = &a->ls[s];
	uint32_t p = a->h->pin_free;
	if (p == NIL) {
		if (!sweep_locked(a) || (p = a->h->pin_free) == NIL)
			return NIL;
	}
	a->h->pin_free = a->pins[p].next;
	a->pins[p].block = b;
	a->pins[p].next = ls->pin_head;
	ls->pin_head = p;
	ls->n_pins++;
	return p;
}

static int pin_remove_locked(struct fi_arena *a, uint32_t s, uint32_t b)
{
	struct arena_lease_slot *ls = &a->ls[s];
	uint32_t *link = &ls->pin_head;
	while (*link != NIL) {
		uint32_t p = *link;
		if (a->pins[p].block == b) {
			*link = a->pins[p].next;
			ls->n_pins--;
			pin_free_locked(a, p);
			unref_locked(a, b, s);
			return 0;
		}
		link = &a->pins[p].next;
	}
	return -1;
}

/* Locks and checks that l is still this process's live lease. */
static fi_err lease_lock(struct fi_arena_lease *l)
{
	struct fi_arena *a;
	fi_err e;
	if (!l)
		return fi_fail(FI_EINVAL, "kv arena: no lease");
	a = l->a;
	if (a->pid != getpid())
		return fi_fail(FI_ESTATE, "kv arena '%s': handle inherited across fork; open the "
			       "arena again in this process", a->path);
	if ((e = arena_lock(a)))
		return e;
	if (!a->ls[l->slot].live || a->ls[l->slot].gen != l->gen ||
	    a->ls[l->slot].pid != (int32_t)a->pid) {
		arena_unlock(a);
		return fi_fail(FI_ESTATE, "kv arena '%s': lease %u was reclaimed", a->path, l->slot);
	}
	return FI_OK;
}

fi_err fi_arena_lease(struct fi_arena *a, struct fi_arena_lease **out)
{
	struct fi_arena_lease *l;
	uint32_t s, tries;
	fi_err e;
	*out = NULL;
	if (a->pid != getpid())
		return fi_fail(FI_ESTATE, "kv arena '%s': handle inherited across fork; open the "
			       "arena again in this process", a->path);
	if (a->n_leases == a->cap_leases) {
		size_t cap = a->cap_leases ? 2 * a->cap_leases : 16;
		struct fi_arena_lease **v = realloc(a->leases, cap * sizeof *v);
		if (!v)
			return fi_fail(FI_ENOMEM, "kv arena: lease table");
		a->leases = v;
		a->cap_leases = cap;
	}
	if (!(l = calloc(1, sizeof *l)))
		return fi_fail(FI_ENOMEM, "kv arena: lease");
	if ((e = arena_lock(a))) {
		free(l);
		return e;
	}
	for (tries = 0; tries < 2; tries++) {
		for (s = 0; s < a->h->n_leases && a->ls[s].live; s++)
			;
		if (s < a->h->n_leases || !sweep_locked(a))
			break;
	}
	if (s >= a->h->n_leases) {
		arena_unlock(a);
		free(l);
		return fi_fail(FI_EFULL, "kv arena '%s': all %u lease slots are held by live "
			       "processes", a->path, a->h->n_leases);
	}
	a->ls[s].pid = (int32_t)a->pid;
	a->ls[s].start = a->start;
	a->ls[s].pidns = self_pidns();
	a->ls[s].pin_head = NIL;
	a->ls[s].n_pins = 0;
	a->ls[s].live = 1;
	l->gen = a->ls[s].gen;
	arena_unlock(a);
	l->a = a;
	l->slot = s;
	l->pos = a->n_leases;
	a->leases[a->n_leases++] = l;
	*out = l;
	return FI_OK;
}

void fi_arena_unlease(struct fi_arena_lease *l)
{
	struct fi_arena *a;
	if (!l)
		return;
	a = l->a;
	if (a->pid == getpid() && !arena_lock(a)) {
		if (a->ls[l->slot].live && a->ls[l->slot].gen == l->gen)
			lease_release_locked(a, l->slot);
		arena_unlock(a);
	}
	a->leases[l->pos] = a->leases[--a->n_leases];
	a->leases[l->pos]->pos = l->pos;
	free(l);
}

fi_err fi_arena_unpin(struct fi_arena_lease *l, uint32_t b)
{
	fi_err e = lease_lock(l);
	int r;
	if (e)
		return e;
	r = b < l->a->h->n_blocks ? pin_remove_locked(l->a, l->slot, b) : -1;
	arena_unlock(l->a);
	if (r)
		return fi_fail(FI_ENOTFOUND, "kv arena '%s': lease does not pin block %u",
			       l->a->path, b);
	return FI_OK;
}

size_t fi_arena_lease_pins(const struct fi_arena_lease *l)
{
	return l->a->ls[l->slot].n_pins;
}

fi_err fi_arena_lookup(struct fi_arena_lease *l, const fi_arena_key *keys, size_t n,
		       uint32_t *blocks, size_t *n_found)
{
	struct fi_arena *a = l->a;
	fi_err e = lease_lock(l);
	size_t i;
	*n_found = 0;
	if (e)
		return e;
	for (i = 0; i < n; i++) {
		uint32_t b = idx_find(a, keys[i].b);
		struct arena_block *k;
		if (b == NIL || a->blk[b].state != BLK_READY)
			break;
		k = &a->blk[b];
		if (pin_add_locked(a, l->slot, b) == NIL) {
			e = fi_fail(FI_EFULL, "kv arena '%s': all %u pin slots are in use", a->path,
				    a->h->n_pins);
			break;
		}
		if (!k->refs++)
			lru_remove(a, b);
		k->used = ++a->h->tick;
		blocks[i] = b;
	}
	a->h->hits += i;
	a->h->misses += n - i;
	arena_unlock(a);
	*n_found = i;
	return e;
}

fi_err fi_arena_reserve(struct fi_arena_lease *l, const fi_arena_key *key, uint32_t *block,
			void **data, enum fi_arena_reserve_result *result)
{
	struct fi_arena *a = l->a;
	struct arena_block *k;
	uint32_t b, s = l->slot;
	fi_err e = lease_lock(l);
	*block = NIL;
	if (data)
		*data = NULL;
	*result = FI_ARENA_BUSY;
	if (e)
		return e;
	b = idx_find(a, key->b);
	if (b != NIL && a->blk[b].state == BLK_WRITING) {
		uint32_t o = a->blk[b].owner;
		if (o < a->h->n_leases && a->ls[o].live && a->ls[o].gen == a->blk[b].owner_gen &&
		    lease_alive(&a->ls[o])) {
			arena_unlock(a);
			return FI_OK; /* FI_ARENA_BUSY */
		}
		/* Its writer died: reclaim that lease (which frees the block) and write it anew. */
		if (o < a->h->n_leases && a->ls[o].live && a->ls[o].gen == a->blk[b].owner_gen) {
			lease_release_locked(a, o);
			a->h->swept++;
		} else {
			idx_remove(a, b);
			free_push(a, b);
		}
		b = NIL;
	}
	if (b != NIL) { /* published: pin it */
		if (pin_add_locked(a, s, b) == NIL)
			goto no_pins;
		k = &a->blk[b];
		if (!k->refs++)
			lru_remove(a, b);
		k->used = ++a->h->tick;
		*block = b;
		*result = FI_ARENA_CACHED;
		arena_unlock(a);
		return FI_OK;
	}
	b = block_take(a);
	if (b == NIL && sweep_locked(a))
		b = block_take(a);
	if (b == NIL) {
		uint32_t live = 0, i;
		for (i = 0; i < a->h->n_leases; i++)
			live += a->ls[i].live;
		arena_unlock(a);
		return fi_fail(FI_EFULL, "kv arena '%s': all %u blocks are pinned or being written "
			       "(%u live leases); none can be evicted", a->path, a->h->n_blocks, live);
	}
	if (pin_add_locked(a, s, b) == NIL) {
		free_push(a, b);
		goto no_pins;
	}
	/* The block table first (state, key, owner), then the derived index. A crash before the
	 * index insert leaves a writing block of a dead lease, which a repair frees. */
	k = &a->blk[b];
	memcpy(k->key, key->b, FI_ARENA_KEY_BYTES);
	k->owner = s;
	k->owner_gen = l->gen;
	k->refs = 1;
	k->used = ++a->h->tick;
	k->state = BLK_WRITING;
	arena_crash_point("locked-reserve");
	idx_insert(a, b);
	arena_unlock(a);
	*block = b;
	if (data)
		*data = arena_block_data(a, b);
	*result = FI_ARENA_WRITE;
	arena_crash_point("reserve");
	return FI_OK;
no_pins:
	arena_unlock(a);
	return fi_fail(FI_EFULL, "kv arena '%s': all %u pin slots are in use", a->path,
		       a->h->n_pins);
}

/* The checksum of block b's data under key (the entry's own key, at publish and verify). */
static uint64_t block_sum(const struct fi_arena *a, uint32_t b, const uint8_t *key)
{
	uint8_t buf[FI_ARENA_KEY_BYTES + 8];
	uint64_t d = XXH3_64bits(arena_block_data(a, b), a->h->block_bytes);
	memcpy(buf, key, FI_ARENA_KEY_BYTES);
	memcpy(buf + FI_ARENA_KEY_BYTES, &d, 8);
	return XXH3_64bits(buf, sizeof buf);
}

/* Checks, under the lock, that b is being written through l. */
static fi_err check_writer(struct fi_arena_lease *l, uint32_t b)
{
	struct fi_arena *a = l->a;
	if (b >= a->h->n_blocks || a->blk[b].state != BLK_WRITING || a->blk[b].owner != l->slot ||
	    a->blk[b].owner_gen != l->gen)
		return fi_fail(FI_ESTATE, "kv arena '%s': block %u is not reserved by this lease",
			       a->path, b);
	return FI_OK;
}

fi_err fi_arena_publish(struct fi_arena_lease *l, uint32_t b)
{
	struct fi_arena *a = l->a;
	uint64_t sum = 0;
	fi_err e;
	arena_crash_point("publish");
	/* The data is hashed before the lock (a reserved block's key and data are the writer's
	 * alone until it is published). */
	if (b < a->h->n_blocks)
		sum = block_sum(a, b, a->blk[b].key);
	if ((e = lease_lock(l)))
		return e;
	if (!(e = check_writer(l, b))) {
		struct arena_block *k = &a->blk[b];
		k->sum = sum;
		k->state = BLK_READY;
		arena_crash_point("locked-publish");
		k->used = ++a->h->tick;
		a->h->inserts++;
	}
	arena_unlock(a);
	return e;
}

fi_err fi_arena_abort(struct fi_arena_lease *l, uint32_t b)
{
	fi_err e = lease_lock(l);
	if (e)
		return e;
	if (!(e = check_writer(l, b)))
		pin_remove_locked(l->a, l->slot, b);
	arena_unlock(l->a);
	return e;
}

fi_err fi_arena_put(struct fi_arena_lease *l, const fi_arena_key *key, const void *kv, size_t len,
		    uint32_t *block, enum fi_arena_reserve_result *result)
{
	enum fi_arena_reserve_result r;
	uint32_t b;
	void *p;
	fi_err e;
	size_t half = len / 2;
	if (len != l->a->h->block_bytes)
		return fi_fail(FI_EINVAL, "kv arena '%s': put of %zu bytes, blocks hold %llu",
			       l->a->path, len, (unsigned long long)l->a->h->block_bytes);
	if ((e = fi_arena_reserve(l, key, &b, &p, &r)))
		return e;
	if (block)
		*block = b;
	if (result)
		*result = r;
	if (r != FI_ARENA_WRITE)
		return FI_OK;
	memcpy(p, kv, half);
	arena_crash_point("copy");
	memcpy((uint8_t *)p + half, (const uint8_t *)kv + half, len - half);
	if ((e = fi_arena_publish(l, b)))
		fi_arena_abort(l, b);
	return e;
}

fi_err fi_arena_verify(struct fi_arena *a, uint32_t b)
{
	if (b >= a->h->n_blocks || a->blk[b].state != BLK_READY)
		return fi_fail(FI_ESTATE, "kv arena '%s': block %u is not published", a->path, b);
	if (block_sum(a, b, a->blk[b].key) != a->blk[b].sum)
		return fi_fail(FI_EFORMAT, "kv arena '%s': block %u: data does not match its "
			       "checksum", a->path, b);
	return FI_OK;
}

/* Verification spread over threads: each takes every nt-th block from its first. */
struct vjob {
	struct fi_arena *a;
	const uint32_t *blocks;
	size_t n, first, step;
	uint8_t *bad;
};

static void *verify_some(void *arg)
{
	struct vjob *j = arg;
	for (size_t i = j->first; i < j->n; i += j->step) {
		uint32_t b = j->blocks[i];
		const struct arena_block *k = &j->a->blk[b];
		j->bad[i] = k->state != BLK_READY || block_sum(j->a, b, k->key) != k->sum;
	}
	return NULL;
}

#define VERIFY_THREADS 8                /* past this, memory bandwidth is the limit */
#define VERIFY_PER_THREAD (8ull << 20) /* bytes worth a thread */

fi_err fi_arena_verify_blocks(struct fi_arena *a, const uint32_t *blocks, size_t n,
			      size_t *first_bad)
{
	struct vjob job[VERIFY_THREADS];
	pthread_t th[VERIFY_THREADS];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t nt = (size_t)(n * a->h->block_bytes / VERIFY_PER_THREAD), started = 1, i;
	uint8_t *bad;
	*first_bad = n;
	for (i = 0; i < n; i++)
		if (blocks[i] >= a->h->n_blocks)
			return fi_fail(FI_ERANGE, "kv arena '%s': block %u of %u", a->path, blocks[i],
				       a->h->n_blocks);
	if (!n)
		return FI_OK;
	if (!(bad = calloc(n, 1)))
		return fi_fail(FI_ENOMEM, "kv arena: verify");
	if (nt > (size_t)(cpus > 0 ? cpus : 1))
		nt = (size_t)(cpus > 0 ? cpus : 1);
	if (nt > VERIFY_THREADS)
		nt = VERIFY_THREADS;
	if (nt > n)
		nt = n;
	if (nt < 1)
		nt = 1;
	for (i = 0; i < nt; i++)
		job[i] = (struct vjob){a, blocks, n, i, nt, bad};
	/* This thread takes the first share; a thread that cannot start leaves its share to
	 * this one. */
	for (i = 1; i < nt; i++, started++)
		if (pthread_create(&th[i], NULL, verify_some, &job[i]))
			break;
	if (started < nt) {
		for (i = started; i < nt; i++)
			verify_some(&job[i]);
	}
	verify_some(&job[0]);
	for (i = 1; i < started; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < n && !bad[i]; i++)
		;
	*first_bad = i;
	free(bad);
	return FI_OK;
}

fi_err fi_arena_withdraw(struct fi_arena_lease *l, uint32_t b)
{
	struct fi_arena *a = l->a;
	fi_err e = lease_lock(l);
	if (e)
		return e;
	if (b >= a->h->n_blocks || a->blk[b].state != BLK_READY || !a->blk[b].refs) {
		arena_unlock(a);
		return fi_fail(FI_ESTATE, "kv arena '%s': block %u is not a published block this "
			       "lease pins", a->path, b);
	}
	/* Out of the index now, so no lookup finds it and a writer of the same key gets a
	 * fresh block; freed when its last pin goes (this lease pins it). */
	idx_remove(a, b);
	lru_remove(a, b);
	a->blk[b].state = BLK_STALE;
	a->h->corrupt++;
	arena_unlock(a);
	return FI_OK;
}
