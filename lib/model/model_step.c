/* model_step: the model as its user drives it (model.h): one forward pass over a mixed batch
 * in two halves (launch, collect), so that the host can prepare the next step while the device
 * runs this one; the KV cache and its sequences; closing. Each goes on to the group of a
 * tensor-parallel model (tp.c), whose ranks run model.c's halves of the same calls. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "tp.h"

int fi_batch_n_logits(const struct fi_batch *b)
{
	int n = 0;
	for (int t = 0; t < b->n_tokens; t++) {
		if (b->want) {
			n += b->want[t] != 0;
			continue;
		}
		int first = 1;
		for (int u = 0; u < t && first; u++)
			first = b->seq[u] != b->seq[t];
		n += first;
	}
	return n;
}

static void step_free(struct fi_model *m)
{
	struct step *st = &m->st;
	free(st->sid);
	free(st->old);
	free(st->cnt);
	free(st->local);
	free(st->map);
	memset(st, 0, sizeof *st);
}

void fi_model_close(struct fi_model *m)
{
	if (!m)
		return;
	fi_tp_close(m->tp); /* the other ranks, each closed in its own thread */
	step_free(m);
	fi_model_close_rank(m);
}

fi_err fi_model_cache_init(struct fi_model *m, int n_blocks, int block_size)
{
	if (m->cache)
		return fi_fail(FI_ESTATE, "model: the kv cache already exists");
	if (block_size <= 0)
		block_size = 16;
	if (n_blocks <= 0) {
		int len = m->c.max_pos > 0 && m->c.max_pos < 4096 ? m->c.max_pos : 4096;
		n_blocks = 4 * ((len + block_size - 1) / block_size);
	}
	fi_err e = fi_kvcache_create_fp8(m->be, m->c.n_layers, m->c.n_kv_heads, m->c.head_dim,
					 n_blocks, block_size, m->kv_fp8, &m->cache);
	if (!e && m->tp && (e = fi_tp_cache_init(m->tp, n_blocks, block_size))) {
		fi_kvcache_destroy(m->cache);
		m->cache = NULL;
	}
	return e;
}

fi_err fi_model_seq_new(struct fi_model *m, int *seq)
{
	fi_err e;
	if (!m->cache && (e = fi_model_cache_init(m, 0, 0)))
		return e;
	return fi_kvcache_seq_new(m->cache, seq);
}

void fi_model_seq_free(struct fi_model *m, int seq)
{
	if (m->cache)
		fi_kvcache_seq_free(m->cache, seq);
}

fi_err fi_model_seq_fork(struct fi_model *m, int src, int *dst)
{
	if (!m->cache)
		return fi_fail(FI_ENOTFOUND, "model: no sequence %d", src);
	return fi_kvcache_seq_fork(m->cache, src, dst);
}

int fi_model_seq_len(struct fi_model *m, int seq)
{
	return m->cache ? fi_kvcache_seq_len(m->cache, seq) : -1;
}

fi_err fi_model_seq_truncate(struct fi_model *m, int seq, int len)
{
	int n = fi_model_seq_len(m, seq);
	if (n < 0)
		return fi_fail(FI_ENOTFOUND, "model: no sequence %d", seq);
	if (len < 0 || len > n)
		return fi_fail(FI_ERANGE, "model: sequence %d has %d tokens, cannot keep %d", seq, n,
			       len);
	return fi_kvcache_set_len(m->cache, seq, len);
}

int fi_model_in_flight(const struct fi_model *m)
{
	return m->st.on;
}

int fi_model_async(const struct fi_model *m)
{
	return strcmp(m->be->ops->name, "cpu") != 0;
}

fi_err fi_model_reserve_scratch(struct fi_model *m, int T, int rows)
{
	if (T <= 0 || rows < 0)
		return fi_fail(FI_EINVAL, "model: scratch for %d tokens, %d rows", T, rows);
	fi_err e = fi_model_scratch(m, T, 6 * (size_t)T, rows);
	return !e && m->tp ? fi_tp_reserve_scratch(m->tp, T, rows) : e;
}

