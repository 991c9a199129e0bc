/* qweight: quantized weights on the GPU (see cuda_be.h): upload with the re-layouts, the
 * product (weight-streaming GEMV for decode, cuBLASLt FP8 GEMM for W8A8 prompts,
 * dequantize + bf16 GEMM for the rest) and quantized embeddings.
 *
 * Device layouts (offsets from w->p, each section 256-byte aligned):
 *   INT4       as stored (base/quant.h): header, nibbles, f16 scales, u8 zeros, perm
 *   Q4_0       INT4 with group 32: nibbles [N, K/2], f16 d as scale, zero 8
 *   Q8_0       int8 [N, K], f16 d [N, K/32]
 *   FP8        as stored: header, e4m3 [N, K], f32 scales
 *   Q4_K, Q5_K as stored: 144- and 176-byte blocks
 *   Q6_K       208-byte blocks (ql, qh, scales), f16 d [N, K/256]
 * Every kernel reads 32 columns at a time from 16-byte aligned addresses, so K must be a
 * multiple of 32 (of the block for GGML types); other widths are refused at load. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/settings.h"
#include "cuda_be.h"

#define ALIGN256(x) (((x) + 255) & ~(uint64_t)255)
/* Products captured in graphs have at most this many tokens. It was 256 while the model
 * captured steps of up to 512 rows: a W8A8 model's serving steps of 257-512 rows then failed
 * at their capture ("quantized product of 512 tokens during graph capture"). */
#define XQ_GRAPH_T FI_GRAPH_MAX_T

static int dev_type(enum fi_dtype dt)
{
	switch (dt) {
	case FI_DT_INT4:
	case FI_DT_Q4_0: return FI_CQ_INT4;
	case FI_DT_Q8_0: return FI_CQ_I8;
	case FI_DT_FP8: return FI_CQ_FP8;
	case FI_DT_Q4_K: return FI_CQ_Q4K;
	case FI_DT_Q5_K: return FI_CQ_Q5K;
	case FI_DT_Q6_K: return FI_CQ_Q6K;
	case FI_DT_TQ2: return FI_CQ_TQ2;
	default: return 0;
	}
}

struct fi_cu_qw fi_cuda_qw(const struct fi_weight *w)
{
	const uint8_t *b = w->p;
	struct fi_cu_qw q = {0};
	int64_t K = w->cols;
	q.type = dev_type(w->dtype);
	q.kind = w->q.kind;
	q.group = w->q.group;
	q.rows = w->rows;
	q.cols = K;
	q.q = b + w->q.off_q;
	q.scale = b + w->q.off_scale;
	q.zero = b + w->q.off_zero;
	q.perm = w->q.perm ? (const int32_t *)(b + w->q.off_perm) : NULL;
	switch (q.type) {
	case FI_CQ_INT4: q.row_bytes = K / 2; break;
	case FI_CQ_I8:
	case FI_CQ_FP8: q.row_bytes = K; break;
	case FI_CQ_Q4K: q.row_bytes = K / 256 * 144; break;
	case FI_CQ_Q5K: q.row_bytes = K / 256 * 176; break;
	case FI_CQ_TQ2: q.row_bytes = K / 4; break;
	default: q.row_bytes = K / 256 * 208; break;
	}
	return q;
}

