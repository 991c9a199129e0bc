/* gemv_tq2: BitNet's W2A8 decode product, out[T,N] = x[T,K] W^T for T <= 4, streaming the
 * 2-bit codes (TQ2, base/quant.h) once for every token of the step. x comes as int8 codes
 * with 1/s and sum(q) per token (act_quant_i8.cu); a row's result is
 *   (sum_k code_k q_k - sum(q)) x (1/s) x scale[n].
 * One warp per row; a lane reads 16 bytes of codes (64 weights: half of a 128-column
 * block, columns j..j+15 + 32i of it) a step, expands each 2-bit field to a byte and
 * multiplies 4 at a time with __dp4a against the matching int8 inputs. The integer sum is
 * exact, so the result equals the CPU twin's (fi_cpu_tq2_matmul) up to the final float
 * products. */
#include "act_quant_i8.cuh"

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
		uint4 w = ldw16(row + 16 * p);
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

/* The decode products of up to four TQ2 weights that share one bf16 input, in one launch
 * that quantizes the input itself: each block takes the T rows of x into shared memory as
 * int8 codes (quant_row_i8, the arithmetic of act_quant_i8: the same codes, sums and 1/s),
 * then its 8 x R weight rows with gemv_tq2_k's inner loop. A 2B-4T decode step ran a
 * quantizer before each of the layer's four inputs and a launch for each of q, k, v, gate and
 * up; here q, k, v are one launch and gate, up another, with no quantizer launches (and the
 * sub-norms ride in the o and down launches, MODE below): eleven launches a layer become
 * four.
 * Re-quantizing a 5-14 KB row in every block costs L2 reads, not a launch. */
#define TQ2X_MIN_BLOCKS 160 /* a block an SM at least (132 on an H100 or H200) */

struct tq2_parts {
	bf16 *out[4];
	const uint8_t *q[4];
	const float *scale[4];
	int N[4];
	int blk0[5]; /* the first block of each part; blk0[n] is the grid */
	int n, add;  /* add: out += the product (rounded to bf16 first), the residual add */
};

/* The input of MODE 1 and 2 as rmsnorm_vec and relu2_mul_k store it in bf16: the row v,
 * made relu(v)^2 * up first (MODE 2), then bf16(bf16(v r) w), r = rsqrt(mean(v^2) + eps). */
template <int MODE>
static __device__ __forceinline__ void prologue(float (&v)[AQ_VECS][8], const bf16 *__restrict__ up,
						const bf16 *__restrict__ nw, float eps, int K,
						float *sh)
{
	const int nv = K / 8;
	float ss = 0.f;
#pragma unroll
	for (int j = 0; j < AQ_VECS; j++) {
		const int i = threadIdx.x + j * blockDim.x;
		if (i >= nv)
			continue;
		if (MODE == 2) {
			float u[8];
			bf16x8_to_f32(((const bf16x8 *)up)[i], u);
#pragma unroll
			for (int e = 0; e < 8; e++) {
				const float g = fmaxf(v[j][e], 0.f);
				v[j][e] = bf16_round(bf16_round(g * g) * u[e]);
			}
		}
#pragma unroll
		for (int e = 0; e < 8; e++)
			ss += v[j][e] * v[j][e];
	}
	const float r = rsqrtf(block_sum(ss, sh) / K + eps);
#pragma unroll
	for (int j = 0; j < AQ_VECS; j++) {
		const int i = threadIdx.x + j * blockDim.x;
		if (i >= nv)
			continue;
		float g[8];
		bf16x8_to_f32(((const bf16x8 *)nw)[i], g);
#pragma unroll
		for (int e = 0; e < 8; e++)
			v[j][e] = bf16_round(bf16_round(v[j][e] * r) * g[e]);
	}
}

/* MODE 0: x as it is; 1: x through an RMSNorm (weight nw: BitNet's sub-norms and layer
 * norms); 2: relu(x)^2 * up, then the norm (the MLP's input to down). A warp takes R rows,
 * their loads in flight together and each input load used R times. ROPE (R even): parts q, k,
 * v, q to out[0] and k, v to Q's cache, rotated in the epilogue as kernels/gemv_fused.cu
 * does; a warp's rows r, r + 1 are a rotate-half pair (i, i + hd/2) of one head. */
