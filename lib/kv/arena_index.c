/* arena_index: the KV arena's shared state under its lock: the timed robust lock, process
 * liveness, the hash index, the free list and LRU, block allocation (new extents, eviction),
 * invariant checks, crash repair and the testing hooks. The bottom of the arena files: it
 * calls none of the others.
 *
 * All of it runs under the arena's robust mutex. Lists are threaded through block indices in the
 * block table; the index is linear probing with backward-shift deletion (no tombstones, so it
 * never degrades). A process that dies holding the mutex may leave any of these half-updated:
 * the next locker gets EOWNERDEAD and arena_repair() rebuilds them all from the block table,
 * which every operation keeps truthful (state, key, owner) before touching the derived
 * structures. A process that holds it and stops (SIGSTOP, a debugger, swapped out for good)
 * is waited for a bounded time: arena_lock then fails naming its pid. */
#define _GNU_SOURCE /* qsort_r, pthread_mutex_clocklock */
#include "arena_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/settings.h"

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
	for (n = 0; n <= mask; n++, i = (i + 1) & mask)
		if (!a->index[i] || a->index[i] == b + 1)
			break;
	if (n > mask || !a->index[i]) {
		/* Not where its key says: a key overwritten in the table (a corrupt block being
		 * withdrawn), or not indexed at all (a duplicate left by a repair). */
		for (i = 0; i <= mask && a->index[i] != b + 1; i++)
			;
		if (i > mask)
			return;
	}
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

/* Allocates the next extent's data and puts its blocks on the free list; 0 on success. A
 * failure (no space) is not retried by this process for a second: until then blocks are
 * evicted instead. */
static int grow_locked(struct fi_arena *a)
{
	struct arena_hdr *h = a->h;
	uint32_t n = h->extent_blocks, b;
	int r;
	if (h->n_alloc >= h->n_blocks || (a->grow_failed && fi_now() - a->grow_failed < 1.0))
		return -1;
	if (n > h->n_blocks - h->n_alloc)
		n = h->n_blocks - h->n_alloc;
	r = posix_fallocate(a->fd, (off_t)(h->off_data + (uint64_t)h->n_alloc * h->block_stride),
			    (off_t)((uint64_t)n * h->block_stride));
	if (r && r != EOPNOTSUPP && r != EINVAL) {
		if (!a->grow_failed)
			fi_debug("kv arena '%s': cannot grow past %u blocks: %s", a->path, h->n_alloc,
				 strerror(r));
		a->grow_failed = fi_now();
		return -1;
	}
	a->grow_failed = 0;
	/* n_alloc first: a repair puts the free blocks below it on the free list. Pushed last
	 * first, so blocks are taken in file order. */
	h->n_alloc += n;
	arena_crash_point("locked-grow");
	for (b = h->n_alloc; b-- > h->n_alloc - n;)
		free_push(a, b);
	return 0;
}