/* The device image of a GGML type that is re-laid (Q4_0, Q8_0, Q6_K); l gets its offsets. */
static uint8_t *relay(const struct fi_qlayout *src, const uint8_t *s, struct fi_qlayout *l)
{
	int64_t N = src->rows, K = src->cols, nb = K / src->block;
	uint64_t qb, sb = 0, zb = 0;
	uint8_t *o;
	*l = *src;
	l->off_q = 0;
	switch (src->dtype) {
	case FI_DT_Q4_0: qb = (uint64_t)(N * K / 2), sb = (uint64_t)(N * nb) * 2, zb = (uint64_t)(N * nb); break;
	case FI_DT_Q8_0: qb = (uint64_t)(N * K), sb = (uint64_t)(N * nb) * 2; break;
	default: qb = (uint64_t)(N * nb) * 208, sb = (uint64_t)(N * nb) * 2; break;
	}
	l->off_scale = ALIGN256(qb);
	l->off_zero = ALIGN256(l->off_scale + sb);
	l->nbytes = l->off_zero + zb;
	l->group = 32;
	l->perm = 0;
	if (!(o = calloc(1, l->nbytes)))
		return NULL;
	for (int64_t n = 0; n < N; n++)
		for (int64_t b = 0; b < nb; b++) {
			const uint8_t *blk = s + (uint64_t)(n * nb + b) * (uint64_t)src->block_bytes;
			uint64_t i = (uint64_t)(n * nb + b);
			if (src->dtype == FI_DT_Q4_0) { /* d, 16 bytes: q[j] low nibble, q[j+16] high */
				uint8_t *q = o + (uint64_t)(n * K / 2) + (uint64_t)b * 16;
				for (int j = 0; j < 16; j += 1) {
					int lo = j * 2, hi = j * 2 + 1; /* columns 2j, 2j+1 of the block */
					int vlo = lo < 16 ? blk[2 + lo] & 0xF : blk[2 + lo - 16] >> 4;
					int vhi = hi < 16 ? blk[2 + hi] & 0xF : blk[2 + hi - 16] >> 4;
					q[j] = (uint8_t)(vlo | vhi << 4);
				}
				memcpy(o + l->off_scale + 2 * i, blk, 2);
				o[l->off_zero + i] = 8;
			} else if (src->dtype == FI_DT_Q8_0) {
				memcpy(o + (uint64_t)(n * K) + (uint64_t)b * 32, blk + 2, 32);
				memcpy(o + l->off_scale + 2 * i, blk, 2);
			} else { /* Q6_K: ql, qh, scales, then d */
				memcpy(o + i * 208, blk, 208);
				memcpy(o + l->off_scale + 2 * i, blk + 208, 2);
			}
		}
	return o;
}

/* Scratch the products need, grown at load so that nothing allocates in graph capture. */
static fi_err grow(void **p, size_t *have, size_t need)
{
	if (need <= *have)
		return FI_OK;
	if (*p)
		cudaFree(*p);
	*p = NULL;
	*have = 0;
	CU_CHECK(cudaMalloc(p, need));
	*have = need;
	return FI_OK;
}

static size_t xq_need(int T, int K)
{
	/* codes or bf16 x: 2 T K bytes; then f32 scales, T ceil(K/128) */
	return ALIGN256((size_t)T * (size_t)K * 2) + (size_t)T * (size_t)((K + 127) / 128) * 4;
}

/* A quantized weight of rows x cols taking nbytes of device memory is loaded: its bytes
 * counted, and the scratch for its products grown at any batch a graph may capture. */
static fi_err loaded(struct fi_cuda *c, int64_t rows, int64_t cols, int aq, uint64_t nbytes)
{
	size_t d = (size_t)(rows * cols) * 2;
	fi_err e;
	c->weight_bytes += nbytes;
	c->w8a8_token |= aq == FI_AQ_TOKEN;
	if (d > c->deq_need)
		c->deq_need = d;
	if (cols > c->xq_K)
		c->xq_K = (int)cols;
	if ((e = grow(&c->deq, &c->deq_bytes, c->deq_need)) ||
	    (e = grow(&c->xq, &c->xq_bytes, xq_need(XQ_GRAPH_T, c->xq_K))))
		return fi_fail_ctx(e, "cuda: scratch for quantized products");
	return FI_OK;
}

fi_err fi_cuda_qweight(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *out)
{
	struct fi_cuda *c = fi_cuda_of(be);
	const char *nm = t->name ? t->name : "?";
	struct fi_qlayout l, dl;
	uint8_t *relaid = NULL;
	const uint8_t *src = t->data;
	fi_err e;
	memset(out, 0, sizeof(*out));
	if (t->ndim != 2)
		return fi_fail(FI_EUNSUPPORTED, "cuda: tensor '%s': a %s weight must have 2 dimensions",
			       nm, fi_dtype_name(t->dtype));
	if ((e = fi_quant_layout(t->dtype, t->shape[0], t->shape[1], t->data, t->nbytes, &l)))
		return fi_fail_ctx(e, "cuda: tensor '%s'", nm);
	if (l.cols % 32 || l.cols > INT32_MAX || l.rows > INT32_MAX)
		return fi_fail(FI_EUNSUPPORTED, "cuda: tensor '%s': %s weight of %lld columns (the GPU "
			       "kernels take multiples of 32)", nm, fi_dtype_name(t->dtype),
			       (long long)l.cols);
	dl = l;
	if (t->dtype == FI_DT_Q4_0 || t->dtype == FI_DT_Q8_0 || t->dtype == FI_DT_Q6_K) {
		if (!(relaid = relay(&l, src, &dl)))
			return fi_fail(FI_ENOMEM, "cuda: tensor '%s'", nm);
		src = relaid;
	}
	e = FI_OK;
	if (cudaMalloc(&out->p, dl.nbytes) != cudaSuccess) {
		cudaGetLastError();
		out->p = NULL;
		e = fi_fail(FI_EDEVICE, "cuda: out of GPU memory for tensor '%s' (%llu bytes)", nm,
			    (unsigned long long)dl.nbytes);
	} else if (cudaMemcpy(out->p, src, dl.nbytes, cudaMemcpyHostToDevice) != cudaSuccess) {
		e = fi_fail(FI_EDEVICE, "cuda: tensor '%s': copy failed: %s", nm,
			    cudaGetErrorString(cudaGetLastError()));
	}
	free(relaid);
	if (e) {
		cudaFree(out->p);
		memset(out, 0, sizeof(*out));
		return e;
	}
	out->dtype = t->dtype;
	out->rows = l.rows;
	out->cols = l.cols;
	out->aq = l.aq;
	out->q = dl;
	return loaded(c, l.rows, l.cols, l.aq, dl.nbytes);
}

