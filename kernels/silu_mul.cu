/* silu_mul: out[T,F] = silu(gate) * up. Rounded as the bf16 reference computes it:
 * silu(gate) to bf16 first, then the product to bf16. One pass, 16-byte accesses.
 * silu_mul_cat takes gate and up from one GEMM's output [T, 2F] (gate's columns, then up's),
 * so that the fused gate/up product needs no split into two buffers first. */
#include "act_quant.cuh"
#include "common.cuh"

__global__ void silu_mul_vec(bf16x8 *__restrict__ out, const bf16x8 *__restrict__ gate,
			     const bf16x8 *__restrict__ up, int64_t n8)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float g[8], u[8];
		bf16x8_to_f32(gate[i], g);
		bf16x8_to_f32(up[i], u);
#pragma unroll
		for (int j = 0; j < 8; j++)
			g[j] = silu_mul1(g[j], u[j]);
		out[i] = f32_to_bf16x8(g);
	}
}

__global__ void silu_mul_scalar(bf16 *__restrict__ out, const bf16 *__restrict__ gate,
				const bf16 *__restrict__ up, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		out[i] = __float2bfloat16(silu_mul1(__bfloat162float(gate[i]), __bfloat162float(up[i])));
}

extern "C" fi_err fi_cu_silu_mul(cudaStream_t st, void *out, const void *gate, const void *up,
				 int T, int F)
{
	int64_t n = (int64_t)T * F;
	if (n <= 0)
		return FI_OK;
	if (n % 8 == 0 && fi_aligned16(out) && fi_aligned16(gate) && fi_aligned16(up)) {
		int64_t n8 = n / 8, blocks = (n8 + 255) / 256;
		silu_mul_vec<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
			(bf16x8 *)out, (const bf16x8 *)gate, (const bf16x8 *)up, n8);
	} else {
		int64_t blocks = (n + 255) / 256;
		silu_mul_scalar<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
			(bf16 *)out, (const bf16 *)gate, (const bf16 *)up, n);
	}
	LAUNCH_CHECK();
	return FI_OK;
}

/* Unit-scale W8A8 gate and up (rows ld8 vectors apart: F / 8, or 2F / 8 where both are
 * halves of one joined product): each value times its column's weight scale and its row's
 * token scale s, rounded to bf16 (fi_cu_scale_outer's product), then silu_mul1; vector i of
 * the row at offset o. The scales in 16-byte loads where aligned (VW), since sixteen scalar
 * loads a thread held the pass at ~1.3 TB/s. */
template <bool VW>
static __device__ __forceinline__ bf16x8 glu8_scaled(const bf16x8 *__restrict__ gate,
						     const bf16x8 *__restrict__ up,
						     const float *__restrict__ wg,
						     const float *__restrict__ wu, float s, int i,
						     int64_t o)
{
	float g[8], u[8], sg[8], su[8];
	bf16x8_to_f32(gate[o], g);
	bf16x8_to_f32(up[o], u);
	f32x8_load<VW>(wg, i, sg);
	f32x8_load<VW>(wu, i, su);
#pragma unroll
	for (int j = 0; j < 8; j++)
		g[j] = silu_mul1(bf16_round(g[j] * (sg[j] * s)), bf16_round(u[j] * (su[j] * s)));
	return f32_to_bf16x8(g);
}

/* gate and up [T, F] as above into out [T, F]: one grid row a token, 8 columns a thread. */
template <bool VW>
__global__ void silu_mul_scaled_vec(bf16x8 *__restrict__ out, const bf16x8 *__restrict__ gate,
				    const bf16x8 *__restrict__ up, const float *__restrict__ wg,
				    const float *__restrict__ wu, const float *__restrict__ xs,
				    int F8, int64_t ld8)
{
	const int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= F8)
		return;
	out[(int64_t)blockIdx.y * F8 + i] = glu8_scaled<VW>(gate, up, wg, wu, xs[blockIdx.y], i,
							     (int64_t)blockIdx.y * ld8 + i);
}

__global__ void silu_mul_scaled_scalar(bf16 *__restrict__ out, const bf16 *__restrict__ gate,
				       const bf16 *__restrict__ up, const float *__restrict__ wg,
				       const float *__restrict__ wu, const float *__restrict__ xs,
				       int64_t n, int F, int64_t ld)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		const int t = (int)(i / F), f = (int)(i - (int64_t)t * F);
		const int64_t o = (int64_t)t * ld + f;
		out[i] = __float2bfloat16(
			silu_mul1(bf16_round(__bfloat162float(gate[o]) * (wg[f] * xs[t])),
				  bf16_round(__bfloat162float(up[o]) * (wu[f] * xs[t]))));
	}
}

extern "C" fi_err fi_cu_silu_mul_scaled(cudaStream_t st, void *out, const void *gate,
					const void *up, const float *wg, const float *wu,
					const float *xs, int T, int F, int64_t ld)
{
	if (T <= 0 || F <= 0)
		return FI_OK;
	if (F % 8 == 0 && ld % 8 == 0 && T <= 65535 && fi_aligned16(out) && fi_aligned16(gate) &&
	    fi_aligned16(up)) {
		const int F8 = F / 8;
		const dim3 grid((F8 + 255) / 256, T);
		if (fi_aligned16(wg) && fi_aligned16(wu))
			silu_mul_scaled_vec<true><<<grid, 256, 0, st>>>(
				(bf16x8 *)out, (const bf16x8 *)gate, (const bf16x8 *)up, wg, wu, xs,
				F8, ld / 8);
		else
			silu_mul_scaled_vec<false><<<grid, 256, 0, st>>>(
				(bf16x8 *)out, (const bf16x8 *)gate, (const bf16x8 *)up, wg, wu, xs,
				F8, ld / 8);
	} else {
		const int64_t n = (int64_t)T * F, blocks = (n + 255) / 256;
		silu_mul_scaled_scalar<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
			(bf16 *)out, (const bf16 *)gate, (const bf16 *)up, wg, wu, xs, n, F, ld);
	}
	LAUNCH_CHECK();
	return FI_OK;
}

