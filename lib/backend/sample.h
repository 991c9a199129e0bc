/* sample: choosing the next token from logits, reproducibly.
 *
 * Order of operations (that of Hugging Face's logits processors in generate()):
 *   1. repetition penalty: every distinct token of the history (prompt and generated
 *      tokens, or the last repeat_last_n of them) has its logit divided by the penalty
 *      when positive, multiplied when negative (CTRL / HF RepetitionPenaltyLogitsProcessor);
 *   2. temperature: temperature <= 0 means greedy: the argmax of the penalised logits,
 *      the lowest id among equal maxima; otherwise logits are divided by it;
 *   3. top-k: keep the tokens whose logit is >= the k-th largest (ties at the boundary
 *      are kept, as HF does);
 *   4. top-p: over the softmax of what is left, sorted by decreasing probability, drop
 *      the least likely tokens whose cumulative probability is <= 1 - top_p (HF
 *      TopPLogitsWarper), keeping at least one;
 *   5. min-p: drop tokens whose probability is < min_p x the largest probability;
 *   6. draw from the softmax of what is left with the sampler's RNG.
 * Candidates are ordered by (logit descending, id ascending), a total order, and the
 * softmax and the draw are computed in double, so a seed gives the same tokens on every
 * run and machine; libc rand() is never used.
 *
 * The RNG is xoshiro256** (Blackman & Vigna) seeded through splitmix64. */
#ifndef FI_SAMPLE_H
#define FI_SAMPLE_H

#include <stdint.h>

#include "base/err.h"

struct fi_rng {
	uint64_t s[4];
};
void fi_rng_seed(struct fi_rng *r, uint64_t seed);
uint64_t fi_rng_next(struct fi_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double fi_rng_double(struct fi_rng *r);

#define FI_SAMPLE_MAX_STOP 16

/* Defaults (fi_sample_defaults) match the frame schema's: temperature 1, everything
 * else off. */
struct fi_sample_params {
	float temperature;    /* <= 0: greedy */
	int top_k;            /* <= 0: off */
	float top_p;          /* >= 1: off */
	float min_p;          /* <= 0: off */
	float repeat_penalty; /* 1: off; must be > 0 */
	int repeat_last_n;    /* history considered by the penalty; <= 0: all of it */
	uint64_t seed;
	int n_stop;           /* token ids that end generation */
	int32_t stop[FI_SAMPLE_MAX_STOP];
};
void fi_sample_defaults(struct fi_sample_params *p);
/* 1 if tok is one of p's stop tokens. */
int fi_sample_is_stop(const struct fi_sample_params *p, int32_t tok);

struct fi_sample_cand {
	float logit;
	int32_t id;
};

struct fi_sampler {
	struct fi_sample_params p;
	struct fi_rng rng;
	int vocab;
	struct fi_sample_cand *cand; /* [vocab] scratch */
	double *prob;                /* [vocab] scratch */
	uint8_t *seen;               /* [vocab] scratch for the penalty */
};

/* FI_EINVAL for a parameter out of range (negative top_p, penalty <= 0, ...). */
fi_err fi_sampler_init(struct fi_sampler *s, const struct fi_sample_params *p, int vocab);
void fi_sampler_free(struct fi_sampler *s);
/* The next token for logits[vocab] (not modified) after history hist[n_hist]. */
int32_t fi_sampler_next(struct fi_sampler *s, const float *logits, const int32_t *hist,
			int n_hist);
/* Steps 1-5 only: fills ids[] and probs[] (room for vocab entries) with the tokens that
 * survive and their probabilities (summing to 1), most likely first; returns how many.
 * Greedy returns the one chosen token with probability 1. For tests and logprobs. */
int fi_sampler_dist(struct fi_sampler *s, const float *logits, const int32_t *hist, int n_hist,
		    int32_t *ids, double *probs);

/* Sampling elsewhere (on the device, kernels/sample.cu): steps 2-6 of one row with the
 * parameters and the uniform number below give the token fi_sampler_next would, except
 * at exact probability ties at a boundary. Step 6 draws only when more than one token
 * survives (n_kept > 1), so the caller takes u with fi_sampler_row (the RNG unchanged)
 * and consumes it with fi_sampler_commit once n_kept is known. Layout shared with CUDA. */
struct fi_sample_row {
	double u;          /* the draw: uniform in [0, 1) */
	float temperature; /* <= 0: greedy (the argmax, lowest id on ties) */
	float top_p;       /* >= 1: off */
	float min_p;       /* <= 0: off */
	int32_t top_k;     /* <= 0 or >= vocab: off */
};
/* 1 when steps 2-6 are all this sampler does (no repetition penalty): its rows may be
 * sampled elsewhere. */
int fi_sampler_rowable(const struct fi_sampler *s);
/* The row of s: its parameters and the u its next draw would use (the RNG is unchanged). */
void fi_sampler_row(const struct fi_sampler *s, struct fi_sample_row *r);
/* Token chosen elsewhere from a row of s with n_kept survivors: consumes the draw when
 * fi_sampler_next would have drawn (n_kept > 1). */
void fi_sampler_commit(struct fi_sampler *s, int n_kept);

#endif