/* FP8 weights with a scale per row (q, k, v; gate, up) in one allocation: e4m3 [sum N, K],
 * then the f32 scales [sum N] in the same order, so that a W8A8 step of more than 4 tokens
 * runs one FP8 GEMM over all of them (fi_cuda_qgemm_cat) instead of one each: at 512 rows of
 * the 8B shape the k and v GEMMs alone ran at ~0.38 PFLOP/s (64 x 64 tiles), and each output
 * took its own scale pass. parts[i] are views (their offsets into cat->p). FI_EUNSUPPORTED,
 * not recorded, for anything else: the caller loads the tensors one by one. */
fi_err fi_cuda_qweight_cat(struct fi_backend *be, const struct fi_tensor *const *t, int n,
			   struct fi_weight *cat, struct fi_weight *parts)
{
	struct fi_cuda *c = fi_cuda_of(be);
	struct fi_qlayout l[4];
	int64_t rows = 0, K = 0, r0 = 0;
	uint64_t off_s;
	memset(cat, 0, sizeof(*cat));
	if (n < 2 || n > 4)
		return FI_EUNSUPPORTED;
	for (int i = 0; i < n; i++) {
		if (t[i]->dtype != FI_DT_FP8 || t[i]->ndim != 2 || !t[i]->data ||
		    fi_quant_layout(t[i]->dtype, t[i]->shape[0], t[i]->shape[1], t[i]->data,
				    t[i]->nbytes, &l[i]) != FI_OK)
			return FI_EUNSUPPORTED; /* fi_cuda_qweight names what is wrong */
		if (l[i].kind != FI_Q8_ROW || l[i].aq != l[0].aq || l[i].cols != l[0].cols ||
		    l[i].cols % 32 || l[i].cols > INT32_MAX)
			return FI_EUNSUPPORTED;
		rows += l[i].rows;
		K = l[i].cols;
	}
	if (rows > INT32_MAX)
		return FI_EUNSUPPORTED;
	off_s = ALIGN256((uint64_t)(rows * K));
	cat->q = l[0];
	cat->q.rows = rows;
	cat->q.off_q = 0;
	cat->q.off_scale = off_s;
	cat->q.off_zero = cat->q.off_perm = 0;
	cat->q.nbytes = off_s + (uint64_t)rows * 4;
	if (cudaMalloc(&cat->p, cat->q.nbytes) != cudaSuccess) {
		cudaGetLastError();
		cat->p = NULL;
		return fi_fail(FI_EDEVICE, "cuda: out of GPU memory for tensor '%s' and %d more "
			       "(%llu bytes)", t[0]->name ? t[0]->name : "?", n - 1,
			       (unsigned long long)cat->q.nbytes);
	}
	for (int i = 0; i < n; i++) {
		const uint8_t *src = t[i]->data;
		uint8_t *dst = cat->p;
		if (cudaMemcpy(dst + r0 * K, src + l[i].off_q, (size_t)(l[i].rows * K),
			       cudaMemcpyHostToDevice) != cudaSuccess ||
		    cudaMemcpy(dst + off_s + (uint64_t)r0 * 4, src + l[i].off_scale,
			       (size_t)l[i].rows * 4, cudaMemcpyHostToDevice) != cudaSuccess) {
			cudaFree(cat->p);
			memset(cat, 0, sizeof(*cat));
			return fi_fail(FI_EDEVICE, "cuda: tensor '%s': copy failed: %s",
				       t[i]->name ? t[i]->name : "?",
				       cudaGetErrorString(cudaGetLastError()));
		}
		parts[i] = (struct fi_weight){.p = cat->p, .dtype = FI_DT_FP8, .rows = l[i].rows,
					      .cols = K, .aq = l[i].aq, .q = cat->q};
		parts[i].q.rows = l[i].rows;
		parts[i].q.off_q = (uint64_t)(r0 * K);
		parts[i].q.off_scale = off_s + (uint64_t)r0 * 4;
		parts[i].q.nbytes = 0; /* a view: cat owns the memory */
		r0 += l[i].rows;
	}
	cat->dtype = FI_DT_FP8;
	cat->rows = rows;
	cat->cols = K;
	cat->aq = l[0].aq;
	return loaded(c, rows, K, cat->aq, cat->q.nbytes);
}

