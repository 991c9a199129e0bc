/* kvcache: paged block allocator and per-sequence block tables. */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

fi_err fi_kvcache_create(struct fi_backend *be, int n_layers, int n_kv_heads, int head_dim,
			 int n_blocks, int block_size, struct fi_kvcache **out)
{
	struct fi_kvcache *c;
	fi_err e;
	*out = NULL;
	if (n_blocks <= 0 || block_size <= 0 || n_blocks > (1 << 30) / block_size)
		return fi_fail(FI_EINVAL, "kv cache: %d blocks of %d tokens", n_blocks, block_size);
	c = calloc(1, sizeof *c);
	if (!c)
		return fi_fail(FI_ENOMEM, "kv cache: out of memory");
	c->be = be;
	c->kv.n_layers = n_layers;
	c->kv.n_blocks = n_blocks;
	c->kv.block_size = block_size;
	c->kv.n_kv_heads = n_kv_heads;
	c->kv.head_dim = head_dim;
	c->ref = calloc((size_t)n_blocks, sizeof *c->ref);
	c->free_ids = malloc((size_t)n_blocks * sizeof *c->free_ids);
	if (!c->ref || !c->free_ids) {
		free(c->ref);
		free(c->free_ids);
		free(c);
		return fi_fail(FI_ENOMEM, "kv cache: out of memory");
	}
	/* Pop order 0, 1, 2, ... so that runs are reproducible. */
	for (int i = 0; i < n_blocks; i++)
		c->free_ids[i] = n_blocks - 1 - i;
	c->n_free = n_blocks;
	if ((e = be->ops->kv_alloc(be, &c->kv))) {
		free(c->ref);
		free(c->free_ids);
		free(c);
		return e;
	}
	*out = c;
	return FI_OK;
}

void fi_kvcache_destroy(struct fi_kvcache *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->n_seq; i++)
		free(c->seq[i].blocks);
	free(c->seq);
	c->be->ops->kv_free(c->be, &c->kv);
	free(c->ref);
	free(c->free_ids);
	free(c);
}

int fi_kvcache_seq_valid(const struct fi_kvcache *c, int id)
{
	return id >= 0 && id < c->n_seq && c->seq[id].used;
}

int fi_kvcache_seq_len(const struct fi_kvcache *c, int id)
{
	return fi_kvcache_seq_valid(c, id) ? c->seq[id].len : -1;
}

int fi_kvcache_free_blocks(const struct fi_kvcache *c)
{
	return c->n_free;
}

fi_err fi_kvcache_seq_new(struct fi_kvcache *c, int *id)
{
	int i;
	for (i = 0; i < c->n_seq; i++)
		if (!c->seq[i].used)
			break;
	if (i == c->n_seq) {
		int n = c->n_seq ? 2 * c->n_seq : 8;
		struct fi_kv_seq *s = realloc(c->seq, (size_t)n * sizeof *s);
		if (!s)
			return fi_fail(FI_ENOMEM, "kv cache: out of memory");
		memset(s + c->n_seq, 0, (size_t)(n - c->n_seq) * sizeof *s);
		c->seq = s;
		c->n_seq = n;
	}
	c->seq[i].used = 1;
	c->seq[i].len = 0;
	c->seq[i].n_blocks = 0;
	*id = i;
	return FI_OK;
}

static void unref(struct fi_kvcache *c, int32_t b)
{
	if (--c->ref[b] == 0)
		c->free_ids[c->n_free++] = b;
}

void fi_kvcache_seq_free(struct fi_kvcache *c, int id)
{
	struct fi_kv_seq *s;
	if (!fi_kvcache_seq_valid(c, id))
		return;
	s = &c->seq[id];
	for (int i = 0; i < s->n_blocks; i++)
		unref(c, s->blocks[i]);
	s->used = 0;
	s->len = 0;
	s->n_blocks = 0;
}

static fi_err grow(struct fi_kv_seq *s, int n)
{
	if (n > s->cap) {
		int cap = s->cap ? s->cap : 8;
		int32_t *b;
		while (cap < n)
			cap *= 2;
		b = realloc(s->blocks, (size_t)cap * sizeof *b);
		if (!b)
			return fi_fail(FI_ENOMEM, "kv cache: out of memory");
		s->blocks = b;
		s->cap = cap;
	}
	return FI_OK;
}

