/* Kernel timings at serving sizes for tests/gpu/NOTES.md (the roofline table of issue 12):
 * decode attention over hundreds of sequences of a ShareGPT-like length mix (planned
 * pieces, pipelined and not, against FI_DEC_PLAN=0), a mixed batch (decode rows and a
 * prompt chunk after a paged prefix, with and without the n_decode hint), the 8B shape's
 * GEMMs at T = 64..8192 tokens a step and the LM head, cuBLASLt's plan for a new T (host
 * time), and the sample op over 256 rows of 128256 logits. Random data, a warm-up, median
 * of 7 runs each bracketed by stream syncs. Not a pass/fail test; prints one markdown
 * table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/settings.h"
#include "backend/backend.h"
#include "base/log.h"
#include "gpu_util.h"

static struct fi_backend *G;
static uint64_t seed = 4242;

#define TIME(stmt)                                                                         \
	({                                                                                 \
		double ts_[7];                                                             \
		for (int w_ = 0; w_ < 2; w_++)                                             \
			stmt;                                                              \
		G->ops->sync(G);                                                           \
		for (int r_ = 0; r_ < 7; r_++) {                                           \
			double t0_ = fi_now();                                             \
			stmt;                                                              \
			G->ops->sync(G);                                                   \
			ts_[r_] = fi_now() - t0_;                                          \
		}                                                                          \
		median(ts_, 7);                                                            \
	})

static void *dalloc(size_t bytes)
{
	void *d;
	if (G->ops->alloc(G, bytes, &d)) {
		fprintf(stderr, "%s\n", fi_errmsg());
		exit(1);
	}
	return d;
}

/* n random bf16 values (a 4 MiB random tile repeated) */
static void *rnd_bf16(size_t n)
{
	static uint16_t *tile;
	const size_t tn = 2u << 20;
	void *d = dalloc(n * 2);
	if (!tile) {
		float *f = rand_bf16(tn, 1, &seed);
		tile = malloc(tn * 2);
		fi_convert(tile, FI_DT_BF16, f, FI_DT_F32, tn);
		free(f);
	}
	for (size_t o = 0; o < n; o += tn)
		G->ops->upload(G, (uint16_t *)d + o, tile, (n - o < tn ? n - o : tn) * 2);
	G->ops->sync(G);
	return d;
}

static void *put(const void *h, size_t bytes)
{
	void *d = dalloc(bytes);
	G->ops->upload(G, d, h, bytes);
	G->ops->sync(G);
	return d;
}

static double unif(void)
{
	return ((next(&seed) >> 11) + 0.5) * 0x1.0p-53;
}

/* lognormal with the given mean (sigma 1, ShareGPT-like spread), clipped to [lo, hi] */
static int lognormal(double mean, int lo, int hi)
{
	double z = sqrt(-2 * log(unif())) * cos(2 * M_PI * unif());
	double v = exp(log(mean) - 0.5 + z);
	return v < lo ? lo : v > hi ? hi : (int)v;
}

static void row(const char *what, double us, const char *rate)
{
	printf("| %s | %.1f us | %s |\n", what, us, rate);
}

/* One layer's attention: B decode rows of the length mix (prompt mean 217 in [4, 1024], plus
 * part of an output of mean 176 in [4, 1024]), then n_chunk prompt tokens after hist cached
 * tokens of one more sequence. */
