/* cpu_sample: the sample op on the CPU, the reference of kernels/sample.cu. Each row goes
 * through fi_sample_pick (lib/backend/sample.c), the code fi_sampler_next runs, so the CPU
 * backend's tokens equal the host sampler's bit for bit; log-probabilities through
 * fi_sample_logprobs. Rows are spread over the thread pool; the CPU never leaves a row to
 * the host. */
#include "cpu.h"

#include <stdatomic.h>

struct smp_job {
	const struct fi_sample_args *a;
	atomic_int err;
};

static void sample_rows(void *ctx, int64_t b, int64_t e)
{
	struct smp_job *j = ctx;
	const struct fi_sample_args *a = j->a;
	struct fi_sample_work w;
	if (fi_sample_work_init(&w, a->V)) {
		atomic_store(&j->err, 1);
		return;
	}
	for (int64_t i = b; i < e; i++) {
		const struct fi_sample_row *r = &a->rows_d[i];
		const float *x = a->logits_d + (size_t)i * (size_t)a->V;
		int32_t kept;
		int32_t tok = fi_sample_pick(r, x, a->hist_d ? a->hist_d + r->hist_off : NULL, &w,
					     &kept);
		a->out_d[i] = tok;
		a->out_d[a->n + i] = kept;
		if (r->n_logprobs >= 0)
			fi_sample_logprobs(x, a->V, tok, r->n_logprobs, &a->logprob_d[i],
					   r->n_logprobs ? a->top_d + (size_t)i * (size_t)a->max_top
							 : NULL);
	}
	fi_sample_work_free(&w);
}

fi_err fi_cpu_sample(struct fi_backend *be, const struct fi_sample_args *a)
{
	struct smp_job j = {a, 0};
	if (a->n <= 0)
		return FI_OK;
	if (a->V <= 0)
		return fi_fail(FI_EINVAL, "sample: vocabulary of %d tokens", a->V);
	for (int i = 0; i < a->n; i++) {
		const struct fi_sample_row *r = &a->rows_d[i];
		if (r->n_logprobs > a->max_top || r->n_logprobs > FI_SAMPLE_MAX_TOP ||
		    (r->n_logprobs >= 0 && !a->logprob_d) || (r->n_logprobs > 0 && !a->top_d))
			return fi_fail(FI_EINVAL, "sample: row %d asks for %d alternatives (room for %d)",
				       i, r->n_logprobs, a->top_d ? a->max_top : 0);
		if (r->penalty != 1.0f && r->n_hist > 0 && (!a->hist_d || r->hist_off < 0))
			return fi_fail(FI_EINVAL, "sample: row %d has a penalty window but no history",
				       i);
	}
	/* a row is a pass or a few over the vocabulary: worth a thread from 2 rows on */
	fi_cpu_parallel_for(be, a->n, 1, sample_rows, &j);
	return atomic_load(&j.err) ? fi_fail(FI_ENOMEM, "sample: out of memory") : FI_OK;
}
