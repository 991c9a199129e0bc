/* cuda_be: private state of the CUDA backend, its error check, and the kernel launchers
 * (kernels/NAME.cu, one op per file) that lib/cuda/NAME.c call.
 *
 * Every CUDA, cuBLAS(Lt) call and every launch goes through FI_CHECK, which turns a failure
 * into an FI_EDEVICE return with the call and the library's error string. */
#ifndef FI_CUDA_BE_H
#define FI_CUDA_BE_H

#include <cuda_runtime_api.h>
#include <cublasLt.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Inside the C linkage block: the fi headers have no guards of their own. */
#include "backend/backend.h"
#include "base/err.h"

/* FI_CHECK(expr, ok, strfn): evaluates expr once; if it is not ok, returns
 * fi_fail(FI_EDEVICE, ...) naming the call and strfn(result). */
#define FI_CHECK(expr, ok, strfn)                                                          \
	do {                                                                               \
		__typeof__(expr) fi_ck_ = (expr);                                          \
		if (fi_ck_ != (ok))                                                        \
			return fi_fail(FI_EDEVICE, "cuda: %s failed: %s (%s:%d)", #expr,   \
				       strfn(fi_ck_), __FILE__, __LINE__);                 \
	} while (0)
#define CU_CHECK(expr) FI_CHECK(expr, cudaSuccess, cudaGetErrorString)
#define LT_CHECK(expr) FI_CHECK(expr, CUBLAS_STATUS_SUCCESS, cublasGetStatusString)
/* After a kernel launch: launch-configuration errors surface here. */
#define LAUNCH_CHECK() CU_CHECK(cudaGetLastError())

/* Attention scratch for split-K partials and the serving batches' work list; the split
 * counts are bounded so that this is enough (see kernels/attn_decode.cu): 64 MiB holds the
 * partials of ~3900 pieces at Llama-3-8B's heads (Hq 32, hd 128). */
#define FI_ATTN_WS_BYTES (64u << 20)
#define FI_LT_WS_BYTES (32u << 20)
#define FI_ATTN_CNT 65536 /* the first half for attention's splits, the second for argmax */
/* The fused GEMM output of matmul_multi before it is split, and of matmul_glu before
 * silu_mul (T * sum N bf16 values): 64 MiB holds the 8B shape's gate/up at 1170 rows. */
#define FI_MULTI_WS_BYTES (64u << 20)
#define FI_RING_SEGS 4                  /* pinned staging of per-step uploads (ring.c) */
#define FI_RING_SEG_BYTES (1u << 20)
#define FI_MAX_GRAPHS 256 /* (batch rung, table width) pairs of the decode ladder */

struct fi_gemm_plan;
struct fi_fp8_plan;
struct fi_upload;
struct fi_moe_ws;

struct fi_cuda_graph {
	uint64_t key;
	cudaGraphExec_t exec;
};

/* The planned decode path's work list in attention's scratch, and what it was made for: a
 * step's layers attend over the same tokens, so the list made at layer 0 serves the rest
 * (kernels/attn_decode.cu). valid = 0 once anything else writes the scratch. */
struct fi_cu_plan_key {
	const void *tok_pos;
	int T, window, min_chunk, E, Hk;
	int valid;
};

