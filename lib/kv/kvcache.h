/* kvcache: the paged KV cache of one model on one backend: a block allocator over the
 * backend's KV memory (layout in backend.h), a block table per sequence, and a
 * content-addressed prefix cache of full blocks.
 *
 * A sequence is a small integer id. Its positions 0..len-1 live in blocks
 * blocks[p / block_size] at offset p % block_size. Blocks are reference counted so that
 * sequences can share a prefix (fi_kvcache_seq_fork, fi_kvcache_seq_attach); a shared block
 * is copied before it is written (copy-on-write, through download/upload, so it works on
 * every backend).
 *
 * Writing tokens is two steps: fi_kvcache_reserve() makes sure blocks exist (and are
 * private) for positions [len, new_len), the forward pass writes K/V at fi_kvcache_slot()
 * and then fi_kvcache_set_len() commits the new length (or rolls back a failed step).
 *
 * Prefix cache. A full, committed block can be published under a key (the KV arena's
 * SHA-256 chain key of its tokens, arena.h, so equal keys mean equal content): another
 * sequence whose prompt has the same chain of keys then attaches the block instead of
 * computing it. A published block outlives its sequences: when its last reference goes it
 * becomes idle (kept, listed least recently used first) and is evicted only when a block is
 * needed and no block is free. So the blocks a pool can hand out now are the free ones plus
 * the idle ones (fi_kvcache_available). A block that a sequence writes into again (after a
 * truncation) is unpublished first.
 *
 * The struct is public for its geometry (be, kv); every other field is the module's own. */
#ifndef FI_KVCACHE_H
#define FI_KVCACHE_H

#include <stdint.h>

#include "arena.h"
#include "backend/backend.h"

struct fi_kv_seq {
	int used;        /* the id is allocated */
	int len;         /* committed tokens */
	int n_blocks;    /* entries in blocks */
	int cap;
	int32_t *blocks; /* [n_blocks] block ids */
};

struct fi_kvcache_stats {
	int n_blocks, block_size;
	int free_blocks;   /* never used, or released unpublished */
	int idle_blocks;   /* published, unreferenced: kept until evicted */
	int cached_blocks; /* published (idle or in use) */
	uint64_t hits;      /* blocks attached from the cache */
	uint64_t published; /* blocks published */
	uint64_t evictions; /* idle blocks taken for new data */
};

struct fi_kvcache {
	struct fi_backend *be;
	struct fi_kv_cache kv; /* backend memory, geometry */
	int32_t *ref;          /* [n_blocks] references; 0 = free or idle */
	int32_t *free_ids;     /* stack of free block ids */
	int n_free;
	struct fi_kv_seq *seq; /* [n_seq] indexed by id */
	int n_seq;
	/* prefix cache */
	fi_arena_key *key;     /* [n_blocks] the key of a published block */
	uint8_t *published;    /* [n_blocks] */
	int32_t *lru_prev, *lru_next; /* [n_blocks] idle list, -1 ended */
	int32_t lru_head, lru_tail;   /* least, most recently used */
	int n_idle, n_published;
	int32_t *table;        /* [table_cap] block ids by key (open addressing), -1 empty */
	/* told of every published key that leaves the cache (evicted, rewritten, cleared) */
	void (*on_remove)(void *user, const fi_arena_key *key);
	void *on_remove_user;
	uint32_t table_mask;
	uint64_t hits, n_pub_total, evictions;
	/* Optional: called after a block is copied (copy-on-write of a forked sequence's
	 * shared block), so that a tensor-parallel group copies it in every rank's cache. */
	fi_err (*mirror_copy)(void *arg, int32_t from, int32_t to);
	void *mirror_arg;
};

/* Copies block `from` into block `to` (every layer, K and V) within c, through host
 * memory; no mirror is told. */
fi_err fi_kvcache_copy_block(struct fi_kvcache *c, int32_t from, int32_t to);

/* Allocates n_blocks blocks of block_size tokens for every layer on be. */
fi_err fi_kvcache_create(struct fi_backend *be, int n_layers, int n_kv_heads, int head_dim,
			 int n_blocks, int block_size, struct fi_kvcache **out);