/* The same activation, and the down product's W8A8 input made from it in the same launch
 * (FI_FP8_FOLD): the token's e4m3 codes and scale of the bf16 out row, as act_tok8 would make
 * them reading it back (the same max over |out| and the same aq_code), so that the down
 * product's quantizer launch, which read the [T, F] row again, is gone. One block a token: the
 * row written (16-byte stores) and its max reduced, then read back (the block's own writes,
 * from L1/L2) and coded 8 bytes at a time. */
template <bool VW>
__global__ void __launch_bounds__(256)
silu_mul_scaled_q_kernel(bf16x8 *__restrict__ out, const bf16x8 *__restrict__ gate,
			 const bf16x8 *__restrict__ up, const float *__restrict__ wg,
			 const float *__restrict__ wu, const float *__restrict__ xs, int F8,
			 int64_t ld8, uint8_t *__restrict__ codes, float *__restrict__ scales)
{
	__shared__ float sh[32];
	const int t = blockIdx.x;
	const float s = xs[t];
	bf16x8 *orow = out + (int64_t)t * F8;
	float m = 0.f;
	for (int i = threadIdx.x; i < F8; i += blockDim.x) {
		const bf16x8 h = glu8_scaled<VW>(gate, up, wg, wu, s, i, (int64_t)t * ld8 + i);
		orow[i] = h;
		m = aq_absmax8((const bf16 *)&h, m);
	}
	const float q = aq_scale(block_max(m, sh));
	if (threadIdx.x == 0)
		scales[t] = q;
	uint2 *crow = (uint2 *)(codes + (int64_t)t * F8 * 8);
	for (int i = threadIdx.x; i < F8; i += blockDim.x) {
		const bf16x8 h = orow[i]; /* this thread's own store */
		crow[i] = aq_code8((const bf16 *)&h, q);
	}
}

extern "C" fi_err fi_cu_silu_mul_scaled_q(cudaStream_t st, void *out, const void *gate,
					  const void *up, const float *wg, const float *wu,
					  const float *xs, int T, int F, int64_t ld, void *codes,
					  float *scales)
{
	if (T <= 0 || F <= 0)
		return FI_OK;
	if (F % 8 || ld % 8 || !fi_aligned16(out) || !fi_aligned16(gate) || !fi_aligned16(up) ||
	    ((uintptr_t)codes & 7))
		return FI_EUNSUPPORTED;
	if (fi_aligned16(wg) && fi_aligned16(wu))
		silu_mul_scaled_q_kernel<true><<<T, 256, 0, st>>>(
			(bf16x8 *)out, (const bf16x8 *)gate, (const bf16x8 *)up, wg, wu, xs, F / 8,
			ld / 8, (uint8_t *)codes, scales);
	else
		silu_mul_scaled_q_kernel<false><<<T, 256, 0, st>>>(
			(bf16x8 *)out, (const bf16x8 *)gate, (const bf16x8 *)up, wg, wu, xs, F / 8,
			ld / 8, (uint8_t *)codes, scales);
	LAUNCH_CHECK();
	return FI_OK;
}

/* Row t of gu is gate[t, 0..F) then up[t, 0..F); F8 = F / 8 vectors of each. */
__global__ void silu_mul_cat_vec(bf16x8 *__restrict__ out, const bf16x8 *__restrict__ gu,
				 int64_t n8, int F8)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t t = i / F8, f = i % F8;
		float g[8], u[8];
		bf16x8_to_f32(gu[t * 2 * F8 + f], g);
		bf16x8_to_f32(gu[t * 2 * F8 + F8 + f], u);
#pragma unroll
		for (int j = 0; j < 8; j++)
			g[j] = silu_mul1(g[j], u[j]);
		out[i] = f32_to_bf16x8(g);
	}
}

__global__ void silu_mul_cat_scalar(bf16 *__restrict__ out, const bf16 *__restrict__ gu,
				    int64_t n, int F)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t t = i / F, f = i % F;
		out[i] = __float2bfloat16(silu_mul1(__bfloat162float(gu[t * 2 * F + f]),
						    __bfloat162float(gu[t * 2 * F + F + f])));
	}
}

extern "C" fi_err fi_cu_silu_mul_cat(cudaStream_t st, void *out, const void *gu, int T, int F)
{
	int64_t n = (int64_t)T * F;
	if (n <= 0)
		return FI_OK;
	if (F % 8 == 0 && fi_aligned16(out) && fi_aligned16(gu)) {
		int64_t n8 = n / 8, blocks = (n8 + 255) / 256;
		silu_mul_cat_vec<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
			(bf16x8 *)out, (const bf16x8 *)gu, n8, F / 8);
	} else {
		int64_t blocks = (n + 255) / 256;
		silu_mul_cat_scalar<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
			(bf16 *)out, (const bf16 *)gu, n, F);
	}
	LAUNCH_CHECK();
	return FI_OK;
}