struct fi_cuda {
	int device;
	int n_sm;
	size_t smem_optin; /* shared memory a block may opt into */
	cudaStream_t stream;
	cublasLtHandle_t lt;
	void *lt_ws;
	void *attn_ws;
	void *multi_ws;
	int *attn_cnt; /* [FI_ATTN_CNT] split counters of attn_decode, zero between launches */
	struct fi_cu_plan_key attn_plan; /* the work list attn_ws holds */
	/* FI_FP8_FOLD: the input [T, K] whose W8A8 token codes an op before the product wrote
	 * into the quantized products' scratch (fi_cuda_xq_claim); the next product's input
	 * preparation takes them if its input is x, and forgets them either way. */
	struct {
		const void *x;
		int T, K;
	} xq_has;
	int w8a8_token; /* a weight with per-token W8A8 inputs is loaded: rmsnorm makes codes */
	int no_gemv;   /* FI_GEMV=0 */
	int no_glu;    /* FI_GLU=0: gate/up then silu_mul in decode */
	int fuse_mode; /* matmul_multi above 4 rows: 0 never (FI_FUSE=0), 1 all parts, 2 not the first */
	struct fi_gemm_plan *plans;
	int n_plans, cap_plans;
	int32_t *plan_slot;  /* hash of plans (gemm.c) */
	uint64_t plan_clock; /* GEMM calls, for least-recently-used eviction */
	struct fi_cuda_graph graphs[FI_MAX_GRAPHS];
	int n_graphs;
	int capturing;
	uint64_t capture_key;
	struct fi_upload *up; /* pinned staging and copy threads for weight upload */
	unsigned char *ring;  /* pinned staging of small uploads (ring.c), made on first use */
	cudaEvent_t ring_ev[FI_RING_SEGS];
	int ring_ev_set[FI_RING_SEGS];
	int ring_seg;
	size_t ring_off;
	size_t weight_bytes;  /* bytes of weights resident */
	struct fi_moe_ws *moe; /* model families: the moe op's buffers (family.c) */
	/* Quantized weights (qweight.c): scratch sized when weights load, so that no product
	 * allocates during graph capture. deq: the largest weight dequantized to bf16 (prefill
	 * through cuBLASLt); xq: activations as e4m3 codes, their scales, and x permuted
	 * (act-order INT4) or rounded, for xq_T tokens of up to xq_K columns. */
	void *deq;
	size_t deq_bytes, deq_need;
	void *xq, *xq_big; /* xq for graph-sized batches, fixed once weights load; xq_big above */
	size_t xq_bytes, xq_big_bytes;
	int xq_K, no_fp8_gemm; /* FI_FP8_GEMM=0: FP8 products through dequantize + bf16 GEMM */
	int told_fp8_deq;      /* that path was taken, said once at debug level */
	int fp8_unit;          /* FI_FP8_UNIT: unit-scale FP8 GEMM + fi_cu_scale_outer */
	int fp8_fast;          /* FI_FP8_FAST: FP8 GEMMs without promoted f32 sums */
	/* KV copies into the cache (kvcopy.c): their stream, an event after each layer's
	 * pieces, and while xfer_layers > 0, the layers the compute stream must still wait for
	 * (attention on layer l waits for xfer_ev[l]). */
	cudaStream_t xfer;
	cudaEvent_t xfer_start, *xfer_ev;
	int n_xfer_ev, xfer_layers;
	struct fi_fp8_plan *fp8_plans;
	int n_fp8_plans;
};

static inline struct fi_cuda *fi_cuda_of(struct fi_backend *be)
{
	return (struct fi_cuda *)be->priv;
}

/* kvcopy.c: the kv_copy op (backend.h). */
fi_err fi_cuda_kv_copy(struct fi_backend *be, struct fi_kv_cache *kv, int to_cache, int n,
		       const int32_t *blocks, void *const *host, const int32_t *seg);
/* The compute stream waits for layer's copies into the cache (layer < 0: all of them);
 * nothing when none is under way. */
fi_err fi_cuda_xfer_wait(struct fi_cuda *c, int layer);
void fi_cuda_xfer_free(struct fi_cuda *c);

/* gemm.c: the bucket of T whose cuBLASLt heuristic answer serves T (T itself up to 8 rows;
 * then powers of two to 128, 64 wide to 1024, 256 wide to 4096, then 1024 wide). */
int fi_cuda_t_bucket(int T);

/* lib/backend/cuda/gemm.c: out[T,N] = in[T,K] w^T (+ bias) for a bf16 w (the
 * weight-streaming kernel for T <= 4, else cuBLASLt); a quantized w goes to fi_cuda_qgemm
 * (qweight.c), which calls this one for its dequantized products. */
fi_err fi_cuda_gemm(struct fi_backend *be, void *out_d, int out_f32, const void *in_d,
		    const struct fi_weight *w, const struct fi_weight *bias, int T);
void fi_cuda_gemm_free(struct fi_cuda *c);

/* lib/backend/cuda/ring.c: bytes from host memory (any) to dst_d, asynchronously, src
 * reusable on return. */
fi_err fi_cuda_ring_upload(struct fi_cuda *c, void *dst_d, const void *src, size_t bytes);
void fi_cuda_ring_free(struct fi_cuda *c);
/* lib/backend/cuda/products.c: the matmul ops of backend.h, for cuda.c's op table. */
fi_err fi_cuda_matmul(struct fi_backend *be, void *out_d, const void *in_d,
		      const struct fi_weight *w, const struct fi_weight *bias, int T);
fi_err fi_cuda_matmul_multi(struct fi_backend *be, int n, void *const *out_d, const void *in_d,
			    const struct fi_weight *const *w, const struct fi_weight *const *bias,
			    int T);
fi_err fi_cuda_matmul_glu(struct fi_backend *be, void *out_d, void *gate_d, void *up_d,
			  const void *in_d, const struct fi_weight *gate,
			  const struct fi_weight *up, int T);
fi_err fi_cuda_matmul_f32out(struct fi_backend *be, float *out_d, const void *in_d,
			     const struct fi_weight *w, int T);
