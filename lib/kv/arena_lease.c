/* arena_lease: leases and pins, lookup, reserve/publish, and the sweep of dead processes.
 *
 * A lease slot records (pid, start time) of the process that took it and a list of pins; a
 * block's refcount is the number of pins on it. A slot whose process is gone, or whose pid now
 * belongs to a process started at another time (pid reuse), is dead: the sweep drops its pins,
 * frees the blocks it was writing and frees the slot. */
#include "arena_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

int proc_start_time(pid_t pid, uint64_t *start)
{
	char path[64], buf[1024], *p, *save = NULL, *tok;
	ssize_t n;
	int fd, field;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	/* "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after the
	 * last ')'. Field 3 is the state, field 22 the start time in clock ticks since boot. */
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	for (field = 3, tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save),
	     field++) {
		if (field == 3 && (tok[0] == 'Z' || tok[0] == 'X'))
			return -1; /* exited, not yet reaped: its leases are dead */
		if (field == 22) {
			*start = strtoull(tok, NULL, 10);
			return 0;
		}
	}
	return -1;
}

uint64_t self_pidns(void)
{
	static pid_t pid;
	static uint64_t ino;
	struct stat st;
	if (pid != getpid()) {
		pid = getpid();
		ino = stat("/proc/self/ns/pid", &st) ? 0 : (uint64_t)st.st_ino;
	}
	return ino;
}

int lease_alive(const struct arena_lease_slot *s)
{
	uint64_t st;
	/* A lease taken in another pid namespace (another container sharing the arena's
	 * directory) names a pid we cannot look up: count it as alive rather than free blocks
	 * that a live process may be reading. */
	if (s->pidns && self_pidns() && s->pidns != self_pidns())
		return 1;
	if (s->pid <= 0 || proc_start_time(s->pid, &st))
		return 0;
	return st == s->start;
}

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
		*data = fi_arena_data(a, b);
	*result = FI_ARENA_WRITE;
	arena_crash_point("reserve");
	return FI_OK;
no_pins:
	arena_unlock(a);
	return fi_fail(FI_EFULL, "kv arena '%s': all %u pin slots are in use", a->path,
		       a->h->n_pins);
}

static int block_sum(struct fi_arena *a, uint32_t b, uint8_t sum[32])
{
	unsigned int len = 0;
	return EVP_Digest(fi_arena_data(a, b), a->h->block_bytes, sum, &len, EVP_sha256(), NULL) ==
		       1 && len == 32 ? 0 : -1;
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
	uint8_t sum[32] = {0};
	fi_err e;
	arena_crash_point("publish");
	if ((a->h->flags & ARENA_F_CHECKSUM) && b < a->h->n_blocks && block_sum(a, b, sum))
		return fi_fail(FI_EIO, "kv arena '%s': sha-256 failed", a->path);
	if ((e = lease_lock(l)))
		return e;
	if (!(e = check_writer(l, b))) {
		struct arena_block *k = &a->blk[b];
		memcpy(k->sum, sum, sizeof sum);
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
	uint8_t sum[32];
	if (!(a->h->flags & ARENA_F_CHECKSUM))
		return fi_fail(FI_EUNSUPPORTED, "kv arena '%s': keeps no checksums", a->path);
	if (b >= a->h->n_blocks || a->blk[b].state != BLK_READY)
		return fi_fail(FI_ESTATE, "kv arena '%s': block %u is not published", a->path, b);
	if (block_sum(a, b, sum))
		return fi_fail(FI_EIO, "kv arena '%s': sha-256 failed", a->path);
	if (memcmp(sum, a->blk[b].sum, sizeof sum))
		return fi_fail(FI_EFORMAT, "kv arena '%s': block %u: data does not match its "
			       "checksum", a->path, b);
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
