/* sample: logits processors in HF order and a seeded draw (order documented in sample.h). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

void fi_rng_seed(struct fi_rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t fi_rng_next(struct fi_rng *r)
{
	uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double fi_rng_double(struct fi_rng *r)
{
	return (double)(fi_rng_next(r) >> 11) * 0x1.0p-53;
}

void fi_sample_defaults(struct fi_sample_params *p)
{
	memset(p, 0, sizeof *p);
	p->temperature = 1.0f;
	p->top_p = 1.0f;
	p->repeat_penalty = 1.0f;
}

int fi_sample_is_stop(const struct fi_sample_params *p, int32_t tok)
{
	for (int i = 0; i < p->n_stop && i < FI_SAMPLE_MAX_STOP; i++)
		if (p->stop[i] == tok)
			return 1;
	return 0;
}

fi_err fi_sampler_init(struct fi_sampler *s, const struct fi_sample_params *p, int vocab)
{
	memset(s, 0, sizeof *s);
	if (vocab <= 0)
		return fi_fail(FI_EINVAL, "sampler: vocabulary of %d tokens", vocab);
	if (!(p->repeat_penalty > 0) || isinf(p->repeat_penalty))
		return fi_fail(FI_EINVAL, "repeat penalty %g must be a positive number",
			       p->repeat_penalty);
	if (isnan(p->temperature) || isinf(p->temperature))
		return fi_fail(FI_EINVAL, "temperature %g is not a finite number", p->temperature);
	if (isnan(p->top_p) || p->top_p < 0 || isnan(p->min_p) || p->min_p > 1)
		return fi_fail(FI_EINVAL, "top-p %g / min-p %g out of range", p->top_p, p->min_p);
	if (p->n_stop < 0 || p->n_stop > FI_SAMPLE_MAX_STOP)
		return fi_fail(FI_ERANGE, "%d stop tokens (at most %d)", p->n_stop,
			       FI_SAMPLE_MAX_STOP);
	s->p = *p;
	s->vocab = vocab;
	fi_rng_seed(&s->rng, p->seed);
	s->cand = malloc(sizeof *s->cand * (size_t)vocab);
	s->prob = malloc(sizeof *s->prob * (size_t)vocab);
	s->seen = calloc((size_t)vocab, 1);
	if (!s->cand || !s->prob || !s->seen) {
		fi_sampler_free(s);
		return fi_fail(FI_ENOMEM, "sampler: out of memory");
	}
	return FI_OK;
}

void fi_sampler_free(struct fi_sampler *s)
{
	free(s->cand);
	free(s->prob);
	free(s->seen);
	s->cand = NULL;
	s->prob = NULL;
	s->seen = NULL;
}

/* Decreasing logit, then increasing id: a total order, so the result is unique. */
static int before(const struct fi_sample_cand *a, const struct fi_sample_cand *b)
{
	return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *x, const void *y)
{
	const struct fi_sample_cand *a = x, *b = y;
	return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

/* Moves the k best candidates (in the total order) to the front of c[0..n), unordered. */
static void select_k(struct fi_sample_cand *c, int n, int k)
{
	int lo = 0, hi = n - 1;
	while (lo < hi) {
		struct fi_sample_cand piv = c[lo + (hi - lo) / 2], t;
		int i = lo, j = hi;
		while (i <= j) {
			while (before(&c[i], &piv))
				i++;
			while (before(&piv, &c[j]))
				j--;
			if (i <= j) {
				t = c[i];
				c[i] = c[j];
				c[j] = t;
				i++;
				j--;
			}
		}
		if (k - 1 <= j)
			hi = j;
		else if (k - 1 >= i)
			lo = i;
		else
			break;
	}
}

/* softmax of c[0..n) (sorted, so c[0] is the max) into prob; returns nothing: sums to 1 */
static void softmax(const struct fi_sample_cand *c, int n, double *prob)
{
	double sum = 0;
	for (int i = 0; i < n; i++)
		sum += prob[i] = exp((double)c[i].logit - c[0].logit);
	for (int i = 0; i < n; i++)
		prob[i] /= sum;
}

/* Steps 1-5; leaves the survivors sorted in cand[0..n) with probabilities in prob. */
static int process(const struct fi_sample_params *p, struct fi_sample_work *s,
		   const float *logits, const int32_t *hist, int n_hist)
{
	struct fi_sample_cand *c = s->cand;
	int V = s->vocab, n = V;
	for (int i = 0; i < V; i++) {
		c[i].logit = logits[i];
		c[i].id = i;
	}
	if (p->repeat_penalty != 1.0f && n_hist > 0) {
		int from = p->repeat_last_n > 0 && n_hist > p->repeat_last_n ?
				   n_hist - p->repeat_last_n : 0;
		for (int i = from; i < n_hist; i++) {
			int32_t t = hist[i];
			if (t < 0 || t >= V || s->seen[t])
				continue;
			s->seen[t] = 1;
			c[t].logit = c[t].logit < 0 ? c[t].logit * p->repeat_penalty
						    : c[t].logit / p->repeat_penalty;
		}
		for (int i = from; i < n_hist; i++)
			if (hist[i] >= 0 && hist[i] < V)
				s->seen[hist[i]] = 0;
	}
	if (p->temperature <= 0) { /* greedy */
		int b = 0;
		for (int i = 1; i < V; i++)
			if (c[i].logit > c[b].logit)
				b = i;
		c[0] = c[b];
		s->prob[0] = 1;
		return 1;
	}
	for (int i = 0; i < V; i++)
		c[i].logit /= p->temperature;
	if (p->top_k > 0 && p->top_k < V) {
		/* keep everything tied with the k-th best, as HF's `scores < kth` does */
		float kth;
		select_k(c, V, p->top_k);
		kth = c[0].logit;
		for (int i = 1; i < p->top_k; i++)
			if (c[i].logit < kth)
				kth = c[i].logit;
		n = p->top_k;
		for (int i = p->top_k; i < V; i++)
			if (c[i].logit >= kth) {
				struct fi_sample_cand t = c[n];
				c[n++] = c[i];
				c[i] = t;
			}
	}
	qsort(c, (size_t)n, sizeof *c, cmp_cand);
	softmax(c, n, s->prob);
	if (p->top_p < 1.0f) {
		/* tail[i] = probability of rank i and everything below it; drop the ranks whose
		 * tail is <= 1 - top_p, always keeping rank 0 */
		double tail = 0, cut = 1.0 - p->top_p;
		int keep = n;
		for (int i = n - 1; i > 0; i--) {
			tail += s->prob[i];
			if (tail <= cut)
				keep = i;
			else
				break;
		}
		if (keep < n) {
			n = keep;
			softmax(c, n, s->prob);
		}
	}
	if (p->min_p > 0) {
		double thr = p->min_p * s->prob[0];
		int keep = 1;
		while (keep < n && s->prob[keep] >= thr)
			keep++;
		if (keep < n) {
			n = keep;
			softmax(c, n, s->prob);
		}
	}
	return n;
}

/* Step 6: the survivor where u falls in their cumulative probability. */
static int32_t draw(const struct fi_sample_work *w, int n, double u)
{
	for (int i = 0; i < n; i++) {
		u -= w->prob[i];
		if (u < 0)
			return w->cand[i].id;
	}
	return w->cand[n - 1].id; /* rounding left a sliver of u */
}

int fi_sampler_dist(struct fi_sampler *s, const float *logits, const int32_t *hist, int n_hist,
		    int32_t *ids, double *probs)
{
	struct fi_sample_work w = {s->vocab, s->cand, s->prob, s->seen};
	int n = process(&s->p, &w, logits, hist, n_hist);
	for (int i = 0; i < n; i++) {
		ids[i] = s->cand[i].id;
		probs[i] = s->prob[i];
	}
	return n;
}

int32_t fi_sampler_next(struct fi_sampler *s, const float *logits, const int32_t *hist,
			int n_hist)
{
	struct fi_sample_work w = {s->vocab, s->cand, s->prob, s->seen};
	int n = process(&s->p, &w, logits, hist, n_hist);
	if (n == 1)
		return s->cand[0].id;
	return draw(&w, n, fi_rng_double(&s->rng));
}

int fi_sampler_rowable(const struct fi_sampler *s)
{
	return s->p.repeat_penalty == 1.0f;
}

void fi_sampler_row(const struct fi_sampler *s, struct fi_sample_row *r)
{
	struct fi_rng g = s->rng;
	memset(r, 0, sizeof *r);
	r->u = fi_rng_double(&g);
	r->temperature = s->p.temperature;
	r->top_p = s->p.top_p;
	r->min_p = s->p.min_p;
	r->top_k = s->p.top_k;
	r->penalty = 1.0f;
	r->n_logprobs = -1;
}

void fi_sampler_row_hist(const struct fi_sampler *s, const int32_t *hist, int n_hist,
			 struct fi_sample_row *r, int32_t *win, size_t *n_win)
{
	int from;
	fi_sampler_row(s, r);
	r->hist_off = (int64_t)*n_win;
	if (s->p.repeat_penalty == 1.0f || n_hist <= 0)
		return;
	/* the window process() looks at: the last repeat_last_n tokens, or all */
	from = s->p.repeat_last_n > 0 && n_hist > s->p.repeat_last_n ? n_hist - s->p.repeat_last_n
								     : 0;
	r->penalty = s->p.repeat_penalty;
	r->n_hist = n_hist - from;
	memcpy(win + *n_win, hist + from, sizeof *win * (size_t)r->n_hist);
	*n_win += (size_t)r->n_hist;
}

void fi_sampler_commit(struct fi_sampler *s, int n_kept)
{
	if (s->p.temperature > 0 && n_kept > 1)
		fi_rng_next(&s->rng);
}

fi_err fi_sample_work_init(struct fi_sample_work *w, int vocab)
{
	memset(w, 0, sizeof *w);
	if (vocab <= 0)
		return fi_fail(FI_EINVAL, "sampler: vocabulary of %d tokens", vocab);
	w->vocab = vocab;
	w->cand = malloc(sizeof *w->cand * (size_t)vocab);
	w->prob = malloc(sizeof *w->prob * (size_t)vocab);
	w->seen = calloc((size_t)vocab, 1);
	if (!w->cand || !w->prob || !w->seen) {
		fi_sample_work_free(w);
		return fi_fail(FI_ENOMEM, "sampler: out of memory");
	}
	return FI_OK;
}

void fi_sample_work_free(struct fi_sample_work *w)
{
	free(w->cand);
	free(w->prob);
	free(w->seen);
	memset(w, 0, sizeof *w);
}

int32_t fi_sample_pick(const struct fi_sample_row *r, const float *logits, const int32_t *win,
		       struct fi_sample_work *w, int32_t *n_kept)
{
	struct fi_sample_params p;
	int n;
	fi_sample_defaults(&p);
	p.temperature = r->temperature;
	p.top_k = r->top_k;
	p.top_p = r->top_p;
	p.min_p = r->min_p;
	p.repeat_penalty = r->penalty; /* over the whole window: it is already cut */
	n = process(&p, w, logits, win, r->penalty != 1.0f ? r->n_hist : 0);
	*n_kept = n;
	return n == 1 ? w->cand[0].id : draw(w, n, r->u);
}

/* (logit descending, id ascending), NaN last */
static int lp_before(float a, int32_t ia, float b, int32_t ib)
{
	if (isnan(b))
		return !isnan(a) || ia < ib;
	return !isnan(a) && (a > b || (a == b && ia < ib));
}

void fi_sample_logprobs(const float *logits, int V, int32_t tok, int n_top, float *lp,
			struct fi_sample_top *top)
{
	double M = -INFINITY, Z = 0, lz;
	int m = 0;
	for (int i = 0; i < V; i++)
		if (logits[i] > M)
			M = logits[i];
	for (int i = 0; i < V; i++)
		if (!isnan(logits[i]))
			Z += exp((double)logits[i] - M);
	lz = M + log(Z);
	if (lp)
		*lp = tok < 0 || tok >= V ? NAN
		      : isnan(logits[tok]) ? -INFINITY
					   : (float)((double)logits[tok] - lz);
	if (n_top > FI_SAMPLE_MAX_TOP)
		n_top = FI_SAMPLE_MAX_TOP;
	/* the n_top best in one pass: an insertion into a short sorted list */
	for (int i = 0; i < V && top && n_top > 0; i++) {
		int k;
		if (isnan(logits[i]) || (m == n_top && !lp_before(logits[i], i, logits[top[m - 1].id],
								   top[m - 1].id)))
			continue;
		for (k = m < n_top ? m++ : m - 1; k > 0 && lp_before(logits[i], i, logits[top[k - 1].id],
								    top[k - 1].id); k--)
			top[k] = top[k - 1];
		top[k].id = i;
	}
	for (int k = 0; k < n_top && top; k++) {
		if (k >= m) {
			top[k].id = -1;
			top[k].logprob = NAN;
		} else {
			top[k].logprob = (float)((double)logits[top[k].id] - lz);
		}
	}
}