/* lib/backend/cuda/qweight.c: quantized weights (base/quant.h) on the GPU. GGML Q8_0, Q4_0
 * and Q6_K are re-laid at upload (Q4_0 as INT4 with group 32 and zero 8, Q8_0 as int8 with
 * an f16 scale per 32, Q6_K as 208-byte blocks and a separate f16 scale) so that every run
 * of 32 values starts 16-byte aligned; w->q then describes the device layout. */
fi_err fi_cuda_qweight(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *out);
/* FP8 weights with per-row scales (q, k, v; gate, up) in one allocation, parts as views
 * (the qweight_cat op); FI_EUNSUPPORTED, not recorded, for other weights. */
fi_err fi_cuda_qweight_cat(struct fi_backend *be, const struct fi_tensor *const *t, int n,
			   struct fi_weight *cat, struct fi_weight *parts);
/* out[T,N] = in[T,K] w^T (+ bias) for a quantized w: the weight-streaming kernel for
 * T <= 4, FP8 products through cuBLASLt's FP8 GEMM (W8A8), the rest dequantized into
 * c->deq and multiplied by the bf16 GEMM. */
fi_err fi_cuda_qgemm(struct fi_backend *be, void *out_d, int out_f32, const void *in_d,
		     const struct fi_weight *w, const struct fi_weight *bias, int T);
/* A unit-scale W8A8 product whose scales were left to its caller (gemm_fp8.c): out[T, N]
 * still wants ws[n] xs[t] (fi_cu_scale_outer, or a consumer applying them as it reads out).
 * out is NULL where the product applied them itself. */
struct fi_fp8_deferred {
	void *out;
	const float *ws, *xs;
	int N;
};
/* The scratch where the W8A8 token codes [T, K] and scales [T] of x go, for an op that makes
 * them as it writes x (FI_FP8_FOLD), recorded so that the next product over x uses them;
 * FI_EUNSUPPORTED (not recorded) when the switch is off or no scratch can be had (a capture
 * beyond the fixed one). */
fi_err fi_cuda_xq_claim(struct fi_cuda *c, const void *x, int T, int K, void **codes,
			float **scales);
/* The n parts of one fi_cuda_qweight_cat weight over the same input, T > 4 tokens: one
 * product into c->multi_ws [T, sum N]. d->out is set where the scales ws[sum N] xs[T] are
 * left to the caller (the unit-scale route), NULL where applied. FI_EUNSUPPORTED (not
 * recorded) where w are not such parts or [T, sum N] does not fit multi_ws. */
fi_err fi_cuda_qgemm_cat(struct fi_backend *be, int n, const void *in_d,
			 const struct fi_weight *const *w, int T, struct fi_fp8_deferred *d);
/* n products over the same input (q, k, v; gate, up), quantized weights or not, the W8A8
 * input rounding done once for all; parts of one fi_cuda_qweight_cat weight without biases
 * as one product and a split that applies the scales. defer (NULL, or n entries): where the
 * caller applies the unit-scale products' scales itself (fi_cuda_matmul_glu: the gated
 * activation as it reads gate and up, so they are not read and written once more). */
fi_err fi_cuda_qgemm_multi(struct fi_backend *be, int n, void *const *out_d, const void *in_d,
			   const struct fi_weight *const *w, const struct fi_weight *const *bias,
			   int T, struct fi_fp8_deferred *defer);
/* BitNet decode (T <= 4): out_i (+)= W2A8 products of the n <= 4 weights w_i with the RMSNorm
 * (norm_d, bf16 [K]) of in, or of relu(in)^2 * up when up_d is given, in one launch
 * (fi_cu_gemv_tq2x); FI_EUNSUPPORTED, not recorded, when they are not such weights or the
 * shapes do not fit. */
fi_err fi_cuda_tq2_norm_products(struct fi_backend *be, int n, void *const *out_d,
				  const void *in_d, const void *up_d, const void *norm_d,
				  float eps, const struct fi_weight *const *w, int add, int T);
/* W8A8 input of the FP8 weight w: e4m3 codes and scales of in[T, w->cols], or of its RMSNorm
 * with weight norm_d when given, in the product scratch (valid until the next product). */
fi_err fi_cuda_qcodes(struct fi_backend *be, const struct fi_weight *w, const void *in_d,
		      const void *norm_d, float eps, int T, const void **codes,
		      const float **scales);
/* x[T,D] = rows tok[t] of a quantized embedding. */
fi_err fi_cuda_qembed(struct fi_backend *be, void *x_d, const struct fi_weight *emb,
		      const int32_t *tok_d, int T);
