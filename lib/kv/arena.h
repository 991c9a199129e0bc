/* arena: the shared, daemon-less KV arena.
 *
 * One file per model fingerprint, $FI_HOME/kv/<fingerprint>.kv (FI_HOME defaults to
 * /dev/shm/fi-UID, and is used only when no one else can write it: base/home.h), mapped
 * MAP_SHARED by every process that uses the model; the first one to need it creates it
 * (built under a temporary name, then link()ed into place, so concurrent creators agree on one).
 * The file has its maximum size from the start, but its data is allocated an extent (64 MiB
 * by default) at a time as blocks are needed: an arena costs memory as it fills, and when its file system
 * is full it evicts instead of growing.
 * It holds fixed-size KV blocks (block_tokens tokens, all layers, K and V; the byte layout inside a
 * block belongs to the caller) addressed by content: a block's key is
 *   SHA-256("fi-kv-1" || parent key (32 zero bytes for the first block) || fingerprint (64 hex
 *           chars) || the block's token ids as little-endian uint32)
 * so equal prefixes share blocks across requests, processes and runs.
 *
 * Use:
 *   fi_arena_open(&a, fp, &opts);            attach (create if absent)
 *   fi_arena_chain_keys(fp, toks, n, bt, k); keys of the full blocks of a prompt
 *   fi_arena_lease(a, &l);                   a lease pins blocks for this process
 *   fi_arena_lookup(l, k, nk, blk, &nf);     longest cached prefix, pinned in l
 *   fi_arena_data(a, blk[i])                 read block i (stays valid while pinned)
 *   fi_arena_reserve(l, &k[j], &b, &p, &r);  r == FI_ARENA_WRITE: fill p[0..block_bytes) ...
 *   fi_arena_publish(l, b);                  ... then make it visible to lookups
 *   fi_arena_unlease(l);                     unpin everything; close with fi_arena_close(a)
 *
 * Pinned blocks are never evicted; unpinned ready blocks are evicted least recently used first
 * when a block is needed, none is free and no extent can be added; if every block is pinned,
 * FI_EFULL.
 *
 * Checksums. Each published block carries XXH3-64 of its key and data. A reader verifies the
 * blocks it fetches (fi_arena_verify_blocks, spread over threads) and withdraws one that fails
 * (fi_arena_withdraw): lookups no longer find it, and the next writer of that key writes it
 * anew. So flipped, zeroed or NaN'd KV bytes, and keys swapped between blocks, are caught.
 *
 * The lock. Every operation takes the arena's process-shared robust mutex for a few
 * microseconds (creating an extent: milliseconds). A process that dies holding it is handled
 * (EOWNERDEAD, repair). One that holds it and stops (SIGSTOP, a debugger) is waited for at
 * most lock_timeout_ms (default 5 s, or $FI_ARENA_LOCK_TIMEOUT seconds): the operation then
 * fails with FI_EBUSY naming the holder's pid, and callers go on without the arena. Leases carry
 * (pid, process start time): leases of processes that died (or whose pid was reused) are
 * reclaimed by a sweep on attach and whenever space runs out. A process that dies while holding
 * the arena's robust mutex leaves it to the next locker, which rebuilds the index and lists from
 * the block table. A block being written is invisible to lookups until published; a writer that
 * dies before publishing leaves nothing behind.
 *
 * Handles are per process: after fork() the child must fi_arena_open() its own (the inherited
 * ones refuse work with FI_ESTATE, and closing them in the child releases nothing). Within one
 * process a handle and its leases may be used from one thread at a time.
 *
 * Testing hooks: FI_ARENA_CRASH=<point>[:<n>] makes the process raise SIGKILL at the n-th
 * (default first) pass through a named point, FI_ARENA_STOP=<point>[:<n>] SIGSTOP: reserve
 * (after a reservation, unlocked), copy (halfway through fi_arena_put's copy), publish (data
 * written, before publishing), locked-reserve, locked-publish, locked-unlease, locked-evict,
 * locked-grow (while holding the mutex, mid-update). */
#ifndef FI_ARENA_H
#define FI_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define FI_ARENA_KEY_BYTES 32
#define FI_ARENA_FP_CHARS 64 /* a model fingerprint: 64 lowercase hex characters */
#define FI_ARENA_ALIGN 4096  /* every block's data starts at this alignment in the file */
#define FI_ARENA_NONE UINT32_MAX

typedef struct fi_arena_key {
	uint8_t b[FI_ARENA_KEY_BYTES];
} fi_arena_key;

struct fi_arena;
struct fi_arena_lease;

