/* rmsnorm: the residual add fused with the norm that follows it.
 *   if add: x[T,D] += add[T,D]   (the residual stream, rounded to bf16 as it is stored)
 *   out[T,D] = bf16(bf16(x * rsqrt(mean(x^2) + eps)) * w)
 * The two roundings follow the bf16 reference (HF LlamaRMSNorm casts the normalised value back
 * to the input dtype before the weight multiply). One block per row; the fast path keeps the
 * row in registers (16-byte accesses, up to 4 vectors a thread) so x is read once.
 *
 * add_norm: x[T,D] += rmsnorm(y; w), the normalised y rounded as above and the sum as the
 * residual add rounds it (without a norm, scale.cu's fi_cu_add): Gemma's post-attention and
 * post-feed-forward norms with the add after them in one launch (rmsnorm of y, then the
 * next norm's add, apart). Same block shape as rmsnorm, so the result equals the two
 * launches'.
 *
 * rmsnorm_q (FI_FP8_FOLD): rmsnorm that also writes out's W8A8 token codes and scale, as
 * act_quant makes them from the stored bf16 out (the row is in registers already), for the
 * W8A8 products that read out next. */
#include "act_quant.cuh"
#include "common.cuh"

template <int NCH, bool Q = false>
__global__ void rmsnorm_vec(bf16 *__restrict__ out, bf16 *x, const bf16 *__restrict__ add,
			    const bf16 *__restrict__ w, int D, float eps,
			    uint8_t *__restrict__ codes = nullptr, float *__restrict__ scales = nullptr)
{
	__shared__ float sh[32];
	int n8 = D / 8;
	int64_t base = (int64_t)blockIdx.x * n8;
	bf16x8 *x8 = (bf16x8 *)x + base;
	float v[NCH][8];
	float ss = 0.f;
#pragma unroll
	for (int j = 0; j < NCH; j++) {
		int c = threadIdx.x + j * blockDim.x;
		if (c < n8) {
			bf16x8 a = x8[c];
			bf16x8_to_f32(a, v[j]);
			if (add) {
				float b[8];
				bf16x8_to_f32(((const bf16x8 *)add + base)[c], b);
#pragma unroll
				for (int i = 0; i < 8; i++)
					v[j][i] = bf16_round(v[j][i] + b[i]);
				x8[c] = f32_to_bf16x8(v[j]);
			}
#pragma unroll
			for (int i = 0; i < 8; i++)
				ss += v[j][i] * v[j][i];
		}
	}
	float r = rsqrtf(block_sum(ss, sh) / D + eps);
	bf16x8 o8[NCH];
	float m = 0.f;
#pragma unroll
	for (int j = 0; j < NCH; j++) {
		int c = threadIdx.x + j * blockDim.x;
		if (c < n8) {
			float g[8];
			bf16x8_to_f32(((const bf16x8 *)w)[c], g);
#pragma unroll
			for (int i = 0; i < 8; i++)
				v[j][i] = bf16_round(v[j][i] * r) * g[i];
			o8[j] = f32_to_bf16x8(v[j]);
			((bf16x8 *)out + base)[c] = o8[j];
			if (Q)
				m = aq_absmax8((const bf16 *)&o8[j], m);
		}
	}
	if (!Q)
		return;
	const float q = aq_scale(block_max(m, sh));
	if (threadIdx.x == 0)
		scales[blockIdx.x] = q;
#pragma unroll
	for (int j = 0; j < NCH; j++) {
		int c = threadIdx.x + j * blockDim.x;
		if (c < n8)
			((uint2 *)(codes + (int64_t)blockIdx.x * D))[c] =
				aq_code8((const bf16 *)&o8[j], q);
	}
}

/* Any D: two passes over the row (the second from cache). */
__global__ void rmsnorm_scalar(bf16 *out, bf16 *x, const bf16 *__restrict__ add,
			       const bf16 *__restrict__ w, int D, float eps)
{
	__shared__ float sh[32];
	int64_t base = (int64_t)blockIdx.x * D;
	float ss = 0.f;
	for (int i = threadIdx.x; i < D; i += blockDim.x) {
		float a = __bfloat162float(x[base + i]);
		if (add) {
			a = bf16_round(a + __bfloat162float(add[base + i]));
			x[base + i] = __float2bfloat16(a);
		}
		ss += a * a;
	}
	float r = rsqrtf(block_sum(ss, sh) / D + eps);
	for (int i = threadIdx.x; i < D; i += blockDim.x) {
		float a = __bfloat162float(x[base + i]);
		out[base + i] = __float2bfloat16(bf16_round(a * r) * __bfloat162float(w[i]));
	}
}

/* The vector kernels' shape for rows of n8 16-byte vectors: 1, 2 or 4 a thread (the return)
 * and the threads of the block. */
static int vec_shape(int n8, int *threads)
{
	int nch = (n8 + 1023) / 1024;
	nch = nch <= 1 ? 1 : nch <= 2 ? 2 : 4;
	*threads = ((n8 + nch - 1) / nch + 31) / 32 * 32;
	return nch;
}