void fi_cuda_qweight_free(struct fi_cuda *c);
/* lib/backend/cuda/gemm_fp8.c: D[T,N] (bf16) = xq[T,K] wq[N,K]^T with e4m3 operands and
 * their scales (per row and per token, or 128x128 blocks and per token and 128 columns);
 * FI_EUNSUPPORTED (not recorded) when cuBLASLt has no kernel for it. defer (or NULL): where
 * the unit-scale route (FI_FP8_UNIT) leaves its scales to the caller instead of applying
 * them; its out stays NULL otherwise. */
fi_err fi_cuda_gemm_fp8(struct fi_cuda *c, void *out_d, const void *wq, const float *ws,
			const void *xq, const float *xs, int kind, int N, int K, int T,
			struct fi_fp8_deferred *defer);
void fi_cuda_gemm_fp8_free(struct fi_cuda *c);

/* A quantized weight as the kernels read it (qweight.c fills it from a fi_weight). */
enum { FI_CQ_INT4 = 1, FI_CQ_I8, FI_CQ_FP8, FI_CQ_Q4K, FI_CQ_Q5K, FI_CQ_Q6K, FI_CQ_TQ2 };
struct fi_cu_qw {
	int type, kind, group; /* kind: FP8 FI_Q8_ROW or FI_Q8_B128 */
	int64_t rows, cols, row_bytes;
	const uint8_t *q;      /* values or GGML blocks, row_bytes per row */
	const void *scale;     /* f16 (INT4, I8, Q6K d) or f32 (FP8) */
	const uint8_t *zero;   /* INT4 zero points */
	const int32_t *perm;   /* INT4 act-order: stored column j is input column perm[j] */
};
/* The device view of a quantized weight (kernels read it). */
struct fi_cu_qw fi_cuda_qw(const struct fi_weight *w);
/* kernels/gemv_q.cu: out[T,N] = x[T,K] W^T (+ bias) for T <= 4. x is bf16, or (xq) e4m3
 * codes with f32 scales per token (aq FI_AQ_TOKEN) or per token and 128 columns
 * (FI_AQ_GROUP). An INT4 weight with perm takes x already permuted. FI_EUNSUPPORTED (not
 * recorded) for shapes it does not take. */
fi_err fi_cu_gemv_q(cudaStream_t st, void *out, int out_f32, const struct fi_cu_qw *w,
		    const void *x, const void *xq, const float *xs, int aq, const void *bias, int T);
/* One-token products in half2 arithmetic (kernels/gemv_half.cuh), out[n][N] = x[K] W[n]^T
 * (+ bias[n]) over n <= 4 weights of one type and width that share x (q, k, v; gate, up) in
 * one launch; out_f32 only with n = 1; FI_EUNSUPPORTED (not recorded) for what a kernel does
 * not take (K > 32768, ...). kernels/gemv_q4h.cu: INT4 with groups of 32 x 2^k (act-order
 * only alone, x already permuted). kernels/gemv_q4kh.cu: GGUF Q4_K. kernels/gemv_f8h.cu: FP8
 * per-row or 128 x 128 block scales, x bf16 (aq 0) or, with FI_AQ_TOKEN, e4m3 codes xq with
 * scale xs, or (xq NULL) bf16 x each block rounds to act_quant's codes itself. opts:
 * FI_CU_HALF_STAY, at most three blocks an SM, each taking several of the launch's row blocks
 * (FI_HALF_STAY); FI_CU_HALF_STAGE1, x staged in one pass (FI_HALF_STAGE); FI_CU_HALF_AHEAD,
 * gemv_q4m's row blocks' first loads issued early (FI_HALF_AHEAD); FI_CU_HALF_BALANCE,
 * slices chosen to fill the rounds of row blocks (FI_HALF_BALANCE). */
enum {
	FI_CU_HALF_STAY = 1,
	FI_CU_HALF_STAGE1 = 2,
	FI_CU_HALF_AHEAD = 4,
	FI_CU_HALF_BALANCE = 8
};
fi_err fi_cu_gemv_q4h_parts(cudaStream_t st, int n, void *const *out, int out_f32,
			    const struct fi_cu_qw *w, const void *x, const void *const *bias,
			    int opts);
/* kernels/gemv_q4m.cu: the INT4 product on the tensor cores (mma.sync, 16 rows a warp), groups
 * of a multiple of 128 columns and K % 128 == 0; FI_EUNSUPPORTED otherwise (FI_INT4_MMA). */
fi_err fi_cu_gemv_q4m_parts(cudaStream_t st, int n, void *const *out, int out_f32,
			    const struct fi_cu_qw *w, const void *x, const void *const *bias,
			    int opts);
fi_err fi_cu_gemv_q4kh_parts(cudaStream_t st, int n, void *const *out, int out_f32,
			     const struct fi_cu_qw *w, const void *x, const void *const *bias,
			     int opts);
