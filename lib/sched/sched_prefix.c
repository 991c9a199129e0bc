/* sched_prefix: block keys, the in-process prefix cache, the blocks being computed, and the
 * KV arena as the second tier (scheduler.h). */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "sched_int.h"

fi_err prefix_init(struct fi_sched *s)
{
	static const uint8_t none[32];
	struct fi_backend *be = fi_model_backend(s->m);
	/* The arena's KV id when the model has a fingerprint, so the two tiers share keys; a
	 * process-local root otherwise. */
	return fi_kvx_id(s->o.fingerprint ? s->o.fingerprint : none, &s->kc->kv, be->act, s->kv_id);
}

void prefix_free(struct fi_sched *s)
{
	for (int i = 0; i < s->n_jobs; i++) {
		for (int j = 0; j < s->jobs[i].n; j++)
			fi_kvcache_block_unref(s->kc, s->jobs[i].blocks[j]);
		free(s->jobs[i].blocks);
		free(s->jobs[i].toks);
	}
	free(s->jobs);
	free(s->fly);
	free(s->fly_owner);
}

fi_err prefix_keys(struct fi_sched *s, struct sreq *q, uint32_t n)
{
	int bs = s->block_size, want = (int)(n / (uint32_t)bs);
	fi_err e;
	if (want <= q->n_keys)
		return FI_OK;
	if (want > q->cap_keys) {
		int cap = q->cap_keys ? 2 * q->cap_keys : 16;
		while (cap < want)
			cap *= 2;
		fi_arena_key *k = realloc(q->keys, sizeof *k * (size_t)cap);
		if (!k)
			return fi_fail(FI_ENOMEM, "out of memory");
		q->keys = k;
		q->cap_keys = cap;
	}
	for (int i = q->n_keys; i < want; i++) {
		if ((e = fi_arena_key_next(s->kv_id, i ? &q->keys[i - 1] : NULL,
					   (const uint32_t *)q->hist + (size_t)i * bs, (uint32_t)bs,
					   &q->keys[i])))
			return e;
		q->n_keys = i + 1;
	}
	return FI_OK;
}

/* ---- keys being computed: open addressing over the key's first bytes, owner NULL empty ---- */

static uint32_t fly_slot(const struct fi_sched *s, const fi_arena_key *k)
{
	uint32_t h;
	memcpy(&h, k->b, sizeof h);
	return h & s->fly_mask;
}

static int fly_find(const struct fi_sched *s, const fi_arena_key *k)
{
	if (!s->fly)
		return -1;
	for (uint32_t i = fly_slot(s, k);; i = (i + 1) & s->fly_mask) {
		if (!s->fly_owner[i])
			return -1;
		if (!memcmp(s->fly[i].b, k->b, sizeof k->b))
			return (int)i;
	}
}

static void fly_put(struct fi_sched *s, const fi_arena_key *k, struct sreq *owner)
{
	uint32_t i = fly_slot(s, k);
	while (s->fly_owner[i])
		i = (i + 1) & s->fly_mask;
	s->fly[i] = *k;
	s->fly_owner[i] = owner;
	s->n_fly++;
}

static fi_err fly_room(struct fi_sched *s, int more)
{
	uint32_t cap = s->fly ? s->fly_mask + 1 : 0, ncap = cap ? cap : 1024;
	fi_arena_key *ok = s->fly;
	struct sreq **oo = s->fly_owner;
	while (2 * (uint32_t)(s->n_fly + more) > ncap)
		ncap *= 2;
	if (ncap == cap)
		return FI_OK;
	s->fly = malloc(sizeof *s->fly * ncap);
	s->fly_owner = calloc(ncap, sizeof *s->fly_owner);
	if (!s->fly || !s->fly_owner) {
		free(s->fly);
		free(s->fly_owner);
		s->fly = ok;
		s->fly_owner = oo;
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	s->fly_mask = ncap - 1;
	s->n_fly = 0;
	for (uint32_t i = 0; i < cap; i++)
		if (oo[i])
			fly_put(s, &ok[i], oo[i]);
	free(ok);
	free(oo);
	return FI_OK;
}

/* Deletes slot i, shifting later entries of its probe run back (no tombstones). */
static void fly_del(struct fi_sched *s, uint32_t i)
{
	uint32_t j;
	s->fly_owner[i] = NULL;
	s->n_fly--;
	for (j = (i + 1) & s->fly_mask; s->fly_owner[j]; j = (j + 1) & s->fly_mask) {
		uint32_t h = fly_slot(s, &s->fly[j]);
		if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
			s->fly[i] = s->fly[j];
			s->fly_owner[i] = s->fly_owner[j];
			s->fly_owner[j] = NULL;
			i = j;
		}
	}
}

