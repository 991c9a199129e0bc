/* The CUDA side of serving batches against the CPU backend (run on a GPU machine; SKIPPED,
 * exit 77, without one):
 *   attention    decode rows of hundreds of sequences of mixed lengths (the planned path of
 *                kernels/attn_decode.cu: a work list of pieces, longest first, merged by
 *                the last piece), forced on and off; mixed batches (decode rows first, then
 *                prompt chunks attending to a paged prefix written by earlier chunks), with
 *                and without the n_decode hint; a prompt in chunks; a cache refilled by
 *                kv_copy with no sync before the attention (an arena fetch under a step: the
 *                attention waits for the copy's events). The cache is poisoned
 *                with NaN (no unwritten slot may be read), outputs too (every element must
 *                be written); tolerances as test_kernels' attention.
 *   sample       the sample op against the CPU op (fi_sample_pick): repetition penalties
 *                (windows with repeats and ids outside the vocabulary), greedy rows with a
 *                penalty, log-probabilities and up to 20 alternatives; tokens equal but at
 *                most 1 row in 500 (a parallel sum meeting a boundary), log-probabilities
 *                within 1e-5.
 *   model        a random Llama-shaped model (hd 64, 4096 positions) on both backends:
 *                prompts of 1 to 600 tokens in one batch, decode steps whose batch shrinks
 *                through the ladder's rungs (graphs captured and replayed at several batch
 *                sizes and block-table widths; from rung 16 on with the planned decode
 *                attention), and a mixed step (new prompts after the decode rows); every
 *                step's logits against the CPU's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/settings.h"
#include "backend/backend.h"
#include "backend/cuda/cuda_be.h"
#include "gpu_util.h"
#include "model/model.h"
#include "model/names.h"
#include "../unit/util.h"

static struct pair P;
static uint64_t seed = 0x2545f4914f6cdd1dull;

static void freeb(struct fi_backend *be, void *p) { be->ops->free(be, p); }

static void *ints(struct fi_backend *be, const int32_t *v, size_t n)
{
	void *d = put_bytes(be, v, (n ? n : 1) * sizeof(int32_t));
	be->ops->sync(be);
	return d;
}

/* ---- attention ---- */

struct acase {
	const char *name;
	int Hq, Hk, hd, bs, window, S;
	int *hist, *nnew; /* [S]: tokens in the cache before, in this batch */
	int n_decode;     /* the hint (backend.h) */
	const char *plan; /* FI_DEC_PLAN, or NULL; "copy" first: the cache refilled through
			   * kv_copy (refill_by_copy); "sync" next: FI_DEC_ASYNC=0 too, "cc" next:
			   * FI_DEC_TC=0 (the planned path on CUDA cores, not tensor cores) */
};

/* The cache's contents again, as a prefix fetched from the arena arrives: the cache is read
 * back, poisoned, then written by kv_copy from host blocks in the arena's layout, with no sync
 * before the attention that reads it, which must wait for the copy (kvcopy.c's events).
 * Returns the host blocks, to be freed once the attention is waited for. */
static void *refill_by_copy(struct fi_backend *b, struct fi_kv_cache *kv)
{
	int nb = kv->n_blocks;
	size_t part = (size_t)kv->block_size * kv->n_kv_heads * kv->head_dim * 2;
	size_t lay = part * (size_t)nb;
	uint8_t *k = malloc(lay), *v = malloc(lay), *host = malloc(2 * lay);
	void **ptr = malloc(sizeof *ptr * (size_t)nb);
	int32_t *bl = malloc(sizeof *bl * (size_t)nb);
	ck_assert(k && v && host && ptr && bl && kv->n_layers == 1);
	ck_assert(!b->ops->sync(b) && !b->ops->download(b, k, kv->k_d[0], lay) &&
		  !b->ops->download(b, v, kv->v_d[0], lay));
	for (int i = 0; i < nb; i++) {
		memcpy(host + 2 * (size_t)i * part, k + (size_t)i * part, part);
		memcpy(host + (2 * (size_t)i + 1) * part, v + (size_t)i * part, part);
		ptr[i] = host + 2 * (size_t)i * part;
		bl[i] = i;
	}
	memset(k, 0xff, lay); /* NaN in bf16 */
	ck_assert(!b->ops->upload(b, kv->k_d[0], k, lay) && !b->ops->upload(b, kv->v_d[0], k, lay) &&
		  !b->ops->sync(b));
	ck_assert_msg(!b->ops->kv_copy(b, kv, 1, nb, bl, ptr, NULL), "kv_copy: %s", fi_errmsg());
	free(k);
	free(v);
	free(ptr);
	free(bl);
	return host;
}

