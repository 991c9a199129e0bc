/* route_keys: a prompt's prefix block keys, computed as the scheduler computes them
 * (sched_prefix.c: fi_arena_key_next down the chain from the root), so the router's matching
 * is the worker's. Kept in this one function so that the derivation has one place here. */
#include <stdlib.h>

#include "route_int.h"

fi_err route_prefix_keys(const char *root_hex, const uint32_t *toks, uint32_t n, uint32_t block_tokens,
			 fi_arena_key **keys, uint32_t *nkeys)
{
	uint32_t nk = block_tokens ? n / block_tokens : 0;
	fi_err e;
	*keys = NULL;
	*nkeys = 0;
	if (!nk)
		return FI_OK;
	if (!(*keys = malloc(sizeof **keys * nk)))
		return fi_fail(FI_ENOMEM, "out of memory");
	if ((e = fi_arena_chain_keys(root_hex, toks, (size_t)nk * block_tokens, block_tokens, *keys))) {
		free(*keys);
		*keys = NULL;
		return e;
	}
	*nkeys = nk;
	return FI_OK;
}
