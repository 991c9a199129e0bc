/* kv_write + attention cases and the graph hooks, for test_kernels.c (included there).
 *
 * A case: S sequences with hist[s] tokens already in the paged cache and new[s] tokens in
 * this batch (their K/V written by kv_write first, as the forward pass does), blocks handed
 * out in a shuffled order, batch tokens either grouped by sequence or interleaved. */

struct attn_case {
	const char *name;
	int Hq, Hk, hd, bs, window, S;
	int hist[4], nnew[4];
	int interleave;
};

static const struct attn_case cases[] = {
	{"decode 8B heads, 3 seqs", 32, 8, 128, 16, 0, 3, {0, 36, 700}, {1, 1, 1}, 0},
	{"decode 1B heads, long", 32, 8, 64, 16, 0, 2, {4095, 17}, {1, 1}, 0},
	{"decode G=1 hd=128", 4, 4, 128, 32, 0, 2, {100, 5}, {1, 1}, 0},
	{"decode G=2 window", 8, 4, 128, 16, 48, 2, {200, 30}, {1, 1}, 0},
	{"decode hd=16 tiny", 4, 2, 16, 16, 0, 2, {40, 3}, {1, 1}, 0},
	{"decode hd=40 generic", 4, 2, 40, 16, 0, 2, {40, 3}, {1, 1}, 0},
	{"decode G=16 generic", 32, 2, 64, 16, 0, 1, {77}, {1}, 0},
	{"prefill 8B heads 1 seq", 32, 8, 128, 16, 0, 1, {0}, {200}, 0},
	{"prefill hd=64 after history", 16, 8, 64, 16, 0, 1, {70}, {130}, 0},
	{"prefill 2 seqs share a tile", 8, 2, 128, 16, 0, 2, {20, 0}, {70, 50}, 0},
	{"prefill interleaved 3 seqs", 8, 2, 128, 16, 0, 3, {5, 0, 33}, {40, 30, 20}, 1},
	{"prefill window 24", 8, 4, 128, 16, 24, 1, {10}, {150}, 0},
	{"prefill window hd=64 2 seqs", 8, 2, 64, 8, 40, 2, {0, 64}, {100, 37}, 0},
	{"mixed prefill + decode", 8, 2, 128, 16, 0, 3, {0, 90, 300}, {60, 1, 1}, 0},
	{"prefill hd=32 (decode kernel)", 4, 2, 32, 16, 0, 1, {0}, {90}, 0},
};

