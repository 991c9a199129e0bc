/* sched: the scheduler's API (scheduler.h): create and destroy, a request checked and added,
 * cancels, first tokens sent ahead, stats. The steps are sched_step.c's. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "sched_int.h"

void fi_sched_opts_default(struct fi_sched_opts *o)
{
	memset(o, 0, sizeof *o);
	o->max_batch = FI_SCHED_MAX_BATCH;
	o->max_requests = FI_SCHED_MAX_BATCH + 1024;
	o->max_step_tokens = FI_SCHED_MAX_STEP_TOKENS;
	o->max_tokens = 256;
	o->watermark = 0.01;
	o->prefix_reuse = 1;
	o->overlap = -1;
}

/* ---- create, destroy ---- */

/* The KV cache's removals, as events (opts.kv_cb). */
static void kv_removed(void *user, const fi_arena_key *key)
{
	struct fi_sched *s = user;
	struct fi_kv_event ev = {.type = FI_KV_EV_REMOVED, .keys = key, .n = 1};
	s->o.kv_cb(s->o.kv_user, &ev);
}

fi_err fi_sched_create(struct fi_model *m, const struct fi_sched_opts *o, struct fi_sched **out)
{
	struct fi_sched *s;
	fi_err e;
	*out = NULL;
	if (o->max_batch < 1 || o->max_requests < o->max_batch || o->max_prefill_tokens < 0 ||
	    o->max_step_tokens < o->max_batch || !o->max_tokens || o->watermark < 0 ||
	    o->watermark >= 1)
		return fi_fail(FI_EINVAL, "scheduler: max_batch %d, max_requests %d, "
			       "max_step_tokens %d, max_prefill_tokens %d, max_tokens %u, "
			       "watermark %g out of range (max_step_tokens >= max_batch)",
			       o->max_batch, o->max_requests, o->max_step_tokens,
			       o->max_prefill_tokens, o->max_tokens, o->watermark);
	if (fi_model_in_flight(m))
		return fi_fail(FI_ESTATE, "scheduler: the model has a step in flight");
	if (!fi_model_cache(m) && (e = fi_model_cache_init(m, 0, 0)))
		return e;
	if (!(s = calloc(1, sizeof *s)))
		return fi_fail(FI_ENOMEM, "out of memory");
	s->o = *o;
	s->m = m;
	s->c = fi_model_config(m);
	s->kc = fi_model_cache(m);
	s->ctx = s->c->max_pos > 0 ? s->c->max_pos : 4096;
	s->block_size = s->kc->kv.block_size;
	s->pool_tokens = s->kc->kv.n_blocks * s->block_size;
	s->watermark_blocks = (int)(o->watermark * s->kc->kv.n_blocks);
	s->overlap = o->overlap < 0 ? fi_model_async(m) : o->overlap != 0;
	for (s->hcap = 64; s->hcap < 2 * (uint32_t)o->max_requests; s->hcap *= 2)
		;
	s->htab = calloc(s->hcap, sizeof *s->htab);
	s->run = calloc((size_t)o->max_batch, sizeof *s->run);
	s->bq = calloc((size_t)o->max_batch, sizeof *s->bq);
	s->rtok = malloc(sizeof(int32_t) * (size_t)o->max_batch);
	s->rkept = malloc(sizeof(int32_t) * (size_t)o->max_batch);
	s->srow = malloc(sizeof *s->srow * (size_t)o->max_batch);
	s->rlp = malloc(sizeof *s->rlp * (size_t)o->max_batch);
	s->rtop = malloc(sizeof *s->rtop * (size_t)o->max_batch * FI_SAMPLE_MAX_TOP);
	if (!s->htab || !s->run || !s->bq || !s->rtok || !s->rkept || !s->srow || !s->rlp ||
	    !s->rtop) {
		fi_sched_destroy(s);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	if ((e = prefix_init(s))) {
		fi_sched_destroy(s);
		return e;
	}
	if (s->o.kv_cb) {
		/* the cache is new: consumers forget what they knew of this worker */
		struct fi_kv_event ev = {.type = FI_KV_EV_CLEARED};
		s->kc->on_remove = kv_removed;
		s->kc->on_remove_user = s;
		s->o.kv_cb(s->o.kv_user, &ev);
	}
	/* The arena is attached now, not at the first request: its extents are registered with
	 * the backend in the background (kvxfer.c), outside any request's time to first token. */
	if (s->o.prefix_cache)
		prefix_arena(s);
	*out = s;
	return FI_OK;
}

void fi_sched_destroy(struct fi_sched *s)
{
	struct sreq *q;
	if (!s)
		return;
	if (s->kc && s->kc->on_remove_user == s)
		s->kc->on_remove = NULL, s->kc->on_remove_user = NULL;
	if (s->inflight) { /* its results are not wanted */
		fi_model_collect(s->m, s->logits, s->rtok, NULL);
		s->inflight = 0;
	}
	if (s->kc && s->jobs && prefix_run_jobs(s)) /* a later process may want them */
		fi_warn("scheduler: arena publications at exit: %s", fi_errmsg());
	for (int i = 0; i < s->n_run; i++) {
		prefix_fetch_end(s, s->run[i]);
		fi_model_seq_free(s->m, s->run[i]->seq);
		sched_req_free(s->run[i]);
	}
	for (int i = 0; i < s->n_dead; i++) {
		prefix_fetch_end(s, s->dead[i]);
		fi_model_seq_free(s->m, s->dead[i]->seq);
		sched_req_free(s->dead[i]);
	}
	while ((q = s->waiting.head)) {
		rlist_del(&s->waiting, q);
		sched_req_free(q);
	}
	while ((q = s->preempted.head)) {
		rlist_del(&s->preempted, q);
		sched_req_free(q);
	}
	while (s->npend)
		free(s->pend[--s->npend].id);
	prefix_free(s);
	fi_kvx_close(s->x);
	free(s->htab);
	free(s->run);
	free(s->dead);
	free(s->bq);
	free(s->btok);
	free(s->bseq);
	free(s->bwant);
	free(s->logits);
	free(s->rtok);
	free(s->rkept);
	free(s->srow);
	free(s->rlp);
	free(s->rtop);
	free(s->win);
	free(s->ev);
	free(s);
}

int fi_sched_pending(const struct fi_sched *s)
{
	return s->n_held;
}

int fi_sched_running(const struct fi_sched *s)
{
	return s->n_run;
}

int fi_sched_room(const struct fi_sched *s)
{
	return s->o.max_requests - s->n_held;
}

int fi_sched_has(const struct fi_sched *s, const char *id)
{
	return sched_find(s, id) != NULL;
}

/* The first token sent ahead of request id, or -1 (taken out of the list). */
static int32_t take_pending(struct fi_sched *s, const char *id)
{
	for (int i = 0; i < s->npend; i++)
		if (!strcmp(s->pend[i].id, id)) {
			int32_t t = s->pend[i].token;
			free(s->pend[i].id);
			memmove(&s->pend[i], &s->pend[i + 1], sizeof s->pend[0] * (size_t)(s->npend - i - 1));
			s->npend--;
			return t;
		}
	return -1;
}

void fi_sched_first_token(struct fi_sched *s, const char *id, uint32_t token)
{
	char *d;
	if (token >= (uint32_t)s->c->vocab || !(d = strdup(id)))
		return;
	take_pending(s, id);
	if (s->npend == SCHED_MAX_PENDING) { /* its request went elsewhere: forget the oldest */
		free(s->pend[0].id);
		memmove(&s->pend[0], &s->pend[1], sizeof s->pend[0] * (SCHED_MAX_PENDING - 1));
		s->npend--;
	}
	s->pend[s->npend].id = d;
	s->pend[s->npend++].token = (int32_t)token;
}

/* Arena use of a request: a usable kv reference, or prefix_cache. At least the last prompt
 * token is always computed: its logits give the first token. */
static fi_err plan_kv(struct fi_sched *s, const struct fi_sched_req *r, struct sreq *q)
{
	int usable = 0, most = (int)((q->n_prompt - 1) / (uint32_t)s->block_size);
	fi_err e;
	if (r->kv && s->o.fingerprint) {
		if ((e = fi_kvx_check_ref(prefix_arena(s), s->o.fingerprint, r->kv, r->tokens,
					  r->ntokens, &usable)))
			return fi_fail_ctx(e, "request '%s'", q->id);
		if (usable) {
			q->arena = 1;
			q->arena_max = (int)r->kv->nblocks;
		}
	}
	if (s->o.prefix_cache && prefix_arena(s)) {
		q->arena = q->store = 1;
		q->arena_max = most;
	}
	if (q->arena_max > most)
		q->arena_max = most;
	return FI_OK;
}

/* Checks a request and builds its state. */
static fi_err make_req(struct fi_sched *s, const struct fi_sched_req *r, struct sreq **out)
{
	const struct fi_config *c = s->c;
	const char *id = r->id;
	struct sreq *q;
	uint32_t room;
	fi_err e;
	int32_t first;
	*out = NULL;
	if (!r->tokens || !r->ntokens)
		return fi_fail(FI_EINVAL, "request '%s': empty prompt", id);
	if (r->top_logprobs < 0 || r->top_logprobs > FI_SCHED_MAX_TOP)
		return fi_fail(FI_EINVAL, "request '%s': top_logprobs %d outside 0..%d", id,
			       r->top_logprobs, FI_SCHED_MAX_TOP);
	for (uint32_t i = 0; i < r->ntokens; i++)
		if (r->tokens[i] >= (uint32_t)c->vocab)
			return fi_fail(FI_ERANGE, "request '%s': token %u outside the vocabulary (%d)",
				       id, r->tokens[i], c->vocab);
	if (r->ntokens >= (uint32_t)s->ctx)
		return fi_fail(FI_ERANGE, "request '%s': prompt of %u tokens does not fit the "
			       "context of %d", id, r->ntokens, s->ctx);
	if (r->ntokens > (uint32_t)s->pool_tokens)
		return fi_fail(FI_EFULL, "request '%s': its prompt needs %u tokens of KV cache, "
			       "the pool holds %d", id, r->ntokens, s->pool_tokens);
	if (!(q = calloc(1, sizeof *q)))
		return fi_fail(FI_ENOMEM, "out of memory");
	q->seq = -1;
	q->row = -1;
	q->user = r->user;
	q->stream = r->stream;
	q->flags = r->flags;
	q->logprobs = r->logprobs || r->top_logprobs;
	q->top_logprobs = r->top_logprobs;
	q->max_new = r->max_tokens ? r->max_tokens : s->o.max_tokens;
	if (q->max_new > (uint32_t)s->ctx - r->ntokens)
		q->max_new = (uint32_t)s->ctx - r->ntokens; /* finish "length" at the context */
	/* the last token is never fed: the KV holds n_prompt + max_new - 1 tokens at most */
	if (q->max_new > (uint32_t)s->pool_tokens - r->ntokens + 1)
		q->max_new = (uint32_t)s->pool_tokens - r->ntokens + 1; /* ... or the pool */
	q->n_prompt = r->ntokens;
	room = q->n_prompt + (q->max_new < 64 ? q->max_new : 64);
	q->id = strdup(id);
	q->hist = malloc(sizeof(int32_t) * room);
	q->cap_hist = room;
	q->stop = malloc(sizeof(int32_t) * ((size_t)c->n_eos + (size_t)r->sp.n_stop + r->nstop_ids + 1));
	if (!q->id || !q->hist || !q->stop) {
		sched_req_free(q);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < q->n_prompt; i++)
		q->hist[i] = (int32_t)r->tokens[i];
	if (!(r->flags & FI_SCHED_NO_STOP)) {
		if (!(r->flags & FI_SCHED_IGNORE_EOS))
			for (int i = 0; i < c->n_eos; i++)
				q->stop[q->n_stop++] = c->eos_ids[i];
		for (int i = 0; i < r->sp.n_stop; i++)
			q->stop[q->n_stop++] = r->sp.stop[i];
		for (uint32_t i = 0; i < r->nstop_ids; i++)
			q->stop[q->n_stop++] = (int32_t)r->stop_ids[i];
	}
	if ((e = fi_sampler_init(&q->smp, &r->sp, c->vocab))) {
		sched_req_free(q);
		return fi_fail_ctx(e, "request '%s'", id);
	}
	if ((e = plan_kv(s, r, q))) {
		sched_req_free(q);
		return e;
	}
	first = take_pending(s, id);
	q->has_first = r->has_first || first >= 0;
	q->first = r->has_first ? (int32_t)r->first_token : first;
	if (q->has_first && (q->first < 0 || q->first >= c->vocab)) {
		sched_req_free(q);
		return fi_fail(FI_ERANGE, "request '%s': first token %u outside the vocabulary (%d)",
			       id, r->first_token, c->vocab);
	}
	q->t_arrive = fi_now();
	*out = q;
	return FI_OK;
}

fi_err fi_sched_add(struct fi_sched *s, const struct fi_sched_req *r)
{
	struct sreq *q;
	fi_err e;
	if (!r->id)
		return fi_fail(FI_EINVAL, "request without an id");
	if (sched_find(s, r->id))
		return fi_fail(FI_EEXIST, "a request with this id is running");
	if (s->n_held >= s->o.max_requests)
		return fi_fail(FI_EBUSY, "too many requests waiting");
	if ((e = make_req(s, r, &q)))
		return e;
	q->arrival = s->n_arrived++;
	q->state = R_WAITING;
	rlist_push(&s->waiting, q);
	sched_id_put(s, q);
	s->n_held++;
	return FI_OK;
}

/* ---- ending requests ---- */

fi_err fi_sched_cancel(struct fi_sched *s, const char *id)
{
	struct sreq *q = sched_find(s, id);
	fi_err e;
	if (!q)
		return fi_fail(FI_ENOTFOUND, "no request '%s'", id);
	if (!(e = sched_finish(s, q, FI_FINISH_CANCEL)))
		e = sched_emit(s);
	sched_reap(s);
	return e;
}

fi_err fi_sched_cancel_all(struct fi_sched *s)
{
	fi_err e = FI_OK, e1;
	/* arrival order: running, preempted and waiting requests are merged by it */
	while (s->n_held) {
		struct sreq *q = s->waiting.head;
		if (s->preempted.head && (!q || s->preempted.head->arrival < q->arrival))
			q = s->preempted.head;
		for (int i = 0; i < s->n_run; i++)
			if (!q || s->run[i]->arrival < q->arrival)
				q = s->run[i];
		e1 = sched_finish(s, q, FI_FINISH_CANCEL);
		if (!e1)
			e1 = sched_emit(s);
		e = e ? e : e1;
		if (e1 == FI_ENOMEM)
			break;
	}
	sched_reap(s);
	return e;
}

void fi_sched_stats(const struct fi_sched *s, struct fi_sched_stats *st)
{
	struct fi_kvcache_stats ks;
	*st = s->st;
	st->running = s->n_run;
	st->waiting = s->waiting.n;
	st->preempted = s->preempted.n;
	fi_kvcache_stats(s->kc, &ks);
	st->kv_blocks = ks.n_blocks;
	st->kv_block_size = ks.block_size;
	st->kv_available = ks.free_blocks + ks.idle_blocks;
	st->kv_cached = ks.cached_blocks;
	st->queued_tokens = st->running_tokens = 0;
	for (const struct sreq *q = s->waiting.head; q; q = q->next)
		st->queued_tokens += q->n_prompt + q->n_gen;
	for (const struct sreq *q = s->preempted.head; q; q = q->next)
		st->queued_tokens += q->n_prompt + q->n_gen;
	for (int i = 0; i < s->n_run; i++)
		st->running_tokens += s->run[i]->n_prompt + s->run[i]->n_gen;
}

const char *fi_sched_kv_root(const struct fi_sched *s)
{
	return s->kv_id;
}

fi_err fi_prefix_block_keys(const char *root, const uint32_t *tokens, size_t n,
			    uint32_t block_tokens, fi_arena_key *keys)
{
	if (!block_tokens)
		return fi_fail(FI_EINVAL, "block keys: block_tokens is 0");
	if (n < block_tokens)
		return FI_OK;
	return fi_arena_chain_keys(root, tokens, n - n % block_tokens, block_tokens, keys);
}