/* Drops q's in-flight keys [from, to). */
static void fly_drop_range(struct fi_sched *s, struct sreq *q, int from, int to)
{
	for (int i = from; i < to; i++) {
		int k = fly_find(s, &q->keys[i]);
		if (k >= 0 && s->fly_owner[k] == q)
			fly_del(s, (uint32_t)k);
	}
}

int prefix_match(struct fi_sched *s, struct sreq *q, uint32_t n, int limit, int *idle, int *wait)
{
	int m;
	*idle = *wait = 0;
	(void)n;
	if (limit <= 0)
		return 0;
	if (prefix_keys(s, q, (uint32_t)limit * (uint32_t)s->block_size)) {
		sched_warn(s, q->id, q->user);
		return -1;
	}
	m = fi_kvcache_match(s->kc, q->keys, limit, idle);
	*wait = m < limit && fly_find(s, &q->keys[m]) >= 0;
	return m;
}

void prefix_fly_add(struct fi_sched *s, struct sreq *q, uint32_t n)
{
	int from = (int)(q->filled / (uint32_t)s->block_size), to = (int)(n / (uint32_t)s->block_size);
	q->fly_from = q->fly_to = from;
	if (to <= from || prefix_keys(s, q, n) || fly_room(s, to - from))
		return; /* not registered: others may compute these blocks too */
	for (int i = from; i < to; i++)
		if (fly_find(s, &q->keys[i]) < 0)
			fly_put(s, &q->keys[i], q);
	q->fly_to = to;
}

void prefix_fly_drop(struct fi_sched *s, struct sreq *q)
{
	fly_drop_range(s, q, q->fly_from, q->fly_to);
	q->fly_from = q->fly_to = 0;
}

void prefix_publish(struct fi_sched *s, struct sreq *q)
{
	int full = (int)(q->filled / (uint32_t)s->block_size);
	if (full <= q->published)
		return;
	if (prefix_keys(s, q, q->filled)) {
		sched_warn(s, q->id, q->user);
		return;
	}
	if (!s->o.kv_cb) {
		fi_kvcache_publish(s->kc, q->seq, q->published, q->keys + q->published, full - q->published);
	} else {
		/* one block at a time: a key another block already holds is not stored again, and
		 * each run of newly stored blocks is one event */
		int run = -1;
		for (int i = q->published; i <= full; i++) {
			int stored = i < full && fi_kvcache_publish(s->kc, q->seq, i, &q->keys[i], 1) == 1;
			if (stored && run < 0)
				run = i;
			if (!stored && run >= 0) {
				struct fi_kv_event ev = {
					.type = FI_KV_EV_STORED, .keys = &q->keys[run], .n = i - run,
					.parent = run ? &q->keys[run - 1] : NULL,
					.tokens = (const uint32_t *)q->hist + (size_t)run * (size_t)s->block_size,
					.block_tokens = (uint32_t)s->block_size};
				s->o.kv_cb(s->o.kv_user, &ev);
				run = -1;
			}
		}
	}
	if (q->fly_from < full) {
		fly_drop_range(s, q, q->fly_from, full < q->fly_to ? full : q->fly_to);
		q->fly_from = full;
	}
	q->published = full;
}

/* ---- the arena ---- */

/* An arena operation for request q (or none) failed: the request computes what it could not
 * fetch or store, with a warning. A lock that timed out (a stopped or stuck process holds it)
 * would cost every later request the same wait, so the arena is then dropped for good. */
static void arena_failed(struct fi_sched *s, struct sreq *q)
{
	int stuck = fi_errcode() == FI_EBUSY;
	if (stuck)
		fi_fail_ctx(FI_EBUSY, "computing without the arena from now on");
	sched_warn(s, q ? q->id : NULL, q ? q->user : NULL);
	if (stuck) {
		fi_kvx_close(s->x);
		s->x = NULL;
		s->x_tried = 1;
	}
}

fi_err fi_sched_arena(struct fi_sched *s, int create, struct fi_kvx **x)
{
	fi_err e;
	*x = NULL;
	if (!s->o.fingerprint)
		return fi_fail(FI_ESTATE, "kv arena: the model has no fingerprint");
	if (!s->x && (e = fi_kvx_open(&s->x, fi_model_cache(s->m), s->o.fingerprint, s->o.arena_size, create))) {
		/* Not tried again (each try may wait out a stuck lock), unless it was absent
		 * and may be created by another process later. */
		if (e != FI_ENOTFOUND)
			s->x_tried = 1;
		return e;
	}
	*x = s->x;
	return FI_OK;
}

struct fi_kvx *fi_sched_kvx(const struct fi_sched *s)
{
	return s->x;
}

struct fi_kvx *prefix_arena(struct fi_sched *s)
{
	struct fi_kvx *x;
	fi_err e;
	if (s->x || s->x_tried || !s->o.fingerprint)
		return s->x;
	if ((e = fi_sched_arena(s, s->o.prefix_cache, &x))) {
		if (e != FI_ENOTFOUND)
			s->x_tried = 1;
		fi_fail_ctx(e, "computing prompts without the arena");
		sched_warn(s, NULL, NULL);
	}
	return s->x;
}