void fi_cuda_qweight_free(struct fi_cuda *c)
{
	cudaFree(c->deq);
	cudaFree(c->xq);
	cudaFree(c->xq_big);
	c->deq = c->xq = c->xq_big = NULL;
	c->deq_bytes = c->xq_bytes = c->xq_big_bytes = 0;
	fi_cuda_gemm_fp8_free(c);
}

/* x scratch for T tokens of K columns. Batches a graph may capture use xq, which never
 * moves once the weights are loaded (a graph keeps its address); larger ones (prompts,
 * never captured) use xq_big, grown as needed. */
static fi_err xq_for(struct fi_cuda *c, int T, int K, uint8_t **out)
{
	size_t need = xq_need(T, K);
	fi_err e;
	if (need <= c->xq_bytes) {
		*out = c->xq;
		return FI_OK;
	}
	if (c->capturing)
		return fi_fail(FI_ESTATE, "cuda: quantized product of %d tokens during graph capture", T);
	if ((e = grow(&c->xq_big, &c->xq_big_bytes, need)))
		return e;
	*out = c->xq_big;
	return FI_OK;
}

fi_err fi_cuda_xq_claim(struct fi_cuda *c, const void *x, int T, int K, void **codes,
			float **scales)
{
	uint8_t *b;
	/* not at one token: gemv_f8h rounds that x inside its blocks with no launch of its own,
	 * and codes written by the op before made the 8B's W8A8 tg128 1.5% slower (H100) */
	if (!fi_settings()->fp8_fold || T < 2 || K <= 0 ||
	    (c->capturing && xq_need(T, K) > c->xq_bytes) || xq_for(c, T, K, &b))
		return FI_EUNSUPPORTED;
	*codes = b;
	*scales = (float *)(b + ALIGN256((size_t)T * (size_t)K * 2));
	c->xq_has.x = x;
	c->xq_has.T = T;
	c->xq_has.K = K;
	return FI_OK;
}

/* The input as a product with w needs it: e4m3 codes and scales (W8A8), else as it is.
 * codes: scratch for T x K (xq_for). */
struct xprep {
	int aq, K, T;
	int raw; /* W8A8 at one token for gemv_f8h: codes not made yet (it rounds x itself) */
	uint8_t *codes;
	float *scales;
	float *inv;      /* FI_AQ_I8 */
	int32_t *qsum;
};

/* defer: the caller hands x to product(), which may round a one-token W8A8 input inside
 * gemv_f8h's blocks; without it (fi_cuda_qcodes: the fused passes read the codes) the codes
 * are always made here. */
static fi_err prep(struct fi_cuda *c, const struct fi_weight *w, const void *in_d,
		   const void *norm_d, float eps, int T, int defer, struct xprep *x)
{
	int K = (int)w->cols;
	/* codes an op wrote with in_d (fi_cuda_xq_claim) serve this product only */
	const int made = c->xq_has.x == in_d && c->xq_has.T == T && c->xq_has.K == K;
	fi_err e;
	c->xq_has.x = NULL;
	if ((e = xq_for(c, T, K, &x->codes)))
		return e;
	x->scales = (float *)(x->codes + ALIGN256((size_t)T * (size_t)K * 2));
	x->aq = w->aq;
	x->K = K;
	x->T = T;
	x->raw = 0;
	if (made && w->aq == FI_AQ_TOKEN && !norm_d)
		return FI_OK;
	if (w->aq == FI_AQ_I8) { /* int8 codes [T,K], then 1/s [T] and sum(q) [T] */
		size_t at = ((size_t)T * (size_t)K + 15) & ~(size_t)15;
		x->inv = (float *)(x->codes + at);
		x->qsum = (int32_t *)(x->inv + T);
		if (T > 4 || c->no_gemv) /* product() dequantizes and rounds x itself */
			return FI_OK;
		return fi_cu_act_quant_i8(c->stream, (int8_t *)x->codes, x->inv, x->qsum, in_d, T, K);
	}
	if (defer && w->aq == FI_AQ_TOKEN && T == 1 && !norm_d && !c->no_gemv &&
	    fi_settings()->fp8_half) {
		x->raw = 1; /* product() rounds it in gemv_f8h's blocks, or itself if that declines */
		return FI_OK;
	}
	if (w->aq)
		return fi_cu_act_quant(c->stream, x->codes, x->scales, in_d, norm_d, eps, T, K, w->aq);
	return FI_OK;
}

