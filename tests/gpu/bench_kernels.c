/* Kernel timings on the GPU for tests/gpu/NOTES.md: the Llama-3-8B GEMM shapes through
 * cuBLASLt, attention prefill (tensor cores) and decode (split-K), with achieved TFLOP/s and
 * GB/s next to the ceilings measured on the card (device-to-device copy). Random data, warm-up
 * first, median of several runs, each run bracketed by stream syncs. Not a pass/fail test. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/settings.h"
#include "gpu_util.h"
#include "base/log.h"

static struct fi_backend *G;
static uint64_t seed = 12345;

/* Random bf16 device buffer of n elements (a random 4 MiB tile repeated). */
static void *rnd(size_t n)
{
	static uint16_t *tile;
	const size_t tn = 2u << 20;
	void *d;
	if (!tile) {
		float *f = rand_bf16(tn, 1, &seed);
		tile = malloc(tn * 2);
		fi_convert(tile, FI_DT_BF16, f, FI_DT_F32, tn);
		free(f);
	}
	if (G->ops->alloc(G, n * 2, &d)) {
		fprintf(stderr, "%s\n", fi_errmsg());
		exit(1);
	}
	for (size_t o = 0; o < n; o += tn)
		G->ops->upload(G, (uint16_t *)d + o, tile, (n - o < tn ? n - o : tn) * 2);
	G->ops->sync(G);
	return d;
}

#define TIME(reps, stmt)                                                                   \
	({                                                                                 \
		double ts_[16];                                                            \
		for (int w_ = 0; w_ < 2; w_++)                                             \
			stmt;                                                              \
		G->ops->sync(G);                                                           \
		for (int r_ = 0; r_ < (reps); r_++) {                                      \
			double t0_ = fi_now();                                             \
			stmt;                                                              \
			G->ops->sync(G);                                                   \
			ts_[r_] = fi_now() - t0_;                                          \
		}                                                                          \
		median(ts_, (reps));                                                       \
	})

static void gemm(int T, int N, int K, int inner)
{
	struct fi_weight w = {.p = rnd((size_t)N * K), .dtype = FI_DT_BF16, .rows = N, .cols = K};
	void *x = rnd((size_t)T * K), *y = rnd((size_t)T * N);
	double t = TIME(9, for (int i_ = 0; i_ < inner; i_++) G->ops->matmul(G, y, x, &w, NULL, T)) / inner;
	double fl = 2.0 * T * N * K, by = 2.0 * ((double)N * K + (double)T * K + (double)T * N);
	printf("| gemm T=%d N=%d K=%d | %.1f us | %.0f TFLOP/s | %.0f GB/s |\n", T, N, K, t * 1e6,
	       fl / t / 1e12, by / t / 1e9);
	G->ops->free(G, w.p), G->ops->free(G, x), G->ops->free(G, y);
}

/* One layer's attention for S sequences of len tokens, the last n_new of each in the batch. */
static void attn(int S, int len, int n_new, int Hq, int Hk, int hd)
{
	int bs = 16, mb = (len + bs - 1) / bs, T = S * n_new;
	struct fi_kv_cache kv = {.n_layers = 1, .n_blocks = S * mb, .block_size = bs,
				 .n_kv_heads = Hk, .head_dim = hd};
	if (G->ops->kv_alloc(G, &kv)) {
		fprintf(stderr, "%s\n", fi_errmsg());
		exit(1);
	}
	size_t cn = (size_t)kv.n_blocks * bs * Hk * hd;
	void *k = rnd(cn), *v = rnd(cn);
	G->ops->free(G, kv.k_d[0]); /* replace the (uninitialised) cache by random data */
	int32_t *seq = malloc(4 * T), *pos = malloc(4 * T), *slot = malloc(4 * T), *sl = malloc(4 * S);
	int32_t *bt = malloc(4 * (size_t)S * mb);
	for (int s = 0; s < S; s++) {
		sl[s] = len;
		for (int j = 0; j < mb; j++)
			bt[s * mb + j] = s * mb + (j * 7 + 3) % mb; /* scattered blocks */
		for (int i = 0; i < n_new; i++) {
			int t = s * n_new + i, p = len - n_new + i;
			seq[t] = s, pos[t] = p, slot[t] = bt[s * mb + p / bs] * bs + p % bs;
		}
	}
	void *q = rnd((size_t)T * Hq * hd), *o = rnd((size_t)T * Hq * hd);
	void *dseq = put_bytes(G, seq, 4 * T), *dpos = put_bytes(G, pos, 4 * T);
	void *dslot = put_bytes(G, slot, 4 * T), *dsl = put_bytes(G, sl, 4 * S);
	void *dbt = put_bytes(G, bt, 4 * (size_t)S * mb);
	struct fi_kv_cache kv2 = kv;
	void *kp[1] = {k}, *vp[1] = {v};
	kv2.k_d = kp;
	kv2.v_d = vp;
	struct fi_attn_batch b = {.n_tokens = T, .n_seqs = S, .max_blocks = mb, .tok_seq_d = dseq,
				  .tok_pos_d = dpos, .slot_d = dslot, .seq_len_d = dsl,
				  .block_table_d = dbt, .max_seq_len = len, .scale = 1 / sqrtf(hd)};
	double t = TIME(7, G->ops->attention(G, o, q, &kv2, 0, Hq, &b));
	/* causal FLOPs of the new rows; bytes: K and V read once per KV head + q + out */
	double fl = 0;
	for (int i = 0; i < n_new; i++)
		fl += 4.0 * hd * Hq * (len - n_new + i + 1);
	fl *= S;
	double by = 2.0 * 2 * S * (double)len * Hk * hd + 2.0 * 2 * T * Hq * hd;
	printf("| attention S=%d len=%d new=%d Hq=%d Hk=%d hd=%d | %.1f us | %.1f TFLOP/s | %.0f GB/s |\n",
	       S, len, n_new, Hq, Hk, hd, t * 1e6, fl / t / 1e12, by / t / 1e9);
	G->ops->free(G, k), G->ops->free(G, v), G->ops->free(G, q), G->ops->free(G, o);
	G->ops->free(G, dseq), G->ops->free(G, dpos), G->ops->free(G, dslot), G->ops->free(G, dsl);
	G->ops->free(G, dbt);
	free(kv.k_d), free(kv.v_d), free(seq), free(pos), free(slot), free(sl), free(bt);
}