int prefix_fetch(struct fi_sched *s, struct sreq *q, int limit)
{
	struct fi_kvx *x = prefix_arena(s);
	int got = 0, from = (int)(q->filled / (uint32_t)s->block_size), max = limit;
	if (!x)
		return 0;
	if (max > q->arena_max)
		max = q->arena_max;
	if (max <= from)
		return 0;
	/* A failing arena costs speed, never the request: the prompt is computed. The copy
	 * runs under the step's forward and the checksums are checked meanwhile; the blocks
	 * join the process cache when the step is collected, and only if they passed. */
	if (fi_kvx_fetch_begin(x, q->seq, (const uint32_t *)q->hist, (size_t)max * s->block_size,
			       (size_t)max, &got, &q->fetch))
		arena_failed(s, q);
	q->fetch_from = q->filled;
	q->fetch_got = got;
	s->st.arena_tokens += (uint64_t)got;
	return got;
}

int prefix_fetch_end(struct fi_sched *s, struct sreq *q)
{
	int good;
	if (!q->fetch)
		return 0;
	if (!fi_kvx_fetch_end(q->fetch, &good)) {
		q->fetch = NULL;
		return 0;
	}
	q->fetch = NULL;
	/* A corrupt block (FI_EFORMAT), or a copy that failed: what was computed past the good
	 * blocks read bad KV, and is computed again. */
	arena_failed(s, q);
	if (good > q->fetch_got)
		good = q->fetch_got;
	s->st.arena_tokens -= (uint64_t)(q->fetch_got - good);
	if (fi_model_seq_truncate(s->m, q->seq, (int)q->fetch_from + good))
		fi_clear_error();
	q->filled = q->fetch_from + (uint32_t)good;
	if (q->cached > q->filled)
		q->cached = q->filled;
	return 1;
}

/* Publishes blocks[0..n) holding toks in the arena. */
static size_t store_blocks(struct fi_sched *s, const int32_t *blocks, const uint32_t *toks,
			   int n, struct sreq *q)
{
	size_t stored = 0;
	if (!s->x) /* dropped after a lock timed out */
		return 0;
	if (fi_kvx_store_blocks(s->x, blocks, toks, (size_t)n, &stored))
		arena_failed(s, q);
	return stored;
}

fi_err prefix_store(struct fi_sched *s, struct sreq *q)
{
	int n = (int)(q->n_prompt / (uint32_t)s->block_size), nb;
	const int32_t *bl = fi_kvcache_seq_blocks(s->kc, q->seq, &nb);
	struct store_job *j;
	q->stored_q = 1;
	if (!s->x || !n)
		return FI_OK;
	if (s->o.arena_sync) {
		q->stored += store_blocks(s, bl, (const uint32_t *)q->hist, n, q);
		return FI_OK;
	}
	/* After this step: the block ids and tokens are kept, the blocks held. */
	if (s->n_jobs == s->cap_jobs) {
		int cap = s->cap_jobs ? 2 * s->cap_jobs : 16;
		struct store_job *p = realloc(s->jobs, sizeof *p * (size_t)cap);
		if (!p)
			return fi_fail(FI_ENOMEM, "out of memory");
		s->jobs = p;
		s->cap_jobs = cap;
	}
	j = &s->jobs[s->n_jobs];
	j->q = q;
	j->n = n;
	j->blocks = malloc(sizeof *j->blocks * (size_t)n);
	j->toks = malloc(sizeof *j->toks * (size_t)n * (size_t)s->block_size);
	if (!j->blocks || !j->toks) {
		free(j->blocks);
		free(j->toks);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	memcpy(j->blocks, bl, sizeof *j->blocks * (size_t)n);
	memcpy(j->toks, q->hist, sizeof *j->toks * (size_t)n * (size_t)s->block_size);
	for (int i = 0; i < n; i++)
		fi_kvcache_block_ref(s->kc, j->blocks[i]);
	s->n_jobs++;
	return FI_OK;
}

fi_err prefix_run_jobs(struct fi_sched *s)
{
	for (int i = 0; i < s->n_jobs; i++) {
		struct store_job *j = &s->jobs[i];
		size_t st = store_blocks(s, j->blocks, j->toks, j->n, j->q);
		if (j->q)
			j->q->stored += st;
		for (int k = 0; k < j->n; k++)
			fi_kvcache_block_unref(s->kc, j->blocks[k]);
		free(j->blocks);
		free(j->toks);
	}
	s->n_jobs = 0;
	return FI_OK;
}

void prefix_forget(struct fi_sched *s, struct sreq *q)
{
	for (int i = 0; i < s->n_jobs; i++)
		if (s->jobs[i].q == q)
			s->jobs[i].q = NULL;
}
