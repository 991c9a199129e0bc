/* cpu_attn: the paged KV cache write and attention over it (layout in backend.h).
 *
 * Attention for token t of sequence s at position p, query head h, KV head
 * kh = h / (Hq / Hk), reads cache positions j in [lo, hi] with
 *   hi = min(p, seq_len[s] - 1), lo = W ? max(0, p - W + 1) : 0
 * (causal by position, so a batch may carry any mix of prompt and decode tokens of
 * several sequences, in any order, as long as their K/V were written first), and computes
 *   out[t, h, :] = sum_j softmax_j(q . k_j * scale) v_j
 * (with soft-capping, softmax_j of cap * tanh(q . k_j * scale / cap)),
 * with a two-pass, max-subtracted softmax in f32 (scores of all positions first, then the
 * weighted sum): this is the reference the GPU kernels are measured against. */
#include "cpu.h"

#include "base/quant.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* FP8 cache (backend.h): the e4m3 values and the scale of slot s, head h. */
static uint8_t *fp8_q(const struct fi_kv_cache *kv, const void *base, int64_t s, int h)
{
	int bs = kv->block_size;
	return (uint8_t *)base + (size_t)(s / bs) * fi_kv_block_bytes(kv, FI_DT_F32) +
	       ((size_t)(s % bs) * kv->n_kv_heads + (size_t)h) * kv->head_dim;
}

static float *fp8_s(const struct fi_kv_cache *kv, const void *base, int64_t s, int h)
{
	int bs = kv->block_size;
	return (float *)((uint8_t *)base + (size_t)(s / bs) * fi_kv_block_bytes(kv, FI_DT_F32) +
			 (size_t)bs * kv->n_kv_heads * kv->head_dim) +
	       (size_t)(s % bs) * kv->n_kv_heads + (size_t)h;
}

/* One head's row into the FP8 cache: scale amax / 448 (1 for zeros), values e4m3. */
static void fp8_put(const struct fi_kv_cache *kv, void *base, int64_t s, int h, const float *x)
{
	uint8_t *q = fp8_q(kv, base, s, h);
	float amax = 0, sc;
	for (int i = 0; i < kv->head_dim; i++)
		amax = fmaxf(amax, fabsf(x[i]));
	sc = amax > 0 ? amax / FI_FP8_MAX : 1.0f;
	for (int i = 0; i < kv->head_dim; i++)
		q[i] = fi_f32_to_e4m3(x[i] / sc);
	memcpy(fp8_s(kv, base, s, h), &sc, sizeof sc);
}

/* A K or V row as f32: in place for an f32 cache, decoded into tmp for FP8. */
static const float *kv_row(const struct fi_kv_cache *kv, const void *base, int64_t s, int h,
			   float *tmp)
{
	const uint8_t *q;
	float sc;
	if (!kv->fp8)
		return (const float *)base + ((size_t)s * kv->n_kv_heads + (size_t)h) * kv->head_dim;
	q = fp8_q(kv, base, s, h);
	memcpy(&sc, fp8_s(kv, base, s, h), sizeof sc);
	for (int i = 0; i < kv->head_dim; i++)
		tmp[i] = fi_e4m3_to_f32(q[i]) * sc;
	return tmp;
}

