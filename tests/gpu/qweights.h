/* Random valid quantized weights for the GPU tests (included by test_quant_kernels.c and
 * test_qfused.c): every type of base/quant.h but TQ2, with sane scales, so that products
 * stay of about unit scale for inputs of unit scale. */
#ifndef FI_TEST_QWEIGHTS_H
#define FI_TEST_QWEIGHTS_H

#include <check.h>

#include "base/quant.h"
#include "gpu_util.h"

struct qt {
	const char *what;
	enum fi_dtype dt;
	int kind, aq, group, perm;
};

/* Every kind a GPU test of quantized products covers (q4_k and q6_k at 2 and 4 are picked by
 * index as a Q4_K_M file's pair). */
static __attribute__((unused)) const struct qt qtypes[] = {
	{"q8_0", FI_DT_Q8_0, 0, 0, 0, 0},
	{"q4_0", FI_DT_Q4_0, 0, 0, 0, 0},
	{"q4_k", FI_DT_Q4_K, 0, 0, 0, 0},
	{"q5_k", FI_DT_Q5_K, 0, 0, 0, 0},
	{"q6_k", FI_DT_Q6_K, 0, 0, 0, 0},
	{"fp8 row w8a16", FI_DT_FP8, FI_Q8_ROW, FI_AQ_NONE, 0, 0},
	{"fp8 block w8a16", FI_DT_FP8, FI_Q8_B128, FI_AQ_NONE, 0, 0},
	{"fp8 row w8a8", FI_DT_FP8, FI_Q8_ROW, FI_AQ_TOKEN, 0, 0},
	{"fp8 block w8a8", FI_DT_FP8, FI_Q8_B128, FI_AQ_GROUP, 0, 0},
	{"int4 g128", FI_DT_INT4, 0, 0, 128, 0},
	{"int4 g32", FI_DT_INT4, 0, 0, 32, 0},
	{"int4 g128 act-order", FI_DT_INT4, 0, 0, 128, 1},
};
#define N_QTYPES (int)(sizeof qtypes / sizeof qtypes[0])

static __attribute__((unused)) uint16_t f16(float f) { return fi_f32_to_f16(f); }

static __attribute__((unused)) float urand(uint64_t *seed) { return (float)((next(seed) >> 11) * (1.0 / 9007199254740992.0)); }

/* A random valid weight of type q, [N, K], weights of about unit / sqrt(K) scale. */
static __attribute__((unused)) uint8_t *make_q(const struct qt *q, int64_t N, int64_t K,
					       uint64_t *nbytes, uint64_t *seed)
{
	struct fi_qlayout l;
	uint8_t *b;
	float s = 1.f / sqrtf((float)K);
	if (q->dt == FI_DT_FP8)
		fi_quant_layout_fp8(N, K, q->kind, q->aq, &l);
	else if (q->dt == FI_DT_INT4)
		fi_quant_layout_int4(N, K, q->group, q->perm, &l);
	else
		ck_assert_int_eq(fi_quant_layout(q->dt, N, K, NULL, UINT64_MAX, &l), FI_OK);
	b = malloc(l.nbytes);
	for (uint64_t i = 0; i < l.nbytes; i++)
		b[i] = (uint8_t)next(seed);
	if (q->dt == FI_DT_FP8 || q->dt == FI_DT_INT4) {
		fi_quant_write_header(&l, b);
		if (q->dt == FI_DT_FP8) {
			for (uint64_t i = l.off_q; i < l.off_q + (uint64_t)(N * K); i++)
				if ((b[i] & 0x7f) == 0x7f) /* no NaN codes */
					b[i] &= 0xfe;
			for (uint64_t i = l.off_scale; i < l.nbytes; i += 4) {
				float v = s / 64 * (0.5f + urand(seed));
				memcpy(b + i, &v, 4);
			}
		} else {
			uint64_t ng = (uint64_t)(N * (K / q->group));
			for (uint64_t i = 0; i < ng; i++) {
				uint16_t h = f16(s / 4 * (0.5f + urand(seed)));
				memcpy(b + l.off_scale + 2 * i, &h, 2);
				b[l.off_zero + i] = (uint8_t)(next(seed) % 16);
			}
			if (q->perm) {
				int32_t *p = malloc(sizeof *p * (size_t)K);
				for (int64_t j = 0; j < K; j++)
					p[j] = (int32_t)j;
				for (int64_t j = K - 1; j > 0; j--) {
					int64_t r = (int64_t)(next(seed) % (uint64_t)(j + 1));
					int32_t t = p[j];
					p[j] = p[r];
					p[r] = t;
				}
				memcpy(b + l.off_perm, p, 4 * (size_t)K);
				free(p);
			}
		}
	} else {
		/* GGML: the f16 scales of every block made finite and small */
		uint64_t nb = l.nbytes / (uint64_t)l.block_bytes;
		for (uint64_t i = 0; i < nb; i++) {
			uint8_t *blk = b + i * (uint64_t)l.block_bytes;
			uint16_t d = f16(s / (q->dt == FI_DT_Q8_0 ? 64 : 8) * (0.5f + urand(seed)));
			uint16_t dm = f16(s / 8 * urand(seed));
			switch (q->dt) {
			case FI_DT_Q6_K: d = f16(s / 512 * (0.5f + urand(seed))); memcpy(blk + 208, &d, 2); break;
			case FI_DT_Q4_K:
			case FI_DT_Q5_K:
				d = f16(s / 256 * (0.5f + urand(seed)));
				dm = f16(s / 256 * urand(seed));
				memcpy(blk, &d, 2);
				memcpy(blk + 2, &dm, 2);
				break;
			default: memcpy(blk, &d, 2); break;
			}
		}
	}
	ck_assert_int_eq(fi_quant_layout(q->dt, N, K, b, l.nbytes, &l), FI_OK);
	ck_assert_int_eq(fi_quant_check_scales(&l, b), FI_OK);
	*nbytes = l.nbytes;
	return b;
}

#endif