/* The same, an FP8 cache when fp8 is 1 (backend.h: struct fi_kv_cache). */
fi_err fi_kvcache_create_fp8(struct fi_backend *be, int n_layers, int n_kv_heads, int head_dim,
			     int n_blocks, int block_size, int fp8, struct fi_kvcache **out);
void fi_kvcache_destroy(struct fi_kvcache *c);
/* Bytes of KV per token, all layers, K and V, in dtype dt. */
uint64_t fi_kvcache_token_bytes(int n_layers, int n_kv_heads, int head_dim, enum fi_dtype dt);

/* A new empty sequence. */
fi_err fi_kvcache_seq_new(struct fi_kvcache *c, int *id);
/* Releases a sequence and its blocks (published ones become idle); an unknown id is
 * ignored. */
void fi_kvcache_seq_free(struct fi_kvcache *c, int id);
/* A new sequence *dst holding the same tokens as src (blocks shared, copied on write). */
fi_err fi_kvcache_seq_fork(struct fi_kvcache *c, int src, int *dst);
/* Committed length, or -1 for an unknown id. */
int fi_kvcache_seq_len(const struct fi_kvcache *c, int id);
int fi_kvcache_seq_valid(const struct fi_kvcache *c, int id);
/* The block table of a sequence: *n entries (reserved ones included); NULL, 0 for an
 * unknown id. Valid until the sequence changes. */
const int32_t *fi_kvcache_seq_blocks(const struct fi_kvcache *c, int id, int *n);

/* Ensures private blocks for positions [len, new_len) of a sequence. FI_EFULL when the
 * cache has no free or idle block (what was reserved stays reserved until set_len). */
fi_err fi_kvcache_reserve(struct fi_kvcache *c, int id, int new_len);
/* Blocks fi_kvcache_reserve(c, id, new_len) would take now (0 for an unknown id). */
int fi_kvcache_blocks_needed(const struct fi_kvcache *c, int id, int new_len);
/* Sets the committed length; blocks past it are released (truncation / rollback). */
fi_err fi_kvcache_set_len(struct fi_kvcache *c, int id, int len);
/* KV slot of position pos (which must be reserved): block * block_size + offset. */
int32_t fi_kvcache_slot(const struct fi_kvcache *c, int id, int pos);
/* Free blocks now (never used or released unpublished); idle published blocks excluded. */
int fi_kvcache_free_blocks(const struct fi_kvcache *c);
/* Blocks that can be handed out now: free plus idle. */
int fi_kvcache_available(const struct fi_kvcache *c);
/* Blocks that would become available if sequence id were freed (those only it holds). */
int fi_kvcache_seq_gain(const struct fi_kvcache *c, int id);

/* ---- prefix cache ---- */

/* How many of keys[0..n) lead with published blocks (nothing changes); *idle (may be NULL)
 * counts those of them that are idle, so attaching them takes that many from
 * fi_kvcache_available. */
int fi_kvcache_match(const struct fi_kvcache *c, const fi_arena_key *keys, int n, int *idle);
/* Sequence id, which must be empty, takes the published blocks of keys[0..n) (all must be
 * published: fi_kvcache_match first) and their tokens: its length becomes n x block_size. */
fi_err fi_kvcache_seq_attach(struct fi_kvcache *c, int id, const fi_arena_key *keys, int n);
/* Publishes blocks first..first+n-1 of sequence id, which must be full and committed, under
 * keys[0..n). A key already published by another block is left to that block. Returns how
 * many blocks were newly published. */
int fi_kvcache_publish(struct fi_kvcache *c, int id, int first, const fi_arena_key *keys, int n);
/* An extra reference to block b (a copy still reading it after its sequence is freed);
 * fi_kvcache_block_unref gives it back. */
void fi_kvcache_block_ref(struct fi_kvcache *c, int32_t b);
void fi_kvcache_block_unref(struct fi_kvcache *c, int32_t b);
/* Forgets every idle block (they become free). */
void fi_kvcache_clear(struct fi_kvcache *c);
void fi_kvcache_stats(const struct fi_kvcache *c, struct fi_kvcache_stats *st);

#endif