struct fi_arena_opts {
	/* Directory of arena files; NULL: $FI_HOME/kv, FI_HOME defaulting to /dev/shm/fi. Created if
	 * absent. */
	const char *dir;
	/* Layout. When the arena exists these must match it (0 accepts whatever it has); to create
	 * one, token_bytes is required. */
	uint32_t block_tokens; /* tokens per block; 0: 16 when creating */
	uint64_t token_bytes;  /* KV bytes per token, all layers, K and V */
	/* Creation only (ignored when attaching). */
	uint64_t size_bytes;   /* whole file; 0: 1/8 of RAM, at most half the free space of dir */
	uint32_t max_leases;   /* lease slots; 0: 4096 */
	uint64_t extent_bytes; /* data allocated at a time (whole blocks, at least one); 0: 64 MiB */
	int no_create;         /* attach only: FI_ENOTFOUND when absent */
	int lock_timeout_ms;   /* how long the lock is waited for; 0: $FI_ARENA_LOCK_TIMEOUT
				* seconds, else 5000 */
};

/* Attaches to the arena of a model fingerprint, creating it if absent (unless no_create).
 * Errors: FI_EINVAL (bad fingerprint or options, a directory that must not be trusted),
 * FI_ENOTFOUND, FI_EIO, FI_EFORMAT (truncated or corrupt file), FI_EMISMATCH (other version,
 * fingerprint or layout), FI_EFULL (no room for the file), FI_EBUSY (the lock is held past the
 * bound). Sweeps leases of dead processes. */
fi_err fi_arena_open(struct fi_arena **out, const char *fingerprint,
		     const struct fi_arena_opts *opts);
/* Releases this process's leases made through a, and unmaps. The file stays. NULL is fine. */
void fi_arena_close(struct fi_arena *a);

/* Layout of an attached arena. */
uint32_t fi_arena_block_tokens(const struct fi_arena *a);
uint64_t fi_arena_block_bytes(const struct fi_arena *a); /* block_tokens * token_bytes */
uint32_t fi_arena_n_blocks(const struct fi_arena *a);
const char *fi_arena_file(const struct fi_arena *a);
/* The whole mapping (page aligned; most of it may not be allocated yet). */
void fi_arena_mapping(const struct fi_arena *a, void **base, size_t *len);
/* The extent holding block b (a block this process was handed, so allocated): its index,
 * first byte and length (whole blocks, FI_ARENA_ALIGN aligned). For cudaHostRegister, an
 * extent at a time: registering the whole mapping would allocate every page of it. FI_ERANGE
 * for a block past the allocated data. */
fi_err fi_arena_extent(const struct fi_arena *a, uint32_t b, uint32_t *index, void **base,
		       size_t *len);
/* Blocks an extent holds (the last may hold fewer). */
uint32_t fi_arena_extent_blocks(const struct fi_arena *a);
/* Data of block b (block_bytes long, FI_ARENA_ALIGN aligned); NULL when b is out of range.
 * Read it only while a lease pins b; write it only between reserve and publish. */
void *fi_arena_data(const struct fi_arena *a, uint32_t b);

/* Keys. fi_arena_chain_keys writes n / block_tokens keys (full blocks only) of the chain that
 * starts at the root; fi_arena_key_next extends a chain by one block (parent NULL: the first). */
fi_err fi_arena_chain_keys(const char *fingerprint, const uint32_t *tokens, size_t n,
			   uint32_t block_tokens, fi_arena_key *keys_out);
fi_err fi_arena_key_next(const char *fingerprint, const fi_arena_key *parent,
			 const uint32_t *tokens, uint32_t block_tokens, fi_arena_key *out);
void fi_arena_key_hex(const fi_arena_key *k, char out[2 * FI_ARENA_KEY_BYTES + 1]);
fi_err fi_arena_key_parse(const char *hex, fi_arena_key *out); /* FI_EFORMAT if not 64 hex */

/* Leases. A lease takes one of the arena's lease slots (FI_EFULL when none is free even after a
 * sweep) and holds pins on blocks until fi_arena_unlease (which also drops blocks it reserved
 * and did not publish). Pinning the same block twice in one lease needs two unpins. */
fi_err fi_arena_lease(struct fi_arena *a, struct fi_arena_lease **out);
void fi_arena_unlease(struct fi_arena_lease *l);
/* Drops one pin of block b held by l (FI_ENOTFOUND if l does not pin b). */
fi_err fi_arena_unpin(struct fi_arena_lease *l, uint32_t b);
/* Number of pins l holds. */
size_t fi_arena_lease_pins(const struct fi_arena_lease *l);

/* Finds the longest prefix keys[0..n_found) whose blocks are published, pins each in l, stores
 * their block indices in blocks[0..n_found) and marks them recently used. Counts n_found hits and
 * n - n_found misses. */
fi_err fi_arena_lookup(struct fi_arena_lease *l, const fi_arena_key *keys, size_t n,
		       uint32_t *blocks, size_t *n_found);