template <int T, int MODE, int R, bool ROPE>
__global__ void __launch_bounds__(32 * ROWS_PER_BLOCK)
gemv_tq2x_k(const tq2_parts P, const fi_cu_rope_out Q, const bf16 *__restrict__ x,
	    const bf16 *__restrict__ up, const bf16 *__restrict__ nw, float eps, int K)
{
	extern __shared__ __align__(16) int8_t xs[]; /* [T, K] codes */
	__shared__ float sh[32], inv[T];
	__shared__ int qsum[T];
#pragma unroll
	for (int t = 0; t < T; t++) {
		float v[AQ_VECS][8], sum;
		load_row(x + (size_t)t * K, K / 8, v);
		if (MODE)
			prologue<MODE>(v, up + (size_t)t * K, nw, eps, K, sh);
		const float s = quant_regs(v, K / 8, xs + (size_t)t * K, sh, &sum);
		if (threadIdx.x == 0) {
			inv[t] = 1.f / s;
			qsum[t] = (int)sum;
		}
	}
	__syncthreads();
	int p = 0;
	while (p + 1 < P.n && (int)blockIdx.x >= P.blk0[p + 1])
		p++;
	const int lane = threadIdx.x & 31;
	const int n0 = (((int)blockIdx.x - P.blk0[p]) * ROWS_PER_BLOCK + (threadIdx.x >> 5)) * R;
	if (n0 >= P.N[p])
		return;
	const int nr = min(R, P.N[p] - n0);
	int row[R]; /* the weight row of each of the warp's R */
#pragma unroll
	for (int r = 0; r < R; r++) {
		const int v = n0 + r, half = Q.hd / 2, pr = v >> 1;
		row[r] = ROPE ? (pr / half) * Q.hd + pr % half + (v & 1) * half : v;
	}
	int acc[T][R];
#pragma unroll
	for (int t = 0; t < T; t++)
#pragma unroll
		for (int r = 0; r < R; r++)
			acc[t][r] = 0;
	for (int c = lane; c < K / 64; c += 32) {
		const int blk = c >> 1, h = c & 1;
		uint32_t wv[R][4];
#pragma unroll
		for (int r = 0; r < R; r++) { /* the R rows' loads in flight together */
			uint4 w = r < nr ? ldw16(P.q[p] + (size_t)row[r] * (K / 4) + 16 * c)
					 : make_uint4(0, 0, 0, 0);
			wv[r][0] = w.x, wv[r][1] = w.y, wv[r][2] = w.z, wv[r][3] = w.w;
		}
#pragma unroll
		for (int t = 0; t < T; t++) {
			const int8_t *xb = xs + (size_t)t * K + 128 * blk + 16 * h;
#pragma unroll
			for (int i = 0; i < 4; i++) {
				int4 xv = *(const int4 *)(xb + 32 * i);
				int xq[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
				for (int r = 0; r < R; r++)
#pragma unroll
					for (int e = 0; e < 4; e++)
						acc[t][r] = __dp4a(field4(wv[r][e], i), xq[e], acc[t][r]);
			}
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++)
#pragma unroll
		for (int r = 0; r < R; r++)
#pragma unroll
			for (int o = 16; o > 0; o >>= 1)
				acc[t][r] += __shfl_xor_sync(0xffffffffu, acc[t][r], o);
	if (lane)
		return;
#pragma unroll
	for (int t = 0; t < T; t++) {
		float v[R];
#pragma unroll
		for (int r = 0; r < R; r++)
			v[r] = r < nr ? (float)(acc[t][r] - qsum[t]) * inv[t] * P.scale[p][row[r]] : 0.f;
		if constexpr (ROPE) {
			const int sl = Q.slot[t];
#pragma unroll
			for (int r = 0; r < R; r += 2) {
				if (r >= nr)
					break;
				const float ang = (float)Q.pos[t] * Q.inv_freq[((n0 + r) >> 1) % (Q.hd / 2)];
				rope_pair_store(p, row[r], row[r + 1], v[r], v[r + 1], 0.f, 0.f, ang,
						P.out[0] + (size_t)t * P.N[0], Q, sl, P.N[1]);
			}
		} else {
#pragma unroll
			for (int r = 0; r < R; r++) {
				if (r >= nr)
					break;
				bf16 *o = P.out[p] + (size_t)t * P.N[p] + row[r];
				*o = __float2bfloat16(P.add ? __bfloat162float(*o) + bf16_round(v[r])
							    : v[r]);
			}
		}
	}
}

template <int MODE, int R, bool ROPE>
static void launch_x(cudaStream_t st, const tq2_parts &P, const fi_cu_rope_out &Q, int blk,
		     size_t smem, const bf16 *x, const bf16 *up, const bf16 *nw, float eps, int K,
		     int T)
{
	const dim3 block(32 * ROWS_PER_BLOCK);
	switch (T) {
	case 1: gemv_tq2x_k<1, MODE, R, ROPE><<<blk, block, smem, st>>>(P, Q, x, up, nw, eps, K); break;
	case 2: gemv_tq2x_k<2, MODE, R, ROPE><<<blk, block, smem, st>>>(P, Q, x, up, nw, eps, K); break;
	case 3: gemv_tq2x_k<3, MODE, R, ROPE><<<blk, block, smem, st>>>(P, Q, x, up, nw, eps, K); break;
	default: gemv_tq2x_k<4, MODE, R, ROPE><<<blk, block, smem, st>>>(P, Q, x, up, nw, eps, K); break;
	}
}

template <int MODE>
static void launch_r(cudaStream_t st, const tq2_parts &P, const fi_cu_rope_out &Q, int R, int blk,
		     size_t smem, const bf16 *x, const bf16 *up, const bf16 *nw, float eps, int K,
		     int T)
{
	if (R == 4)
		launch_x<MODE, 4, false>(st, P, Q, blk, smem, x, up, nw, eps, K, T);
	else if (R == 2)
		launch_x<MODE, 2, false>(st, P, Q, blk, smem, x, up, nw, eps, K, T);
	else
		launch_x<MODE, 1, false>(st, P, Q, blk, smem, x, up, nw, eps, K, T);
}

/* Rows a warp: as many as keep TQ2X_MIN_BLOCKS blocks (each block quantizes x again), at
 * least lo. Sets the parts' first blocks; returns R. */
static int plan_rows(tq2_parts &P, int lo)
{
	int R = 4, rows = 0, blk = 0;
	for (int i = 0; i < P.n; i++)
		rows += P.N[i];
	while (R > lo && rows / (ROWS_PER_BLOCK * R) < TQ2X_MIN_BLOCKS)
		R /= 2;
	for (int i = 0; i < P.n; i++) {
		P.blk0[i] = blk;
		blk += (P.N[i] + ROWS_PER_BLOCK * R - 1) / (ROWS_PER_BLOCK * R);
	}
	P.blk0[P.n] = blk;
	return R;
}

extern "C" fi_err fi_cu_gemv_tq2x(cudaStream_t st, int n, void *const *out, const void *const *q,
				  const float *const *scale, const int *N, const void *x,
				  const void *up, const void *norm, float eps, int add, int K, int T)
{
	tq2_parts P = {};
	if (n < 1 || n > 4 || T < 1 || T > 4 || K <= 0 || K % 128 ||
	    K > AQ_VECS * 8 * 32 * ROWS_PER_BLOCK || !fi_aligned16(x) || (up && !norm) ||
	    (up && !fi_aligned16(up)) || (norm && !fi_aligned16(norm)))
		return FI_EUNSUPPORTED;
	P.n = n;
	P.add = add;
	for (int i = 0; i < n; i++) {
		if (!fi_aligned16(q[i]) || N[i] <= 0)
			return FI_EUNSUPPORTED;
		P.out[i] = (bf16 *)out[i];
		P.q[i] = (const uint8_t *)q[i];
		P.scale[i] = scale[i];
		P.N[i] = N[i];
	}
	const int R = plan_rows(P, 1), blk = P.blk0[n];
	const size_t smem = (size_t)T * K; /* at most 32 KB */
	const bf16 *xb = (const bf16 *)x, *ub = (const bf16 *)up, *nb = (const bf16 *)norm;
	const fi_cu_rope_out Q = {};
	if (up)
		launch_r<2>(st, P, Q, R, blk, smem, xb, ub, nb, eps, K, T);
	else if (norm)
		launch_r<1>(st, P, Q, R, blk, smem, xb, ub, nb, eps, K, T);
	else
		launch_r<0>(st, P, Q, R, blk, smem, xb, ub, nb, eps, K, T);
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_gemv_tq2x_rope(cudaStream_t st, void *q_out, const void *const *q,
				       const float *const *scale, const int *N, const void *x,
				       const void *norm, float eps,
				       const struct fi_cu_rope_out *ro, int K, int T)
{
	tq2_parts P = {};
	const fi_cu_rope_out Q = *ro;
	if (T < 1 || T > 4 || K <= 0 || K % 128 || K > AQ_VECS * 8 * 32 * ROWS_PER_BLOCK ||
	    !fi_aligned16(x) || !norm || !fi_aligned16(norm) || Q.hd <= 0 || Q.hd % 2 ||
	    N[1] != N[2] || N[0] % Q.hd || N[1] % Q.hd)
		return FI_EUNSUPPORTED;
	P.n = 3;
	for (int i = 0; i < 3; i++) {
		if (!fi_aligned16(q[i]))
			return FI_EUNSUPPORTED;
		P.q[i] = (const uint8_t *)q[i];
		P.scale[i] = scale[i];
		P.N[i] = N[i];
	}
	P.out[0] = (bf16 *)q_out;
	const int R = plan_rows(P, 2), blk = P.blk0[3];
	const size_t smem = (size_t)T * K;
	const bf16 *xb = (const bf16 *)x, *nb = (const bf16 *)norm;
	if (R == 4)
		launch_x<1, 4, true>(st, P, Q, blk, smem, xb, NULL, nb, eps, K, T);
	else
		launch_x<1, 2, true>(st, P, Q, blk, smem, xb, NULL, nb, eps, K, T);
	LAUNCH_CHECK();
	return FI_OK;
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
