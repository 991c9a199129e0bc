/* attn_decode_tc: the planned path's inner loop on tensor cores (mma.sync m16n8k16, bf16 in,
 * f32 accumulate), for head sizes 64 and 128 and groups of up to 8 query heads. Included by
 * attn_decode.cu after its helpers (dec_params, dec_plan, kv_row, item_of, items_finish);
 * cp.async, ldmatrix and mma.sync come from mma.cuh.
 *
 * Why: the CUDA-core loop spends ~570 instructions a lane for every 8 K/V rows (per-lane dot
 * products, 4 shuffle levels for each of 16 scores, the online softmax repeated in 16 lanes)
 * and measured 1.6-1.7 TB/s on the H100, half the bandwidth, bound by issue and dependency
 * latency rather than bytes. Here a warp takes 16 positions at a time:
 *
 *   S^T [16 keys, 8 heads]  = K [16 keys, hd] . Q^T [hd, 8 heads]     (hd/16 mmas)
 *   O^T [hd, 8 heads]      += V^T [hd, 16 keys] . P [16 keys, 8 heads]  (hd/16 mmas)
 *
 * so a query group of G <= 8 heads is the n = 8 side (columns past G are zero) and every
 * K/V byte read feeds 8 heads. K and V arrive in shared memory through cp.async, two stages a
 * warp, 16-byte chunks XOR-swizzled by key (chunk c of key k at c ^ (k & 7)) so that the
 * ldmatrix reads of 8 keys hit 8 different bank groups. K is read by ldmatrix as the row-major
 * A operand; V by ldmatrix.trans, which hands each lane V^T's A fragment directly.
 *
 * Fragment layouts (gid = lane / 4, t4 = lane % 4): the score fragment gives lane (gid, t4)
 * keys gid and gid + 8 for heads 2 t4 and 2 t4 + 1, which are the same heads as its rows of
 * O^T, so the online-softmax state (m, l per head) lives where it is used; only P must move:
 * the B operand wants keys 2 t4, 2 t4 + 1 (+ 8) of head gid, four shuffles of bf16 pairs.
 * Scores stay f32 until the probabilities, which are rounded to bf16 for the product (as the
 * prefill kernels do); their sum l is taken in f32. */

#define TC_KEYS 16

template <int HD> struct tc_stage {
	uint4 kv[2][DEC_WARPS][2][TC_KEYS][HD / 8]; /* [stage][warp][K, V][key][chunk] */
};
template <int HD> struct tc_merge {
	float ml[DEC_WARPS][8][2];
	float acc[DEC_WARPS][8][HD];
};
template <int HD> union tc_shared {
	tc_stage<HD> st;
	tc_merge<HD> m;
};

/* This lane's copies of warp w's 16 positions from kb (K and V, zero-filled past end), as
 * one group. */
template <int HD>
static __device__ __forceinline__ void tc_issue(const dec_params &p, tc_stage<HD> &st, int stage,
						int w, int lane, int s, int h, int kb, int end)
{
	constexpr int C = HD / 8, KPI = 32 / C; /* chunks a key, keys an instruction round */
#pragma unroll
	for (int i = 0; i < TC_KEYS / KPI; i++) {
		const int key = i * KPI + lane / C, c = lane % C, ps = kb + key;
		const bool ok = ps < end;
		const int64_t row = ok ? (kv_row(p, s, ps) * p.Hk + h) * HD : 0;
		const int sw = c ^ (key & 7);
		cp_async16(&st.kv[stage][w][0][key][sw], (const bf16x8 *)(p.kc + row) + c, ok);
		cp_async16(&st.kv[stage][w][1][key][sw], (const bf16x8 *)(p.vc + row) + c, ok);
	}
	cp_commit();
}

/* Token t's attention over [start, end) for the G <= 8 query heads of KV head h: each warp's
 * state into shm.m (then a barrier). */