fi_err fi_cpu_kv_write(struct fi_backend *be, struct fi_kv_cache *kv, int layer,
		       const void *k_d, const void *v_d, const struct fi_attn_batch *b)
{
	size_t row = (size_t)kv->n_kv_heads * kv->head_dim;
	int64_t slots = (int64_t)kv->n_blocks * kv->block_size;
	float *kc, *vc;
	if (layer < 0 || layer >= kv->n_layers)
		return fi_fail(FI_ERANGE, "kv_write: layer %d of %d", layer, kv->n_layers);
	kc = kv->k_d[layer];
	vc = kv->v_d[layer];
	for (int t = 0; t < b->n_tokens; t++)
		if (b->slot_d[t] < 0 || b->slot_d[t] >= slots)
			return fi_fail(FI_ERANGE, "kv_write: slot %d outside the cache (%lld slots)",
				       b->slot_d[t], (long long)slots);
	for (int t = 0; t < b->n_tokens; t++) {
		size_t s = (size_t)b->slot_d[t];
		if (kv->fp8) {
			for (int h = 0; h < kv->n_kv_heads; h++) {
				fp8_put(kv, kc, (int64_t)s, h, (const float *)k_d + t * row + h * kv->head_dim);
				fp8_put(kv, vc, (int64_t)s, h, (const float *)v_d + t * row + h * kv->head_dim);
			}
			continue;
		}
		memcpy(kc + s * row, (const float *)k_d + t * row, row * sizeof(float));
		memcpy(vc + s * row, (const float *)v_d + t * row, row * sizeof(float));
	}
	return FI_OK;
}

struct attn_job {
	float *out;
	const float *q, *kc, *vc;
	const struct fi_attn_batch *b;
	const struct fi_kv_cache *kv;
	int Hq, group;
	atomic_int err; /* 1: out of memory, 2: bad block table entry */
};

/* Slot of position j of sequence s, or -1 if its block is outside the cache. */
static int64_t slot_of(const struct attn_job *a, int s, int j)
{
	int bs = a->kv->block_size;
	int32_t blk = a->b->block_table_d[(size_t)s * a->b->max_blocks + j / bs];
	if (blk < 0 || blk >= a->kv->n_blocks)
		return -1;
	return (int64_t)blk * bs + j % bs;
}

/* q . k over hd values, eight partial sums so the compiler can vectorise it. */
static float dot(const float *q, const float *k, int hd)
{
	float p[8] = {0}, r = 0;
	int i = 0;
	for (; i + 8 <= hd; i += 8)
		for (int l = 0; l < 8; l++)
			p[l] += q[i + l] * k[i + l];
	for (; i < hd; i++)
		r += q[i] * k[i];
	return r + ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
}

/* One item = one token and one KV head: the group of query heads that share that KV head
 * is done together, so each K and V row is read once per group. */
