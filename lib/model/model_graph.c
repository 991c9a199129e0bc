/* model_graph: decode steps through CUDA graphs (see struct graphs in model_int.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "model_int.h"

/* The rung of the batch-size ladder a decode step of T rows is padded to. Padding rows cost
 * their share of the products once a step is compute-bound (8B: from ~170 rows), hence
 * rungs at most 1/4 apart above 64 rows. */
static int rung(int T)
{
	if (T <= 4)
		return T;
	if (T <= 64)
		return (T + 7) / 8 * 8;
	if (T <= 256)
		return (T + 31) / 32 * 32;
	return (T + 63) / 64 * 64;
}

/* The block-table width of a graph: the next power of two blocks (at least 16) that holds
 * nb, at most the widest (gw). */
static int width(int nb, int gw)
{
	int w = 16;
	while (w < nb && w < gw)
		w *= 2;
	return w < gw ? w : gw;
}

/* A sequence's blocks. */
static const int32_t *seq_blocks(const struct fi_kvcache *kc, int id, int *n)
{
	return fi_kvcache_seq_blocks(kc, id, n);
}

int fi_model_graphs_usable(struct fi_model *m)
{
	const struct fi_backend_ops *op = m->be->ops;
	if (m->gr.off)
		return 0;
	if (!op->graph_replay || !op->graph_capture_begin || !op->graph_capture_end ||
	    !m->be->settings->graphs) {
		m->gr.off = 1;
		return 0;
	}
	if (!m->gr.gw) { /* room for one sequence of the context, or the whole cache */
		const struct fi_kv_cache *kv = &m->cache->kv;
		int ctx = m->c.max_pos > 0 ? m->c.max_pos : 4096;
		int gw = (ctx + kv->block_size - 1) / kv->block_size;
		m->gr.gw = gw < kv->n_blocks ? gw : kv->n_blocks;
	}
	return 1;
}

/* The state of (rows, w) in this generation: 0 new, 1 ran once, 2 captured. */
static uint8_t *seen_of(struct graphs *g, int rows, int w)
{
	if (g->gen != g->seen_gen) {
		g->n_seen = 0;
		g->seen_gen = g->gen;
	}
	for (int i = 0; i < g->n_seen; i++)
		if (g->seen[i].rows == rows && g->seen[i].w == w)
			return &g->seen[i].state;
	if (g->n_seen == GRAPH_KEYS)
		return NULL;
	g->seen[g->n_seen].rows = rows;
	g->seen[g->n_seen].w = w;
	g->seen[g->n_seen].state = 0;
	return &g->seen[g->n_seen++].state;
}

/* One decode step through a graph: T tokens of T sequences sid[] (one each) at positions
 * old[], every row's logits wanted. Inputs go to the fixed buffer, padded to the rung. */