template <int HD>
static __device__ __forceinline__ void dec_range_tc(const dec_params &p, int t, int h, int start,
						    int end, tc_shared<HD> &shm)
{
	constexpr int KS = HD / 16; /* k steps of S, m tiles of O^T */
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const int gid = lane >> 2, t4 = lane & 3;
	const int G = p.G, s = p.tok_seq[t];

	/* Q^T as the B operand: head gid, dims 16 ks + 2 t4 (+1) and + 8 (+9); zero past G */
	uint32_t qb[KS][2];
	{
		const uint32_t *q32 =
			(const uint32_t *)(p.q + ((int64_t)t * p.Hq + h * G + min(gid, G - 1)) * HD);
#pragma unroll
		for (int ks = 0; ks < KS; ks++) {
			qb[ks][0] = gid < G ? q32[ks * 8 + t4] : 0u;
			qb[ks][1] = gid < G ? q32[ks * 8 + t4 + 4] : 0u;
		}
	}
	float acc[KS][4]; /* O^T: dims 16 mt + gid (+8), heads 2 t4 (+1) */
#pragma unroll
	for (int mt = 0; mt < KS; mt++)
		acc[mt][0] = acc[mt][1] = acc[mt][2] = acc[mt][3] = 0.f;
	float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f; /* heads 2 t4, 2 t4 + 1 */

	/* ldmatrix row addresses: lane l gives row l % 8 of matrix l / 8 */
	const int mat = lane >> 3, r8 = lane & 7;
	const int kkey = r8 + (mat & 1) * 8, kc = mat >> 1; /* K: a0..a3 = keys 0-7/8-15, dims */
	const int vkey = r8 + (mat >> 1) * 8, vc = mat & 1; /* V^T: dims lo/hi, keys 0-7/8-15 */

	constexpr int NT = DEC_WARPS * TC_KEYS;
	int stage = 0;
	tc_issue<HD>(p, shm.st, 0, w, lane, s, h, start + w * TC_KEYS, end);
	for (int kb = start + w * TC_KEYS; kb < end; kb += NT) {
		tc_issue<HD>(p, shm.st, stage ^ 1, w, lane, s, h, kb + NT, end);
		cp_wait<1>();
		__syncwarp(); /* the tile holds other lanes' copies too */
		const uint4(*K)[HD / 8] = shm.st.kv[stage][w][0];
		const uint4(*V)[HD / 8] = shm.st.kv[stage][w][1];

		float sc[4] = {0.f, 0.f, 0.f, 0.f}; /* keys gid, gid + 8; heads 2 t4, 2 t4 + 1 */
#pragma unroll
		for (int ks = 0; ks < KS; ks++) {
			uint32_t a[4];
			ldsm_x4(a, &K[kkey][(2 * ks + kc) ^ (kkey & 7)]);
			mma16816(sc, a, qb[ks][0], qb[ks][1]);
		}
		const bool in0 = kb + gid < end, in1 = kb + gid + 8 < end;
#pragma unroll
		for (int i = 0; i < 4; i++) {
			float d = sc[i] * p.scale2;
			if (p.capl > 0.f) /* cap tanh(s / cap), in log2 units */
				d = p.capl * tanhf(d / p.capl);
			sc[i] = (i < 2 ? in0 : in1) ? d : -INFINITY;
		}
		/* the online softmax, per head over the 16 keys (the 8 lanes of a t4) */
		float x0 = fmaxf(sc[0], sc[2]), x1 = fmaxf(sc[1], sc[3]);
#pragma unroll
		for (int o = 4; o < 32; o <<= 1) {
			x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, o));
			x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, o));
		}
		const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);
		/* a head with no position yet keeps weight 0 (and no -inf - -inf) */
		const float b0 = n0 == -INFINITY ? 0.f : n0, b1 = n1 == -INFINITY ? 0.f : n1;
		const float al0 = exp2f(m0 - b0), al1 = exp2f(m1 - b1);
		m0 = n0;
		m1 = n1;
		const float p0 = exp2f(sc[0] - b0), p1 = exp2f(sc[1] - b1);
		const float p2 = exp2f(sc[2] - b0), p3 = exp2f(sc[3] - b1);
		l0 = l0 * al0 + p0 + p2;
		l1 = l1 * al1 + p1 + p3;