static void run_case(const struct attn_case *c)
{
	int S = c->S, Hq = c->Hq, Hk = c->Hk, hd = c->hd, bs = c->bs;
	int maxb = 0, nb = 3, T0 = 0, T1 = 0, max_len = 0;
	for (int s = 0; s < S; s++) {
		int b = (c->hist[s] + c->nnew[s] + bs - 1) / bs;
		maxb = b > maxb ? b : maxb;
		nb += b;
		T0 += c->hist[s];
		T1 += c->nnew[s];
		if (c->hist[s] + c->nnew[s] > max_len)
			max_len = c->hist[s] + c->nnew[s];
	}
	/* shuffled block ids, handed out per sequence */
	int32_t *perm = malloc(sizeof(int32_t) * nb), *bt = malloc(sizeof(int32_t) * S * maxb);
	for (int i = 0; i < nb; i++)
		perm[i] = i;
	for (int i = nb - 1; i > 0; i--) {
		int j = (int)(next(&seed) % (uint64_t)(i + 1)), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	for (int s = 0, u = 0; s < S; s++)
		for (int j = 0; j < maxb; j++)
			bt[s * maxb + j] = j < (c->hist[s] + c->nnew[s] + bs - 1) / bs ? perm[u++] : -1;
	/* the two batches: history, then new tokens */
	int32_t *seq0 = malloc(4 * (T0 + 1)), *pos0 = malloc(4 * (T0 + 1)), *slot0 = malloc(4 * (T0 + 1));
	int32_t *seq1 = malloc(4 * T1), *pos1 = malloc(4 * T1), *slot1 = malloc(4 * T1), slen[4];
	for (int s = 0, t = 0; s < S; s++)
		for (int p = 0; p < c->hist[s]; p++, t++) {
			seq0[t] = s;
			pos0[t] = p;
			slot0[t] = bt[s * maxb + p / bs] * bs + p % bs;
		}
	{
		int cnt[4] = {0}, t = 0;
		while (t < T1)
			for (int s = 0; s < S; s++) {
				int k = c->interleave ? 1 : c->nnew[s];
				for (int i = 0; i < k && cnt[s] < c->nnew[s]; i++, t++) {
					int p = c->hist[s] + cnt[s]++;
					seq1[t] = s;
					pos1[t] = p;
					slot1[t] = bt[s * maxb + p / bs] * bs + p % bs;
				}
			}
	}
	for (int s = 0; s < S; s++)
		slen[s] = c->hist[s] + c->nnew[s];

	struct fi_backend *be[2] = {P.cpu, P.gpu};
	struct fi_kv_cache kv[2];
	void *out[2];
	size_t nq = (size_t)T1 * Hq * hd;
	float *k0 = rand_bf16((size_t)T0 * Hk * hd + 1, 1, &seed), *v0 = rand_bf16((size_t)T0 * Hk * hd + 1, 1, &seed);
	float *k1 = rand_bf16((size_t)T1 * Hk * hd, 1, &seed), *v1 = rand_bf16((size_t)T1 * Hk * hd, 1, &seed);
	float *q = rand_bf16(nq, 2.5f, &seed);
	void *dev[2][12];
	for (int i = 0; i < 2; i++) {
		struct fi_backend *b = be[i];
		kv[i] = (struct fi_kv_cache){.n_layers = 2, .n_blocks = nb, .block_size = bs,
					     .n_kv_heads = Hk, .head_dim = hd};
		ck_assert_msg(b->ops->kv_alloc(b, &kv[i]) == FI_OK, "kv_alloc: %s", fi_errmsg());
		/* poison the whole cache: attention must never read an unwritten slot */
		size_t cn = (size_t)nb * bs * Hk * hd;
		void *pz = poisoned(b, cn);
		size_t es = fi_dtype_size(b->act);
		void *hz = malloc(cn * es);
		b->ops->download(b, hz, pz, cn * es);
		for (int l = 0; l < 2; l++) {
			b->ops->upload(b, kv[i].k_d[l], hz, cn * es);
			b->ops->upload(b, kv[i].v_d[l], hz, cn * es);
		}
		b->ops->sync(b);
		free(hz);
		freeb(b, pz);
		dev[i][0] = ints(b, seq0, T0 + 1);
		dev[i][1] = ints(b, pos0, T0 + 1);
		dev[i][2] = ints(b, slot0, T0 + 1);
		dev[i][3] = ints(b, seq1, T1);
		dev[i][4] = ints(b, pos1, T1);
		dev[i][5] = ints(b, slot1, T1);
		dev[i][6] = ints(b, slen, S);
		dev[i][7] = ints(b, bt, (size_t)S * maxb);
		dev[i][8] = put_act(b, k0, (size_t)T0 * Hk * hd + 1);
		dev[i][9] = put_act(b, v0, (size_t)T0 * Hk * hd + 1);
		dev[i][10] = put_act(b, k1, (size_t)T1 * Hk * hd);
		dev[i][11] = put_act(b, v1, (size_t)T1 * Hk * hd);
		struct fi_attn_batch hb = {.n_tokens = T0, .n_seqs = S, .max_blocks = maxb,
					   .tok_seq_d = dev[i][0], .tok_pos_d = dev[i][1],
					   .slot_d = dev[i][2], .seq_len_d = dev[i][6],
					   .block_table_d = dev[i][7], .max_seq_len = max_len,
					   .sliding_window = c->window, .scale = 1 / sqrtf((float)hd)};
		struct fi_attn_batch nb1 = hb;
		nb1.n_tokens = T1;
		nb1.tok_seq_d = dev[i][3];
		nb1.tok_pos_d = dev[i][4];
		nb1.slot_d = dev[i][5];
		out[i] = poisoned(b, nq);
		ck_assert_msg(!T0 || b->ops->kv_write(b, &kv[i], 1, dev[i][8], dev[i][9], &hb) == FI_OK,
			      "%s kv_write: %s", b->ops->name, fi_errmsg());
		ck_assert_msg(b->ops->kv_write(b, &kv[i], 1, dev[i][10], dev[i][11], &nb1) == FI_OK,
			      "%s kv_write: %s", b->ops->name, fi_errmsg());
	}
	for (int i = 0; i < 2; i++) {
		struct fi_backend *b = be[i];
		void *qd = put_act(b, q, nq);
		struct fi_attn_batch nb1 = {.n_tokens = T1, .n_seqs = S, .max_blocks = maxb,
					    .tok_seq_d = dev[i][3], .tok_pos_d = dev[i][4],
					    .slot_d = dev[i][5], .seq_len_d = dev[i][6],
					    .block_table_d = dev[i][7], .max_seq_len = max_len,
					    .sliding_window = c->window, .scale = 1 / sqrtf((float)hd)};
		ck_assert_msg(b->ops->attention(b, out[i], qd, &kv[i], 1, Hq, &nb1) == FI_OK,
			      "%s attention: %s", b->ops->name, fi_errmsg());
		ck_assert(b->ops->sync(b) == FI_OK);
		freeb(b, qd);
	}
	char name[96];
	snprintf(name, sizeof name, "attention %s", c->name);
	check(name, P.gpu, out[1], P.cpu, out[0], nq, 1.f / 32, 2e-2f, 1.5e-2f);
	/* the written cache rows, exactly (slots of the new tokens) */
	{
		size_t row = (size_t)Hk * hd;
		float *kg = get_act(P.gpu, kv[1].k_d[1], (size_t)nb * bs * row);
		float *kc = get_act(P.cpu, kv[0].k_d[1], (size_t)nb * bs * row);
		float *a = malloc(4 * row * T1), *r = malloc(4 * row * T1);
		for (int t = 0; t < T1; t++) {
			memcpy(a + t * row, kg + (size_t)slot1[t] * row, 4 * row);
			memcpy(r + t * row, kc + (size_t)slot1[t] * row, 4 * row);
		}
		snprintf(name, sizeof name, "kv_write %s", c->name);
		ck_assert(close_enough(name, a, r, row * T1, 0, 0, 0));
		free(kg), free(kc), free(a), free(r);
	}
	for (int i = 0; i < 2; i++) {
		for (int j = 0; j < 12; j++)
			freeb(be[i], dev[i][j]);
		freeb(be[i], out[i]);
		be[i]->ops->kv_free(be[i], &kv[i]);
	}
	free(perm), free(bt), free(seq0), free(pos0), free(slot0), free(seq1), free(pos1), free(slot1);
	free(k0), free(v0), free(k1), free(v1), free(q);
}

START_TEST(test_attention)
{
	/* every prefill layout: mma.sync tiles (the default picks by batch size) and the wgmma
	 * kernel in both schedules (hd 128 on sm_90a; elsewhere they fall back to mma.sync) */
	static const char *br[] = {"64", "128", "128c32", "128w8", "wgl", "wg"};
	for (int k = 0; k < 6; k++) {
		setenv("FI_PF_BR", br[k], 1);
		fi_settings_reload(); /* backend.h includes settings.h */
		printf("prefill tiles of %s rows:\n", br[k]);
		for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
			run_case(&cases[i]);
	}
	unsetenv("FI_PF_BR");
	fi_settings_reload();
}
END_TEST

/* Graph hooks: capture rmsnorm + matmul + silu_mul, replay on new inputs written into the
 * same buffers, compare with a direct run. */
START_TEST(test_graph)
{
	struct fi_backend *g = P.gpu;
	int T = 4, D = 512, N = 1024;
	float *w = rand_bf16((size_t)N * D, 1, &seed), *nw = rand_bf16(D, 1, &seed);
	struct fi_weight W, NW;
	make_weight(g, w, N, D, &W);
	make_weight(g, nw, 1, D, &NW);
	void *x = poisoned(g, (size_t)T * D), *xb = poisoned(g, (size_t)T * D);
	void *y = poisoned(g, (size_t)T * N), *z = poisoned(g, (size_t)T * N);
	ck_assert(g->ops->graph_replay(g, 7) == FI_ENOTFOUND);
	ck_assert_msg(g->ops->graph_capture_begin(g, 7) == FI_OK, "%s", fi_errmsg());
	ck_assert(g->ops->rmsnorm(g, xb, x, NULL, &NW, T, D, 1e-5f) == FI_OK);
	ck_assert(g->ops->matmul(g, y, xb, &W, NULL, T) == FI_OK);
	ck_assert(g->ops->silu_mul(g, z, y, y, T, N) == FI_OK);
	ck_assert_msg(g->ops->graph_capture_end(g, 7) == FI_OK, "%s", fi_errmsg());
	for (int rep = 0; rep < 2; rep++) {
		float *xin = rand_bf16((size_t)T * D, 2, &seed);
		void *tmp = put_act(g, xin, (size_t)T * D);
		void *ref = poisoned(g, (size_t)T * N), *rxb = poisoned(g, (size_t)T * D);
		void *ry = poisoned(g, (size_t)T * N);
		ck_assert(g->ops->rmsnorm(g, rxb, tmp, NULL, &NW, T, D, 1e-5f) == FI_OK);
		ck_assert(g->ops->matmul(g, ry, rxb, &W, NULL, T) == FI_OK);
		ck_assert(g->ops->silu_mul(g, ref, ry, ry, T, N) == FI_OK);
		/* new input into the captured buffer, then replay */
		float *h = get_act(g, tmp, (size_t)T * D);
		void *src = put_act(g, h, (size_t)T * D);
		size_t bytes = (size_t)T * D * 2;
		void *hb = malloc(bytes);
		g->ops->download(g, hb, src, bytes);
		g->ops->upload(g, x, hb, bytes);
		ck_assert_msg(g->ops->graph_replay(g, 7) == FI_OK, "%s", fi_errmsg());
		ck_assert(g->ops->sync(g) == FI_OK);
		float *a = get_act(g, z, (size_t)T * N), *r = get_act(g, ref, (size_t)T * N);
		ck_assert(close_enough("graph replay == direct", a, r, (size_t)T * N, 0, 0, 0));
		free(a), free(r), free(h), free(hb), free(xin);
		freeb(g, tmp), freeb(g, ref), freeb(g, rxb), freeb(g, ry), freeb(g, src);
	}
	g->ops->weight_free(g, &W), g->ops->weight_free(g, &NW);
	freeb(g, x), freeb(g, xb), freeb(g, y), freeb(g, z);
	free(w), free(nw);
}
END_TEST
