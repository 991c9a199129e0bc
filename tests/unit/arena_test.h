/* Helpers for the KV arena suites (header-only, so they stay out of the other unit tests). */
#ifndef FI_ARENA_TEST_H
#define FI_ARENA_TEST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv/arena.h"

#define T_BLOCK_TOKENS 4
#define T_TOKEN_BYTES 1024 /* 4 KiB blocks */

static char t_dir[256];

/* A fresh directory for arena files, removed by t_rmdir. */
static inline void t_mkdir(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(t_dir, sizeof t_dir, "%s/fi-arena-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(t_dir))
		abort();
}

static inline void t_rmdir(void)
{
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", t_dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", t_dir);
}

/* A model fingerprint made from a seed. */
static inline void t_fp(char out[FI_ARENA_FP_CHARS + 1], unsigned seed)
{
	int i;
	for (i = 0; i < FI_ARENA_FP_CHARS; i++)
		out[i] = "0123456789abcdef"[(seed * 7 + (unsigned)i * 13 + (seed >> 4) * i) & 15];
	out[FI_ARENA_FP_CHARS] = 0;
}

/* Options for an arena of about n_blocks 4 KiB blocks in t_dir. */
static inline struct fi_arena_opts t_opts(uint32_t n_blocks)
{
	struct fi_arena_opts o = {0};
	o.dir = t_dir;
	o.block_tokens = T_BLOCK_TOKENS;
	o.token_bytes = T_TOKEN_BYTES;
	o.max_leases = 64;
	o.lock_timeout_ms = 3000;
	/* header + tables (~200 B per block + leases + 1024 pins) + data */
	o.size_bytes = 4096 + 64 * 32 + 1024 * 8 + 8192 + (uint64_t)n_blocks * (4096 + 208);
	return o;
}

/* Block content derived from its key, so any process can tell a right block from a wrong one. */
static inline void t_fill(uint8_t *p, size_t n, const fi_arena_key *k)
{
	size_t i;
	for (i = 0; i < n; i++)
		p[i] = (uint8_t)(k->b[i % FI_ARENA_KEY_BYTES] ^ (i * 131 >> 5));
}

static inline int t_data_ok(const uint8_t *p, size_t n, const fi_arena_key *k)
{
	size_t i;
	for (i = 0; i < n; i++)
		if (p[i] != (uint8_t)(k->b[i % FI_ARENA_KEY_BYTES] ^ (i * 131 >> 5)))
			return 0;
	return 1;
}

/* Tokens of prompt `id`: prompts share prefixes (ids with equal high bits share blocks). */
static inline void t_tokens(uint32_t *t, size_t n, unsigned id)
{
	size_t i;
	for (i = 0; i < n; i++)
		t[i] = (uint32_t)(i < n / 2 ? (id >> 2) * 1000 + i : id * 100000 + i);
}

/* Puts every block of keys[0..n) with t_fill content; returns 0 or the fi_err. */
static inline int t_put_chain(struct fi_arena_lease *l, const fi_arena_key *keys, size_t n,
		       size_t block_bytes)
{
	uint8_t *buf = malloc(block_bytes);
	size_t i;
	int e = 0;
	for (i = 0; i < n && !e; i++) {
		t_fill(buf, block_bytes, &keys[i]);
		e = fi_arena_put(l, &keys[i], buf, block_bytes, NULL, NULL);
	}
	free(buf);
	return e;
}

/* Waits for a child; returns its exit status, or 128 + signal. */
static inline int t_wait(pid_t pid)
{
	int st;
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#endif