#pragma unroll
		for (int mt = 0; mt < KS; mt++) {
			acc[mt][0] *= al0;
			acc[mt][1] *= al1;
			acc[mt][2] *= al0;
			acc[mt][3] *= al1;
		}
		/* P as the B operand: keys 2 t4, 2 t4 + 1 (b0) and + 8 (b1) of head gid */
		const uint32_t x01 = pack_bf16(p0, p1), x23 = pack_bf16(p2, p3);
		const int src = 8 * t4 + (gid >> 1);
		const uint32_t u0 = __shfl_sync(0xffffffffu, x01, src);
		const uint32_t u1 = __shfl_sync(0xffffffffu, x01, src + 4);
		const uint32_t v0 = __shfl_sync(0xffffffffu, x23, src);
		const uint32_t v1 = __shfl_sync(0xffffffffu, x23, src + 4);
		const uint32_t sel = gid & 1 ? 0x7632 : 0x5410;
		const uint32_t pb0 = __byte_perm(u0, u1, sel), pb1 = __byte_perm(v0, v1, sel);
#pragma unroll
		for (int mt = 0; mt < KS; mt++) {
			uint32_t a[4];
			ldsm_x4_t(a, &V[vkey][(2 * mt + vc) ^ (vkey & 7)]);
			mma16816(acc[mt], a, pb0, pb1);
		}
		__syncwarp(); /* every lane's reads of this stage are done before it is refilled */
		stage ^= 1;
	}
	cp_wait<0>();
	__syncthreads(); /* the merge state overwrites the stages */
#pragma unroll
	for (int o = 4; o < 32; o <<= 1) {
		l0 += __shfl_xor_sync(0xffffffffu, l0, o);
		l1 += __shfl_xor_sync(0xffffffffu, l1, o);
	}
	tc_merge<HD> &sm = shm.m;
	const int h0 = 2 * t4, h1 = 2 * t4 + 1;
	if (gid == 0) {
		sm.ml[w][h0][0] = m0;
		sm.ml[w][h0][1] = l0;
		sm.ml[w][h1][0] = m1;
		sm.ml[w][h1][1] = l1;
	}
#pragma unroll
	for (int mt = 0; mt < KS; mt++) {
		sm.acc[w][h0][16 * mt + gid] = acc[mt][0];
		sm.acc[w][h1][16 * mt + gid] = acc[mt][1];
		sm.acc[w][h0][16 * mt + gid + 8] = acc[mt][2];
		sm.acc[w][h1][16 * mt + gid + 8] = acc[mt][3];
	}
	__syncthreads();
}

/* attn_items_kernel with the tensor-core loop (same plan, same partials and merge). */
template <int HD>
__global__ void __launch_bounds__(DEC_WARPS * 32) attn_items_tc_kernel(dec_params p, dec_plan pl)
{
	extern __shared__ uint4 tc_dyn[];
	tc_shared<HD> &shm = *(tc_shared<HD> *)tc_dyn;
	const int h = blockIdx.x;
	struct dec_item it;
	if (!item_of(p, pl, &it))
		return;
	dec_range_tc<HD>(p, it.t, h, it.start, it.end, shm);
	items_finish<HD, DEC_WARPS>(p, shm.m, it.t, h, it.j, it.tk);
}

/* The tensor-core loop when it applies (head size 64 or 128, G <= 8, FI_DEC_TC not 0): 1 if
 * launched. */
template <int HD>
static int launch_items_tc(dim3 grid, cudaStream_t st, const dec_params &p, const dec_plan &pl)
{
	static int ready; /* the shared-memory limit is raised once per kernel */
	const size_t bytes = sizeof(tc_shared<HD>);
	if (!ready) {
		if (cudaFuncSetAttribute(attn_items_tc_kernel<HD>,
					 cudaFuncAttributeMaxDynamicSharedMemorySize,
					 (int)bytes) != cudaSuccess) {
			cudaGetLastError();
			ready = -1;
		} else {
			ready = 1;
		}
	}
	if (ready < 0)
		return 0;
	attn_items_tc_kernel<HD><<<grid, DEC_WARPS * 32, bytes, st>>>(p, pl);
	return 1;
}
