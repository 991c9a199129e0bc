/* kvcache: the paged KV cache of one model on one backend: a block allocator over the
 * backend's KV memory (layout in backend.h) and a block table per sequence.
 *
 * A sequence is a small integer id. Its positions 0..len-1 live in blocks
 * blocks[p / block_size] at offset p % block_size. Blocks are reference counted so that
 * fi_kvcache_seq_fork() can share a prefix; a shared block is copied before it is written
 * (copy-on-write, through download/upload, so it works on every backend).
 *
 * Writing tokens is two steps: fi_kvcache_reserve() makes sure blocks exist (and are
 * private) for positions [len, new_len), the forward pass writes K/V at fi_kvcache_slot()
 * and then fi_kvcache_set_len() commits the new length (or rolls back a failed step). */
#ifndef FI_KVCACHE_H
#define FI_KVCACHE_H

#include <stdint.h>

#include "backend/backend.h"

struct fi_kv_seq {
	int used;        /* the id is allocated */
	int len;         /* committed tokens */
	int n_blocks;    /* entries in blocks */
	int cap;
	int32_t *blocks; /* [n_blocks] block ids */
};

struct fi_kvcache {
	struct fi_backend *be;
	struct fi_kv_cache kv; /* backend memory, geometry */
	int32_t *ref;          /* [n_blocks] references; 0 = free */
	int32_t *free_ids;     /* stack of free block ids */
	int n_free;
	struct fi_kv_seq *seq; /* [n_seq] indexed by id */
	int n_seq;
};

/* Allocates n_blocks blocks of block_size tokens for every layer on be. */
fi_err fi_kvcache_create(struct fi_backend *be, int n_layers, int n_kv_heads, int head_dim,
			 int n_blocks, int block_size, struct fi_kvcache **out);
void fi_kvcache_destroy(struct fi_kvcache *c);

/* A new empty sequence. */
fi_err fi_kvcache_seq_new(struct fi_kvcache *c, int *id);
/* Releases a sequence and its blocks; an unknown id is ignored. */
void fi_kvcache_seq_free(struct fi_kvcache *c, int id);
/* A new sequence *dst holding the same tokens as src (blocks shared, copied on write). */
fi_err fi_kvcache_seq_fork(struct fi_kvcache *c, int src, int *dst);
/* Committed length, or -1 for an unknown id. */
int fi_kvcache_seq_len(const struct fi_kvcache *c, int id);
int fi_kvcache_seq_valid(const struct fi_kvcache *c, int id);

/* Ensures private blocks for positions [len, new_len) of a sequence. FI_EFULL when the
 * cache has no free block (what was reserved stays reserved until set_len). */
fi_err fi_kvcache_reserve(struct fi_kvcache *c, int id, int new_len);
/* Sets the committed length; blocks past it are released (truncation / rollback). */
fi_err fi_kvcache_set_len(struct fi_kvcache *c, int id, int len);
/* KV slot of position pos (which must be reserved): block * block_size + offset. */
int32_t fi_kvcache_slot(const struct fi_kvcache *c, int id, int pos);
/* Free blocks now. */
int fi_kvcache_free_blocks(const struct fi_kvcache *c);

#endif