/* Room for T tokens (and as many sequences) and for sequence ids below n_seq. */
static fi_err step_room(struct step *st, int T, int n_seq)
{
	if (T > st->cap) {
		int cap = T < 256 ? 256 : T;
		free(st->sid);
		free(st->old);
		free(st->cnt);
		free(st->local);
		st->sid = malloc(sizeof(int) * (size_t)cap);
		st->old = malloc(sizeof(int) * (size_t)cap);
		st->cnt = malloc(sizeof(int) * (size_t)cap);
		st->local = malloc(sizeof(int) * (size_t)cap);
		st->cap = st->sid && st->old && st->cnt && st->local ? cap : 0;
		if (!st->cap)
			return fi_fail(FI_ENOMEM, "model: out of memory");
	}
	if (n_seq > st->cap_map) {
		int cap = n_seq < 64 ? 64 : 2 * n_seq;
		int *p = realloc(st->map, sizeof(int) * (size_t)cap);
		if (!p)
			return fi_fail(FI_ENOMEM, "model: out of memory");
		for (int i = st->cap_map; i < cap; i++)
			p[i] = -1;
		st->map = p;
		st->cap_map = cap;
	}
	return FI_OK;
}

static void rollback(struct fi_model *m)
{
	struct step *st = &m->st;
	for (int k = 0; k < st->S; k++)
		fi_kvcache_set_len(m->cache, st->sid[k], st->old[k]);
	st->on = 0;
}

fi_err fi_model_launch(struct fi_model *m, const struct fi_batch *b, unsigned out,
		       struct fi_sample_io *io)
{
	struct fi_backend *be = m->be;
	const struct fi_config *c = &m->c;
	struct step *st = &m->st;
	struct fi_kvcache *kc;
	int T = b->n_tokens, S = 0, n_out = 0, maxb = 0, max_len = 0, identity, used = 0, n_dec = 0;
	int32_t *h, *tok, *pos, *seq, *slot, *idx, *slen, *btab;
	size_t need;
	fi_err e = FI_OK;