fi_err fi_model_graph_step(struct fi_model *m, int T, const int *sid, const int *old,
			   int *used)
{
	struct fi_backend *be = m->be;
	const struct fi_backend_ops *op = be->ops;
	struct fi_kvcache *kc = m->cache;
	struct graphs *g = &m->gr;
	int Tb = rung(T), gw = g->gw, G = GRAPH_MAX, maxb = 0, w, wlog = 0, nb;
	const int32_t *bl;
	int32_t *h, *btab;
	uint8_t *st;
	uint64_t key;
	fi_err e;
	*used = 0;
	if (T > G)
		return FI_OK;
	for (int k = 0; k < T; k++) {
		seq_blocks(kc, sid[k], &nb);
		if (nb > gw)
			return FI_OK;
		maxb = nb > maxb ? nb : maxb;
	}
	w = width(maxb, gw);
	while ((1 << wlog) < w)
		wlog++;
	if ((e = fi_model_scratch(m, Tb, 0, Tb)))
		return e;
	if (!g->gin) {
		size_t n = 6 * (size_t)G + (size_t)G * gw;
		if (!(g->h = malloc(n * sizeof(int32_t))) ||
		    !(g->shadow = malloc((size_t)G * gw * sizeof(int32_t))))
			return fi_fail(FI_ENOMEM, "model: out of memory");
		if ((e = be->ops->alloc(be, n * sizeof(int32_t), (void **)&g->gin)))
			return e;
		g->shadow_rows = 0;
		g->gen++;
	}
	if (!(st = seen_of(g, Tb, w))) /* (after anything that may move a buffer) */
		return FI_OK; /* more shapes than graphs kept: eager */
	h = g->h;
	btab = h + 6 * G;
	for (int t = 0; t < Tb; t++) {
		int real = t < T;
		h[t] = real ? m->h_ints[t] : 0;                           /* tok */
		h[G + t] = real ? old[t] : 0;                             /* pos */
		h[2 * G + t] = real ? t : 0;                              /* seq */
		h[3 * G + t] = real ? fi_kvcache_slot(kc, sid[t], old[t]) : -1; /* slot */
		h[4 * G + t] = t;                                         /* idx */
		h[5 * G + t] = real ? old[t] + 1 : 1;                     /* seq_len */
		bl = seq_blocks(kc, sid[real ? t : 0], &nb);
		for (int j = 0; j < w; j++)
			btab[(size_t)t * w + j] = real && j < nb ? bl[j] : -1;
	}
	if ((e = be->ops->upload(be, g->gin, h, 6 * (size_t)G * sizeof(int32_t))))
		return e;
	/* A row's table changes once every block_size steps (or when the batch changes). */
	if (g->shadow_rows != Tb || g->shadow_w != w ||
	    memcmp(g->shadow, btab, (size_t)Tb * w * sizeof(int32_t))) {
		if ((e = be->ops->upload(be, g->gin + 6 * G, btab, (size_t)Tb * w * sizeof(int32_t))))
			return e;
		memcpy(g->shadow, btab, (size_t)Tb * w * sizeof(int32_t));
		g->shadow_rows = Tb;
		g->shadow_w = w;
	}
	int32_t *d = g->gin;
	struct fi_attn_batch ab = {
		.n_tokens = Tb,
		.n_seqs = Tb,
		.max_blocks = w,
		.tok_seq_d = d + 2 * G,
		.tok_pos_d = d + G,
		.slot_d = d + 3 * G,
		.seq_len_d = d + 5 * G,
		.block_table_d = d + 6 * G,
		.max_seq_len = w * kc->kv.block_size,
		.sliding_window = m->c.sliding_window,
		.scale = fi_attn_scale(&m->c),
		.n_decode = Tb,
	};
	int argmax = op->argmax != NULL; /* always in the graph: it costs microseconds */
	key = (uint64_t)g->gen << 32 | (uint64_t)wlog << 24 | (uint64_t)Tb << 1 | (uint64_t)argmax;
	if (*st == 2) {
		e = op->graph_replay(be, key);
		if (e == FI_OK) {
			*used = 1;
			return FI_OK;
		}
		if (e != FI_ENOTFOUND) /* evicted: capture again */
			return e;
		*st = 1;
	}
	if (*st == 0) { /* first time: eagerly (plans, lazy module loading) */
		if ((e = fi_model_body(m, Tb, d, d + G, &ab, NULL, Tb, argmax)))
			return e;
		*st = 1;
		*used = 1;
		return FI_OK;
	}
	if ((e = op->graph_capture_begin(be, key))) {
		g->off = 1;
		return FI_OK;
	}
	fi_err e1 = fi_model_body(m, Tb, d, d + G, &ab, NULL, Tb, argmax);
	fi_err e2 = op->graph_capture_end(be, key);
	if (e1 || e2) { /* not capturable here: this step (the caller's path) and the rest eager.
			  * Nothing captured has run, so a real fault shows again there. */
		fi_warn("decode graphs off: %s", fi_errmsg());
		g->off = 1;
		return FI_OK;
	}
	*st = 2;
	if ((e = op->graph_replay(be, key)))
		return e;
	*used = 1;
	return FI_OK;
}