/* One-token products in half2 arithmetic (kernels/gemv_half.cuh) of n <= 4 weights of one
 * type and width that share x: INT4 (FI_INT4_HALF), Q4_K (FI_Q4K_HALF), FP8 (FI_FP8_HALF; a
 * W8A8 input as codes xq with scales xs, or with xq NULL rounded in the kernel's blocks).
 * FI_EUNSUPPORTED (not recorded) where none applies: the caller takes gemv_q. */
static fi_err half_products(struct fi_cuda *c, int n, void *const *out, int out_f32,
			    const struct fi_cu_qw *q, const void *x, const void *xq,
			    const float *xs, int aq, const void *const *bias)
{
	const struct fi_settings *set = fi_settings();
	const int opts = (set->half_stay ? FI_CU_HALF_STAY : 0) |
			 (set->half_stage ? FI_CU_HALF_STAGE1 : 0) |
			 (set->half_ahead ? FI_CU_HALF_AHEAD : 0) |
			 (set->half_balance ? FI_CU_HALF_BALANCE : 0);
	if (c->no_gemv)
		return FI_EUNSUPPORTED;
	switch (q[0].type) {
	case FI_CQ_INT4:
		if (!aq && set->int4_mma) {
			fi_err e = fi_cu_gemv_q4m_parts(c->stream, n, out, out_f32, q, x, bias, opts);
			if (e != FI_EUNSUPPORTED)
				return e;
		}
		if (!aq && set->int4_half)
			return fi_cu_gemv_q4h_parts(c->stream, n, out, out_f32, q, x, bias,
						    opts);
		break;
	case FI_CQ_Q4K:
		if (set->q4k_half)
			return fi_cu_gemv_q4kh_parts(c->stream, n, out, out_f32, q, x, bias,
						     opts);
		break;
	case FI_CQ_FP8:
		if (set->fp8_half)
			return fi_cu_gemv_f8h_parts(c->stream, n, out, out_f32, q, x, xq, xs, aq,
						    bias, opts);
		break;
	}
	return FI_EUNSUPPORTED;
}

/* One product with the input prepared by prep (x->aq matches w->aq). An act-order INT4
 * weight permutes the input into the scratch, and the dequantize path rounds it there:
 * either way the codes are gone, which xp->aq = -1 records. */