fi_err fi_kvcache_seq_fork(struct fi_kvcache *c, int src, int *dst)
{
	fi_err e;
	int id, n;
	if (!fi_kvcache_seq_valid(c, src))
		return fi_fail(FI_ENOTFOUND, "kv cache: no sequence %d", src);
	if ((e = fi_kvcache_seq_new(c, &id)))
		return e;
	/* Share the blocks that hold committed tokens only (seq_new may have moved c->seq). */
	n = (c->seq[src].len + c->kv.block_size - 1) / c->kv.block_size;
	if ((e = grow(&c->seq[id], n))) {
		fi_kvcache_seq_free(c, id);
		return e;
	}
	for (int i = 0; i < n; i++) {
		c->seq[id].blocks[i] = c->seq[src].blocks[i];
		c->ref[c->seq[src].blocks[i]]++;
	}
	c->seq[id].n_blocks = n;
	c->seq[id].len = c->seq[src].len;
	*dst = id;
	return FI_OK;
}

static fi_err take(struct fi_kvcache *c, int32_t *b)
{
	if (!c->n_free)
		return fi_fail(FI_EFULL, "kv cache full: all %d blocks of %d tokens in use",
			       c->kv.n_blocks, c->kv.block_size);
	*b = c->free_ids[--c->n_free];
	c->ref[*b] = 1;
	return FI_OK;
}

/* Copies block `from` into `to` for every layer, K and V, through host memory. */
static fi_err copy_block(struct fi_kvcache *c, int32_t from, int32_t to)
{
	struct fi_backend *be = c->be;
	size_t bytes = (size_t)c->kv.block_size * c->kv.n_kv_heads * c->kv.head_dim *
		       fi_dtype_size(be->act);
	char *tmp = malloc(bytes);
	fi_err e = FI_OK;
	if (!tmp)
		return fi_fail(FI_ENOMEM, "kv cache: out of memory");
	for (int l = 0; l < c->kv.n_layers && !e; l++)
		for (int kv = 0; kv < 2 && !e; kv++) {
			char *base = kv ? c->kv.v_d[l] : c->kv.k_d[l];
			e = be->ops->download(be, tmp, base + (size_t)from * bytes, bytes);
			if (!e)
				e = be->ops->upload(be, base + (size_t)to * bytes, tmp, bytes);
		}
	free(tmp);
	return e;
}

fi_err fi_kvcache_reserve(struct fi_kvcache *c, int id, int new_len)
{
	struct fi_kv_seq *s;
	int bs = c->kv.block_size, need;
	fi_err e;
	if (!fi_kvcache_seq_valid(c, id))
		return fi_fail(FI_ENOTFOUND, "kv cache: no sequence %d", id);
	s = &c->seq[id];
	if (new_len <= s->len)
		return FI_OK;
	need = (new_len + bs - 1) / bs;
	if ((e = grow(s, need)))
		return e;
	/* The block that holds position len may be shared (after a fork): make it private
	 * before this sequence writes into it. Earlier blocks are full and never written. */
	if (s->len % bs && s->len / bs < s->n_blocks) {
		int i = s->len / bs;
		int32_t old = s->blocks[i], nb = -1;
		if (c->ref[old] > 1) {
			if ((e = take(c, &nb)))
				return e;
			if ((e = copy_block(c, old, nb))) {
				unref(c, nb);
				return e;
			}
			unref(c, old);
			s->blocks[i] = nb;
		}
	}
	while (s->n_blocks < need) {
		if ((e = take(c, &s->blocks[s->n_blocks])))
			return e;
		s->n_blocks++;
	}
	return FI_OK;
}

fi_err fi_kvcache_set_len(struct fi_kvcache *c, int id, int len)
{
	struct fi_kv_seq *s;
	int keep;
	if (!fi_kvcache_seq_valid(c, id))
		return fi_fail(FI_ENOTFOUND, "kv cache: no sequence %d", id);
	s = &c->seq[id];
	keep = (len + c->kv.block_size - 1) / c->kv.block_size;
	if (len < 0 || keep > s->n_blocks)
		return fi_fail(FI_ERANGE, "kv cache: sequence %d: length %d not reserved", id, len);
	while (s->n_blocks > keep)
		unref(c, s->blocks[--s->n_blocks]);
	s->len = len;
	return FI_OK;
}

int32_t fi_kvcache_slot(const struct fi_kvcache *c, int id, int pos)
{
	const struct fi_kv_seq *s = &c->seq[id];
	return s->blocks[pos / c->kv.block_size] * c->kv.block_size + pos % c->kv.block_size;
}
