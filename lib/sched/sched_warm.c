/* sched_warm: while a server waits for requests, one forward of each of a few small batch
 * sizes, made once, so that the first step of that size afterwards does not pay what the
 * backend prepares per size the first time it meets it: on CUDA, cuBLASLt's algorithm query
 * for a new bucket of rows (1-4 ms of host time for each product shape, five a layer;
 * tests/gpu/NOTES.md). The step after a prefix fetched from the arena (the prompt's last
 * 1-16 tokens) is the one that felt it: its plans were made while the request waited. */
#include <stdlib.h>

#include "base/log.h"
#include "sched_int.h"

/* The remainder after a cached prefix first, then small decode batches. Sizes up to 4 take
 * the weight-streaming kernels, which prepare nothing. */
static const int warm_T[] = {16, 8, 32, 5, 6, 7, 64, 128};
#define N_WARM ((int)(sizeof warm_T / sizeof *warm_T))

int fi_sched_warm_left(const struct fi_sched *s)
{
	return s->warm && s->warm_next < N_WARM && !s->n_held && !s->inflight && !s->n_jobs;
}

fi_err fi_sched_warm(struct fi_sched *s)
{
	int T, seq = -1, n = 0, need;
	int32_t *toks, *seqs, tok;
	fi_err e;
	if (!fi_sched_warm_left(s))
		return FI_OK;
	T = warm_T[s->warm_next++];
	need = (T + s->block_size - 1) / s->block_size;
	/* free blocks only: the prefix cache's idle blocks are not evicted for this */
	if (T > s->o.max_step_tokens || need > fi_kvcache_free_blocks(s->kc))
		return FI_OK;
	toks = malloc(sizeof *toks * (size_t)T);
	seqs = malloc(sizeof *seqs * (size_t)T);
	if (!toks || !seqs || (e = fi_model_seq_new(s->m, &seq))) {
		free(toks);
		free(seqs);
		s->warm = 0;
		fi_clear_error();
		return FI_OK;
	}
	for (int i = 0; i < T; i++) {
		toks[i] = i; /* any ids of the vocabulary */
		seqs[i] = seq;
	}
	struct fi_batch b = {T, toks, seqs, NULL};
	e = fi_model_forward_ex(s->m, &b, NULL, &tok, &n);
	fi_model_seq_free(s->m, seq);
	free(toks);
	free(seqs);
	if (e) { /* it only costs speed: no more of it */
		fi_debug("scheduler: warming %d-token steps: %s", T, fi_errmsg());
		fi_clear_error();
		s->warm = 0;
		return FI_OK;
	}
	s->st.warm_steps++;
	return FI_OK;
}
