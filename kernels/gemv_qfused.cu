/* gemv_qfused: the entry of the fused decode products over quantized weights
 * (kernels/gemv_qfused.cuh): checks what the kernels assume, picks the x mode and the K
 * slices, and launches one kernel, or one per segment of q, k and v when their types differ
 * (a Q4_K_M file keeps v in Q6_K). */
#include "gemv_qfused.cuh"

#define QF_DECL(NAME) extern "C" void NAME(cudaStream_t, const qf_params *, int, int, int);
QF_DECL(fi_cu_qf_int4)
QF_DECL(fi_cu_qf_i8)
QF_DECL(fi_cu_qf_fp8)
QF_DECL(fi_cu_qf_q4k)
QF_DECL(fi_cu_qf_q5k)
QF_DECL(fi_cu_qf_q6k)

static fi_err qf_go(cudaStream_t st, qf_params p, int type, int T, int epi, int xm)
{
	int nc = p.K / 32;
	if (p.item1 <= p.item0)
		return FI_OK;
	p.S = fused_slices(nc, 32 * QF_U(type), QF_WARPS); /* a round of chunks a lane */
	p.slice_c = ((nc + p.S - 1) / p.S + 31) / 32 * 32;
	switch (type) {
	case FI_CQ_INT4: fi_cu_qf_int4(st, &p, T, epi, xm); break;
	case FI_CQ_I8: fi_cu_qf_i8(st, &p, T, epi, xm); break;
	case FI_CQ_FP8: fi_cu_qf_fp8(st, &p, T, epi, xm); break;
	case FI_CQ_Q4K: fi_cu_qf_q4k(st, &p, T, epi, xm); break;
	case FI_CQ_Q5K: fi_cu_qf_q5k(st, &p, T, epi, xm); break;
	case FI_CQ_Q6K: fi_cu_qf_q6k(st, &p, T, epi, xm); break;
	default: return FI_EUNSUPPORTED;
	}
	return FI_OK;
}

/* The weights of one launch agree on what the kernel takes from their descriptor. */
static bool qf_same(const fi_cu_qw &a, const fi_cu_qw &b)
{
	return a.type == b.type && (a.type != FI_CQ_FP8 || a.kind == b.kind);
}

extern "C" fi_err fi_cu_qfgemv(cudaStream_t st, const struct fi_cu_qfgemv *a, int T)
{
	qf_params p = {};
	int nw = a->epi == FI_FG_ROPE ? 3 : a->epi == FI_FG_GLU ? 2 : 1, xm;
	if (T < 1 || T > 4 || a->K <= 0 || a->K % 32 || a->N <= 0 || a->epi == FI_FG_STORE)
		return FI_EUNSUPPORTED;
	if (a->aq) {
		if (a->g || a->w[0].type != FI_CQ_FP8 || !a->xq || !a->xs || !fi_aligned16(a->xq))
			return FI_EUNSUPPORTED;
		xm = a->aq == FI_AQ_TOKEN ? QF_AQ_TOKEN : a->aq == FI_AQ_GROUP ? QF_AQ_GROUP : -1;
		if (xm < 0)
			return FI_EUNSUPPORTED;
	} else {
		/* the residual add takes x as it is, the others after the norm */
		if (!fi_aligned16(a->x) || (a->epi == FI_FG_ADD) != !a->g ||
		    (a->g && !fi_aligned16(a->g)))
			return FI_EUNSUPPORTED;
		xm = a->g ? QF_NORM : QF_BF16;
	}
	for (int i = 0; i < nw; i++) {
		const fi_cu_qw &w = a->w[i];
		if (w.type < FI_CQ_INT4 || w.type > FI_CQ_Q6K || w.perm || w.cols != a->K ||
		    !fi_aligned16(w.q) || (a->epi == FI_FG_GLU && !qf_same(w, a->w[0])))
			return FI_EUNSUPPORTED;
		p.w[i] = w;
		p.bias[i] = (const bf16 *)a->bias[i];
	}
	p.x = (const bf16 *)a->x;
	p.xq = (const uint8_t *)a->xq;
	p.xs = a->xs;
	p.g = (const bf16 *)a->g;
	p.eps = a->eps;
	p.act = a->act;
	p.out = (bf16 *)a->out;
	p.N = a->N;
	p.Nk = a->Nk;
	p.K = a->K;
	p.ro = a->ro;
	fi_err e = FI_OK;
	if (a->epi == FI_FG_ROPE) {
		if (p.ro.hd <= 0 || p.ro.hd % 2 || a->N % p.ro.hd || a->Nk % p.ro.hd)
			return FI_EUNSUPPORTED;
		/* items: the rotation pairs of q, then k, then v; one launch per run of segments
		 * of the same type */
		int end[3] = {a->N / 2, a->N / 2 + a->Nk / 2, a->N / 2 + a->Nk};
		int s = 0;
		while (s < 3 && !e) {
			int t = s;
			while (t + 1 < 3 && qf_same(a->w[t + 1], a->w[s]))
				t++;
			p.item0 = s ? end[s - 1] : 0;
			p.item1 = end[t];
			e = qf_go(st, p, a->w[s].type, T, a->epi, xm);
			s = t + 1;
		}
	} else {
		p.item0 = 0;
		p.item1 = a->epi == FI_FG_ADD ? (a->N + 1) / 2 : a->N;
		e = qf_go(st, p, a->w[0].type, T, a->epi, xm);
	}
	if (e)
		return e;
	LAUNCH_CHECK();
	return FI_OK;
}