static fi_err product(struct fi_backend *be, void *out_d, int out_f32, const void *in_d,
		      struct xprep *xp, const struct fi_weight *w, const struct fi_weight *bias,
		      struct fi_fp8_deferred *defer)
{
	struct fi_cuda *c = fi_cuda_of(be);
	struct fi_cu_qw q = fi_cuda_qw(w);
	int K = (int)w->cols, N = (int)w->rows, T = xp->T;
	const void *x = in_d;
	fi_err e;
	if (!q.type)
		return fi_fail(FI_EUNSUPPORTED, "matmul: weight dtype %s", fi_dtype_name(w->dtype));
	if (bias && (bias->rows * bias->cols != w->rows || bias->dtype != FI_DT_BF16))
		return fi_fail(FI_EMISMATCH, "matmul: bias of %lld values for %lld outputs",
			       (long long)(bias->rows * bias->cols), (long long)w->rows);
	if (q.type == FI_CQ_TQ2) { /* BitNet: W2A8 GEMV, else bf16 weights over rounded inputs */
		struct fi_weight d = {.p = c->deq, .dtype = FI_DT_BF16, .rows = w->rows, .cols = w->cols};
		if (bias)
			return fi_fail(FI_EUNSUPPORTED, "matmul: a ternary weight with a bias");
		if (T <= 4 && !c->no_gemv && xp->aq == FI_AQ_I8) {
			e = fi_cu_gemv_tq2(c->stream, out_d, out_f32, q.q, (const float *)q.scale,
					   (const int8_t *)xp->codes, xp->inv, xp->qsum, N, K, T);
			if (e != FI_EUNSUPPORTED)
				return e;
		}
		if ((size_t)(w->rows * w->cols) * 2 > c->deq_bytes)
			return fi_fail(FI_ESTATE, "cuda: no dequantization scratch for %lld x %lld",
				       (long long)w->rows, (long long)w->cols);
		if ((e = fi_cu_dequant_tq2(c->stream, c->deq, q.q, (const float *)q.scale, N, K)))
			return e;
		xp->aq = -1;
		if ((e = fi_cu_act_round_i8(c->stream, xp->codes, in_d, T, K)))
			return e;
		return fi_cuda_gemm(be, out_d, out_f32, xp->codes, &d, NULL, T);
	}
	if (!w->aq && q.perm) { /* act-order: x in the stored column order */
		xp->aq = -1;
		if ((e = fi_cu_permute_cols(c->stream, xp->codes, in_d, q.perm, T, K)))
			return e;
		x = xp->codes;
	}
	if (T == 1) {
		void *const o1[1] = {out_d};
		const void *const b1[1] = {bias ? bias->p : NULL};
		const int coded = w->aq && !xp->raw;
		e = half_products(c, 1, o1, out_f32, &q, x, coded ? xp->codes : NULL,
				  coded ? xp->scales : NULL, w->aq, b1);
		if (e != FI_EUNSUPPORTED)
			return e;
	}
	if (xp->raw) { /* half_products declined: the codes after all */
		xp->raw = 0;
		if ((e = fi_cu_act_quant(c->stream, xp->codes, xp->scales, in_d, NULL, 0.f, T, K,
					 w->aq)))
			return e;
	}
	if (T <= 4 && !c->no_gemv) {
		e = fi_cu_gemv_q(c->stream, out_d, out_f32, &q, x, w->aq ? xp->codes : NULL,
				 w->aq ? xp->scales : NULL, w->aq, bias ? bias->p : NULL, T);
		if (e != FI_EUNSUPPORTED)
			return e;
	}
	if (q.type == FI_CQ_FP8 && w->aq && !bias && !out_f32 && !c->no_fp8_gemm &&
	    (q.kind == FI_Q8_ROW) == (w->aq == FI_AQ_TOKEN)) {
		e = fi_cuda_gemm_fp8(c, out_d, q.q, (const float *)q.scale, xp->codes, xp->scales,
				     q.kind, N, K, T, defer);
		if (e != FI_EUNSUPPORTED)
			return e;
	}
	/* Dequantize + bf16 GEMM; a W8A8 input is rounded first (in bf16: within its rounding
	 * of the CPU's f32 product), over the codes. */
	if (q.type == FI_CQ_FP8 && !c->told_fp8_deq) {
		c->told_fp8_deq = 1; /* once: it is on every prompt's path */
		fi_debug("cuda: an FP8 product of %d rows dequantized to bf16 (activations %s, bias "
			 "%d, f32 out %d, FI_FP8_GEMM %d)", T, w->aq ? "quantized" : "not quantized",
			 bias != NULL, out_f32, !c->no_fp8_gemm);
	}
	{
		struct fi_weight d = {.p = c->deq, .dtype = FI_DT_BF16, .rows = w->rows, .cols = w->cols};
		if ((size_t)(w->rows * w->cols) * 2 > c->deq_bytes)
			return fi_fail(FI_ESTATE, "cuda: no dequantization scratch for %lld x %lld",
				       (long long)w->rows, (long long)w->cols);
		if ((e = fi_cu_dequant(c->stream, c->deq, &q, NULL, N)))
			return e;
		x = in_d;
		if (w->aq) {
			xp->aq = -1;
			if ((e = fi_cu_act_round(c->stream, xp->codes, in_d, T, K, w->aq)))
				return e;
			x = xp->codes;
		}
		return fi_cuda_gemm(be, out_d, out_f32, x, &d, bias, T);
	}
}

/* BitNet decode (T <= 4): the products of ternary weights that share one input in one launch
 * that quantizes the input itself, after the sub-norm (norm_d) of in or of relu(in)^2 * up
 * (fi_cu_gemv_tq2x); FI_EUNSUPPORTED where that does not apply, and the caller takes the
 * quantizer and a product each. */
