/* kvref: a reference to a prompt's KV blocks in a shared KV arena: what fi-prefill passes
 * on to fi-decode in a request frame ("kv", fi-frame(5)) and what the scheduler takes as a
 * hint. A plain type of the kv layer, so that frames carry it and the arena code
 * (kvxfer.h: fi_kvx_make_ref, fi_kvx_check_ref) fills and checks it without knowing
 * frames. */
#ifndef FI_KVREF_H
#define FI_KVREF_H

#include <stdint.h>

struct fi_kv_ref {
	char *arena;             /* arena name ("" = the default arena of the model) */
	uint8_t fingerprint[32]; /* model fingerprint (SHA-256) */
	uint8_t (*blocks)[32];   /* [nblocks][32] block keys, prefix order */
	uint32_t nblocks;
	uint32_t ntokens;      /* prompt tokens the blocks cover */
	uint32_t block_tokens; /* tokens per block; 0 = unknown (the arena's) */
};

#endif
