/* arena_shm: the KV arena's file layout and the internals shared by arena*.c (not installed API).
 *
 * The four files call one way, bottom up, never back:
 *   arena_index.c  the shared state under the lock: the timed robust lock, process liveness,
 *                  the hash index, free list and LRU, block allocation (growing the data by
 *                  extents, evicting), invariant checks, crash repair, testing hooks
 *   arena_lease.c  leases and pins, lookup, reserve/publish, block checksums, the sweep of
 *                  dead processes' leases                          (calls index)
 *   arena_store.c  the arena's file: its directory, layout, creation, attachment and header
 *                  validation                                       (calls index)
 *   arena.c        the API: open and close, layout, keys, stats, checks, the directory of
 *                  arenas                                           (calls the three)
 *
 * File layout (all offsets from the start of the file; nothing in it is a pointer):
 *   [0, 4096)        struct arena_hdr: identity, layout, the robust mutex, list heads, counters
 *   off_meta         struct arena_block[n_blocks]: key, checksum, state, refs, list links, owner
 *   off_index        uint32_t[n_index]: open-addressing (linear probing) table of block + 1,
 *                    0 = empty; n_index is a power of two >= 2 * n_blocks
 *   off_leases       struct arena_lease_slot[n_leases]
 *   off_pins         struct arena_pin[n_pins]: (block, next) pins threaded per lease, free list
 *   off_data         n_blocks * block_stride bytes of KV; block_stride = block_bytes rounded up
 *                    to FI_ARENA_ALIGN, off_data aligned to it
 * The file has its full size from the start, but only [0, off_data) and the data of the
 * first n_alloc blocks are allocated (fallocate): the data grows by extents of extent_blocks
 * blocks when a block is needed and none is free, so an arena costs memory as it fills, and a
 * full file system is an extent that cannot be had (the arena evicts instead), never a
 * SIGBUS on a sparse page. Blocks at or past n_alloc are FREE and on no list.
 * Everything after the identity fields changes only under the mutex. */
#ifndef FI_ARENA_SHM_H
#define FI_ARENA_SHM_H

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "arena.h"

#define ARENA_MAGIC "FIKVARN\0"
/* 2: an XXH3 checksum of key and data per block, always kept; data allocated by extents. */
#define ARENA_VERSION 2
#define ARENA_HDR_BYTES 4096
#define ARENA_EXTENT_BYTES (64ull << 20) /* default data allocated at a time (>= one block) */
#define ARENA_LOCK_MS 5000               /* default bound on waiting for the lock */
#define NIL UINT32_MAX

/* BLK_STALE: published, then found corrupt: out of the index (no lookup finds it), freed
 * when its last pin goes. */
enum { BLK_FREE = 0, BLK_WRITING = 1, BLK_READY = 2, BLK_STALE = 3 };
enum { IN_NONE = 0, IN_FREE = 1, IN_LRU = 2 };

struct arena_hdr {
	char magic[8];
	uint32_t version;
	uint32_t hdr_struct_bytes; /* sizeof(struct arena_hdr) of the creator */
	uint32_t mutex_bytes;      /* sizeof(pthread_mutex_t) of the creator */
	uint32_t flags;
	char fingerprint[72];      /* 64 hex characters, NUL padded */
	uint32_t block_tokens;
	uint32_t n_blocks;
	uint64_t token_bytes, block_bytes, block_stride;
	uint32_t n_index, n_leases, n_pins, extent_blocks;
	uint64_t off_meta, off_index, off_leases, off_pins, off_data, file_bytes;
	uint8_t pad1[64];
	union {
		pthread_mutex_t m;
		uint8_t bytes[128];
	} lock __attribute__((aligned(64)));
	/* Under the mutex. */
	int32_t lock_pid; /* the process holding the lock (0: none), for messages */
	uint32_t n_alloc; /* blocks whose data is allocated: whole extents, the last maybe short */
	uint32_t free_head, free_count;
	uint32_t lru_head, lru_tail;
	uint32_t pin_free, pad2;
	uint64_t tick; /* use counter: orders the LRU when a repair rebuilds it */
	uint64_t hits, misses, inserts, evictions, swept, recoveries, corrupt;
};

_Static_assert(sizeof(struct arena_hdr) <= ARENA_HDR_BYTES, "arena header fits its page");
_Static_assert(sizeof(pthread_mutex_t) <= 128, "mutex fits its slot");

struct arena_block {
	uint8_t key[FI_ARENA_KEY_BYTES];
	uint64_t sum;       /* XXH3-64 of (key, XXH3-64 of the data), set at publish */
	uint32_t state;     /* BLK_* */
	uint32_t refs;      /* pins held on it, over all leases */
	uint32_t prev, next; /* LRU (ready, unpinned) or free list (next only) */
	uint32_t in_list;   /* IN_*: which list links it */
	uint32_t owner, owner_gen; /* lease slot that reserved it, while writing */
	uint32_t pad;
	uint64_t used;      /* hdr->tick at last use */
};

