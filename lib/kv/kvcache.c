/* kvcache: paged block allocator, per-sequence block tables, prefix cache of full blocks. */
#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

uint64_t fi_kvcache_token_bytes(int n_layers, int n_kv_heads, int head_dim, enum fi_dtype dt)
{
	return (uint64_t)n_layers * 2 * (uint64_t)n_kv_heads * (uint64_t)head_dim * fi_dtype_size(dt);
}

static void free_host(struct fi_kvcache *c)
{
	free(c->ref);
	free(c->free_ids);
	free(c->key);
	free(c->published);
	free(c->lru_prev);
	free(c->lru_next);
	free(c->table);
}

fi_err fi_kvcache_create(struct fi_backend *be, int n_layers, int n_kv_heads, int head_dim,
			 int n_blocks, int block_size, struct fi_kvcache **out)
{
	return fi_kvcache_create_fp8(be, n_layers, n_kv_heads, head_dim, n_blocks, block_size, 0,
				     out);
}

fi_err fi_kvcache_create_fp8(struct fi_backend *be, int n_layers, int n_kv_heads, int head_dim,
			     int n_blocks, int block_size, int fp8, struct fi_kvcache **out)
{
	struct fi_kvcache *c;
	uint32_t cap = 16;
	fi_err e;
	*out = NULL;
	if (n_blocks <= 0 || block_size <= 0 || n_blocks > (1 << 30) / block_size)
		return fi_fail(FI_EINVAL, "kv cache: %d blocks of %d tokens", n_blocks, block_size);
	c = calloc(1, sizeof *c);
	if (!c)
		return fi_fail(FI_ENOMEM, "kv cache: out of memory");
	while (cap < 2 * (uint32_t)n_blocks) /* load factor <= 1/2 */
		cap *= 2;
	c->be = be;
	c->kv.n_layers = n_layers;
	c->kv.n_blocks = n_blocks;
	c->kv.block_size = block_size;
	c->kv.n_kv_heads = n_kv_heads;
	c->kv.head_dim = head_dim;
	c->kv.fp8 = fp8;
	c->ref = calloc((size_t)n_blocks, sizeof *c->ref);
	c->free_ids = malloc((size_t)n_blocks * sizeof *c->free_ids);
	c->key = malloc((size_t)n_blocks * sizeof *c->key);
	c->published = calloc((size_t)n_blocks, 1);
	c->lru_prev = malloc((size_t)n_blocks * sizeof *c->lru_prev);
	c->lru_next = malloc((size_t)n_blocks * sizeof *c->lru_next);
	c->table = malloc((size_t)cap * sizeof *c->table);
	if (!c->ref || !c->free_ids || !c->key || !c->published || !c->lru_prev || !c->lru_next ||
	    !c->table) {
		free_host(c);
		free(c);
		return fi_fail(FI_ENOMEM, "kv cache: out of memory");
	}
	memset(c->table, 0xff, (size_t)cap * sizeof *c->table);
	c->table_mask = cap - 1;
	c->lru_head = c->lru_tail = -1;
	/* Pop order 0, 1, 2, ... so that runs are reproducible. */
	for (int i = 0; i < n_blocks; i++)
		c->free_ids[i] = n_blocks - 1 - i;
	c->n_free = n_blocks;
	if ((e = be->ops->kv_alloc(be, &c->kv))) {
		free_host(c);
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
	free_host(c);
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

const int32_t *fi_kvcache_seq_blocks(const struct fi_kvcache *c, int id, int *n)
{
	if (!fi_kvcache_seq_valid(c, id)) {
		*n = 0;
		return NULL;
	}
	*n = c->seq[id].n_blocks;
	return c->seq[id].blocks;
}

int fi_kvcache_free_blocks(const struct fi_kvcache *c)
{
	return c->n_free;
}

int fi_kvcache_available(const struct fi_kvcache *c)
{
	return c->n_free + c->n_idle;
}

/* ---- the key table: open addressing, linear probing; a key's first 4 bytes (SHA-256
 * output) are its hash ---- */

static uint32_t slot_of(const struct fi_kvcache *c, const fi_arena_key *k)
{
	uint32_t h;
	memcpy(&h, k->b, sizeof h);
	return h & c->table_mask;
}

static int32_t table_find(const struct fi_kvcache *c, const fi_arena_key *k)
{
	for (uint32_t i = slot_of(c, k);; i = (i + 1) & c->table_mask) {
		int32_t b = c->table[i];
		if (b < 0)
			return -1;
		if (!memcmp(c->key[b].b, k->b, sizeof k->b))
			return b;
	}
}

static void table_put(struct fi_kvcache *c, int32_t b)
{
	uint32_t i = slot_of(c, &c->key[b]);
	while (c->table[i] >= 0)
		i = (i + 1) & c->table_mask;
	c->table[i] = b;
}

/* Removes block b from the table, shifting later entries of its probe run back so that no
 * lookup stops early at the hole. */
static void table_del(struct fi_kvcache *c, int32_t b)
{
	uint32_t i = slot_of(c, &c->key[b]), j;
	while (c->table[i] != b)
		i = (i + 1) & c->table_mask;
	c->table[i] = -1;
	for (j = (i + 1) & c->table_mask; c->table[j] >= 0; j = (j + 1) & c->table_mask) {
		uint32_t h = slot_of(c, &c->key[c->table[j]]);
		/* entry j may move to the hole i when its home h is not in (i, j] cyclically */
		if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
			c->table[i] = c->table[j];
			c->table[j] = -1;
			i = j;
		}
	}
}

/* ---- the idle list ---- */

static void lru_unlink(struct fi_kvcache *c, int32_t b)
{
	int32_t p = c->lru_prev[b], n = c->lru_next[b];
	if (p >= 0)
		c->lru_next[p] = n;
	else
		c->lru_head = n;
	if (n >= 0)
		c->lru_prev[n] = p;
	else
		c->lru_tail = p;
	c->n_idle--;
}

static void lru_push(struct fi_kvcache *c, int32_t b)
{
	c->lru_prev[b] = c->lru_tail;
	c->lru_next[b] = -1;
	if (c->lru_tail >= 0)
		c->lru_next[c->lru_tail] = b;
	else
		c->lru_head = b;
	c->lru_tail = b;
	c->n_idle++;
}

static void unpublish(struct fi_kvcache *c, int32_t b)
{
	if (c->on_remove)
		c->on_remove(c->on_remove_user, &c->key[b]);
	table_del(c, b);
	c->published[b] = 0;
	c->n_published--;
}

static void unref(struct fi_kvcache *c, int32_t b)
{
	if (--c->ref[b])
		return;
	if (c->published[b])
		lru_push(c, b);
	else
		c->free_ids[c->n_free++] = b;
}

/* A block for new data: a free one, else the least recently used idle one. */
static fi_err take(struct fi_kvcache *c, int32_t *b)
{
	if (c->n_free) {
		*b = c->free_ids[--c->n_free];
	} else if (c->lru_head >= 0) {
		*b = c->lru_head;
		lru_unlink(c, *b);
		unpublish(c, *b);
		c->evictions++;
	} else {
		return fi_fail(FI_EFULL, "kv cache full: all %d blocks of %d tokens in use",
			       c->kv.n_blocks, c->kv.block_size);
	}
	c->ref[*b] = 1;
	return FI_OK;
}

/* A reference to published block b (taking it off the idle list if it was there). */
static void ref_published(struct fi_kvcache *c, int32_t b)
{
	if (!c->ref[b]++)
		lru_unlink(c, b);
}

void fi_kvcache_block_ref(struct fi_kvcache *c, int32_t b)
{
	if (c->published[b])
		ref_published(c, b);
	else
		c->ref[b]++;
}

void fi_kvcache_block_unref(struct fi_kvcache *c, int32_t b)
{
	unref(c, b);
}

/* ---- sequences ---- */

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

void fi_kvcache_seq_free(struct fi_kvcache *c, int id)
{
	struct fi_kv_seq *s;
	if (!fi_kvcache_seq_valid(c, id))
		return;
	s = &c->seq[id];
	/* last block first: the prompt's first blocks, shared the most, end up most recent */
	for (int i = s->n_blocks - 1; i >= 0; i--)
		unref(c, s->blocks[i]);
	s->used = 0;
	s->len = 0;
	s->n_blocks = 0;
}

int fi_kvcache_seq_gain(const struct fi_kvcache *c, int id)
{
	int n = 0;
	if (!fi_kvcache_seq_valid(c, id))
		return 0;
	for (int i = 0; i < c->seq[id].n_blocks; i++)
		n += c->ref[c->seq[id].blocks[i]] == 1;
	return n;
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
		fi_kvcache_block_ref(c, c->seq[src].blocks[i]);
	}
	c->seq[id].n_blocks = n;
	c->seq[id].len = c->seq[src].len;
	*dst = id;
	return FI_OK;
}

