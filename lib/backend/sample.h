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

#include <stddef.h>
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

/* Sampling elsewhere (the backend's sample op: kernels/sample.cu, lib/backend/cpu): steps
 * 1-6 of one row with the parameters and the uniform number below give the token
 * fi_sampler_next would (on the CPU exactly; on the device except at exact probability
 * ties at a boundary). Step 6 draws only when more than one token survives (n_kept > 1), so
 * the caller takes u with fi_sampler_row (the RNG unchanged) and consumes it with
 * fi_sampler_commit once n_kept is known. Layout shared with CUDA.
 *
 * The repetition penalty's history travels as a window: the tokens of the history the
 * penalty looks at (the last repeat_last_n, or all), hist_off and n_hist into an array of
 * the batch's windows. Log-probabilities are those of the raw logits (log_softmax before
 * penalty, temperature and filters, as vLLM's default and OpenAI report them), computed in
 * double; NaN logits count as -inf. */
#define FI_SAMPLE_MAX_TOP 20 /* alternatives a row may ask for (OpenAI's top_logprobs) */

struct fi_sample_row {
	double u;           /* the draw: uniform in [0, 1) */
	float temperature;  /* <= 0: greedy (the argmax, lowest id on ties) */
	float top_p;        /* >= 1: off */
	float min_p;        /* <= 0: off */
	int32_t top_k;      /* <= 0 or >= vocab: off */
	float penalty;      /* repetition penalty over the window; 1: off */
	int32_t n_hist;     /* tokens in the window */
	int64_t hist_off;   /* its first token in the batch's window array */
	int32_t n_logprobs; /* -1: none; 0: the chosen token's log-probability; N (at most
			     * FI_SAMPLE_MAX_TOP): also the N most likely tokens' */
	int32_t reserved;
};

/* One alternative: a token and its log-probability. */
struct fi_sample_top {
	int32_t id;
	float logprob;
};

/* 1 when steps 2-6 are all this sampler does (no repetition penalty): fi_sampler_row
 * describes it completely. Every sampler can be described by fi_sampler_row_hist. */
int fi_sampler_rowable(const struct fi_sampler *s);
/* The row of s: its parameters and the u its next draw would use (the RNG is unchanged);
 * no penalty, no log-probabilities (n_logprobs -1). */
void fi_sampler_row(const struct fi_sampler *s, struct fi_sample_row *r);
/* The same for any sampler, with history hist[n_hist] (prompt and generated tokens): the
 * penalty and its window, whose tokens are appended to win at *n_win (room for n_hist more
 * entries), which then grows by r->n_hist. Without a penalty nothing is appended. */
void fi_sampler_row_hist(const struct fi_sampler *s, const int32_t *hist, int n_hist,
			 struct fi_sample_row *r, int32_t *win, size_t *n_win);
/* Token chosen elsewhere from a row of s with n_kept survivors: consumes the draw when
 * fi_sampler_next would have drawn (n_kept > 1). */
void fi_sampler_commit(struct fi_sampler *s, int n_kept);

/* Scratch for fi_sample_pick over a vocabulary of V tokens. */
struct fi_sample_work {
	int vocab;
	struct fi_sample_cand *cand;
	double *prob;
	uint8_t *seen;
};
fi_err fi_sample_work_init(struct fi_sample_work *w, int vocab);
void fi_sample_work_free(struct fi_sample_work *w);
/* The reference of the sample op for one row: the token fi_sampler_next gives for
 * logits[V] (V = w->vocab) with the row's parameters, penalty window win[r->n_hist] and
 * draw r->u; *n_kept gets the survivors of the filters (1 for greedy). */
int32_t fi_sample_pick(const struct fi_sample_row *r, const float *logits, const int32_t *win,
		       struct fi_sample_work *w, int32_t *n_kept);
/* Log-probabilities of the raw logits[V]: *lp that of token tok (tok outside the vocabulary:
 * NaN), and top[0..n_top) the n_top most likely tokens, ordered by (logit descending, id
 * ascending), NaN logits never among them (fewer when fewer are not NaN: the rest get id
 * -1). */
void fi_sample_logprobs(const float *logits, int V, int32_t tok, int n_top, float *lp,
			struct fi_sample_top *top);

#endif
