/* route_map: the router's tables: a hash map from byte strings to pointers (requests by
 * number, by client and id, clients by identity, sessions), and a key set with LRU eviction
 * (the prefix blocks a worker is believed to hold). Open addressing, linear probing,
 * backward-shift deletion, so no tombstones pile up under churn. */
#include <stdlib.h>
#include <string.h>

#include "route_int.h"

static uint64_t hash_bytes(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 1469598103934665603ull; /* FNV-1a, then a final mix */
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	return h ^ (h >> 33);
}

static int grow(struct rmap *m)
{
	struct rmap n = {0};
	size_t cap = m->cap ? 2 * m->cap : 64;
	if (!(n.slot = calloc(cap, sizeof *n.slot)))
		return -1;
	n.cap = cap;
	for (size_t i = 0; i < m->cap; i++) {
		struct rmap_slot *s = &m->slot[i];
		if (!s->key)
			continue;
		size_t j = s->hash & (cap - 1);
		while (n.slot[j].key)
			j = (j + 1) & (cap - 1);
		n.slot[j] = *s;
		n.n++;
	}
	free(m->slot);
	*m = n;
	return 0;
}

static struct rmap_slot *find(const struct rmap *m, const void *key, size_t len, uint64_t h)
{
	if (!m->cap)
		return NULL;
	for (size_t j = h & (m->cap - 1);; j = (j + 1) & (m->cap - 1)) {
		struct rmap_slot *s = &m->slot[j];
		if (!s->key)
			return NULL;
		if (s->hash == h && s->len == len && !memcmp(s->key, key, len))
			return s;
	}
}

void *rmap_get(const struct rmap *m, const void *key, size_t len)
{
	struct rmap_slot *s = find(m, key, len, hash_bytes(key, len));
	return s ? s->val : NULL;
}

int rmap_put(struct rmap *m, const void *key, size_t len, void *val)
{
	uint64_t h = hash_bytes(key, len);
	struct rmap_slot *s = find(m, key, len, h);
	if (s) {
		s->val = val;
		return 0;
	}
	if ((m->n + 1) * 4 > m->cap * 3 && grow(m))
		return -1;
	uint8_t *k = malloc(len ? len : 1);
	if (!k)
		return -1;
	memcpy(k, key, len);
	size_t j = h & (m->cap - 1);
	while (m->slot[j].key)
		j = (j + 1) & (m->cap - 1);
	m->slot[j] = (struct rmap_slot){k, len, h, val};
	m->n++;
	return 0;
}

void *rmap_del(struct rmap *m, const void *key, size_t len)
{
	struct rmap_slot *s = find(m, key, len, hash_bytes(key, len));
	void *v;
	size_t i, j, mask = m->cap - 1;
	if (!s)
		return NULL;
	v = s->val;
	free(s->key);
	i = (size_t)(s - m->slot);
	/* backward shift: move later entries of the run into the hole when their home allows */
	for (j = (i + 1) & mask; m->slot[j].key; j = (j + 1) & mask) {
		size_t home = m->slot[j].hash & mask;
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->slot[i] = m->slot[j];
			i = j;
		}
	}
	m->slot[i] = (struct rmap_slot){0};
	m->n--;
	return v;
}

void rmap_free(struct rmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slot[i].key);
	free(m->slot);
	*m = (struct rmap){0};
}

/* ---- key sets: a map from key to node, nodes on an LRU list (head most recent) ---- */

struct knode {
	fi_arena_key k;
	struct knode *prev, *next;
};

void kset_init(struct kset *s, size_t cap)
{
	memset(s, 0, sizeof *s);
	s->cap = cap ? cap : 4096;
}

static void unlink_node(struct kset *s, struct knode *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		s->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		s->tail = n->prev;
}

static void push_front(struct kset *s, struct knode *n)
{
	n->prev = NULL;
	n->next = s->head;
	if (s->head)
		s->head->prev = n;
	s->head = n;
	if (!s->tail)
		s->tail = n;
}

int kset_has(const struct kset *s, const fi_arena_key *k)
{
	return rmap_get(&s->map, k, sizeof *k) != NULL;
}

void kset_touch(struct kset *s, const fi_arena_key *k)
{
	struct knode *n = rmap_get(&s->map, k, sizeof *k);
	if (n) {
		unlink_node(s, n);
		push_front(s, n);
		return;
	}
	if (s->map.n >= s->cap && s->tail) {
		struct knode *old = s->tail;
		unlink_node(s, old);
		rmap_del(&s->map, &old->k, sizeof old->k);
		free(old);
	}
	if (!(n = malloc(sizeof *n)))
		return;
	n->k = *k;
	if (rmap_put(&s->map, &n->k, sizeof n->k, n)) {
		free(n);
		return;
	}
	push_front(s, n);
}

void kset_remove(struct kset *s, const fi_arena_key *k)
{
	struct knode *n = rmap_del(&s->map, k, sizeof *k);
	if (n) {
		unlink_node(s, n);
		free(n);
	}
}

void kset_clear(struct kset *s)
{
	size_t cap = s->cap;
	for (struct knode *n = s->head, *nx; n; n = nx) {
		nx = n->next;
		free(n);
	}
	rmap_free(&s->map);
	kset_init(s, cap);
}