static fi_err tq2_fused(struct fi_cuda *c, int n, void *const *out_d, const void *in_d,
			const void *up_d, const void *norm_d, float eps,
			const struct fi_weight *const *w, const struct fi_weight *const *bias, int add,
			int T)
{
	void *out[4];
	const void *q[4];
	const float *scale[4];
	int N[4];
	if (T > 4 || c->no_gemv || n > 4)
		return FI_EUNSUPPORTED;
	for (int i = 0; i < n; i++) {
		if (w[i]->dtype != FI_DT_TQ2 || w[i]->aq != FI_AQ_I8 || w[i]->cols != w[0]->cols ||
		    w[i]->rows > INT32_MAX || w[i]->cols > INT32_MAX || (bias && bias[i]))
			return FI_EUNSUPPORTED;
		struct fi_cu_qw qw = fi_cuda_qw(w[i]);
		out[i] = out_d[i];
		q[i] = qw.q;
		scale[i] = (const float *)qw.scale;
		N[i] = (int)w[i]->rows;
	}
	return fi_cu_gemv_tq2x(c->stream, n, out, q, scale, N, in_d, up_d, norm_d, eps, add,
			       (int)w[0]->cols, T);
}

fi_err fi_cuda_tq2_norm_products(struct fi_backend *be, int n, void *const *out_d,
				  const void *in_d, const void *up_d, const void *norm_d,
				  float eps, const struct fi_weight *const *w, int add, int T)
{
	return tq2_fused(fi_cuda_of(be), n, out_d, in_d, up_d, norm_d, eps, w, NULL, add, T);
}

fi_err fi_cuda_qcodes(struct fi_backend *be, const struct fi_weight *w, const void *in_d,
		      const void *norm_d, float eps, int T, const void **codes,
		      const float **scales)
{
	struct xprep xp;
	fi_err e;
	if (w->dtype != FI_DT_FP8 || (w->aq != FI_AQ_TOKEN && w->aq != FI_AQ_GROUP))
		return fi_fail(FI_EINVAL, "cuda: activation codes for a %s weight",
			       fi_dtype_name(w->dtype));
	if ((e = prep(fi_cuda_of(be), w, in_d, norm_d, eps, T, 0, &xp)))
		return e;
	*codes = xp.codes;
	*scales = xp.scales;
	return FI_OK;
}

fi_err fi_cuda_qgemm(struct fi_backend *be, void *out_d, int out_f32, const void *in_d,
		     const struct fi_weight *w, const struct fi_weight *bias, int T)
{
	struct xprep xp;
	fi_err e;
	if (T <= 0)
		return FI_OK;
	if (!out_f32) {
		void *const o1[] = {out_d};
		const struct fi_weight *const w1[] = {w}, *const b1[] = {bias};
		if ((e = tq2_fused(fi_cuda_of(be), 1, o1, in_d, NULL, NULL, 0.f, w1, b1, 0, T)) !=
		    FI_EUNSUPPORTED)
			return e;
	}
	if ((e = prep(fi_cuda_of(be), w, in_d, NULL, 0.f, T, 1, &xp)))
		return e;
	return product(be, out_d, out_f32, in_d, &xp, w, bias, NULL);
}

/* One token: q, k and v (gate and up) of one quantized type in one half_products launch
 * (FI_HALF_PARTS), a W8A8 input rounded in its blocks; FI_EUNSUPPORTED where that does not
 * apply, and the caller takes a product each. */
static fi_err half_parts(struct fi_cuda *c, int n, void *const *out_d, const void *in_d,
			 const struct fi_weight *const *w, const struct fi_weight *const *bias,
			 int T)
{
	struct fi_cu_qw q[4];
	const void *b[4];
	if (T != 1 || n < 2 || n > 4 || !fi_settings()->half_parts)
		return FI_EUNSUPPORTED;
	for (int i = 0; i < n; i++) {
		q[i] = fi_cuda_qw(w[i]);
		b[i] = bias && bias[i] ? bias[i]->p : NULL;
		if (b[i] && (bias[i]->rows * bias[i]->cols != w[i]->rows ||
			     bias[i]->dtype != FI_DT_BF16))
			return FI_EUNSUPPORTED; /* product() names the error */
		if (w[i]->dtype != w[0]->dtype || w[i]->aq != w[0]->aq)
			return FI_EUNSUPPORTED;
	}
	return half_products(c, n, out_d, 0, q, in_d, NULL, NULL, w[0]->aq, b);
}