static void attn(int B, int Hq, int Hk, int hd, int n_chunk, int hist)
{
	int bs = 16, S = B + (n_chunk > 0), T = B + n_chunk, maxb = 0, nb = 0;
	int *len = malloc(sizeof(int) * (size_t)S);
	double kv_bytes = 0, longest = 0;
	for (int s = 0; s < B; s++) {
		int p = lognormal(217, 4, 1024), o = lognormal(176, 4, 1024);
		len[s] = p + (int)(unif() * o) + 1;
	}
	if (n_chunk)
		len[B] = hist + n_chunk;
	for (int s = 0; s < S; s++) {
		int b = (len[s] + bs - 1) / bs;
		nb += b;
		maxb = b > maxb ? b : maxb;
		kv_bytes += 4.0 * len[s] * Hk * hd; /* K and V, bf16 */
		longest = len[s] > longest ? len[s] : longest;
	}
	int32_t *bt = malloc(4 * (size_t)S * maxb), *seq = malloc(4 * (size_t)T);
	int32_t *pos = malloc(4 * (size_t)T), *slot = malloc(4 * (size_t)T), *sl = malloc(4 * (size_t)S);
	for (int s = 0, u = 0; s < S; s++) {
		sl[s] = len[s];
		for (int j = 0; j < maxb; j++)
			bt[(size_t)s * maxb + j] = j < (len[s] + bs - 1) / bs ? (u++ * 7919) % nb : -1;
	}
	for (int t = 0; t < T; t++) {
		int s = t < B ? t : B, p = t < B ? len[s] - 1 : hist + (t - B);
		seq[t] = s, pos[t] = p, slot[t] = bt[(size_t)s * maxb + p / bs] * bs + p % bs;
	}
	void *k = rnd_bf16((size_t)nb * bs * Hk * hd), *v = rnd_bf16((size_t)nb * bs * Hk * hd);
	void *kp[1] = {k}, *vp[1] = {v};
	struct fi_kv_cache kv = {.n_layers = 1, .n_blocks = nb, .block_size = bs, .n_kv_heads = Hk,
				 .head_dim = hd, .k_d = kp, .v_d = vp};
	void *q = rnd_bf16((size_t)T * Hq * hd), *o = rnd_bf16((size_t)T * Hq * hd);
	void *dseq = put(seq, 4 * (size_t)T), *dpos = put(pos, 4 * (size_t)T);
	void *dslot = put(slot, 4 * (size_t)T), *dsl = put(sl, 4 * (size_t)S);
	void *dbt = put(bt, 4 * (size_t)S * maxb);
	struct fi_attn_batch b = {.n_tokens = T, .n_seqs = S, .max_blocks = maxb, .tok_seq_d = dseq,
				  .tok_pos_d = dpos, .slot_d = dslot, .seq_len_d = dsl,
				  .block_table_d = dbt, .max_seq_len = (int)longest,
				  .scale = 1 / sqrtf((float)hd), .n_decode = B};
	char what[160], rate[96];
	for (int k2 = 0; k2 < 4; k2++) {
		const char *mode;
		if (n_chunk) { /* with and without the hint */
			if (k2 == 2)
				break;
			b.n_decode = k2 ? 0 : B;
			mode = k2 ? "no hint (one kernel)" : "n_decode hint";
		} else {
			/* planned (tensor cores where they apply: the default), planned on CUDA
			 * cores, planned with K/V rows loaded a round at a time, not planned */
			static const char *const var[] = {NULL, "FI_DEC_TC", "FI_DEC_ASYNC",
							  "FI_DEC_PLAN"};
			static const char *const name[] = {"planned", "planned, FI_DEC_TC=0",
							   "planned, FI_DEC_ASYNC=0", "FI_DEC_PLAN=0"};
			if (var[k2])
				setenv(var[k2], "0", 1);
			fi_settings_reload();
			mode = name[k2];
		}
		double t = TIME(G->ops->attention(G, o, q, &kv, 0, Hq, &b));
		unsetenv("FI_DEC_PLAN");
		unsetenv("FI_DEC_ASYNC");
		unsetenv("FI_DEC_TC");
		fi_settings_reload();
		snprintf(what, sizeof what,
			 "attention %d rows Hq %d Hk %d hd %d, longest %.0f%s%s, %s", B, Hq, Hk, hd,
			 longest, n_chunk ? " + chunk " : "", n_chunk ? "after a prefix" : "", mode);
		snprintf(rate, sizeof rate, "%.0f GB/s of K/V (%.1f MB; %.1f us at 4.3 TB/s)",
			 kv_bytes / t / 1e9, kv_bytes / 1e6, kv_bytes / 4.3e12 * 1e6);
		row(what, t * 1e6, rate);
	}
	G->ops->free(G, k), G->ops->free(G, v), G->ops->free(G, q), G->ops->free(G, o);
	G->ops->free(G, dseq), G->ops->free(G, dpos), G->ops->free(G, dslot), G->ops->free(G, dsl);
	G->ops->free(G, dbt);
	free(len), free(bt), free(seq), free(pos), free(slot), free(sl);
}

