/* gemv_tq2: BitNet's W2A8 decode product, out[T,N] = x[T,K] W^T for T <= 4, streaming the
 * 2-bit codes (TQ2, base/quant.h) once for every token of the step. x comes as int8 codes
 * with 1/s and sum(q) per token (act_quant_i8.cu); a row's result is
 *   (sum_k code_k q_k - sum(q)) x (1/s) x scale[n].
 * One warp per row; a lane reads 16 bytes of codes (64 weights: half of a 128-column
 * block, columns j..j+15 + 32i of it) a step, expands each 2-bit field to a byte and
 * multiplies 4 at a time with __dp4a against the matching int8 inputs. The integer sum is
 * exact, so the result equals the CPU twin's (fi_cpu_tq2_matmul) up to the final float
 * products. */
#include "common.cuh"

#define ROWS_PER_BLOCK 8

/* Bytes b0..b3 of v: field i of each (bits 2i..2i+1) as four bytes of a word. */
static __device__ __forceinline__ int field4(uint32_t v, int i)
{
	return (int)((v >> (2 * i)) & 0x03030303u);
}

template <int T>
__global__ void gemv_tq2_k(void *__restrict__ out, int out_f32, const uint8_t *__restrict__ q,
			   const float *__restrict__ scale, const int8_t *__restrict__ x,
			   const float *__restrict__ inv, const int32_t *__restrict__ qsum, int N,
			   int K)
{
	const int lane = threadIdx.x & 31;
	const int n = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
	if (n >= N)
		return;
	const uint8_t *row = q + (size_t)n * (K / 4);
	int acc[T];
#pragma unroll
	for (int t = 0; t < T; t++)
		acc[t] = 0;
	/* 16-byte pieces: piece p is half h = p & 1 of block p >> 1 */
	for (int p = lane; p < K / 64; p += 32) {
		const int blk = p >> 1, h = p & 1;
		uint4 w = *(const uint4 *)(row + 16 * p);
		uint32_t wv[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
		for (int t = 0; t < T; t++) {
			const int8_t *xb = x + (size_t)t * K + 128 * blk + 16 * h;
#pragma unroll
			for (int i = 0; i < 4; i++) {
				/* columns 16h + 4c .. +3 + 32i of the block, c = 0..3 */
				int4 xv = *(const int4 *)(xb + 32 * i);
				int xs[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
				for (int c = 0; c < 4; c++)
					acc[t] = __dp4a(field4(wv[c], i), xs[c], acc[t]);
			}
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++) {
		int s = acc[t];
#pragma unroll
		for (int o = 16; o > 0; o >>= 1)
			s += __shfl_xor_sync(0xffffffffu, s, o);
		if (lane == 0) {
			float r = (float)(s - qsum[t]) * inv[t] * scale[n];
			if (out_f32)
				((float *)out)[(size_t)t * N + n] = r;
			else
				((bf16 *)out)[(size_t)t * N + n] = __float2bfloat16(r);
		}
	}
}

extern "C" fi_err fi_cu_gemv_tq2(cudaStream_t st, void *out, int out_f32, const void *q,
				 const float *scale, const int8_t *x, const float *inv,
				 const int32_t *qsum, int N, int K, int T)
{
	dim3 grid((N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK), block(32 * ROWS_PER_BLOCK);
	const uint8_t *qb = (const uint8_t *)q;
	if (K % 128 || !fi_aligned16(q) || !fi_aligned16(x))
		return FI_EUNSUPPORTED;
	switch (T) {
	case 1: gemv_tq2_k<1><<<grid, block, 0, st>>>(out, out_f32, qb, scale, x, inv, qsum, N, K); break;
	case 2: gemv_tq2_k<2><<<grid, block, 0, st>>>(out, out_f32, qb, scale, x, inv, qsum, N, K); break;
	case 3: gemv_tq2_k<3><<<grid, block, 0, st>>>(out, out_f32, qb, scale, x, inv, qsum, N, K); break;
	case 4: gemv_tq2_k<4><<<grid, block, 0, st>>>(out, out_f32, qb, scale, x, inv, qsum, N, K); break;
	default: return FI_EUNSUPPORTED;
	}
	LAUNCH_CHECK();
	return FI_OK;
}