static void attn_items(void *ctx, int64_t ib, int64_t ie)
{
	struct attn_job *a = ctx;
	const struct fi_attn_batch *b = a->b;
	int hd = a->kv->head_dim, Hk = a->kv->n_kv_heads, G = a->group;
	size_t krow = (size_t)Hk * hd, len = (size_t)(b->max_seq_len > 0 ? b->max_seq_len : 1);
	float *sc = malloc(len * (size_t)G * sizeof(float));
	float *mx = malloc((size_t)G * sizeof(float)), *sum = malloc((size_t)G * sizeof(float));
	size_t *row = malloc(len * sizeof(size_t)); /* cache slot of each position's K/V */
	float *tmp = malloc((size_t)hd * sizeof(float)); /* an FP8 row decoded */
	(void)krow;
	if (!sc || !mx || !sum || !row || !tmp) {
		atomic_store(&a->err, 1);
		goto out;
	}
	for (int64_t it = ib; it < ie; it++) {
		int t = (int)(it / Hk), kh = (int)(it % Hk);
		int s = b->tok_seq_d[t], p = b->tok_pos_d[t];
		int hi = p < b->seq_len_d[s] - 1 ? p : b->seq_len_d[s] - 1;
		int lo = b->sliding_window > 0 && p - b->sliding_window + 1 > 0 ?
				 p - b->sliding_window + 1 : 0;
		int n = hi - lo + 1;
		const float *q = a->q + ((size_t)t * a->Hq + (size_t)kh * G) * hd;
		float *o = a->out + ((size_t)t * a->Hq + (size_t)kh * G) * hd;
		if (n > (int)len) { /* max_seq_len lied: refuse, do not overrun */
			atomic_store(&a->err, 3);
			goto out;
		}
		for (int g = 0; g < G; g++)
			mx[g] = -INFINITY;
		for (int j = 0, bs = a->kv->block_size; j < n; j++) {
			const float *k;
			/* one block table lookup per block, not per position */
			if (j == 0 || (lo + j) % bs == 0) {
				int64_t sl = slot_of(a, s, lo + j);
				if (sl < 0) {
					atomic_store(&a->err, 2);
					goto out;
				}
				row[j] = (size_t)sl;
			} else {
				row[j] = row[j - 1] + 1;
			}
			k = kv_row(a->kv, a->kc, (int64_t)row[j], kh, tmp);
			for (int g = 0; g < G; g++) {
				float v = dot(q + (size_t)g * hd, k, hd) * b->scale;
				if (b->softcap > 0) /* Gemma 2: cap tanh(s / cap), as transformers */
					v = tanhf(v / b->softcap) * b->softcap;
				sc[(size_t)g * len + j] = v;
				if (v > mx[g])
					mx[g] = v;
			}
		}
		for (int g = 0; g < G; g++) {
			float *w = sc + (size_t)g * len;
			sum[g] = 0;
			for (int j = 0; j < n; j++)
				sum[g] += w[j] = expf(w[j] - mx[g]);
			for (int i = 0; i < hd; i++)
				o[(size_t)g * hd + i] = 0;
		}
		for (int j = 0; j < n; j++) {
			const float *v = kv_row(a->kv, a->vc, (int64_t)row[j], kh, tmp);
			for (int g = 0; g < G; g++) {
				float w = sc[(size_t)g * len + j];
				float *og = o + (size_t)g * hd;
				for (int i = 0; i < hd; i++)
					og[i] += w * v[i];
			}
		}
		for (int g = 0; g < G; g++) {
			float r = n > 0 ? 1.0f / sum[g] : 0.0f;
			for (int i = 0; i < hd; i++)
				o[(size_t)g * hd + i] *= r;
		}
	}
out:
	free(sc);
	free(mx);
	free(sum);
	free(row);
	free(tmp);
}

fi_err fi_cpu_attention(struct fi_backend *be, void *out_d, const void *q_d,
			const struct fi_kv_cache *kv, int layer, int Hq,
			const struct fi_attn_batch *b)
{
	struct attn_job a = {out_d, q_d, NULL, NULL, b, kv, Hq, 0, 0};
	if (layer < 0 || layer >= kv->n_layers)
		return fi_fail(FI_ERANGE, "attention: layer %d of %d", layer, kv->n_layers);
	if (Hq <= 0 || Hq % kv->n_kv_heads)
		return fi_fail(FI_EINVAL, "attention: %d query heads for %d kv heads", Hq,
			       kv->n_kv_heads);
	for (int t = 0; t < b->n_tokens; t++) {
		int s = b->tok_seq_d[t];
		if (s < 0 || s >= b->n_seqs || b->tok_pos_d[t] < 0 ||
		    b->seq_len_d[s] > b->max_blocks * kv->block_size)
			return fi_fail(FI_ERANGE, "attention: token %d: sequence %d position %d "
				       "outside the batch", t, s, b->tok_pos_d[t]);
	}
	a.kc = kv->k_d[layer];
	a.vc = kv->v_d[layer];
	a.group = Hq / kv->n_kv_heads;
	/* split only when each thread gets ~64K multiply-adds: waking the pool costs more than
	 * a short decode step's attention */
	fi_cpu_parallel_for(be, (int64_t)b->n_tokens * kv->n_kv_heads,
			    1 + 65536 / ((int64_t)b->max_seq_len * Hq / kv->n_kv_heads * kv->head_dim + 1),
			    attn_items, &a);
	switch (atomic_load(&a.err)) {
	case 0: return FI_OK;
	case 1: return fi_fail(FI_ENOMEM, "attention: out of memory");
	case 2: return fi_fail(FI_ERANGE, "attention: block table entry outside the cache");
	default: return fi_fail(FI_ERANGE, "attention: a window exceeds max_seq_len %d",
				 b->max_seq_len);
	}
}
