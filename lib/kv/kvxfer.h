/* kvxfer: moves KV between a model's paged cache (kvcache.h) and blocks of the shared KV arena
 * (arena.h), so that fi-prefill and fi-decode (and any process using the same model) share it.
 *
 * Arena identity. The bytes of a KV block depend on more than the weights: on the KV dtype of
 * the backend (f32 on the CPU, bf16 on CUDA) and on the block size. So the arena of a model is
 * named by its KV id, the lowercase hex of
 *   SHA-256("fi-kvx-1" || model fingerprint (64 hex chars) || KV dtype name ("f32", "bf16") ||
 *           block_tokens, n_layers, n_kv_heads, head_dim (each little-endian uint32)
 *           [|| "shard" || rank, size (little-endian uint32), for a tensor-parallel rank's
 *           cache of size > 1, which holds only its heads: ranks never share keys])
 * The KV id is the arena's "fingerprint" (its file is $FI_HOME/kv/<KV id>.kv), the root of its
 * block-key chains, and the "arena" of a frame's kv reference. A process computing in another
 * dtype or block size derives another id and never reads these blocks as its own.
 *
 * Block layout (block_tokens = the cache's block size, so a block copies in one piece per
 * layer): for each layer l in order, K then V, each [block_tokens, Hk, hd] in the KV dtype;
 * token_bytes = n_layers x 2 x Hk x hd x dtype size.
 *
 * Use:
 *   fi_kvx_open(&x, cache, fp, size, 1);         attach (create) the model's arena
 *   fi_kvx_fetch(x, seq, toks, n, max, &got);    longest cached prefix -> empty sequence seq
 *   ... forward the rest ...
 *   fi_kvx_store(x, seq, toks, n, &stored);      publish seq's full blocks not yet cached
 * Blocks are pinned only while copied: a block found now may be evicted later, so a kv
 * reference is a hint; a consumer computes whatever it cannot fetch. */
#ifndef FI_KVXFER_H
#define FI_KVXFER_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "base/err.h"
#include "base/tensor.h"
#include "kvcache.h"
#include "kvref.h"

struct fi_kvx;

/* The KV id (65 bytes with the NUL) of a model fingerprint on a cache geometry and dtype. */
fi_err fi_kvx_id(const uint8_t model_fp[32], const struct fi_kv_cache *kv, enum fi_dtype dt,
		 char id[2 * FI_ARENA_KEY_BYTES + 1]);

/* Attaches the arena of a model (fingerprint model_fp) for its paged cache c (the model's:
 * fi_model_cache), creating it with size_bytes (0: the arena default) when create is
 * nonzero. The cache's backend gives the KV dtype and does the copies. FI_ENOTFOUND when
 * absent and !create; the arena's errors otherwise. */
fi_err fi_kvx_open(struct fi_kvx **out, struct fi_kvcache *c, const uint8_t model_fp[32],
		   uint64_t size_bytes, int create);
void fi_kvx_close(struct fi_kvx *x);
const char *fi_kvx_name(const struct fi_kvx *x);  /* the KV id */
int fi_kvx_block_tokens(const struct fi_kvx *x);
struct fi_arena *fi_kvx_arena(struct fi_kvx *x);

/* Keys of the full blocks of a prompt: n / block_tokens of them (malloc'd into *keys). */
fi_err fi_kvx_keys(const struct fi_kvx *x, const uint32_t *toks, size_t n, fi_arena_key **keys,
		   size_t *n_keys);

/* Looks up the longest cached run of toks[0..n)'s blocks that follows what sequence seq holds
 * (its length, a multiple of block_tokens, says how many blocks it has: 0 for an empty one),
 * at most max_blocks blocks in all, copies it into seq and commits the length: *n_tokens =
 * the tokens added. Nothing found is not an error (*n_tokens = 0). The blocks' checksums
 * are verified while they are copied: FI_EFORMAT (a warning for the caller) when one fails;
 * the good blocks before it are kept (*n_tokens, committed), the bad block withdrawn from the
 * arena, and the caller computes the rest. */
fi_err fi_kvx_fetch(struct fi_kvx *x, int seq, const uint32_t *toks, size_t n,
		    size_t max_blocks, int *n_tokens);

/* fi_kvx_fetch in two halves, so that the copy runs under the compute that follows it:
 * begin looks up, reserves and commits the blocks found (*n_tokens, optimistic), queues their
 * copy (the backend's attention on layer l waits for layer l's copy) and starts checking
 * their checksums; *f is NULL when nothing was found. end waits for both and frees f:
 * *n_tokens = the good tokens, FI_EFORMAT when a block failed. end leaves the sequence's
 * length to the caller, which drops what it computed past the good blocks. */
struct fi_kvx_fetch;
fi_err fi_kvx_fetch_begin(struct fi_kvx *x, int seq, const uint32_t *toks, size_t n,
			  size_t max_blocks, int *n_tokens, struct fi_kvx_fetch **f);
fi_err fi_kvx_fetch_end(struct fi_kvx_fetch *f, int *n_tokens);

/* Publishes the full blocks of sequence seq (which holds at least the tokens toks[0..n)) that
 * the arena lacks; *n_stored (may be NULL) counts the blocks written. Blocks another process
 * is writing are skipped; a full arena (every block pinned) stops the copy quietly. */
fi_err fi_kvx_store(struct fi_kvx *x, int seq, const uint32_t *toks, size_t n,
		    size_t *n_stored);
/* The same for cache blocks[0..n_blocks) (full, holding toks[0..n_blocks x block_tokens)),
 * whatever sequence holds them. */
fi_err fi_kvx_store_blocks(struct fi_kvx *x, const int32_t *blocks, const uint32_t *toks,
			   size_t n_blocks, size_t *n_stored);

/* Fills ref (owned: free ref->arena and ref->blocks with fi_kvx_ref_free) for the prompt: the
 * keys of its full blocks, ntokens = n. */
fi_err fi_kvx_make_ref(const struct fi_kvx *x, const uint8_t model_fp[32], const uint32_t *toks,
		       size_t n, struct fi_kv_ref *ref);
void fi_kvx_ref_free(struct fi_kv_ref *ref);

/* Checks a frame's kv reference against this process and a prompt:
 *   FI_EMISMATCH: another model (fingerprint), or keys that are not the prompt's chain;
 *   FI_ERANGE: more tokens or blocks than the prompt has;
 *   FI_OK with *usable = 0: made for another arena (KV dtype or block size): compute instead;
 *   FI_OK with *usable = 1: its first ref->nblocks blocks may be fetched.
 * x may be NULL (then only the fingerprint and counts are checked; usable = 0). */
fi_err fi_kvx_check_ref(const struct fi_kvx *x, const uint8_t model_fp[32],
			const struct fi_kv_ref *ref, const uint32_t *toks, size_t n, int *usable);

#endif