struct arena_lease_slot {
	uint32_t live, gen; /* gen changes each time the slot is freed, so stale handles fail */
	int32_t pid;
	uint32_t n_pins;
	uint64_t start;     /* process start time, /proc/PID/stat field 22 */
	uint64_t pidns;     /* inode of its pid namespace: pids of another one cannot be checked */
	uint32_t pin_head, pad;
};

struct arena_pin {
	uint32_t block, next;
};

struct fi_arena {
	int fd;
	uint8_t *base;
	size_t len;
	struct arena_hdr *h;
	struct arena_block *blk;
	uint32_t *index;
	struct arena_lease_slot *ls;
	struct arena_pin *pins;
	uint8_t *data;
	pid_t pid;          /* the process that opened this handle */
	uint64_t start;
	int lock_ms;        /* how long a lock is waited for */
	double grow_failed; /* when an extent could not be had (fi_now), 0: never */
	struct fi_arena_lease **leases; /* this handle's open leases, released at close */
	size_t n_leases, cap_leases;
	char path[PATH_MAX];
};

struct fi_arena_lease {
	struct fi_arena *a;
	uint32_t slot, gen;
	size_t pos; /* in a->leases */
};

static inline uint8_t *arena_block_data(const struct fi_arena *a, uint32_t b)
{
	return a->data + (uint64_t)b * a->h->block_stride;
}

/* ---- arena_index.c ---- */
/* Takes the lock, waiting at most a->lock_ms: FI_EBUSY naming the holder's pid when it is
 * held longer (a stopped or stuck process). A holder that died leaves EOWNERDEAD: the index
 * is repaired and the lock taken. */
fi_err arena_lock(struct fi_arena *a);
void arena_unlock(struct fi_arena *a);
/* Process start time in clock ticks, 0 on success, -1 if no such (living) process. */
int proc_start_time(pid_t pid, uint64_t *start);
/* Inode of this process's pid namespace (0 if unknown). */
uint64_t self_pidns(void);
/* 1 if the slot's process is alive and is the one that took the lease. */
int lease_alive(const struct arena_lease_slot *s);
uint32_t idx_find(struct fi_arena *a, const uint8_t *key);
void idx_insert(struct fi_arena *a, uint32_t b);
void idx_remove(struct fi_arena *a, uint32_t b);
void lru_remove(struct fi_arena *a, uint32_t b);
void lru_push_tail(struct fi_arena *a, uint32_t b);
void free_push(struct fi_arena *a, uint32_t b);
/* A free block, taken off every list: from the free list, else from a new extent, else by
 * evicting the LRU head; NIL if none. */
uint32_t block_take(struct fi_arena *a);
/* Rebuilds lists, index and refcounts from the block and lease tables (after EOWNERDEAD). */
void arena_repair(struct fi_arena *a);
/* fi_arena_check with the lock held. */
fi_err arena_check_locked(struct fi_arena *a);
/* Testing hooks: raises SIGKILL when $FI_ARENA_CRASH names this point, SIGSTOP when
 * $FI_ARENA_STOP does. */
void arena_crash_point(const char *name);

/* ---- arena_lease.c ---- */
/* Drops every pin of a slot (freeing blocks it was writing) and frees the slot. */
void lease_release_locked(struct fi_arena *a, uint32_t slot);
/* Releases leases of dead processes; returns how many. */
uint32_t sweep_locked(struct fi_arena *a);

/* ---- arena_store.c ---- */
/* A handle for this process, not attached yet. */
struct fi_arena *arena_new(void);
/* The kv directory: dir, or $FI_HOME/kv. */
fi_err arena_kv_dir(const char *dir, char *buf, size_t n);
/* Checks that the kv directory (and FI_HOME, when opt_dir does not name another place) may be
 * trusted (base/home.h); FI_ENOTFOUND when absent. */
fi_err arena_dir_check(const char *opt_dir, const char *dir);
/* Attaches a->path (fp NULL and o NULL: any model and layout, for stats and listing). */
fi_err arena_attach(struct fi_arena *a, const char *fp, const struct fi_arena_opts *o);
/* Creates the arena at a->path in dir; FI_EEXIST when another process created it first. */
fi_err arena_create(struct fi_arena *a, const char *dir, const char *fp,
		    const struct fi_arena_opts *o);
/* Unmaps and closes (the handle stays allocated). */
void arena_unmap(struct fi_arena *a);
/* 1 when fp is 64 lowercase hex characters. */
int arena_fp_valid(const char *fp);

#endif