/* Copies block `from` into `to` for every layer, K and V, through host memory. */
fi_err fi_kvcache_copy_block(struct fi_kvcache *c, int32_t from, int32_t to)
{
	struct fi_backend *be = c->be;
	size_t bytes = fi_kv_block_bytes(&c->kv, be->act);
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

/* The copy-on-write of a shared block: here, then in the caches that mirror this one. */
static fi_err copy_block(struct fi_kvcache *c, int32_t from, int32_t to)
{
	fi_err e = fi_kvcache_copy_block(c, from, to);
	if (!e && c->mirror_copy)
		e = c->mirror_copy(c->mirror_arg, from, to);
	return e;
}

int fi_kvcache_blocks_needed(const struct fi_kvcache *c, int id, int new_len)
{
	const struct fi_kv_seq *s;
	int bs = c->kv.block_size, need, n;
	if (!fi_kvcache_seq_valid(c, id))
		return 0;
	s = &c->seq[id];
	if (new_len <= s->len)
		return 0;
	need = (new_len + bs - 1) / bs;
	n = need > s->n_blocks ? need - s->n_blocks : 0;
	if (s->len % bs && s->len / bs < s->n_blocks && c->ref[s->blocks[s->len / bs]] > 1)
		n++; /* copy on write */
	return n;
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
	/* The block that holds position len may be shared (after a fork or a truncation): make
	 * it private before this sequence writes into it; a published block it alone holds is
	 * unpublished (its content is about to change). Earlier blocks are full and never
	 * written. */
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
		} else if (c->published[old]) {
			unpublish(c, old);
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

/* ---- prefix cache ---- */

int fi_kvcache_match(const struct fi_kvcache *c, const fi_arena_key *keys, int n, int *idle)
{
	int i, k = 0;
	for (i = 0; i < n; i++) {
		int32_t b = table_find(c, &keys[i]);
		if (b < 0)
			break;
		k += !c->ref[b];
	}
	if (idle)
		*idle = k;
	return i;
}

fi_err fi_kvcache_seq_attach(struct fi_kvcache *c, int id, const fi_arena_key *keys, int n)
{
	struct fi_kv_seq *s;
	int32_t *b;
	fi_err e;
	if (!fi_kvcache_seq_valid(c, id))
		return fi_fail(FI_ENOTFOUND, "kv cache: no sequence %d", id);
	s = &c->seq[id];
	if (s->len || s->n_blocks)
		return fi_fail(FI_ESTATE, "kv cache: attach to sequence %d, which is not empty", id);
	if (n <= 0)
		return FI_OK;
	if ((e = grow(s, n)))
		return e;
	b = s->blocks;
	for (int i = 0; i < n; i++)
		if ((b[i] = table_find(c, &keys[i])) < 0)
			return fi_fail(FI_ENOTFOUND, "kv cache: block %d of the prefix is not cached", i);
	for (int i = 0; i < n; i++)
		ref_published(c, b[i]);
	c->hits += (uint64_t)n;
	s->n_blocks = n;
	s->len = n * c->kv.block_size;
	return FI_OK;
}

int fi_kvcache_publish(struct fi_kvcache *c, int id, int first, const fi_arena_key *keys, int n)
{
	const struct fi_kv_seq *s;
	int done = 0;
	if (!fi_kvcache_seq_valid(c, id) || first < 0)
		return 0;
	s = &c->seq[id];
	for (int i = 0; i < n; i++) {
		int j = first + i;
		int32_t b;
		if ((j + 1) * c->kv.block_size > s->len)
			break; /* not full, or not committed */
		b = s->blocks[j];
		if (c->published[b] || table_find(c, &keys[i]) >= 0)
			continue;
		c->key[b] = keys[i];
		c->published[b] = 1;
		table_put(c, b);
		c->n_published++;
		c->n_pub_total++;
		done++;
	}
	return done;
}

void fi_kvcache_clear(struct fi_kvcache *c)
{
	while (c->lru_head >= 0) {
		int32_t b = c->lru_head;
		lru_unlink(c, b);
		unpublish(c, b);
		c->free_ids[c->n_free++] = b;
	}
}

void fi_kvcache_stats(const struct fi_kvcache *c, struct fi_kvcache_stats *st)
{
	memset(st, 0, sizeof *st);
	st->n_blocks = c->kv.n_blocks;
	st->block_size = c->kv.block_size;
	st->free_blocks = c->n_free;
	st->idle_blocks = c->n_idle;
	st->cached_blocks = c->n_published;
	st->hits = c->hits;
	st->published = c->n_pub_total;
	st->evictions = c->evictions;
}