static int rnd(int lo, int hi) /* [lo, hi] */
{
	return lo + (int)(next(&seed) % (uint64_t)(hi - lo + 1));
}

static void run_acase(const struct acase *c)
{
	int S = c->S, Hq = c->Hq, Hk = c->Hk, hd = c->hd, bs = c->bs;
	int maxb = 0, nb = 3, T0 = 0, T1 = 0, max_len = 0;
	size_t row = (size_t)Hk * hd;
	for (int s = 0; s < S; s++) {
		int b = (c->hist[s] + c->nnew[s] + bs - 1) / bs;
		maxb = b > maxb ? b : maxb;
		nb += b;
		T0 += c->hist[s];
		T1 += c->nnew[s];
		max_len = c->hist[s] + c->nnew[s] > max_len ? c->hist[s] + c->nnew[s] : max_len;
	}
	int32_t *perm = malloc(sizeof(int32_t) * (size_t)nb), *bt = malloc(sizeof(int32_t) * (size_t)S * maxb);
	for (int i = 0; i < nb; i++)
		perm[i] = i;
	for (int i = nb - 1; i > 0; i--) { /* blocks handed out in a shuffled order */
		int j = (int)(next(&seed) % (uint64_t)(i + 1)), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (int s = 0, u = 0; s < S; s++)
		for (int j = 0; j < maxb; j++)
			bt[(size_t)s * maxb + j] = j < (c->hist[s] + c->nnew[s] + bs - 1) / bs ? perm[u++] : -1;
	int32_t *seq0 = malloc(4 * (size_t)(T0 + 1)), *pos0 = malloc(4 * (size_t)(T0 + 1));
	int32_t *slot0 = malloc(4 * (size_t)(T0 + 1)), *seq1 = malloc(4 * (size_t)T1);
	int32_t *pos1 = malloc(4 * (size_t)T1), *slot1 = malloc(4 * (size_t)T1);
	int32_t *slen = malloc(4 * (size_t)S);
	for (int s = 0, t = 0, u = 0; s < S; s++) {
		for (int p = 0; p < c->hist[s]; p++, t++) {
			seq0[t] = s;
			pos0[t] = p;
			slot0[t] = bt[(size_t)s * maxb + p / bs] * bs + p % bs;
		}
		for (int i = 0; i < c->nnew[s]; i++, u++) {
			int p = c->hist[s] + i;
			seq1[u] = s;
			pos1[u] = p;
			slot1[u] = bt[(size_t)s * maxb + p / bs] * bs + p % bs;
		}
		slen[s] = c->hist[s] + c->nnew[s];
	}
	struct fi_backend *be[2] = {P.cpu, P.gpu};
	struct fi_kv_cache kv[2];
	size_t nq = (size_t)T1 * Hq * hd;
	float *k0 = rand_bf16((size_t)T0 * row + 1, 1, &seed), *v0 = rand_bf16((size_t)T0 * row + 1, 1, &seed);
	float *k1 = rand_bf16((size_t)T1 * row, 1, &seed), *v1 = rand_bf16((size_t)T1 * row, 1, &seed);
	float *q = rand_bf16(nq, 2.5f, &seed);
	void *out[2], *out_l1 = NULL;
	/* two layers of the same contents (one where the cache is refilled by copy): layer 1
	 * reads the planned path's work list that layer 0 made */
	const int L = c->plan && !strncmp(c->plan, "copy", 4) ? 1 : 2;
	for (int i = 0; i < 2; i++) {
		struct fi_backend *b = be[i];
		kv[i] = (struct fi_kv_cache){.n_layers = L, .n_blocks = nb, .block_size = bs,
					     .n_kv_heads = Hk, .head_dim = hd};
		ck_assert_msg(b->ops->kv_alloc(b, &kv[i]) == FI_OK, "kv_alloc: %s", fi_errmsg());
		{ /* poison the whole cache */
			size_t cn = (size_t)nb * bs * row, es = fi_dtype_size(b->act);
			void *hz = malloc(cn * es);
			memset(hz, 0xff, cn * es);
			for (int l = 0; l < L; l++) {
				b->ops->upload(b, kv[i].k_d[l], hz, cn * es);
				b->ops->upload(b, kv[i].v_d[l], hz, cn * es);
			}
			b->ops->sync(b);
			free(hz);
		}
		void *d[12] = {ints(b, seq0, T0 + 1), ints(b, pos0, T0 + 1), ints(b, slot0, T0 + 1),
			       ints(b, seq1, T1), ints(b, pos1, T1), ints(b, slot1, T1), ints(b, slen, S),
			       ints(b, bt, (size_t)S * maxb), put_act(b, k0, (size_t)T0 * row + 1),
			       put_act(b, v0, (size_t)T0 * row + 1), put_act(b, k1, (size_t)T1 * row),
			       put_act(b, v1, (size_t)T1 * row)};
		struct fi_attn_batch hb = {.n_tokens = T0, .n_seqs = S, .max_blocks = maxb,
					   .tok_seq_d = d[0], .tok_pos_d = d[1], .slot_d = d[2],
					   .seq_len_d = d[6], .block_table_d = d[7], .max_seq_len = max_len,
					   .sliding_window = c->window, .scale = 1 / sqrtf((float)hd)};
		struct fi_attn_batch nb1 = hb;
		nb1.n_tokens = T1;
		nb1.tok_seq_d = d[3];
		nb1.tok_pos_d = d[4];
		nb1.slot_d = d[5];
		nb1.n_decode = c->n_decode;
		for (int l = 0; l < L; l++) {
			ck_assert_msg(!T0 || b->ops->kv_write(b, &kv[i], l, d[8], d[9], &hb) == FI_OK,
				      "%s kv_write: %s", b->ops->name, fi_errmsg());
			ck_assert_msg(b->ops->kv_write(b, &kv[i], l, d[10], d[11], &nb1) == FI_OK,
				      "%s kv_write: %s", b->ops->name, fi_errmsg());
		}
		void *qd = put_act(b, q, nq), *copied = NULL;
		out[i] = poisoned(b, nq);
		if (i && c->plan) {
			const char *pl = c->plan;
			if (!strncmp(pl, "copy", 4)) {
				copied = refill_by_copy(b, &kv[i]);
				pl += 4;
			}
			if (!strncmp(pl, "sync", 4)) {
				setenv("FI_DEC_ASYNC", "0", 1);
				pl += 4;
			}
			if (!strncmp(pl, "cc", 2)) { /* CUDA cores: FI_DEC_TC=0 */
				setenv("FI_DEC_TC", "0", 1);
				pl += 2;
			}
			if (*pl)
				setenv("FI_DEC_PLAN", pl, 1);
			fi_settings_reload();
		}
		ck_assert_msg(b->ops->attention(b, out[i], qd, &kv[i], 0, Hq, &nb1) == FI_OK,
			      "%s attention: %s", b->ops->name, fi_errmsg());
		if (i && L > 1) {
			out_l1 = poisoned(b, nq);
			ck_assert_msg(b->ops->attention(b, out_l1, qd, &kv[i], 1, Hq, &nb1) == FI_OK,
				      "%s attention, layer 1: %s", b->ops->name, fi_errmsg());
		}
		ck_assert(b->ops->sync(b) == FI_OK);
		free(copied);
		unsetenv("FI_DEC_PLAN");
		unsetenv("FI_DEC_ASYNC");
		unsetenv("FI_DEC_TC");
		fi_settings_reload();
		freeb(b, qd);
		for (int j = 0; j < 12; j++)
			freeb(b, d[j]);
	}
	{
		float *a = get_act(P.gpu, out[1], nq), *r = get_act(P.cpu, out[0], nq);
		char name[128];
		snprintf(name, sizeof name, "attention %s (T %d, cache %d)", c->name, T1, T0 + T1);
		int ok = close_enough(name, a, r, nq, 1.f / 32, 2e-2f, 1.5e-2f);
		free(a);
		ck_assert_msg(ok, "attention %s differs from the CPU op", c->name);
		if (out_l1) { /* the same contents, after layer 0 on the same batch */
			a = get_act(P.gpu, out_l1, nq);
			snprintf(name, sizeof name, "attention %s, layer 1 (T %d)", c->name, T1);
			ok = close_enough(name, a, r, nq, 1.f / 32, 2e-2f, 1.5e-2f);
			free(a);
			freeb(P.gpu, out_l1);
			ck_assert_msg(ok, "attention %s, layer 1, differs from the CPU op", c->name);
		}
		free(r);
	}
	for (int i = 0; i < 2; i++) {
		freeb(be[i], out[i]);
		be[i]->ops->kv_free(be[i], &kv[i]);
	}
	free(perm), free(bt), free(seq0), free(pos0), free(slot0), free(seq1), free(pos1);
	free(slot1), free(slen), free(k0), free(v0), free(k1), free(v1), free(q);
}

/* S sequences: decode rows with lengths mostly in [1, short_max], every long_every-th in
 * [long_lo, long_hi] (the tail of a ShareGPT-like mix), then n_chunks prompt chunks. */
static void mixed_case(const char *name, int Hq, int Hk, int hd, int window, int n_dec,
		       int short_max, int long_every, int long_lo, int long_hi, int n_chunks,
		       const int *chunk_hist, const int *chunk_len, int hint, const char *plan)
{
	int S = n_dec + n_chunks;
	int *hist = malloc(sizeof(int) * (size_t)S), *nnew = malloc(sizeof(int) * (size_t)S);
	for (int s = 0; s < n_dec; s++) {
		int len = long_every && s % long_every == long_every - 1 ? rnd(long_lo, long_hi)
									 : rnd(1, short_max);
		hist[s] = len - 1;
		nnew[s] = 1;
	}
	for (int k = 0; k < n_chunks; k++) {
		hist[n_dec + k] = chunk_hist[k];
		nnew[n_dec + k] = chunk_len[k];
	}
	struct acase c = {name, Hq, Hk, hd, 16, window, S, hist, nnew, hint ? n_dec : 0, plan};
	run_acase(&c);
	free(hist);
	free(nnew);
}

START_TEST(test_attention_serving)
{
	static const int h0[] = {0, 300, 1000}, l0[] = {64, 200, 37};
	static const int h1[] = {517, 0}, l1[] = {300, 700};
	static const int h2[] = {1200}, l2[] = {513};
	/* decode only: the planned path by default (T x Hk >= SMs), forced off (the old
	 * path at large T), forced on at small T (many pieces a token) */
	mixed_case("decode 8B heads, 64 rows, 8 long", 32, 8, 128, 0, 64, 300, 8, 1000, 2500, 0,
		   NULL, NULL, 1, NULL);
	mixed_case("decode 8B heads, 64 rows, plan off", 32, 8, 128, 0, 64, 300, 8, 1000, 2500, 0,
		   NULL, NULL, 1, "0");
	mixed_case("decode 1B heads, 200 rows", 32, 8, 64, 0, 200, 200, 40, 1500, 1600, 0, NULL,
		   NULL, 1, NULL);
	/* K/V rows loaded a round at a time (FI_DEC_ASYNC=0), planned and not */
	mixed_case("decode 8B heads, 64 rows, not pipelined", 32, 8, 128, 0, 64, 300, 8, 1000,
		   2500, 0, NULL, NULL, 1, "sync");
	mixed_case("decode 8B heads, 64 rows, plan off, not pipelined", 32, 8, 128, 0, 64, 300, 8,
		   1000, 2500, 0, NULL, NULL, 1, "sync0");
	/* the planned path on CUDA cores (FI_DEC_TC=0); the cases around run on tensor cores */
	mixed_case("decode 8B heads, 64 rows, CUDA cores", 32, 8, 128, 0, 64, 300, 8, 1000, 2500, 0,
		   NULL, NULL, 1, "cc");
	mixed_case("decode 1B heads, 200 rows, CUDA cores", 32, 8, 64, 0, 200, 200, 40, 1500, 1600,
		   0, NULL, NULL, 1, "cc");
	mixed_case("decode G=1, 300 rows", 8, 8, 128, 0, 300, 40, 0, 0, 0, 0, NULL, NULL, 1, NULL);
	mixed_case("decode G=3, 300 rows, 17-position tails", 24, 8, 128, 0, 300, 17, 6, 333, 999,
		   0, NULL, NULL, 1, NULL);
	mixed_case("decode G=8, 40 rows", 64, 8, 128, 0, 40, 500, 5, 2000, 4000, 0, NULL, NULL, 1,
		   NULL);
	mixed_case("decode window 48, 100 rows", 8, 4, 128, 48, 100, 400, 3, 300, 900, 0, NULL, NULL,
		   1, NULL);
	mixed_case("decode 3 rows, plan forced", 32, 8, 128, 0, 3, 4000, 2, 3000, 4100, 0, NULL,
		   NULL, 1, "1");
	mixed_case("decode hd 16, 50 rows", 4, 2, 16, 0, 50, 90, 0, 0, 0, 0, NULL, NULL, 1, NULL);
	mixed_case("decode hd 16, 50 rows, plan forced", 4, 2, 16, 0, 50, 90, 7, 200, 300, 0, NULL,
		   NULL, 1, "1");
	/* mixed: decode rows, then chunks after a paged prefix */
	mixed_case("mixed 150 decode + 3 chunks", 32, 8, 128, 0, 150, 300, 10, 800, 2000, 3, h0, l0,
		   1, NULL);
	mixed_case("mixed, no hint", 32, 8, 128, 0, 150, 300, 10, 800, 2000, 3, h0, l0, 0, NULL);
	/* the cache written by kv_copy just before, as an arena fetch under a step */
	mixed_case("mixed, cache from kv_copy", 32, 8, 128, 0, 150, 300, 10, 800, 2000, 3, h0, l0,
		   1, "copy");
	mixed_case("decode 8B heads, 64 rows, cache from kv_copy", 32, 8, 128, 0, 64, 300, 8, 1000,
		   2500, 0, NULL, NULL, 1, "copy");
	mixed_case("mixed 1B heads, chunks 300 and 700", 32, 8, 64, 0, 90, 500, 0, 0, 0, 2, h1, l1,
		   1, NULL);
	mixed_case("mixed window 64", 8, 2, 128, 64, 30, 200, 0, 0, 0, 2, h1, l1, 1, NULL);
	mixed_case("one decode row + a chunk of 513", 32, 8, 128, 0, 1, 50, 0, 0, 0, 1, h2, l2, 1,
		   NULL);
	/* a prompt in three chunks, each attending to the chunks before it in the cache */
	for (int k = 0; k < 3; k++) {
		static const int at[] = {0, 100, 237}, len[] = {100, 137, 363};
		int hist[1] = {at[k]}, nnew[1] = {len[k]};
		struct acase c = {"prompt chunk", 32, 8, 128, 16, 0, 1, hist, nnew, 0, NULL};
		run_acase(&c);
	}
}
END_TEST

/* ---- sample ---- */

START_TEST(test_sample_serving)
{
	static const int vs[] = {1001, 32000, 128256};
	const int n = 24;
	long rows = 0, bad = 0, back = 0;
	for (int vi = 0; vi < 3; vi++) {
		int V = vs[vi];
		float *l = malloc(sizeof(float) * (size_t)n * V);
		struct fi_sample_row rw[24];
		int32_t win[24 * 300], outc[48], outg[48];
		float lpc[24], lpg[24];
		struct fi_sample_top topc[24 * FI_SAMPLE_MAX_TOP], topg[24 * FI_SAMPLE_MAX_TOP];
		for (int rep = 0; rep < 4; rep++) {
			size_t n_win = 0;
			for (int r = 0; r < n; r++) {
				struct fi_sample_params p;
				struct fi_sampler s;
				int32_t hist[300];
				int nh = rnd(0, 299);
				float *x = l + (size_t)r * V, a = (float[]){2, 6, 24, 150}[r % 4];
				for (int i = 0; i < V; i++) {
					x[i] = ((float)((next(&seed) >> 11) * 0x1.0p-53) * 2.f - 1.f) * a;
					if (r % 3 == 1)
						x[i] = fi_bf16_to_f32(fi_f32_to_bf16(x[i]));
				}
				for (int i = 0; i < nh; i++) /* repeats; a few ids outside the vocabulary */
					hist[i] = i % 17 == 16 ? V + i : i % 5 == 4 ? -1 - i
						  : (int32_t)(next(&seed) % (uint64_t)(i % 3 ? 64 : V));
				for (int i = 0; i < 6 && i < nh; i++) /* the window's tokens near the top */
					if (hist[nh - 1 - i] >= 0 && hist[nh - 1 - i] < V)
						x[hist[nh - 1 - i]] = a * (i % 2 ? -1.f : 1.1f);
				fi_sample_defaults(&p);
				p.temperature = (float[]){0, 0.8f, 1, 0.6f, 1.3f, 0}[(r + rep) % 6];
				p.top_p = (float[]){1, 0.9f, 1, 0.5f, 1, 1}[(r + rep) % 6];
				p.top_k = (int[]){0, 0, 40, 0, 0, 0}[(r + rep) % 6];
				p.min_p = r % 7 == 3 ? 0.05f : 0;
				p.repeat_penalty = r % 4 == 3 ? 1 : (float[]){1.1f, 1.5f, 0.9f}[r % 3];
				p.repeat_last_n = r % 2 ? 0 : 64;
				p.seed = next(&seed);
				ck_assert(!fi_sampler_init(&s, &p, V));
				fi_sampler_row_hist(&s, hist, nh, &rw[r], win, &n_win);
				rw[r].n_logprobs = (int[]){-1, 0, 5, 20}[(r + rep) % 4];
				fi_sampler_free(&s);
			}
			/* the CPU op (the reference), then the GPU op on the same data */
			struct fi_sample_args ac = {.n = n, .V = V, .logits_d = l, .rows_d = rw,
						    .hist_d = win, .max_top = FI_SAMPLE_MAX_TOP,
						    .out_d = outc, .logprob_d = lpc, .top_d = topc};
			ck_assert_msg(P.cpu->ops->sample(P.cpu, &ac) == FI_OK, "%s", fi_errmsg());
			void *lg = put_bytes(P.gpu, l, sizeof(float) * (size_t)n * V);
			void *rg = put_bytes(P.gpu, rw, sizeof rw), *wg = ints(P.gpu, win, n_win);
			void *og, *pg, *tg;
			memset(outg, 0xff, sizeof outg), memset(lpg, 0xff, sizeof lpg);
			memset(topg, 0xff, sizeof topg);
			og = put_bytes(P.gpu, outg, sizeof outg), pg = put_bytes(P.gpu, lpg, sizeof lpg);
			tg = put_bytes(P.gpu, topg, sizeof topg);
			struct fi_sample_args ag = ac;
			ag.logits_d = lg, ag.rows_d = rg, ag.hist_d = wg, ag.out_d = og;
			ag.logprob_d = pg, ag.top_d = tg;
			ck_assert_msg(P.gpu->ops->sample(P.gpu, &ag) == FI_OK, "%s", fi_errmsg());
			ck_assert(P.gpu->ops->download(P.gpu, outg, og, sizeof outg) == FI_OK);
			ck_assert(P.gpu->ops->download(P.gpu, lpg, pg, sizeof lpg) == FI_OK);
			ck_assert(P.gpu->ops->download(P.gpu, topg, tg, sizeof topg) == FI_OK);
			for (int r = 0; r < n; r++) {
				rows++;
				if (outg[r] == -1) { /* left to the host: only a wide row may be */
					back++;
					ck_assert_msg(outc[n + r] > 64, "V %d row %d handed back with %d survivors",
						      V, r, outc[n + r]);
					continue;
				}
				if (outg[r] != outc[r]) {
					bad++;
					printf("sample: V %d row %d: gpu %d (kept %d) cpu %d (kept %d)\n", V, r,
					       outg[r], outg[n + r], outc[r], outc[n + r]);
					continue;
				}
				ck_assert_msg(outg[n + r] == outc[n + r] ||
						      (outg[n + r] > 1 && outc[n + r] > 1 && rw[r].top_p >= 1 &&
						       rw[r].min_p <= 0 && rw[r].top_k <= 0),
					      "V %d row %d: kept %d, cpu %d", V, r, outg[n + r], outc[n + r]);
				if (rw[r].n_logprobs < 0)
					continue;
				ck_assert_msg(fabsf(lpg[r] - lpc[r]) <= 1e-5f + 1e-6f * fabsf(lpc[r]),
					      "V %d row %d: logprob %.9g, cpu %.9g", V, r, lpg[r], lpc[r]);
				for (int k = 0; k < rw[r].n_logprobs; k++) {
					const struct fi_sample_top *a = &topg[r * FI_SAMPLE_MAX_TOP + k];
					const struct fi_sample_top *b = &topc[r * FI_SAMPLE_MAX_TOP + k];
					ck_assert_msg(a->id == b->id, "V %d row %d alternative %d: %d, cpu %d", V,
						      r, k, a->id, b->id);
					ck_assert(fabsf(a->logprob - b->logprob) <= 1e-5f + 1e-6f * fabsf(b->logprob));
				}
			}
			freeb(P.gpu, lg), freeb(P.gpu, rg), freeb(P.gpu, wg), freeb(P.gpu, og);
			freeb(P.gpu, pg), freeb(P.gpu, tg);
		}
		free(l);
	}
	printf("sample with penalties and log-probabilities: %ld rows, %ld differ, %ld handed back\n",
	       rows, bad, back);
	ck_assert_msg(bad * 500 <= rows, "sample: %ld of %ld rows differ", bad, rows);
	printf("%-44s ok\n", "sample (penalties, logprobs)");
}
END_TEST

/* ---- the model through graphs and mixed steps ---- */

/* A random Llama-shaped checkpoint: every tensor fi_expected_tensor lists, bf16. */
struct rmodel {
	struct fi_config c;
	struct fi_tensor t[64];
	char names[64][64];
	void *data[64];
	int n;
};

static void rmodel_make(struct rmodel *r)
{
	struct fi_expected ex;
	memset(r, 0, sizeof *r);
	r->c.family = FI_FAM_LLAMA;
	r->c.hidden = 256;
	r->c.n_layers = 2;
	r->c.n_heads = 4;
	r->c.n_kv_heads = 2;
	r->c.head_dim = 64;
	r->c.ffn = 512;
	r->c.vocab = 1000;
	r->c.max_pos = 4096;
	r->c.rms_eps = 1e-5f;
	r->c.rope_theta = 10000;
	r->c.bos_id = -1;
	for (int i = 0; fi_expected_tensor(&r->c, i, &ex); i++) {
		int64_t n = ex.ndim == 2 ? ex.shape[0] * ex.shape[1] : ex.shape[0];
		int norm = strstr(ex.name, "norm") != NULL;
		float *f = rand_bf16((size_t)n, norm ? 0.2f : ex.ndim == 2 && ex.shape[1] == 256 ? 0.1f : 0.06f,
				     &seed);
		uint16_t *h = malloc((size_t)n * 2);
		for (int64_t k = 0; k < n && norm; k++)
			f[k] += 1;
		fi_convert(h, FI_DT_BF16, f, FI_DT_F32, (size_t)n);
		free(f);
		snprintf(r->names[i], sizeof r->names[i], "%s", ex.name);
		r->t[i] = (struct fi_tensor){.name = r->names[i], .dtype = FI_DT_BF16, .ndim = ex.ndim,
					     .data = h, .nbytes = (uint64_t)n * 2};
		r->t[i].shape[0] = ex.shape[0];
		r->t[i].shape[1] = ex.shape[1];
		r->data[i] = h;
		r->n = i + 1;
	}
}

static double lrow_err(const float *g, const float *c, int V)
{
	double num = 0, den = 0;
	for (int i = 0; i < V; i++) {
		num += ((double)g[i] - c[i]) * ((double)g[i] - c[i]);
		den += (double)c[i] * c[i];
	}
	return sqrt(num / den);
}

START_TEST(test_model_serving)
{
	struct rmodel rm;
	struct fi_model *m[2];
	struct fi_tensor_set ts;
	enum { NSEQ = 40, NEW = 2 };
	int seqs[2][NSEQ + NEW], len[NSEQ + NEW], alive = NSEQ, V, steps = 0;
	int32_t last[NSEQ + NEW];
	double worst = 0, sum = 0;
	long n_rows = 0;
	rmodel_make(&rm);
	ts.n = rm.n;
	ts.t = rm.t;
	V = rm.c.vocab;
	for (int i = 0; i < 2; i++) {
		struct fi_backend *b = i ? P.gpu : P.cpu;
		ck_assert_msg(!fi_model_load(&rm.c, &ts, b, &m[i]), "%s", fi_errmsg());
		ck_assert_msg(!fi_model_cache_init(m[i], 3000, 16), "%s", fi_errmsg());
		for (int s = 0; s < NSEQ + NEW; s++)
			ck_assert(!fi_model_seq_new(m[i], &seqs[i][s]));
	}
	int cap = 40000;
	int32_t *tok = malloc(4 * (size_t)cap), *sq[2] = {malloc(4 * (size_t)cap), malloc(4 * (size_t)cap)};
	float *lg[2] = {malloc(sizeof(float) * (NSEQ + NEW) * (size_t)V),
			malloc(sizeof(float) * (NSEQ + NEW) * (size_t)V)};
	/* step 0: every prompt in one batch (1 to 600 tokens; the first ones single tokens, so
	 * the batch starts with decode-like rows) */
	int T = 0;
	for (int s = 0; s < NSEQ; s++) {
		len[s] = s < 3 ? 1 : s % 9 == 0 ? rnd(300, 600) : rnd(2, 300);
		for (int i = 0; i < len[s]; i++) {
			tok[T] = (int32_t)rnd(0, V - 1);
			sq[0][T] = seqs[0][s];
			sq[1][T++] = seqs[1][s];
		}
	}
	/* then decode steps; the batch shrinks through rungs 40, 32, 24, 16, 8, 4, 3 */
	static const int phase[] = {40, 33, 24, 13, 8, 4, 3};
	for (int ph = -1; ph < 7; ph++) {
		int nsteps = ph < 0 ? 1 : 4;
		if (ph >= 0)
			alive = phase[ph];
		if (ph == 3) { /* from rung 16 on, decode attention in planned pieces (in the graphs) */
			setenv("FI_DEC_PLAN", "1", 1);
			fi_settings_reload();
		}
		for (int it = 0; it < nsteps; it++, steps++) {
			int n[2], rows;
			if (ph >= 0) {
				T = 0;
				for (int s = 0; s < alive; s++) {
					tok[T] = last[s];
					sq[0][T] = seqs[0][s];
					sq[1][T++] = seqs[1][s];
				}
				if (ph == 2 && it == 2) /* a mixed step: two prompts after the decode rows */
					for (int k = 0; k < NEW; k++)
						for (int i = 0; i < (k ? 37 : 100); i++) {
							tok[T] = (int32_t)rnd(0, V - 1);
							sq[0][T] = seqs[0][NSEQ + k];
							sq[1][T++] = seqs[1][NSEQ + k];
						}
			}
			for (int i = 0; i < 2; i++) {
				struct fi_batch b = {T, tok, sq[i], NULL};
				ck_assert_msg(!fi_model_forward(m[i], &b, lg[i], &n[i]), "%s step %d: %s",
					      i ? "gpu" : "cpu", steps, fi_errmsg());
			}
			ck_assert_int_eq(n[0], n[1]);
			rows = n[0];
			for (int r = 0; r < rows; r++) {
				double e = lrow_err(lg[1] + (size_t)r * V, lg[0] + (size_t)r * V, V);
				int best = 0;
				ck_assert_msg(e <= 6e-2, "step %d row %d: logits error %g", steps, r, e);
				worst = e > worst ? e : worst;
				sum += e;
				n_rows++;
				for (int i = 1; i < V; i++) /* the CPU's argmax feeds both */
					if (lg[0][(size_t)r * V + i] > lg[0][(size_t)r * V + best])
						best = i;
				if (r < alive)
					last[r] = best;
			}
		}
	}
	unsetenv("FI_DEC_PLAN");
	fi_settings_reload();
	printf("model serving steps: %d, rows %ld, logits error mean %.2e worst %.2e\n", steps,
	       n_rows, sum / n_rows, worst);
	ck_assert(sum / n_rows <= 3e-2);
	if (!strcmp(P.gpu->ops->name, "cuda")) { /* graphs at several rungs and widths were
						     * captured (and so replayed) */
		struct fi_cuda *c = fi_cuda_of(P.gpu);
		int rungs = 0, widths = 0, seen_r[1024] = {0}, seen_w[32] = {0};
		for (int i = 0; i < c->n_graphs; i++) {
			int r = (int)(c->graphs[i].key >> 1 & 0x7fffff), w = (int)(c->graphs[i].key >> 24 & 31);
			rungs += r < 1024 && !seen_r[r]++;
			widths += !seen_w[w]++;
		}
		printf("graphs: %d, rungs %d, widths %d\n", c->n_graphs, rungs, widths);
		ck_assert_int_ge(rungs, 5);
		ck_assert_int_ge(widths, 2);
	}
	for (int i = 0; i < 2; i++) {
		fi_model_close(m[i]);
		free(sq[i]);
		free(lg[i]);
	}
	free(tok);
	for (int i = 0; i < rm.n; i++)
		free(rm.data[i]);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("gpu_serve");
	TCase *tc = tcase_create("serve");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_attention_serving);
	tcase_add_test(tc, test_sample_serving);
	tcase_add_test(tc, test_model_serving);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (!pair_open(&P))
		return 77;
	printf("cpu: %s; gpu: %s\n", P.cpu->device, P.gpu->device);
	int rc = fi_test_run(suite());
	pair_close(&P);
	return rc;
}