fi_err fi_cu_gemv_f8h_parts(cudaStream_t st, int n, void *const *out, int out_f32,
			    const struct fi_cu_qw *w, const void *x, const void *xq,
			    const float *xs, int aq, const void *const *bias, int opts);
/* kernels/dequant.cu: out[n, K] (bf16) = rows of w, rows[i] (or i when rows is NULL),
 * columns in input order. */
fi_err fi_cu_dequant(cudaStream_t st, void *out, const struct fi_cu_qw *w, const int32_t *rows,
		     int n);
/* kernels/act_quant.cu: the W8A8 input rounding (base/quant.h) of x[T,K] (bf16), or with g
 * of its RMSNorm (weight g [K], rounded to bf16 as kernels/rmsnorm.cu stores it): codes
 * (e4m3 [T,K]) and scales (f32 [T] or [T, ceil(K/128)]); or (round) the rounded values of
 * x back in bf16. */
fi_err fi_cu_act_quant(cudaStream_t st, void *codes, float *scales, const void *x,
		       const void *g, float eps, int T, int K, int aq);
fi_err fi_cu_act_round(cudaStream_t st, void *out, const void *x, int T, int K, int aq);
/* BitNet (TQ2 weights, FI_AQ_I8 inputs): kernels/act_quant_i8.cu quantizes x[T,K] (bf16)
 * to int8 codes with inv[T] = 1/s and qsum[T], or rounds it in bf16; kernels/gemv_tq2.cu
 * is the decode product for T <= 4 (FI_EUNSUPPORTED, not recorded, otherwise);
 * kernels/dequant_tq2.cu gives the bf16 weight for prompts; kernels/relu2_mul.cu the GLU. */
fi_err fi_cu_act_quant_i8(cudaStream_t st, int8_t *codes, float *inv, int32_t *qsum,
			  const void *x, int T, int K);
fi_err fi_cu_act_round_i8(cudaStream_t st, void *out, const void *x, int T, int K);
fi_err fi_cu_gemv_tq2(cudaStream_t st, void *out, int out_f32, const void *q, const float *scale,
		      const int8_t *x, const float *inv, const int32_t *qsum, int N, int K, int T);
/* The decode products (T <= 4) of n <= 4 TQ2 weights [N[i], K] over one bf16 input x[T,K],
 * quantized inside the launch: bf16 out[i][T, N[i]] (FI_EUNSUPPORTED, not recorded, when the
 * shapes do not fit: K % 128, K <= 8192, 16-byte alignment). With norm [K] the input is first
 * the RMSNorm of x, with up [T,K] too that of relu(x)^2 * up, each rounded to bf16 as the
 * separate kernels store it. add: out[i] += the product, rounded to bf16 first. */
fi_err fi_cu_gemv_tq2x(cudaStream_t st, int n, void *const *out, const void *const *q,
		       const float *const *scale, const int *N, const void *x, const void *up,
		       const void *norm, float eps, int add, int K, int T);
fi_err fi_cu_dequant_tq2(cudaStream_t st, void *out, const void *q, const float *scale, int64_t N,
			 int K);
fi_err fi_cu_relu2_mul(cudaStream_t st, void *out, const void *gate, const void *up, int T, int F);
/* out[T,K] = x[T, perm[k]] (bf16), for act-order INT4 weights. */
fi_err fi_cu_permute_cols(cudaStream_t st, void *out, const void *x, const int32_t *perm, int T,
			  int K);

/* lib/backend/cuda/upload.c */
fi_err fi_cuda_upload_init(struct fi_cuda *c);
void fi_cuda_upload_free(struct fi_cuda *c);
/* Copies n elements of src (dtype sdt, host) to dst_d as bf16 through pinned staging. */
fi_err fi_cuda_upload_bf16(struct fi_cuda *c, void *dst_d, const void *src, enum fi_dtype sdt,
			   size_t n);
/* Synchronous device-to-host copy through the pinned buffers (large transfers). */
fi_err fi_cuda_download_big(struct fi_cuda *c, void *dst, const void *src_d, size_t bytes);

/* Launchers in kernels/NAME.cu; all asynchronous on stream st. bf16 tensors are passed as void *. */
fi_err fi_cu_embed(cudaStream_t st, void *x, const void *emb, int64_t V, const int32_t *tok,
		   int T, int D);
fi_err fi_cu_rmsnorm(cudaStream_t st, void *out, void *x, const void *add, const void *w,
		     int T, int D, float eps);
/* The same, also writing out's W8A8 token codes [T, D] and scales [T] as fi_cu_act_quant
 * makes them (FI_FP8_FOLD); FI_EUNSUPPORTED (not recorded) where the one-read path does not
 * apply (D % 8, D > 32768, alignment; codes 8-byte aligned). */