uint32_t block_take(struct fi_arena *a)
{
	struct arena_hdr *h = a->h;
	uint32_t b = h->free_head;
	if (b == NIL && !grow_locked(a))
		b = h->free_head;
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

	if (h->n_alloc > n)
		h->n_alloc = n;

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
	/* 2. Blocks: keep published ones (stale ones while pinned) and those a live lease is
	 *    writing; free the rest, and every block past the allocated data. */
	for (b = 0; b < n; b++) {
		struct arena_block *k = &a->blk[b];
		k->refs = 0;
		k->prev = k->next = NIL;
		k->in_list = IN_NONE;
		if (b >= h->n_alloc) {
			k->state = BLK_FREE;
		} else if (k->state == BLK_WRITING) {
			if (k->owner < h->n_leases && a->ls[k->owner].live &&
			    a->ls[k->owner].gen == k->owner_gen)
				continue;
			k->state = BLK_FREE;
		} else if (k->state != BLK_READY && k->state != BLK_STALE) {
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
	/* A block being written whose writer's pin was lost cannot be published safely; a stale
	 * block nobody pins goes. */
	for (b = 0; b < n; b++)
		if ((a->blk[b].state == BLK_WRITING || a->blk[b].state == BLK_STALE) &&
		    !a->blk[b].refs)
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
		if (k->state == BLK_STALE) {
			kept++;
			continue;
		}
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
			if (b < h->n_alloc)
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
	struct timespec ts;
	int r;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += a->lock_ms / 1000;
	ts.tv_nsec += (long)(a->lock_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	r = pthread_mutex_clocklock(&a->h->lock.m, CLOCK_MONOTONIC, &ts);
	if (r == ETIMEDOUT) {
		int32_t pid = __atomic_load_n(&a->h->lock_pid, __ATOMIC_RELAXED);
		return fi_fail(FI_EBUSY, "kv arena '%s': its lock has been held for more than %.3g s "
			       "by process %d (stopped or stuck?)", a->path, a->lock_ms / 1000.0,
			       (int)pid);
	}
	if (r == EOWNERDEAD) {
		fi_warn("kv arena '%s': a process died holding its lock; repairing", a->path);
		arena_repair(a);
		pthread_mutex_consistent(&a->h->lock.m);
		a->h->lock_pid = (int32_t)getpid();
		return FI_OK;
	}
	if (r == ENOTRECOVERABLE)
		return fi_fail(FI_EBUSY, "kv arena '%s': lock is unrecoverable; remove the arena",
			       a->path);
	if (r)
		return fi_fail(FI_EIO, "kv arena '%s': lock: %s", a->path, strerror(r));
	a->h->lock_pid = (int32_t)getpid();
	return FI_OK;
}

void arena_unlock(struct fi_arena *a)
{
	a->h->lock_pid = 0;
	pthread_mutex_unlock(&a->h->lock.m);
}

/* One hook: a variable's value <point>[:<n>] (settings.h) fires at the n-th (default first)
 * pass through the point. Taken once per process (a forked child that sets the variable
 * reloads the settings). */
struct hook {
	pid_t pid;
	char spec[64];
	long count, want;
	size_t len;
};

static int hook_fires(struct hook *k, const char *spec, const char *name)
{
	const char *colon;
	if (k->pid != getpid()) {
		k->pid = getpid();
		k->count = 0;
		snprintf(k->spec, sizeof k->spec, "%s", spec);
		colon = strchr(k->spec, ':');
		k->len = colon ? (size_t)(colon - k->spec) : strlen(k->spec);
		k->want = colon ? strtol(colon + 1, NULL, 10) : 1;
	}
	if (!k->len || k->len != strlen(name) || memcmp(k->spec, name, k->len))
		return 0;
	return ++k->count == k->want;
}

void arena_crash_point(const char *name)
{
	static struct hook crash, stop;
	if (hook_fires(&crash, fi_settings()->arena_crash, name))
		raise(SIGKILL);
	if (hook_fires(&stop, fi_settings()->arena_stop, name))
		raise(SIGSTOP);
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
	if (h->n_alloc > n)
		BAD("%u blocks allocated, of %u", h->n_alloc, n);
	if (h->free_head != NIL && h->free_head >= n)
		BAD("free list head %u", h->free_head);
	if (h->lru_head != NIL && h->lru_head >= n)
		BAD("lru head %u", h->lru_head);
	for (s = 0; s < h->n_leases; s++)
		if (a->ls[s].live && a->ls[s].pin_head != NIL && a->ls[s].pin_head >= h->n_pins)
			BAD("lease %u: pin list head %u", s, a->ls[s].pin_head);
	/* Free list: exactly the free blocks of the allocated data. */
	for (cnt = 0, b = h->free_head; b != NIL; b = a->blk[b].next, cnt++) {
		if (cnt >= n || b >= h->n_alloc || (a->blk[b].next != NIL && a->blk[b].next >= n) ||
		    a->blk[b].state != BLK_FREE || a->blk[b].in_list != IN_FREE)
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
	/* Blocks: refcounts match pins; non-free blocks are indexed (stale ones are not, and are
	 * pinned); evictable ones in the LRU; nothing past the allocated data is in use. */
	for (b = 0; b < n; b++) {
		const struct arena_block *k = &a->blk[b];
		if (k->refs != refs[b])
			BAD("block %u: refcount %u, pinned %u times", b, k->refs, refs[b]);
		if (k->state == BLK_FREE) {
			if (b >= h->n_alloc && k->in_list != IN_NONE)
				BAD("block %u: listed, past the allocated data", b);
			continue;
		}
		if (b >= h->n_alloc)
			BAD("block %u: in use past the allocated data", b);
		if (k->state == BLK_STALE) {
			if (!k->refs || k->in_list != IN_NONE || idx_find(a, k->key) == b)
				BAD("block %u: stale but unpinned, listed or indexed", b);
			continue;
		}
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
		if (a->index[p] && (a->index[p] - 1 >= n || a->blk[a->index[p] - 1].state == BLK_FREE ||
				    a->blk[a->index[p] - 1].state == BLK_STALE))
			BAD("index slot %u: stale entry", p);
out:
	free(refs);
	free(mark);
	if (e)
		fi_fail_ctx(e, "kv arena '%s'", a->path);
	return e;
}

