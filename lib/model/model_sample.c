/* model_sample: tokens drawn on the device from the LM head's logits (backend sample op),
 * so that a sampled step sends n tokens to the host instead of n x vocab floats. */
#include <string.h>

#include "base/log.h"
#include "model_int.h"

/* The sample buffer: rows [n] then out [2n] int32 (tokens, survivor counts). */
static fi_err smp_room(struct fi_model *m, int n)
{
	struct fi_backend *be = m->be;
	fi_err e;
	int cap;
	if (n <= m->s.cap_smp)
		return FI_OK;
	cap = n < 16 ? 16 : n;
	if (m->s.smp)
		be->ops->free(be, m->s.smp);
	m->s.smp = NULL;
	m->s.cap_smp = 0;
	if ((e = be->ops->alloc(be, (size_t)cap * (sizeof(struct fi_sample_row) + 2 * sizeof(int32_t)),
				&m->s.smp)))
		return e;
	m->s.cap_smp = cap;
	return FI_OK;
}

fi_err fi_model_sample_launch(struct fi_model *m, int n, const struct fi_sample_row *rows)
{
	struct fi_backend *be = m->be;
	fi_err e;
	if (!be->ops->sample || !n)
		return FI_OK;
	if ((e = smp_room(m, n)))
		return e;
	struct fi_sample_row *rows_d = m->s.smp;
	int32_t *out_d = (int32_t *)(rows_d + m->s.cap_smp);
	if ((e = be->ops->upload(be, rows_d, rows, (size_t)n * sizeof *rows)) ||
	    (e = be->ops->sample(be, out_d, m->s.logits, rows_d, n, m->c.vocab)))
		return e;
	return FI_OK;
}

fi_err fi_model_sample_collect(struct fi_model *m, int n, float *logits, int32_t *tokens,
			       int32_t *n_kept)
{
	struct fi_backend *be = m->be;
	size_t V = (size_t)m->c.vocab;
	fi_err e;
	if (!be->ops->sample) { /* the host samples every row */
		for (int i = 0; i < n; i++)
			tokens[i] = -1, n_kept[i] = 0;
		return be->ops->download(be, logits, m->s.logits, sizeof(float) * (size_t)n * V);
	}
	int32_t *out_d = (int32_t *)((struct fi_sample_row *)m->s.smp + m->s.cap_smp);
	if ((e = be->ops->download(be, tokens, out_d, (size_t)n * sizeof(int32_t))) ||
	    (e = be->ops->download(be, n_kept, out_d + n, (size_t)n * sizeof(int32_t))))
		return e;
	for (int i = 0; i < n; i++)
		if (tokens[i] < 0) {
			fi_debug("sample: row %d of %d too wide for the device, sampled on the host",
				 i, n);
			if ((e = be->ops->download(be, logits + (size_t)i * V,
						   m->s.logits + (size_t)i * V, sizeof(float) * V)))
				return e;
		}
	return FI_OK;
}