static void gemm(const char *name, int T, int N, int K, int f32)
{
	struct fi_weight w = {.p = rnd_bf16((size_t)N * K), .dtype = FI_DT_BF16, .rows = N, .cols = K};
	void *x = rnd_bf16((size_t)T * K), *y = dalloc((size_t)T * N * (f32 ? 4 : 2));
	double t = f32 ? TIME(G->ops->matmul_f32out(G, y, x, &w, T))
		       : TIME(G->ops->matmul(G, y, x, &w, NULL, T));
	double fl = 2.0 * T * N * K, by = 2.0 * ((double)N * K + (double)T * K) + (f32 ? 4.0 : 2.0) * T * N;
	char what[96], rate[96];
	snprintf(what, sizeof what, "gemm %s T=%d (%dx%d)", name, T, N, K);
	snprintf(rate, sizeof rate, "%.0f TFLOP/s, %.0f GB/s", fl / t / 1e12, by / t / 1e9);
	row(what, t * 1e6, rate);
	G->ops->free(G, w.p), G->ops->free(G, x), G->ops->free(G, y);
}

/* The four products of an 8B layer (qkv and gate+up as one weight each, 436 MB) timed as
 * one run, so that no weight stays in L2 between repeats (timing one 32 MB weight alone
 * reads it from the 50 MB L2): the small serving steps' GEMMs against the weight bytes. */
static void gemm_layer(int T)
{
	static const int shape[4][2] = {{6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}};
	struct fi_weight w[4];
	void *x = rnd_bf16((size_t)T * 14336), *y = dalloc((size_t)T * 28672 * 2);
	double bytes = 0;
	for (int i = 0; i < 4; i++) {
		w[i] = (struct fi_weight){.p = rnd_bf16((size_t)shape[i][0] * shape[i][1]),
					  .dtype = FI_DT_BF16, .rows = shape[i][0],
					  .cols = shape[i][1]};
		bytes += 2.0 * shape[i][0] * shape[i][1];
	}
	double t = TIME(({
		for (int i = 0; i < 4; i++)
			G->ops->matmul(G, y, x, &w[i], NULL, T);
	}));
	char what[96], rate[96];
	snprintf(what, sizeof what, "4 GEMMs of a layer, T=%d", T);
	snprintf(rate, sizeof rate, "%.0f GB/s of weights, %.0f TFLOP/s", bytes / t / 1e9,
		 bytes * T / t / 1e12);
	row(what, t * 1e6, rate);
	for (int i = 0; i < 4; i++)
		G->ops->free(G, w[i].p);
	G->ops->free(G, x), G->ops->free(G, y);
}

/* Host time of the first GEMM at a new T: the first of a bucket of T (cuBLASLt's heuristic
 * and descriptors), the others of that bucket (descriptors and a check of the bucket's
 * algorithm), and a cached one. */
static void gemm_plan(void)
{
	struct fi_weight w = {.p = rnd_bf16((size_t)4096 * 4096), .dtype = FI_DT_BF16, .rows = 4096, .cols = 4096};
	void *x = rnd_bf16((size_t)1000 * 4096), *y = dalloc((size_t)1000 * 4096 * 2);
	double first = 0, more = 0, again = 0;
	int n_first = 0;
	/* 577..640 is one bucket, as are 705..768 (gemm.c) */
	static const int Ts[] = {601, 602, 603, 604, 605, 721, 722, 723, 724, 725};
	for (int i = 0; i < 10; i++) {
		int T = Ts[i];
		double t0 = fi_now();
		G->ops->matmul(G, y, x, &w, NULL, T);
		double t1 = fi_now();
		G->ops->matmul(G, y, x, &w, NULL, T);
		double t2 = fi_now();
		G->ops->sync(G);
		if (i % 5 == 0)
			first += t1 - t0, n_first++;
		else
			more += t1 - t0;
		again += t2 - t1;
	}
	char rate[128];
	snprintf(rate, sizeof rate, "host: %.1f us at a new bucket, %.1f us at a new T of a known "
		 "bucket, %.1f us cached", first / n_first * 1e6, more / 8 * 1e6, again / 10 * 1e6);
	row("gemm plan for a new token count", first / n_first * 1e6, rate);
	G->ops->free(G, w.p), G->ops->free(G, x), G->ops->free(G, y);
}

/* The sample op over n rows of V logits: every row plain, or with a penalty window of 256,
 * or with log-probabilities and 20 alternatives; the argmax op for comparison. */