	if (st->on)
		return fi_fail(FI_ESTATE, "model: a step is in flight");
	if ((out & FI_STEP_SAMPLE) && ((out & FI_STEP_TOKENS) || !io || !io->rows))
		return fi_fail(FI_EINVAL, "model: sampled rows without their parameters");
	st->out = out;
	st->io = io;
	st->T = T;
	st->S = st->n_out = 0;
	st->dev_argmax = (out & FI_STEP_TOKENS) && be->ops->argmax;
	if (T <= 0) {
		st->on = 1;
		return FI_OK;
	}
	if (!m->cache && (e = fi_model_cache_init(m, 0, 0)))
		return e;
	kc = m->cache;
	for (int t = 0; t < T; t++) {
		if (b->tokens[t] < 0 || b->tokens[t] >= c->vocab)
			return fi_fail(FI_ERANGE, "token id %d outside the vocabulary (%d)",
				       b->tokens[t], c->vocab);
		if (!fi_kvcache_seq_valid(kc, b->seq[t]))
			return fi_fail(FI_ENOTFOUND, "model: no sequence %d", b->seq[t]);
	}
	if ((e = step_room(st, T, kc->n_seq)))
		return e;
	/* Sequences in order of first appearance; local[t] is token t's batch-local index. */
	for (int t = 0; t < T; t++) {
		int k = st->map[b->seq[t]];
		if (k < 0) {
			k = st->map[b->seq[t]] = S;
			st->sid[S] = b->seq[t];
			st->old[S] = fi_kvcache_seq_len(kc, b->seq[t]);
			st->cnt[S++] = 0;
		}
		st->local[t] = k;
		st->cnt[k]++;
	}
	for (int k = 0; k < S; k++)
		st->map[st->sid[k]] = -1;
	/* dynamic NTK: transformers rescales the whole sequence past max_position_embeddings at
	 * every step, which cached keys cannot follow (fi-load(1)) */
	for (int k = 0; k < S; k++)
		if (c->rope_type == FI_ROPE_DYNAMIC && st->old[k] + st->cnt[k] > c->max_pos)
			return fi_fail(FI_ERANGE, "position %d is past max_position_embeddings (%d) of "
				       "a model with dynamic NTK rope scaling",
				       st->old[k] + st->cnt[k] - 1, c->max_pos);
	for (int k = 0; k < S; k++) {
		int nb;
		if ((e = fi_kvcache_reserve(kc, st->sid[k], st->old[k] + st->cnt[k]))) {
			st->S = k + 1; /* roll back: release what was reserved */
			rollback(m);
			return e;
		}
		fi_kvcache_seq_blocks(kc, st->sid[k], &nb);
		if (nb > maxb)
			maxb = nb;
		if (st->old[k] + st->cnt[k] > max_len)
			max_len = st->old[k] + st->cnt[k];
	}
	st->S = S;
	/* Host staging, laid out as the backend copy: tok, pos, seq, slot, idx [T each],
	 * seq_len [S], block table [S, maxb] (unused entries -1). */
	need = 5 * (size_t)T + (size_t)S + (size_t)S * maxb;
	if (need > m->h_ints_cap) {
		int32_t *p = realloc(m->h_ints, need * sizeof(int32_t));
		if (!p) {
			e = fi_fail(FI_ENOMEM, "model: out of memory");
			goto fail;
		}
		m->h_ints = p;
		m->h_ints_cap = need;
	}
	h = m->h_ints;
	tok = h;
	pos = tok + T;
	seq = pos + T;
	slot = seq + T;
	idx = slot + T;
	slen = idx + T;
	btab = slen + S;
	for (int k = 0; k < S; k++)
		st->cnt[k] = 0; /* tokens placed so far per sequence, back to the totals below */
	for (int t = 0; t < T; t++) {
		int k = st->local[t];
		tok[t] = b->tokens[t];
		pos[t] = st->old[k] + st->cnt[k]++;
		seq[t] = k;
		slot[t] = fi_kvcache_slot(kc, st->sid[k], pos[t]);
		if (b->want && b->want[t])
			idx[n_out++] = t;
	}
	if (!b->want) /* the last token of each sequence, sequences in order of appearance */
		for (int k = 0; k < S; k++)
			for (int t = T - 1; t >= 0; t--)
				if (st->local[t] == k) {
					idx[n_out++] = t;
					break;
				}
	st->n_out = n_out;
	/* Leading tokens alone in their sequence: the decode rows of a mixed batch (backend.h) */
	while (n_dec < T && st->cnt[st->local[n_dec]] == 1)
		n_dec++;
	identity = n_out == T;
	for (int i = 0; i < n_out && identity; i++)
		identity = idx[i] == i;
	/* A decode step: one token per sequence, every row wanted. */
	if (identity && S == T && T <= GRAPH_MAX && !m->tp && fi_model_graphs_usable(m) &&
	    (e = fi_model_graph_step(m, T, st->sid, st->old, &used)))
		goto fail;
	if (!used) {
		for (int k = 0; k < S; k++) {
			int nb;
			const int32_t *bl = fi_kvcache_seq_blocks(kc, st->sid[k], &nb);
			slen[k] = st->old[k] + st->cnt[k];
			for (int j = 0; j < maxb; j++)
				btab[(size_t)k * maxb + j] = j < nb ? bl[j] : -1;
		}
		struct step_args a = {h, need, T, S, maxb, max_len, n_dec, identity, n_out,
				      st->dev_argmax};
		/* a group: the step broadcast to every rank, each running its shard (tp.h) */
		if ((e = m->tp ? fi_tp_step(m->tp, &a) : fi_model_step_body(m, &a)))
			goto fail;
	}
	if (m->tp) { /* the shards' rows are merged at collect (tp.h) */
		st->on = 1;
		return FI_OK;
	}
	if ((out & FI_STEP_SAMPLE) && n_out && (e = fi_model_sample_launch(m, n_out, io)))
		goto fail;
	st->on = 1;
	return FI_OK;
fail:
	rollback(m);
	return e;
}

