/* cpu: internals shared by the CPU backend's op files (not a public header).
 *
 * The CPU backend is the reference implementation of every op in backend.h: f32
 * activations and KV, weights converted to f32 once at weight() time, GEMMs through
 * OpenBLAS, and everything else split over a small persistent pthread pool. */
#ifndef FI_CPU_H
#define FI_CPU_H

#include <stdint.h>

#include "backend/backend.h"
#include "cpu_pool.h"

/* Op implementations, one group per file. */
fi_err fi_cpu_embed(struct fi_backend *be, void *x_d, const struct fi_weight *emb,
		    const int32_t *tok_d, int T);
fi_err fi_cpu_gather_rows(struct fi_backend *be, void *out_d, const void *x_d,
			  const int32_t *idx_d, int n, int D);
fi_err fi_cpu_rmsnorm(struct fi_backend *be, void *out_d, void *x_d, const void *add_d,
		      const struct fi_weight *w, int T, int D, float eps);
fi_err fi_cpu_matmul(struct fi_backend *be, void *out_d, const void *in_d,
		     const struct fi_weight *w, const struct fi_weight *bias, int T);
fi_err fi_cpu_matmul_f32out(struct fi_backend *be, float *out_d, const void *in_d,
			    const struct fi_weight *w, int T);
fi_err fi_cpu_rope(struct fi_backend *be, void *q_d, void *k_d, const int32_t *pos_d,
		   const struct fi_rope *r, int T, int Hq, int Hk);
fi_err fi_cpu_kv_write(struct fi_backend *be, struct fi_kv_cache *kv, int layer,
		       const void *k_d, const void *v_d, const struct fi_attn_batch *b);
fi_err fi_cpu_attention(struct fi_backend *be, void *out_d, const void *q_d,
			const struct fi_kv_cache *kv, int layer, int Hq,
			const struct fi_attn_batch *b);
fi_err fi_cpu_silu_mul(struct fi_backend *be, void *out_d, const void *gate_d,
		       const void *up_d, int T, int F);
/* cpu_fused.c: the decode fusions as the plain ops in sequence */
fi_err fi_cpu_norm_qkv_rope(struct fi_backend *be, void *q_d, const void *x_d,
			    const struct fi_weight *norm, float eps,
			    const struct fi_weight *const *w3, const struct fi_weight *const *b3,
			    const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
			    const struct fi_attn_batch *b);
fi_err fi_cpu_matmul_add(struct fi_backend *be, void *x_d, const void *in_d,
			 const struct fi_weight *w, int T);
fi_err fi_cpu_norm_glu(struct fi_backend *be, void *out_d, const void *x_d,
		       const struct fi_weight *norm, float eps, const struct fi_weight *gate,
		       const struct fi_weight *up, enum fi_glu_act act, int T);
fi_err fi_cpu_add_norm(struct fi_backend *be, void *x_d, const void *y_d,
			const struct fi_weight *norm, float eps, int T, int D);
fi_err fi_cpu_argmax(struct fi_backend *be, int32_t *tok_d, const float *logits_d, int n,
		     int V);
/* cpu_sample.c */
fi_err fi_cpu_sample(struct fi_backend *be, const struct fi_sample_args *a);
/* cpu_family.c: the ops of the model families (arch.h) */
fi_err fi_cpu_scale(struct fi_backend *be, void *x_d, int64_t n, float s);
fi_err fi_cpu_gelu_mul(struct fi_backend *be, void *out_d, const void *gate_d,
		       const void *up_d, int T, int F);
/* cpu_bf16.c: a bf16 weight kept as stored (backend.h keep_bf16), its rows and products */
fi_err fi_cpu_bf16_weight(struct fi_backend *be, const struct fi_tensor *t, int64_t rows,
			  int64_t cols, struct fi_weight *w);
void fi_cpu_bf16_row(const struct fi_weight *w, int64_t r, float *out);
fi_err fi_cpu_bf16_matmul(struct fi_backend *be, float *out, const float *in,
			  const struct fi_weight *w, int T);
/* cpu_tq2.c: ternary weights (TQ2) kept packed, and their int8 products */
fi_err fi_cpu_tq2_weight(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *w);
fi_err fi_cpu_tq2_matmul(struct fi_backend *be, float *out, const float *in,
			 const struct fi_weight *w, int T);
/* sum over K (a multiple of 128) of code_k q_k for one row's codes (the TQ2 layout): the
 * scalar reference and the SIMD paths (callable only where fi_cpu_tq2_has says so). */
int32_t fi_cpu_tq2_dot_scalar(const uint8_t *w, const int8_t *x, int64_t K);
int32_t fi_cpu_tq2_dot_avx2(const uint8_t *w, const int8_t *x, int64_t K);
int32_t fi_cpu_tq2_dot_avx512(const uint8_t *w, const int8_t *x, int64_t K);
int fi_cpu_tq2_has(const char *isa); /* "scalar", "avx2", "avx512-vnni" */
const char *fi_cpu_tq2_isa(void);    /* the path products take on this CPU */
fi_err fi_cpu_relu2_mul(struct fi_backend *be, void *out_d, const void *gate_d,
			const void *up_d, int T, int F);
fi_err fi_cpu_softcap(struct fi_backend *be, float *x_d, int64_t n, float cap);
fi_err fi_cpu_weight_cat(struct fi_backend *be, const struct fi_tensor *const *t, int n,
			 struct fi_weight *cat, struct fi_weight *parts);
fi_err fi_cpu_moe(struct fi_backend *be, void *out_d, const void *in_d, const float *router_d,
		  const struct fi_moe *moe, int T);

#endif
