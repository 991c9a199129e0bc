/* model_sample: tokens drawn on the device from the LM head's logits (backend sample op),
 * so that a sampled step sends n tokens (and the log-probabilities asked for) to the host
 * instead of n x vocab floats. */
#include <string.h>

#include "base/log.h"
#include "model_int.h"

/* Bytes of the sample buffer for cap rows and cap_win window tokens (layout in
 * model_int.h; every part stays 8-byte aligned). */
static size_t smp_bytes(int cap, size_t cap_win)
{
	return (size_t)cap * (sizeof(struct fi_sample_row) + 2 * sizeof(int32_t) + sizeof(float) +
			      FI_SAMPLE_MAX_TOP * sizeof(struct fi_sample_top)) +
	       (cap_win + (size_t)(cap & 1)) * sizeof(int32_t);
}

static fi_err smp_room(struct fi_model *m, int n, size_t n_win)
{
	struct fi_backend *be = m->be;
	size_t cap_win;
	fi_err e;
	int cap;
	if (n <= m->s.cap_smp && n_win <= m->s.cap_win)
		return FI_OK;
	cap = n < 16 ? 16 : n;
	cap = cap < m->s.cap_smp ? m->s.cap_smp : cap;
	cap_win = n_win > m->s.cap_win ? n_win + n_win / 2 : m->s.cap_win;
	if (m->s.smp)
		be->ops->free(be, m->s.smp);
	m->s.smp = NULL;
	m->s.cap_smp = 0;
	m->s.cap_win = 0;
	if ((e = be->ops->alloc(be, smp_bytes(cap, cap_win), &m->s.smp)))
		return e;
	m->s.cap_smp = cap;
	m->s.cap_win = cap_win;
	return FI_OK;
}

/* What the rows ask for: the largest n_logprobs (-1: none). */
static int rows_top(const struct fi_sample_row *rows, int n)
{
	int t = -1;
	for (int i = 0; i < n; i++)
		if (rows[i].n_logprobs > t)
			t = rows[i].n_logprobs;
	return t;
}

/* Where the parts of the sample buffer are (layout in model_int.h). */
struct smp_parts {
	struct fi_sample_row *rows_d;
	int32_t *out_d;
	float *lp_d;
	struct fi_sample_top *top_d;
	int32_t *win_d;
};

static struct smp_parts parts(struct fi_model *m)
{
	int cap = m->s.cap_smp;
	struct smp_parts p;
	p.rows_d = m->s.smp;
	p.out_d = (int32_t *)(p.rows_d + cap);
	p.lp_d = (float *)(p.out_d + 2 * (size_t)cap);
	p.top_d = (struct fi_sample_top *)(p.lp_d + cap + (cap & 1));
	p.win_d = (int32_t *)(p.top_d + (size_t)cap * FI_SAMPLE_MAX_TOP);
	return p;
}

fi_err fi_model_sample_launch(struct fi_model *m, int n, const struct fi_sample_io *io)
{
	struct fi_backend *be = m->be;
	int top = rows_top(io->rows, n);
	struct smp_parts p;
	fi_err e;
	if (top > FI_SAMPLE_MAX_TOP)
		return fi_fail(FI_EINVAL, "sample: %d alternatives asked for (at most %d)", top,
			       FI_SAMPLE_MAX_TOP);
	if ((top >= 0 && !io->logprob) || (top > 0 && !io->top))
		return fi_fail(FI_EINVAL, "sample: log-probabilities asked for but no room given");
	if (!be->ops->sample || !n) /* the host samples every row */
		return FI_OK;
	if ((e = smp_room(m, n, io->win ? io->n_win : 0)))
		return e;
	p = parts(m);
	struct fi_sample_args a = {
		.n = n,
		.V = m->c.vocab,
		.logits_d = m->s.logits,
		.rows_d = p.rows_d,
		.hist_d = io->win && io->n_win ? p.win_d : NULL,
		.max_top = FI_SAMPLE_MAX_TOP,
		.out_d = p.out_d,
		.logprob_d = top >= 0 ? p.lp_d : NULL,
		.top_d = top > 0 ? p.top_d : NULL,
	};
	if ((e = be->ops->upload(be, p.rows_d, io->rows, (size_t)n * sizeof *io->rows)) ||
	    (a.hist_d && (e = be->ops->upload(be, p.win_d, io->win, io->n_win * sizeof(int32_t)))) ||
	    (e = be->ops->sample(be, &a)))
		return e;
	return FI_OK;
}

fi_err fi_model_sample_collect(struct fi_model *m, int n, struct fi_sample_io *io)
{
	struct fi_backend *be = m->be;
	size_t V = (size_t)m->c.vocab;
	int top = rows_top(io->rows, n);
	struct smp_parts p;
	fi_err e;
	if (!be->ops->sample) { /* the host samples every row */
		for (int i = 0; i < n; i++)
			io->tokens[i] = -1, io->n_kept[i] = 0;
		return be->ops->download(be, io->logits, m->s.logits, sizeof(float) * (size_t)n * V);
	}
	p = parts(m);
	if ((e = be->ops->download(be, io->tokens, p.out_d, (size_t)n * sizeof(int32_t))) ||
	    (e = be->ops->download(be, io->n_kept, p.out_d + n, (size_t)n * sizeof(int32_t))) ||
	    (top >= 0 &&
	     (e = be->ops->download(be, io->logprob, p.lp_d, (size_t)n * sizeof(float)))) ||
	    (top > 0 && (e = be->ops->download(be, io->top, p.top_d,
					       (size_t)n * FI_SAMPLE_MAX_TOP * sizeof *p.top_d))))
		return e;
	for (int i = 0; i < n; i++)
		if (io->tokens[i] < 0) {
			fi_debug("sample: row %d of %d too wide for the device, sampled on the host",
				 i, n);
			if ((e = be->ops->download(be, io->logits + (size_t)i * V,
						   m->s.logits + (size_t)i * V, sizeof(float) * V)))
				return e;
		}
	return FI_OK;
}
