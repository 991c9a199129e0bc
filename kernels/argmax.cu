/* argmax: tok[n] = argmax over V of logits[n,V] (f32), ties to the lowest index like the CPU
 * op; NaN never wins. With scratch (ws, cnt): each row is cut over ARGMAX_PARTS blocks (one
 * block over a 128256-wide row was ~17 us of a decode step, a chain of dependent loads), and
 * the last block of a row to finish reduces the parts; otherwise one block per row. 16-byte
 * loads when aligned. */
#include "common.cuh"

static __device__ __forceinline__ void better(float &bv, int &bi, float v, int i)
{
	if (v > bv || (v == bv && i < bi)) {
		bv = v;
		bi = i;
	}
}

#define ARGMAX_PARTS 32

/* The best (value, index) of row[b, e) over the block; every thread gets it. */
static __device__ void block_best(const float *row, int b, int e, float &bv, int &bi)
{
	bv = -INFINITY;
	bi = 0x7fffffff;
	if (((uintptr_t)(row + b) & 15) == 0) {
		int n4 = (e - b) / 4;
		const float4 *r4 = (const float4 *)(row + b);
		for (int i = threadIdx.x; i < n4; i += blockDim.x) {
			float4 v = r4[i];
			better(bv, bi, v.x, b + 4 * i);
			better(bv, bi, v.y, b + 4 * i + 1);
			better(bv, bi, v.z, b + 4 * i + 2);
			better(bv, bi, v.w, b + 4 * i + 3);
		}
		for (int i = b + 4 * n4 + threadIdx.x; i < e; i += blockDim.x)
			better(bv, bi, row[i], i);
	} else {
		for (int i = b + threadIdx.x; i < e; i += blockDim.x)
			better(bv, bi, row[i], i);
	}
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);
		better(bv, bi, ov, oi);
	}
	__shared__ float sv[32];
	__shared__ int si[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
	__syncthreads(); /* sv, si may still be read by a previous call */
	if (lane == 0) {
		sv[w] = bv;
		si[w] = bi;
	}
	__syncthreads();
	bv = lane < nw ? sv[lane] : -INFINITY;
	bi = lane < nw ? si[lane] : 0x7fffffff;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);
		better(bv, bi, ov, oi);
	}
}

__global__ void argmax_kernel(int32_t *__restrict__ tok, const float *__restrict__ logits, int V)
{
	float bv;
	int bi;
	block_best(logits + (int64_t)blockIdx.x * V, 0, V, bv, bi);
	if (threadIdx.x == 0)
		tok[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
}

/* Block (part, row): its part of the row into ws[row][part]; the last of the row's blocks to
 * finish (counted in cnt[row], reset after) reduces them in part order. */
__global__ void argmax_parts_kernel(int32_t *__restrict__ tok, const float *__restrict__ logits,
				    int V, float2 *ws, int *cnt)
{
	const int part = blockIdx.x, r = blockIdx.y;
	const int per = (V + ARGMAX_PARTS - 1) / ARGMAX_PARTS / 4 * 4 + 4;
	const int b = min(V, part * per), e = min(V, b + per);
	float bv;
	int bi;
	block_best(logits + (int64_t)r * V, b, e, bv, bi);
	__shared__ bool last;
	if (threadIdx.x == 0) {
		ws[(int64_t)r * ARGMAX_PARTS + part] = make_float2(bv, __int_as_float(bi));
		__threadfence();
		last = atomicAdd(&cnt[r], 1) == ARGMAX_PARTS - 1;
	}
	__syncthreads();
	if (!last || threadIdx.x >= 32)
		return;
	__threadfence();
	float2 v = __ldcg(&ws[(int64_t)r * ARGMAX_PARTS + threadIdx.x]);
	bv = v.x;
	bi = __float_as_int(v.y);
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);
		better(bv, bi, ov, oi);
	}
	if (threadIdx.x == 0) {
		tok[r] = bi == 0x7fffffff ? 0 : bi;
		cnt[r] = 0;
	}
}

extern "C" fi_err fi_cu_argmax(cudaStream_t st, int32_t *tok, const float *logits, int n, int V,
			       void *ws, size_t ws_bytes, int *cnt, int cnt_n)
{
	if (n <= 0)
		return FI_OK;
	if (ws && cnt && n <= cnt_n && V >= 64 * ARGMAX_PARTS &&
	    (size_t)n * ARGMAX_PARTS * sizeof(float2) <= ws_bytes)
		argmax_parts_kernel<<<dim3(ARGMAX_PARTS, n), 256, 0, st>>>(tok, logits, V,
									   (float2 *)ws, cnt);
	else
		argmax_kernel<<<n, 1024, 0, st>>>(tok, logits, V);
	LAUNCH_CHECK();
	return FI_OK;
}