template <int NCH>
__global__ void add_norm_vec(bf16 *x, const bf16 *__restrict__ y, const bf16 *__restrict__ w,
			     int D, float eps)
{
	__shared__ float sh[32];
	int n8 = D / 8;
	int64_t base = (int64_t)blockIdx.x * n8;
	float v[NCH][8];
	float ss = 0.f;
#pragma unroll
	for (int j = 0; j < NCH; j++) {
		int c = threadIdx.x + j * blockDim.x;
		if (c < n8) {
			bf16x8_to_f32(((const bf16x8 *)y + base)[c], v[j]);
#pragma unroll
			for (int i = 0; i < 8; i++)
				ss += v[j][i] * v[j][i];
		}
	}
	float r = rsqrtf(block_sum(ss, sh) / D + eps);
#pragma unroll
	for (int j = 0; j < NCH; j++) {
		int c = threadIdx.x + j * blockDim.x;
		if (c < n8) {
			float g[8], a[8];
			bf16x8 *x8 = (bf16x8 *)x + base + c;
			bf16x8_to_f32(((const bf16x8 *)w)[c], g);
			bf16x8_to_f32(*x8, a);
#pragma unroll
			for (int i = 0; i < 8; i++)
				a[i] += bf16_round(bf16_round(v[j][i] * r) * g[i]);
			*x8 = f32_to_bf16x8(a);
		}
	}
}

__global__ void add_norm_scalar(bf16 *x, const bf16 *__restrict__ y, const bf16 *__restrict__ w,
				int D, float eps)
{
	__shared__ float sh[32];
	int64_t base = (int64_t)blockIdx.x * D;
	float ss = 0.f;
	for (int i = threadIdx.x; i < D; i += blockDim.x) {
		float a = __bfloat162float(y[base + i]);
		ss += a * a;
	}
	float r = rsqrtf(block_sum(ss, sh) / D + eps);
	for (int i = threadIdx.x; i < D; i += blockDim.x) {
		float a = bf16_round(bf16_round(__bfloat162float(y[base + i]) * r) *
				     __bfloat162float(w[i]));
		x[base + i] = __float2bfloat16(__bfloat162float(x[base + i]) + a);
	}
}

extern "C" fi_err fi_cu_add_norm(cudaStream_t st, void *x, const void *y, const void *w, int T,
				 int D, float eps)
{
	if (T <= 0)
		return FI_OK;
	int n8 = D / 8;
	bool vec = D % 8 == 0 && n8 <= 4096 && fi_aligned16(x) && fi_aligned16(y) &&
		   fi_aligned16(w);
	bf16 *xx = (bf16 *)x;
	const bf16 *yy = (const bf16 *)y, *ww = (const bf16 *)w;
	if (vec) {
		int threads, nch = vec_shape(n8, &threads);
		if (nch == 1)
			add_norm_vec<1><<<T, threads, 0, st>>>(xx, yy, ww, D, eps);
		else if (nch == 2)
			add_norm_vec<2><<<T, threads, 0, st>>>(xx, yy, ww, D, eps);
		else
			add_norm_vec<4><<<T, threads, 0, st>>>(xx, yy, ww, D, eps);
	} else {
		add_norm_scalar<<<T, 256, 0, st>>>(xx, yy, ww, D, eps);
	}
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_rmsnorm_q(cudaStream_t st, void *out, void *x, const void *add,
				  const void *w, int T, int D, float eps, void *codes,
				  float *scales)
{
	if (T <= 0)
		return FI_OK;
	int n8 = D / 8;
	if (D % 8 || n8 > 4096 || !fi_aligned16(out) || !fi_aligned16(x) || !fi_aligned16(w) ||
	    (add && !fi_aligned16(add)) || ((uintptr_t)codes & 7))
		return FI_EUNSUPPORTED;
	bf16 *o = (bf16 *)out, *xx = (bf16 *)x;
	const bf16 *a = (const bf16 *)add, *ww = (const bf16 *)w;
	uint8_t *cd = (uint8_t *)codes;
	int threads, nch = vec_shape(n8, &threads);
	if (nch == 1)
		rmsnorm_vec<1, true><<<T, threads, 0, st>>>(o, xx, a, ww, D, eps, cd, scales);
	else if (nch == 2)
		rmsnorm_vec<2, true><<<T, threads, 0, st>>>(o, xx, a, ww, D, eps, cd, scales);
	else
		rmsnorm_vec<4, true><<<T, threads, 0, st>>>(o, xx, a, ww, D, eps, cd, scales);
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_rmsnorm(cudaStream_t st, void *out, void *x, const void *add,
				const void *w, int T, int D, float eps)
{
	if (T <= 0)
		return FI_OK;
	int n8 = D / 8;
	bool vec = D % 8 == 0 && n8 <= 4096 && fi_aligned16(out) && fi_aligned16(x) &&
		   fi_aligned16(w) && (!add || fi_aligned16(add));
	bf16 *o = (bf16 *)out, *xx = (bf16 *)x;
	const bf16 *a = (const bf16 *)add, *ww = (const bf16 *)w;
	if (vec) {
		int threads, nch = vec_shape(n8, &threads);
		if (nch == 1)
			rmsnorm_vec<1><<<T, threads, 0, st>>>(o, xx, a, ww, D, eps);
		else if (nch == 2)
			rmsnorm_vec<2><<<T, threads, 0, st>>>(o, xx, a, ww, D, eps);
		else
			rmsnorm_vec<4><<<T, threads, 0, st>>>(o, xx, a, ww, D, eps);
	} else {
		rmsnorm_scalar<<<T, 256, 0, st>>>(o, xx, a, ww, D, eps);
	}
	LAUNCH_CHECK();
	return FI_OK;
}
