/* tensor: dtypes, element conversion and a named-tensor view shared by every module.
 *
 * A fi_tensor is a view: it never owns data. Shapes are row-major, outermost first, so a
 * linear weight of HF shape [out, in] has shape {out, in} and row r is output feature r. */
#ifndef FI_TENSOR_H
#define FI_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum fi_dtype {
	FI_DT_F32 = 0,
	FI_DT_F16,
	FI_DT_BF16,
	FI_DT_F64,
	FI_DT_I64,
	FI_DT_I32,
	FI_DT_I16,
	FI_DT_I8,
	FI_DT_U8,
	FI_DT_BOOL,
	FI_DT_F8_E4M3,
	FI_DT_F8_E5M2,
	FI_DT_COUNT, /* element dtypes end here: safetensors dtypes, casts, fi_dtype_size */
	/* Quantized weight layouts (quant.h): a [rows, cols] weight stored as rows of blocks or
	 * as sections with scales. They have no element size (fi_dtype_size is 0); their byte
	 * size comes from fi_quant_layout. GGML block types first, then fi's own layouts. */
	FI_DT_Q8_0 = 32,
	FI_DT_Q4_0,
	FI_DT_Q4_K,
	FI_DT_Q5_K,
	FI_DT_Q6_K,
	FI_DT_FP8,  /* e4m3 weights with per-row or 128x128-block f32 scales */
	FI_DT_INT4, /* 4-bit with f16 scales and zero points per group of columns */
	FI_DT_TQ2,  /* ternary (BitNet b1.58), 2 bits a value, f32 scale per row, int8 inputs */
	FI_DT_Q_END
};

#define FI_MAX_DIMS 8

struct fi_tensor {
	const char *name;
	enum fi_dtype dtype;
	int ndim;
	int64_t shape[FI_MAX_DIMS];
	const void *data;
	uint64_t nbytes;
};

/* Bytes per element (0 for an invalid dtype). */
size_t fi_dtype_size(enum fi_dtype dt);
/* "F32", "BF16", ... (the safetensors spelling); fi_dtype_parse returns -1 if unknown. */
const char *fi_dtype_name(enum fi_dtype dt);
int fi_dtype_parse(const char *s);
/* Lower-case spelling for options and listings: "f32", "f16", "bf16". */
const char *fi_dtype_lname(enum fi_dtype dt);
int fi_dtype_parse_lname(const char *s);
/* Whether a dtype is a float type fi computes from (F32, F16, BF16). */
int fi_dtype_is_compute(enum fi_dtype dt);
/* Whether a dtype is a quantized weight layout (FI_DT_Q8_0 .. FI_DT_TQ2). */
int fi_dtype_is_quant(enum fi_dtype dt);

/* Element count of a tensor, or -1 on overflow of int64. */
int64_t fi_tensor_numel(const struct fi_tensor *t);

/* Scalar conversions; round-to-nearest-even for narrowing, NaN preserved. */
float fi_bf16_to_f32(uint16_t h);
uint16_t fi_f32_to_bf16(float f);
float fi_f16_to_f32(uint16_t h);
uint16_t fi_f32_to_f16(float f);

/* Converts n elements between compute dtypes (F32/F16/BF16); FI_EUNSUPPORTED otherwise. */
fi_err fi_convert(void *dst, enum fi_dtype dst_dt, const void *src, enum fi_dtype src_dt, size_t n);

/* A read-only set of named tensors (a model image or a checkpoint after name mapping). */
struct fi_tensor_set {
	int n;
	const struct fi_tensor *t;
};
const struct fi_tensor *fi_tensor_find(const struct fi_tensor_set *s, const char *name);

#endif