fi_err fi_cu_rmsnorm_q(cudaStream_t st, void *out, void *x, const void *add, const void *w,
		       int T, int D, float eps, void *codes, float *scales);
/* x[T,D] += rmsnorm(y; w, eps) (kernels/rmsnorm.cu; without w, fi_cu_add). */
fi_err fi_cu_add_norm(cudaStream_t st, void *x, const void *y, const void *w, int T, int D,
		      float eps);
fi_err fi_cu_rope(cudaStream_t st, void *q, void *k, const int32_t *pos, const float *inv_freq,
		  int T, int Hq, int Hk, int hd);
/* rope, then the rotated k and v written to the cache at slot[t] (one launch); qn and kn
 * (both or neither): bf16 [hd] weights of an RMSNorm over each q and k head, applied first. */
fi_err fi_cu_rope_kv(cudaStream_t st, void *q, void *k, const void *v, void *kc, void *vc,
		     const int32_t *pos, const int32_t *slot, const float *inv_freq,
		     const void *qn, const void *kn, float eps, int T, int Hq, int Hk, int hd,
		     int64_t n_slots);
fi_err fi_cu_kv_write(cudaStream_t st, void *kc, void *vc, const void *k, const void *v,
		      const int32_t *slot, int T, int row, int64_t n_slots);
fi_err fi_cu_silu_mul(cudaStream_t st, void *out, const void *gate, const void *up, int T, int F);
/* The same over unit-scale W8A8 products: gate[t, f] x wg[f] xs[t] and up[t, f] x wu[f] xs[t]
 * each rounded to bf16 first, as fi_cu_scale_outer leaves them. gate and up rows are ld
 * values apart (F, or 2F for the halves of one joined product); out is [T, F]. */
fi_err fi_cu_silu_mul_scaled(cudaStream_t st, void *out, const void *gate, const void *up,
			     const float *wg, const float *wu, const float *xs, int T, int F,
			     int64_t ld);
/* The same, also writing out's W8A8 token codes [T, F] and scales [T] as fi_cu_act_quant
 * makes them (FI_FP8_FOLD: the down product's input); FI_EUNSUPPORTED (not recorded) unless
 * F and ld are multiples of 8, out, gate and up 16-byte and codes 8-byte aligned. */
fi_err fi_cu_silu_mul_scaled_q(cudaStream_t st, void *out, const void *gate, const void *up,
			       const float *wg, const float *wu, const float *xs, int T, int F,
			       int64_t ld, void *codes, float *scales);
/* out[T,F] = silu(gu[:, :F]) * gu[:, F:] for the fused gate/up output gu [T, 2F]. */
fi_err fi_cu_silu_mul_cat(cudaStream_t st, void *out, const void *gu, int T, int F);
fi_err fi_cu_gather_rows(cudaStream_t st, void *out, const void *x, const int32_t *idx, int n,
			 int D);
/* out[T,N] = x[T,K] w[N,K]^T (+ bias) for T <= 4; FI_EUNSUPPORTED (not recorded) otherwise. */
fi_err fi_cu_gemv(cudaStream_t st, void *out, int out_f32, const void *x, const void *w,
		  const void *bias, int T, int N, int K);
/* Up to 4 weights [N_i,K] over the same x[T,K] (T <= 4), bf16 outputs; FI_EUNSUPPORTED (not
 * recorded) when a layout needs the general path. */
fi_err fi_cu_gemv_multi(cudaStream_t st, int n, void *const *out, const void *x,
			const void *const *w, const void *const *bias, const int *N, int T, int K);
/* out[T,F] = silu(x wg^T) * (x wu^T) for T <= 4 (bf16 roundings of matmul + silu_mul);
 * FI_EUNSUPPORTED (not recorded) otherwise. */
fi_err fi_cu_gemv_glu(cudaStream_t st, void *out, const void *x, const void *wg, const void *wu,
		      int T, int F, int K);
/* Decode products with their neighbours folded in (kernels/gemv_fused.cu), T <= 4:
 *   STORE  out[T,N] = norm(x) W^T            (bf16, or f32 with out_f32)
 *   ADD    out[T,N] += x W^T                  (the residual stream, in place)
 *   GLU    out[T,N] = act(norm(x) Wg^T) * (norm(x) Wu^T)      w = {gate, up}, act silu or
 *          tanh GELU
 *   ROPE   q = norm(x) Wq^T (+bq) rotated -> out [T,N]; k, v likewise (k rotated) written
 *          to kc/vc [n_slots, Nk] at slot[t] (negative: not written)     w = {q, k, v}
 * norm(x) = x / sqrt(mean(x^2) + eps) * g when g is set, else x.
 * FI_EUNSUPPORTED (not recorded) for what it cannot take. */