enum fi_arena_reserve_result {
	FI_ARENA_WRITE,  /* *block is reserved for l: fill *data, then fi_arena_publish (or abort) */
	FI_ARENA_CACHED, /* the key is already published: *block is pinned in l, nothing to write */
	FI_ARENA_BUSY,   /* another live process is writing this key: *block is FI_ARENA_NONE */
};
/* Reserves a block for key (evicting the least recently used unpinned block if none is free).
 * FI_EFULL when every block is pinned or being written. */
fi_err fi_arena_reserve(struct fi_arena_lease *l, const fi_arena_key *key, uint32_t *block,
			void **data, enum fi_arena_reserve_result *result);
/* Makes a block reserved by l visible to lookups; it stays pinned in l. FI_ESTATE when b is not
 * a block that l reserved. Stores its checksum first. */
fi_err fi_arena_publish(struct fi_arena_lease *l, uint32_t b);
/* Gives back a block reserved by l without publishing it. */
fi_err fi_arena_abort(struct fi_arena_lease *l, uint32_t b);
/* reserve + copy len (== block_bytes) bytes + publish. *result may be NULL. */
fi_err fi_arena_put(struct fi_arena_lease *l, const fi_arena_key *key, const void *kv, size_t len,
		    uint32_t *block, enum fi_arena_reserve_result *result);
/* Recomputes a published block's checksum: FI_EFORMAT on mismatch. The caller pins b. */
fi_err fi_arena_verify(struct fi_arena *a, uint32_t b);
/* The same for n pinned blocks at once, spread over up to 8 threads (as many as there are
 * CPUs, one per 8 MiB): *first_bad is the index (in blocks[]) of the first block whose data
 * or key does not match its checksum, n when all do. */
fi_err fi_arena_verify_blocks(struct fi_arena *a, const uint32_t *blocks, size_t n,
			      size_t *first_bad);
/* Takes a published block that l pins out of the arena (it failed its checksum): no lookup
 * finds it again, it is freed when its last pin goes, and a writer of its key gets a fresh
 * block. Counted in the stats' corrupt. */
fi_err fi_arena_withdraw(struct fi_arena_lease *l, uint32_t b);
/* The key a block holds (for checks against a frame's reference). */
fi_err fi_arena_block_key(struct fi_arena *a, uint32_t b, fi_arena_key *out);

/* Reclaims leases of dead processes now; *n_reclaimed may be NULL. */
fi_err fi_arena_sweep(struct fi_arena *a, uint32_t *n_reclaimed);
/* Verifies the internal invariants (lists, index, refcounts against pins): FI_EFORMAT naming the
 * first broken one. For tests and an arena check command. */
fi_err fi_arena_check(struct fi_arena *a);

struct fi_arena_stats {
	char fingerprint[FI_ARENA_FP_CHARS + 1];
	uint32_t version, block_tokens;
	uint64_t token_bytes, block_bytes, file_bytes;
	uint32_t n_blocks;
	uint32_t alloc_blocks;  /* blocks whose data is allocated (by extents) */
	uint64_t alloc_bytes;   /* bytes of the file allocated: tables and those blocks */
	uint32_t ready, writing, free_blocks, pinned; /* ready includes pinned ready blocks */
	uint32_t stale;         /* withdrawn, still pinned by a reader */
	uint32_t leases, lease_slots;
	uint64_t pins, pin_slots;
	uint64_t hits, misses, inserts, evictions;
	uint64_t swept_leases, recoveries; /* dead leases reclaimed; EOWNERDEAD repairs */
	uint64_t corrupt;       /* blocks withdrawn for failing their checksum */
	int lock_timeout_ms;
};
fi_err fi_arena_stat(struct fi_arena *a, struct fi_arena_stats *st);

/* Store management (for `fi-load --arena`): dir NULL means $FI_HOME/kv. */
fi_err fi_arena_path(const char *dir, const char *fingerprint, char *buf, size_t n);
/* Calls fn for each arena file in dir (in name order) with its stats; a file that fails to
 * attach is reported with st NULL and err set. Stops early when fn returns nonzero. */
typedef int (*fi_arena_list_fn)(const char *path, const struct fi_arena_stats *st, fi_err err,
				void *ctx);
fi_err fi_arena_list(const char *dir, fi_arena_list_fn fn, void *ctx);
/* Stats of one arena file by path (attaches briefly). */
fi_err fi_arena_stat_file(const char *path, struct fi_arena_stats *st);
/* Unlinks the arena of a fingerprint (FI_ENOTFOUND if absent). Attached processes keep their
 * mapping; the next open creates a fresh arena. */
fi_err fi_arena_remove(const char *dir, const char *fingerprint);

#endif