static void sample(int n, int V)
{
	float *l = malloc(sizeof(float) * (size_t)n * V);
	struct fi_sample_row *rw = calloc((size_t)n, sizeof *rw);
	int32_t *win = malloc(sizeof(int32_t) * (size_t)n * 256);
	for (size_t i = 0; i < (size_t)n * V; i++)
		l[i] = (float)(unif() * 2 - 1) * 24;
	for (int i = 0; i < n * 256; i++)
		win[i] = (int32_t)(next(&seed) % (uint64_t)V);
	void *dl = put(l, sizeof(float) * (size_t)n * V), *dw = put(win, 4 * (size_t)n * 256);
	void *dout = dalloc(8 * (size_t)n), *dlp = dalloc(4 * (size_t)n);
	void *dtop = dalloc(sizeof(struct fi_sample_top) * (size_t)n * FI_SAMPLE_MAX_TOP);
	void *drw = dalloc(sizeof *rw * (size_t)n);
	char what[96];
	double t = TIME(G->ops->argmax(G, dout, dl, n, V));
	snprintf(what, sizeof what, "argmax %d rows of %d", n, V);
	row(what, t * 1e6, "");
	for (int k = 0; k < 3; k++) {
		static const char *name[] = {"temp 0.8 top-p 0.95", "+ penalty 1.1 over 256 tokens",
					     "+ logprobs and 20 alternatives"};
		for (int i = 0; i < n; i++) {
			rw[i] = (struct fi_sample_row){.u = unif(), .temperature = 0.8f, .top_p = 0.95f,
						       .penalty = k ? 1.1f : 1.0f, .n_hist = k ? 256 : 0,
						       .hist_off = (int64_t)i * 256,
						       .n_logprobs = k == 2 ? 20 : -1};
		}
		G->ops->upload(G, drw, rw, sizeof *rw * (size_t)n);
		struct fi_sample_args a = {.n = n, .V = V, .logits_d = dl, .rows_d = drw,
					   .hist_d = dw, .max_top = FI_SAMPLE_MAX_TOP, .out_d = dout,
					   .logprob_d = dlp, .top_d = dtop};
		t = TIME(G->ops->sample(G, &a));
		snprintf(what, sizeof what, "sample %d rows of %d, %s", n, V, name[k]);
		row(what, t * 1e6, "");
	}
	G->ops->free(G, dl), G->ops->free(G, dw), G->ops->free(G, dout), G->ops->free(G, dlp);
	G->ops->free(G, dtop), G->ops->free(G, drw);
	free(l), free(rw), free(win);
}

int main(void)
{
	if (fi_backend_create("cuda", 0, &G)) {
		printf("SKIPPED: %s\n", fi_errmsg());
		return 77;
	}
	printf("%s\n\n| what | time | rate |\n| --- | ---: | --- |\n", G->device);
	/* decode attention at serving batch sizes, 8B and 1B heads */
	for (int B = 256; B <= 1024; B *= 2)
		attn(B, 32, 8, 128, 0, 0);
	attn(64, 32, 8, 128, 0, 0);
	attn(512, 32, 8, 64, 0, 0);
	/* a mixed step: 256 decode rows and a 512-token chunk after 1024 cached tokens */
	attn(256, 32, 8, 128, 512, 1024);
	/* the 8B shape's products at serving token counts (q/k/v and gate/up as one weight
	 * up to 256 rows, as matmul_multi runs them) */
	for (int T = 8; T <= 512; T *= 2)
		gemm_layer(T);
	for (int T = 64; T <= 8192; T *= 2) {
		gemm("qkv", T, 6144, 4096, 0);
		gemm("o", T, 4096, 4096, 0);
		if (T <= 256)
			gemm("gate+up", T, 28672, 4096, 0);
		else
			gemm("gate|up", T, 14336, 4096, 0);
		gemm("down", T, 4096, 14336, 0);
	}
	gemm("LM head f32", 32, 128256, 4096, 1);
	gemm("LM head f32", 128, 128256, 4096, 1);
	gemm("LM head f32", 256, 128256, 4096, 1);
	gemm("LM head f32", 1024, 128256, 4096, 1);
	gemm_plan();
	sample(256, 128256);
	fi_backend_destroy(G);
	return 0;
}