int main(void)
{
	if (fi_backend_create("cuda", 0, &G)) {
		printf("SKIPPED: %s\n", fi_errmsg());
		return 77;
	}
	printf("%s\n\n| what | time | compute | memory |\n| --- | ---: | ---: | ---: |\n", G->device);
	{ /* the bandwidth ceiling: a 1 GiB device-to-device copy (gather_rows, 16384 rows) */
		const double bw = copy_rate(G);
		printf("| copy 1 GiB (gather_rows) | %.1f us | | %.0f GB/s |\n",
		       bw > 0 ? 2.0 * (1u << 30) / bw * 1e6 : 0.0, bw / 1e9);
	}
	gemm(8192, 8192, 8192, 1);
	setenv("FI_GEMM_TUNE", "1", 1);
	fi_settings_reload();
	printf("| FI_GEMM_TUNE=1 (fastest of the heuristic's candidates) | | | |\n");
	gemm(64, 4096, 4096, 1);
	gemm(64, 1024, 4096, 1);
	gemm(64, 14336, 4096, 1);
	gemm(64, 4096, 14336, 1);
	gemm(16, 4096, 4096, 1);
	unsetenv("FI_GEMM_TUNE");
	fi_settings_reload();
	/* plans are per shape and tuned once: the default needs shapes not seen above */
	printf("| default: the heuristic's first pick | | | |\n");
	gemm(17, 4096, 4096, 1);
	gemm(65, 14336, 4096, 1);
	/* (T=64 below reuses the plans tuned above) */
	for (int T = 1; T <= 8192; T *= (T == 1 ? 64 : T == 64 ? 8 : 4)) {
		gemm(T, 4096, 4096, T == 1 ? 20 : 1);
		gemm(T, 1024, 4096, T == 1 ? 20 : 1);
		gemm(T, 14336, 4096, T == 1 ? 20 : 1);
		gemm(T, 4096, 14336, T == 1 ? 20 : 1);
	}
	setenv("FI_GEMV", "0", 1);
	fi_settings_reload();
	printf("| cuBLASLt at T=1 (gemv kernel off) | | | |\n");
	gemm(1, 4096, 4096, 20);
	gemm(1, 1024, 4096, 20);
	gemm(1, 14336, 4096, 20);
	gemm(1, 4096, 14336, 20);
	gemm(1, 128256, 4096, 5);
	unsetenv("FI_GEMV");
	fi_settings_reload();
	printf("| gemv kernel | | | |\n");
	gemm(1, 128256, 4096, 5);
	gemm(64, 128256, 4096, 5);
	for (int k = 0; k < 6; k++) {
		/* 64 rows; 128 (4 warps of 32, K/V tiles of 64 or 32); 128 as 8 warps of 16;
		 * wgmma (hd 128 only, sm_90a) with warpgroups in lockstep or ping-pong */
		static const char *br[] = {"64", "128", "128c32", "128w8", "wgl", "wg"};
		setenv("FI_PF_BR", br[k], 1);
		fi_settings_reload();
		printf("| prefill tiles %s | | | |\n", br[k]);
		attn(1, 512, 512, 32, 8, 128);
		attn(1, 2048, 2048, 32, 8, 128);
		attn(1, 8192, 8192, 32, 8, 128);
		attn(1, 8192, 8192, 32, 8, 64);
	}
	unsetenv("FI_PF_BR");
	fi_settings_reload();
	for (int k = 0; k < 3; k++) {
		static const char *wv[] = {"2", "4", "8"};
		setenv("FI_DEC_WAVES", wv[k], 1);
		fi_settings_reload();
		printf("| decode split target %s CTAs per SM | | | |\n", wv[k]);
		attn(64, 256, 1, 32, 8, 128);
		attn(8, 1024, 1, 32, 8, 128);
	}
	unsetenv("FI_DEC_WAVES");
	fi_settings_reload();
	printf("| defaults | | | |\n");
	attn(1, 128, 1, 32, 8, 128);
	attn(1, 4096, 1, 32, 8, 128);
	attn(64, 256, 1, 32, 8, 128);
	attn(64, 4096, 1, 32, 8, 128);
	attn(1, 4096, 1, 32, 8, 64);
	fi_backend_destroy(G);
	return 0;
}