enum { FI_FG_STORE, FI_FG_ADD, FI_FG_GLU, FI_FG_ROPE };
/* What the ROPE products rotate by and write to: each token's position and slot [T], the
 * frequencies [hd/2], one layer's caches kc/vc [n_slots, Nk], the head size. */
struct fi_cu_rope_out {
	const int32_t *pos, *slot;
	const float *inv_freq;
	void *kc, *vc;
	int64_t n_slots;
	int hd;
};
struct fi_cu_fgemv {
	int epi, out_f32;
	int act; /* GLU: 0 silu, 1 tanh GELU (enum fi_glu_act) */
	const void *w[3], *bias[3];
	const void *x, *g;
	float eps;
	void *out;
	int N, Nk, K; /* N rows (ROPE: Hq*hd), Nk = Hk*hd (ROPE) */
	struct fi_cu_rope_out ro;
};
fi_err fi_cu_fgemv(cudaStream_t st, const struct fi_cu_fgemv *a, int T);
/* kernels/gemv_tq2.cu: norm_qkv_rope for TQ2 q, k, v [N[i], K] (BitNet decode, T <= 4): the
 * RMSNorm of x (weight norm), quantized inside the launch, the three products, RoPE and the
 * cache writes of ro, q to q_out [T, N[0]]. FI_EUNSUPPORTED, not recorded, when the shapes
 * do not fit. */
fi_err fi_cu_gemv_tq2x_rope(cudaStream_t st, void *q_out, const void *const *q,
			    const float *const *scale, const int *N, const void *x,
			    const void *norm, float eps, const struct fi_cu_rope_out *ro, int K,
			    int T);
/* kernels/gemv_qfused.cu: the same products (FI_FG_ADD, FI_FG_GLU, FI_FG_ROPE) for quantized
 * weights of every type but TQ2 (no act-order INT4; gate and up of one type). x is bf16,
 * with the norm g for GLU and ROPE, none for ADD; or (aq, FP8 W8A8) e4m3 codes xq and scales
 * xs of the already normalised input (kernels/act_quant.cu). FI_EUNSUPPORTED, not recorded,
 * for what it cannot take. */
struct fi_cu_qfgemv {
	int epi, aq;
	int act; /* GLU: 0 silu, 1 tanh GELU (enum fi_glu_act) */
	struct fi_cu_qw w[3];
	const void *bias[3];
	const void *x, *g, *xq;
	const float *xs;
	float eps;
	void *out;
	int N, Nk, K;
	struct fi_cu_rope_out ro;
};
fi_err fi_cu_qfgemv(cudaStream_t st, const struct fi_cu_qfgemv *a, int T);
/* The backend ops of the same names (lib/backend/cuda/fused.c). */
fi_err fi_cuda_norm_qkv_rope(struct fi_backend *be, void *q_d, const void *x_d,
			     const struct fi_weight *norm, float eps,
			     const struct fi_weight *const *w3, const struct fi_weight *const *b3,
			     const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
			     const struct fi_attn_batch *b);
fi_err fi_cuda_matmul_add(struct fi_backend *be, void *x_d, const void *in_d,
			  const struct fi_weight *w, int T);
fi_err fi_cuda_norm_glu(struct fi_backend *be, void *out_d, const void *x_d,
			const struct fi_weight *norm, float eps, const struct fi_weight *gate,
			const struct fi_weight *up, enum fi_glu_act act, int T);
/* out_i[T,N_i] = columns of ws[T, sum N] (bf16), parts in order. */
fi_err fi_cu_split(cudaStream_t st, int n, void *const *out, const void *ws, const int *N, int T);
/* The same, each value times sc[column] xs[t] and rounded to bf16 (fi_cu_scale_outer's
 * product) where sc is not NULL: a joined unit-scale W8A8 product's scales (sc [sum N]). */
fi_err fi_cu_split_scaled(cudaStream_t st, int n, void *const *out, const void *ws,
			  const int *N, int T, const float *sc, const float *xs);
/* ws (n x 32 float2) and cnt (n counters, zero, left zero) are scratch for one row over many
 * blocks; NULL: one block a row. */
fi_err fi_cu_argmax(cudaStream_t st, int32_t *tok, const float *logits, int n, int V, void *ws,
		    size_t ws_bytes, int *cnt, int cnt_n);
/* The sample op (backend.h); smem_optin: the shared memory a block may use (the penalty's
 * bitmap of the vocabulary must fit). */
