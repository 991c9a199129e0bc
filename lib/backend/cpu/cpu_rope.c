/* cpu_rope: rotary position embedding, rotate-half layout (HF): for i < hd/2,
 *   x'[i]        = x[i] cos(p f_i) - x[i + hd/2] sin(p f_i)
 *   x'[i + hd/2] = x[i + hd/2] cos(p f_i) + x[i] sin(p f_i)
 * with the angle p * f_i rounded to f32 before cos/sin, as HF computes it. */
#include "cpu.h"

#include <math.h>
#include <stdlib.h>

struct rope_job {
	float *q, *k;
	const int32_t *pos;
	const float *inv;
	int hd, Hq, Hk;
};

static void rot(float *x, const float *c, const float *s, int half)
{
	for (int i = 0; i < half; i++) {
		float a = x[i], b = x[i + half];
		x[i] = a * c[i] - b * s[i];
		x[i + half] = b * c[i] + a * s[i];
	}
}

static void rope_rows(void *ctx, int64_t b, int64_t e)
{
	struct rope_job *j = ctx;
	int half = j->hd / 2;
	float c[512], s[512];
	for (int64_t t = b; t < e; t++) {
		for (int i = 0; i < half; i++) {
			float ang = (float)j->pos[t] * j->inv[i];
			c[i] = cosf(ang);
			s[i] = sinf(ang);
		}
		for (int h = 0; h < j->Hq; h++)
			rot(j->q + (t * j->Hq + h) * j->hd, c, s, half);
		for (int h = 0; h < j->Hk; h++)
			rot(j->k + (t * j->Hk + h) * j->hd, c, s, half);
	}
}

fi_err fi_cpu_rope(struct fi_backend *be, void *q_d, void *k_d, const int32_t *pos_d,
		   const struct fi_rope *r, int T, int Hq, int Hk)
{
	struct rope_job j = {q_d, k_d, pos_d, r->inv_freq_d, r->head_dim, Hq, Hk};
	if (r->head_dim <= 0 || r->head_dim % 2 || r->head_dim > 1024)
		return fi_fail(FI_EUNSUPPORTED, "rope: head_dim %d (expected even, <= 1024)",
			       r->head_dim);
	if (r->q_norm || r->k_norm)
		return fi_fail(FI_EUNSUPPORTED, "rope: q/k norms are rope_kv_write's");
	fi_cpu_parallel_for(be, T, 8, rope_rows, &j);
	return FI_OK;
}
