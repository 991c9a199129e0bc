/* quant: quantized weight layouts (sizes, validation, dequantization), e4m3 conversion and
 * the activation rounding of W8A8 products.
 *
 * Every quantized weight is logically a [rows, cols] linear weight (row n is output feature
 * n, cols the input width K), stored row-major in one of these layouts:
 *
 *   GGML block types (as GGUF stores them): each row is cols / B blocks of S bytes.
 *     Q8_0  B 32,  S 34:  f16 d, int8 q[32];                    w = d q
 *     Q4_0  B 32,  S 18:  f16 d, nibbles q[32];                 w = d (q - 8)
 *     Q4_K  B 256, S 144: f16 d, f16 dmin, 6-bit scales/mins[8 x 2], nibbles q[256]
 *     Q5_K  B 256, S 176: as Q4_K plus one high bit per value
 *     Q6_K  B 256, S 210: 6-bit q[256], int8 scales[16], f16 d
 *
 *   fi's layouts, a 16-byte header then 16-aligned sections (offsets from the tensor start):
 *     FP8:  header "FIF8", kind (1 per-row, 2 per 128x128 block), aq (activation rounding,
 *           below); e4m3 q[rows, cols]; f32 scales [rows] or [ceil(rows/128), ceil(cols/128)].
 *           w = e4m3(q) x scale.
 *     INT4: header "FII4", perm flag, group G (a multiple of 32 dividing cols);
 *           nibbles q[rows, cols/2] (column 2j in the low nibble of byte j); f16 scales
 *           [rows, cols/G]; u8 zero points [rows, cols/G] (0..16: GPTQ's stored zero
 *           plus one reaches 16); with perm, int32
 *           perm[cols], a permutation: stored column j is input column perm[j] (GPTQ
 *           act-order, regrouped so that groups are contiguous).
 *           w[n, perm[j]] = (q[n, j] - zero[n, j/G]) x scale[n, j/G], computed in f32.
 *
 *     TQ2:  header "FIT2", aq (FI_AQ_I8); codes q[rows, cols/4] (cols a multiple of 128),
 *           then f32 scales [rows]. A row is cols/128 blocks of 32 bytes; byte j of block b
 *           holds columns 128b + j + 32i (i = 0..3) in bits 2i..2i+1 as code = w + 1
 *           (0, 1, 2; 3 is invalid), so four shifts and masks of one 32-byte load give 128
 *           consecutive columns (the layout of bitnet.cpp's I2_S kernel, in 32-byte
 *           groups). w = (code - 1) x scale[row]. BitNet b1.58's products quantize their
 *           input to int8 per token by absmax (FI_AQ_I8, below).
 *
 * Activation rounding (FP8 aq): before a W8A8 product the input x[T, K] is rounded as the
 * GPU's FP8 GEMM sees it: per token (FI_AQ_TOKEN) or per token and group of 128 columns
 * (FI_AQ_GROUP), s = amax / 448 (1 when amax is 0), x = e4m3(x / s) x s. FI_AQ_I8 (BitNet):
 * per token s = 127 / max(amax, 1e-5), x = clamp(round(x s), -128, 127) / s, as
 * transformers' BitLinear does. */
#ifndef FI_QUANT_H
#define FI_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "tensor.h"

enum { FI_AQ_NONE = 0, FI_AQ_TOKEN = 1, FI_AQ_GROUP = 2, FI_AQ_I8 = 3 };
enum { FI_Q8_ROW = 1, FI_Q8_B128 = 2 };

#define FI_QHDR_BYTES 16
#define FI_FP8_MAX 448.0f

struct fi_qlayout {
	enum fi_dtype dtype;
	int64_t rows, cols;
	int block, block_bytes;  /* GGML: elements and bytes per block */
	int kind, aq;            /* FP8 */
	int group, perm;         /* INT4 */
	/* byte offsets from the start of the tensor data */
	uint64_t off_q, off_scale, off_zero, off_perm;
	uint64_t nbytes;         /* the whole tensor */
};

/* The layout of a [rows, cols] weight of quantized dtype dt. For FP8 and INT4 the header is
 * read from data (which must hold at least avail bytes). Checks everything that sizes or
 * indexes the data: block divisibility, header fields, nbytes <= avail without overflow,
 * and (INT4 with perm) that perm is a permutation of 0..cols-1. FI_EFORMAT naming what is
 * wrong. data may be NULL for GGML types. */
fi_err fi_quant_layout(enum fi_dtype dt, int64_t rows, int64_t cols, const void *data,
		       uint64_t avail, struct fi_qlayout *out);
/* Bytes of a GGML row of cols values (0 if cols is not a whole number of blocks). */
uint64_t fi_quant_row_bytes(enum fi_dtype dt, int64_t cols);
/* Elements per block of a GGML type (0 otherwise). */
int fi_quant_block(enum fi_dtype dt);

/* Rows [r0, r0 + n) dequantized into out[n, cols] (f32), columns in input order. */
void fi_quant_dequant_rows(const struct fi_qlayout *l, const void *data, int64_t r0, int64_t n,
			   float *out);
/* Scales that are NaN, infinite (or negative, for fi's layouts) make garbage weights:
 * FI_EFORMAT naming the first bad block. Reads every scale (conversion time, not open). */
fi_err fi_quant_check_scales(const struct fi_qlayout *l, const void *data);

/* e4m3 (the FN variant: no infinities, max 448). Encoding rounds to nearest even and
 * saturates to +-448; NaN encodes as 0x7f. */
float fi_e4m3_to_f32(uint8_t v);
uint8_t fi_f32_to_e4m3(float f);

/* Rounds x[T, K] in place as the W8A8 product sees its input (aq: FI_AQ_TOKEN or
 * FI_AQ_GROUP; FI_AQ_NONE does nothing). */
void fi_quant_act_round(float *x, int64_t T, int64_t K, int aq);

/* Builders (conversion). The header and sections of a layout are written into dst, which
 * holds l->nbytes bytes laid out by fi_quant_layout_fp8/int4. */
void fi_quant_layout_fp8(int64_t rows, int64_t cols, int kind, int aq, struct fi_qlayout *out);
void fi_quant_layout_int4(int64_t rows, int64_t cols, int group, int perm,
			  struct fi_qlayout *out);
void fi_quant_write_header(const struct fi_qlayout *l, void *dst);
void fi_quant_layout_tq2(int64_t rows, int64_t cols, struct fi_qlayout *out);
/* Ternary row r of a TQ2 weight: w[cols] in {-1, 0, 1} (int8) packed into the layout at dst,
 * with its scale. */
void fi_tq2_pack_row(const struct fi_qlayout *l, void *dst, int64_t r, const int8_t *w,
		     float scale);
/* The value (-1, 0, 1; 2 for the invalid code 3) of row r, column k. */
int fi_tq2_get(const struct fi_qlayout *l, const void *data, int64_t r, int64_t k);
/* x[K] quantized as FI_AQ_I8 into q[K]; returns 1 / s (the factor back to x's scale) and
 * the sum of q in *qsum (the ternary kernels add 1 to every weight code). */
float fi_tq2_quant_act(const float *x, int64_t K, int8_t *q, int32_t *qsum);
/* x[K] replaced by its FI_AQ_I8 rounding q / s. */
void fi_tq2_round_act(float *x, int64_t K);
/* Quantizes w[rows, cols] (f32) per row to FP8 (kind FI_Q8_ROW): scale = amax / 448. */
void fi_quant_fp8_rows(const float *w, int64_t r0, int64_t n, const struct fi_qlayout *l,
		       void *dst);

#endif