fi_err fi_cu_sample(cudaStream_t st, const struct fi_sample_args *a, size_t smem_optin);

/* ---- model families (lib/backend/cuda/family.c, arch.h) ---- */
fi_err fi_cuda_scale(struct fi_backend *be, void *x_d, int64_t n, float s);
fi_err fi_cuda_relu2_mul(struct fi_backend *be, void *out_d, const void *gate_d,
			 const void *up_d, int T, int F);
fi_err fi_cuda_norm_matmul(struct fi_backend *be, int n, void *const *out_d, const void *in_d,
			   const void *up_d, void *tmp_d, const struct fi_weight *norm, float eps,
			   const struct fi_weight *const *w, int add, int T);
fi_err fi_cuda_gelu_mul(struct fi_backend *be, void *out_d, const void *gate_d, const void *up_d,
			int T, int F);
fi_err fi_cuda_softcap(struct fi_backend *be, float *x_d, int64_t n, float cap);
fi_err fi_cuda_moe(struct fi_backend *be, void *out_d, const void *in_d, const float *router_d,
		   const struct fi_moe *moe, int T);
/* Random weights (backend.h): n elements of tensor t drawn into dst_d as bf16. */
fi_err fi_cuda_random_weight(struct fi_cuda *c, void *dst_d, const struct fi_tensor *t, uint64_t seed);
void fi_cuda_family_free(struct fi_cuda *c);
fi_err fi_cu_scale(cudaStream_t st, void *x, int64_t n, float s);
/* out[t, n] *= ws[n] * xs[t], bf16 out [T, N] (a W8A8 product's scales after its GEMM). */
fi_err fi_cu_scale_outer(cudaStream_t st, void *out, const float *ws, const float *xs, int T,
			 int N);
/* x[n] += y[n], bf16. */
fi_err fi_cu_add(cudaStream_t st, void *x, const void *y, int64_t n);
fi_err fi_cu_gelu_mul(cudaStream_t st, void *out, const void *gate, const void *up, int T, int F);
fi_err fi_cu_softcap(cudaStream_t st, float *x, int64_t n, float cap);
fi_err fi_cu_random_fill(cudaStream_t st, void *out, uint64_t hash, int64_t n, int64_t cols,
			 int ndim);
/* kernels/moe.cu: the stages of the moe op over one set of buffers. */
struct fi_cu_moe {
	const void *x;        /* [T, D] bf16 input */
	const float *router;  /* [T, E] f32 logits */
	void *out;            /* [T, D] bf16 */
	const void *wg, *wu, *wd; /* [E*Fm, D], [E*Fm, D], [E*D, Fm] bf16 */
	int T, E, k, Fm, D, norm, act; /* act: 0 silu, 1 gelu_tanh */
	int one; /* T = 1 (no expert has two pairs): the rows kernels' one-pair form */
	int32_t *idx, *cnt, *off, *cur, *order, *pos_of; /* [T k], [E], [E+1], [E], [T k], [T k] */
	int32_t *chosen;      /* [E+1]: chosen[0] experts with pairs, chosen[1..] those experts */
	float *wgt;           /* [T k] */
	void *h;              /* [T k, Fm] bf16, pairs sorted by expert */
	void *yd;             /* [T k, D] bf16 */
};
fi_err fi_cu_moe_route(cudaStream_t st, const struct fi_cu_moe *a);
fi_err fi_cu_moe_experts(cudaStream_t st, const struct fi_cu_moe *a);
fi_err fi_cu_moe_gather(cudaStream_t st, const struct fi_cu_moe *a, void *xs);
fi_err fi_cu_moe_combine(cudaStream_t st, const struct fi_cu_moe *a);

/* Everything attention needs besides the batch; kc/vc point at one layer. */
struct fi_cu_attn {
	void *out;
	const void *q, *kc, *vc;
	int Hq, Hk, hd, block_size, n_blocks;
	int n_sm;
	void *ws;
	size_t ws_bytes;
	int *cnt;  /* [cnt_n] zeroed split counters (decode merges in its last CTA), or NULL */
	int cnt_n;
	int layer; /* the planned path makes its work list at layer 0 and reuses it after */
	struct fi_cu_plan_key *plan; /* what ws holds, or NULL: a list made at every call */
};
fi_err fi_cu_attn_decode(cudaStream_t st, const struct fi_cu_attn *a,
			 const struct fi_attn_batch *b);
/* Returns FI_EUNSUPPORTED (without recording an error) when the head size has no
 * tensor-core kernel; the caller then uses the decode kernel. */
fi_err fi_cu_attn_prefill(cudaStream_t st, const struct fi_cu_attn *a,
			  const struct fi_attn_batch *b);

#ifdef __cplusplus
}
#endif

#endif