/* 1 when w[0..n) are the parts, in order, of one fi_cuda_qweight_cat allocation; all is then
 * the joined weight. */
static int cat_of(int n, const struct fi_weight *const *w, struct fi_weight *all)
{
	int64_t rows = 0;
	for (int i = 0; i < n; i++) {
		if (w[i]->dtype != FI_DT_FP8 || w[i]->p != w[0]->p || w[i]->q.nbytes ||
		    w[i]->aq != w[0]->aq || w[i]->cols != w[0]->cols ||
		    w[i]->q.off_q != w[0]->q.off_q + (uint64_t)(rows * w[0]->cols) ||
		    w[i]->q.off_scale != w[0]->q.off_scale + (uint64_t)rows * 4)
			return 0;
		rows += w[i]->rows;
	}
	*all = *w[0];
	all->rows = all->q.rows = rows;
	return rows <= INT32_MAX;
}

fi_err fi_cuda_qgemm_cat(struct fi_backend *be, int n, const void *in_d,
			 const struct fi_weight *const *w, int T, struct fi_fp8_deferred *d)
{
	struct fi_cuda *c = fi_cuda_of(be);
	struct fi_weight all;
	struct xprep xp;
	fi_err e;
	memset(d, 0, sizeof(*d));
	if (T <= 4 || n < 2 || n > 4 || !cat_of(n, w, &all) ||
	    (size_t)T * (size_t)all.rows * 2 > FI_MULTI_WS_BYTES)
		return FI_EUNSUPPORTED;
	if ((e = prep(c, &all, in_d, NULL, 0.f, T, 1, &xp)))
		return e;
	return product(be, c->multi_ws, 0, in_d, &xp, &all, NULL, d);
}

fi_err fi_cuda_qgemm_multi(struct fi_backend *be, int n, void *const *out_d, const void *in_d,
			   const struct fi_weight *const *w, const struct fi_weight *const *bias,
			   int T, struct fi_fp8_deferred *defer)
{
	struct fi_cuda *c = fi_cuda_of(be);
	struct xprep xp = {-1, 0, 0, 0, NULL, NULL, NULL, NULL};
	int biased = 0;
	fi_err e;
	if (T <= 0)
		return FI_OK;
	if ((e = tq2_fused(c, n, out_d, in_d, NULL, NULL, 0.f, w, bias, 0, T)) != FI_EUNSUPPORTED)
		return e;
	if ((e = half_parts(c, n, out_d, in_d, w, bias, T)) != FI_EUNSUPPORTED)
		return e;
	for (int i = 0; bias && i < n; i++)
		biased |= bias[i] != NULL;
	if (!defer && !biased) {
		/* joined FP8 parts: one product, then the split applies the scales */
		struct fi_fp8_deferred d;
		int N[4];
		if ((e = fi_cuda_qgemm_cat(be, n, in_d, w, T, &d)) != FI_EUNSUPPORTED) {
			if (e)
				return e;
			for (int i = 0; i < n; i++)
				N[i] = (int)w[i]->rows;
			return fi_cu_split_scaled(c->stream, n, out_d, c->multi_ws, N, T,
						  d.out ? d.ws : NULL, d.xs);
		}
	}
	for (int i = 0; i < n; i++) {
		const struct fi_weight *b = bias ? bias[i] : NULL;
		if (!fi_dtype_is_quant(w[i]->dtype)) {
			if ((e = fi_cuda_gemm(be, out_d[i], 0, in_d, w[i], b, T)))
				return e;
			continue;
		}
		/* One rounding of the input for every W8A8 weight that shares it: the codes of
		 * q, k and v (gate and up) are the same, unless a product used the scratch. */
		if (xp.aq != w[i]->aq || xp.K != (int)w[i]->cols || !w[i]->aq) {
			if ((e = prep(c, w[i], in_d, NULL, 0.f, T, 1, &xp)))
				return e;
		}
		if ((e = product(be, out_d[i], 0, in_d, &xp, w[i], b, defer ? &defer[i] : NULL)))
			return e;
	}
	return FI_OK;
}

fi_err fi_cuda_qembed(struct fi_backend *be, void *x_d, const struct fi_weight *emb,
		      const int32_t *tok_d, int T)
{
	struct fi_cu_qw q = fi_cuda_qw(emb);
	if (!q.type)
		return fi_fail(FI_EUNSUPPORTED, "embed: weight dtype %s", fi_dtype_name(emb->dtype));
	return fi_cu_dequant(fi_cuda_of(be)->stream, x_d, &q, tok_d, T);
}