static int32_t host_argmax(const float *x, int V)
{
	int b = 0;
	for (int i = 1; i < V; i++)
		if (x[i] > x[b])
			b = i;
	return b;
}

fi_err fi_model_collect(struct fi_model *m, float *logits, int32_t *tokens, int *n_rows)
{
	struct fi_backend *be = m->be;
	struct step *st = &m->st;
	int n_out = st->n_out;
	size_t V = (size_t)m->c.vocab;
	float *tmp = NULL;
	fi_err e = FI_OK;
	if (n_rows)
		*n_rows = 0;
	if (!st->on)
		return fi_fail(FI_ESTATE, "model: no step in flight");
	if (st->T <= 0) {
		st->on = 0;
		return FI_OK;
	}
	/* Only what the caller asked for crosses to the host. */
	if (m->tp) {
		e = fi_tp_collect(m->tp, st->out, st->io, n_out, logits, tokens);
	} else if (!n_out) {
		e = be->ops->sync(be);
	} else if (st->out & FI_STEP_SAMPLE) {
		e = fi_model_sample_collect(m, n_out, st->io);
	} else {
		int want_tok = (st->out & FI_STEP_TOKENS) && tokens;
		if (!(st->out & FI_STEP_LOGITS))
			logits = NULL;
		if (want_tok && !st->dev_argmax && !logits &&
		    !(logits = tmp = malloc(sizeof(float) * (size_t)n_out * V)))
			e = fi_fail(FI_ENOMEM, "model: out of memory");
		if (!e && logits)
			e = be->ops->download(be, logits, m->s.logits, sizeof(float) * (size_t)n_out * V);
		if (!e && want_tok && st->dev_argmax)
			e = be->ops->download(be, tokens, m->s.am, sizeof(int32_t) * (size_t)n_out);
		if (!e && want_tok && !st->dev_argmax)
			for (int i = 0; i < n_out; i++)
				tokens[i] = host_argmax(logits + (size_t)i * V, (int)V);
		if (!e && !logits && !want_tok)
			e = be->ops->sync(be);
	}
	free(tmp);
	if (e) {
		rollback(m);
		return e;
	}
	for (int k = 0; k < st->S; k++)
		fi_kvcache_set_len(m->cache, st->sid[k], st->old[k] + st->cnt[k]);
	st->on = 0;
	if (n_rows)
		*n_rows = n_out;
	return FI_OK;
}

/* The one-call forms: launch, then collect. */
static fi_err forward(struct fi_model *m, const struct fi_batch *b, unsigned out,
		      struct fi_sample_io *io, float *logits, int32_t *tokens, int *n_rows)
{
	fi_err e;
	if (n_rows)
		*n_rows = 0;
	if ((e = fi_model_launch(m, b, out, io)))
		return e;
	return fi_model_collect(m, logits, tokens, n_rows);
}

fi_err fi_model_forward_ex(struct fi_model *m, const struct fi_batch *b, float *logits,
			   int32_t *tokens, int *n_rows)
{
	return forward(m, b, (logits ? FI_STEP_LOGITS : 0) | (tokens ? FI_STEP_TOKENS : 0), NULL,
		       logits, tokens, n_rows);
}

fi_err fi_model_forward_sample(struct fi_model *m, const struct fi_batch *b,
			       const struct fi_sample_row *rows, float *logits, int32_t *tokens,
			       int32_t *n_kept, int *n_rows)
{
	struct fi_sample_io io = {.rows = rows, .tokens = tokens, .n_kept = n_kept, .logits = logits};
	return forward(m, b, FI_STEP_SAMPLE, &io, NULL, NULL, n_rows);
}

fi_err fi_model_forward_sample_io(struct fi_model *m, const struct fi_batch *b,
				  struct fi_sample_io *io, int *n_rows)
{
	return forward(m, b, FI_STEP_SAMPLE, io, NULL, NULL, n_rows);
}

fi_err fi_model_forward(struct fi_model *m, const struct fi_batch *b, float *logits,
			int *n_rows)
{
	return forward(m, b, FI_STEP_LOGITS, NULL, logits, NULL, n_rows);
}
