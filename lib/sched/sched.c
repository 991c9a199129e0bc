/* sched: continuous batching (see scheduler.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "sched_int.h"

void fi_sched_opts_default(struct fi_sched_opts *o)
{
	memset(o, 0, sizeof *o);
	o->max_batch = 64;
	o->max_requests = 64 + 1024;
	o->max_tokens = 256;
}

fi_err fi_sched_create(struct fi_model *m, const struct fi_sched_opts *o, struct fi_sched **out)
{
	struct fi_sched *s;
	struct fi_kvcache *kc;
	fi_err e;
	*out = NULL;
	if (o->max_batch < 1 || o->max_requests < o->max_batch || o->max_prefill_tokens < 0 ||
	    !o->max_tokens)
		return fi_fail(FI_EINVAL, "scheduler: max_batch %d, max_requests %d, "
			       "max_prefill_tokens %d, max_tokens %u out of range", o->max_batch,
			       o->max_requests, o->max_prefill_tokens, o->max_tokens);
	if (!fi_model_cache(m) && (e = fi_model_cache_init(m, 0, 0)))
		return e;
	if (!(s = calloc(1, sizeof *s)))
		return fi_fail(FI_ENOMEM, "out of memory");
	s->o = *o;
	s->m = m;
	s->c = fi_model_config(m);
	s->ctx = s->c->max_pos > 0 ? s->c->max_pos : 4096;
	kc = fi_model_cache(m);
	s->block_size = kc->kv.block_size;
	s->blocks_free = fi_kvcache_free_blocks(kc);
	s->r = calloc((size_t)o->max_requests, sizeof *s->r);
	s->logits = malloc(sizeof(float) * (size_t)s->c->vocab * (size_t)o->max_batch);
	s->greedy = malloc(sizeof(int32_t) * (size_t)o->max_batch);
	s->srow = malloc(sizeof *s->srow * (size_t)o->max_batch);
	s->skept = malloc(sizeof(int32_t) * (size_t)o->max_batch);
	if (!s->r || !s->logits || !s->greedy || !s->srow || !s->skept) {
		fi_sched_destroy(s);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	*out = s;
	return FI_OK;
}

static void req_free(struct sreq *q)
{
	if (!q)
		return;
	free(q->id);
	free(q->hist);
	free(q->stop);
	fi_sampler_free(&q->smp);
	stext_free(&q->txt);
	free(q);
}

/* Removes request i, releasing its sequence and blocks. */
static void drop(struct fi_sched *s, int i)
{
	struct sreq *q = s->r[i];
	if (q->admitted) {
		fi_model_seq_free(s->m, q->seq);
		s->blocks_free += q->blocks;
	}
	req_free(q);
	memmove(&s->r[i], &s->r[i + 1], sizeof s->r[0] * (size_t)(s->n - i - 1));
	s->n--;
}

void fi_sched_destroy(struct fi_sched *s)
{
	if (!s)
		return;
	while (s->n)
		drop(s, s->n - 1);
	while (s->npend)
		free(s->pend[--s->npend].id);
	fi_kvx_close(s->x);
	free(s->r);
	free(s->logits);
	free(s->greedy);
	free(s->srow);
	free(s->skept);
	free(s->btok);
	free(s->bseq);
	free(s->bwant);
	free(s);
}

static fi_err warn(struct fi_sched *s, const char *id, void *user)
{
	struct fi_sched_event ev = {.type = FI_SCHED_EV_WARN, .id = id, .user = user};
	if (id)
		snprintf(s->msg, sizeof s->msg, "request '%s': %s", id, fi_errmsg());
	else
		snprintf(s->msg, sizeof s->msg, "%s", fi_errmsg());
	ev.code = fi_errcode();
	ev.message = s->msg;
	return s->o.cb ? s->o.cb(s->o.cb_user, &ev) : FI_OK;
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

/* An arena operation for request q failed: the request computes what it could not fetch or
 * store, with a warning. A lock that timed out (a stopped or stuck process holds it) would
 * cost every later request the same wait, so the arena is then dropped for good. */
static fi_err arena_failed(struct fi_sched *s, struct sreq *q)
{
	int stuck = fi_errcode() == FI_EBUSY;
	fi_err e;
	if (stuck)
		fi_fail_ctx(FI_EBUSY, "computing without the arena from now on");
	e = warn(s, q->id, q->user);
	if (stuck) {
		fi_kvx_close(s->x);
		s->x = NULL;
		s->x_tried = 1;
	}
	return e;
}

/* The model's arena, attached on first use (created only with prefix_cache); NULL when it
 * cannot be had: prompts are then computed. An absent arena is looked for again later. */
static struct fi_kvx *arena(struct fi_sched *s)
{
	struct fi_kvx *x;
	fi_err e;
	if (s->x || s->x_tried || !s->o.fingerprint)
		return s->x;
	if ((e = fi_sched_arena(s, s->o.prefix_cache, &x))) {
		if (e != FI_ENOTFOUND)
			s->x_tried = 1;
		fi_fail_ctx(e, "computing prompts without the arena");
		warn(s, NULL, NULL);
	}
	return s->x;
}

static int find(const struct fi_sched *s, const char *id)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->r[i]->id, id))
			return i;
	return -1;
}

int fi_sched_pending(const struct fi_sched *s)
{
	return s->n;
}

int fi_sched_running(const struct fi_sched *s)
{
	int n = 0;
	for (int i = 0; i < s->n; i++)
		n += s->r[i]->admitted && !s->r[i]->dead;
	return n;
}

int fi_sched_room(const struct fi_sched *s)
{
	return s->o.max_requests - s->n;
}

int fi_sched_has(const struct fi_sched *s, const char *id)
{
	return find(s, id) >= 0;
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
		if ((e = fi_kvx_check_ref(arena(s), s->o.fingerprint, r->kv, r->tokens, r->ntokens,
					  &usable)))
			return fi_fail_ctx(e, "request '%s'", q->id);
		if (usable) {
			q->arena = 1;
			q->max_blocks = (int)r->kv->nblocks;
		}
	}
	if (s->o.prefix_cache && arena(s)) {
		q->arena = q->store = 1;
		q->max_blocks = most;
	}
	if (q->max_blocks > most)
		q->max_blocks = most;
	return FI_OK;
}

/* Checks a request and builds its state. */
static fi_err make_req(struct fi_sched *s, const struct fi_sched_req *r, struct sreq **out)
{
	const struct fi_config *c = s->c;
	const char *id = r->id;
	struct sreq *q;
	fi_err e;
	int32_t first;
	*out = NULL;
	if (!r->tokens || !r->ntokens)
		return fi_fail(FI_EINVAL, "request '%s': empty prompt", id);
	for (uint32_t i = 0; i < r->ntokens; i++)
		if (r->tokens[i] >= (uint32_t)c->vocab)
			return fi_fail(FI_ERANGE, "request '%s': token %u outside the vocabulary (%d)",
				       id, r->tokens[i], c->vocab);
	if (r->ntokens >= (uint32_t)s->ctx)
		return fi_fail(FI_ERANGE, "request '%s': prompt of %u tokens does not fit the "
			       "context of %d", id, r->ntokens, s->ctx);
	if (!(q = calloc(1, sizeof *q)))
		return fi_fail(FI_ENOMEM, "out of memory");
	q->seq = -1;
	q->user = r->user;
	q->stream = r->stream;
	q->flags = r->flags;
	q->max_new = r->max_tokens ? r->max_tokens : s->o.max_tokens;
	if (q->max_new > (uint32_t)s->ctx - r->ntokens)
		q->max_new = (uint32_t)s->ctx - r->ntokens; /* finish "length" at the context */
	q->n_prompt = r->ntokens;
	q->id = strdup(id);
	q->hist = malloc(sizeof(int32_t) * (q->n_prompt + q->max_new + 1));
	q->stop = malloc(sizeof(int32_t) * ((size_t)c->n_eos + (size_t)r->sp.n_stop + r->nstop_ids + 1));
	if (!q->id || !q->hist || !q->stop) {
		req_free(q);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < q->n_prompt; i++)
		q->hist[i] = (int32_t)r->tokens[i];
	if (!(r->flags & FI_SCHED_NO_STOP)) {
		for (int i = 0; i < c->n_eos && !(r->flags & FI_SCHED_IGNORE_EOS); i++)
			q->stop[q->n_stop++] = c->eos_ids[i];
		for (int i = 0; i < r->sp.n_stop; i++)
			q->stop[q->n_stop++] = r->sp.stop[i];
		for (uint32_t i = 0; i < r->nstop_ids; i++)
			q->stop[q->n_stop++] = (int32_t)r->stop_ids[i];
	}
	if ((e = fi_sampler_init(&q->smp, &r->sp, c->vocab))) {
		req_free(q);
		return fi_fail_ctx(e, "request '%s'", id);
	}
	if ((e = stext_init(s, q, r->stop, r->nstop)) || (e = plan_kv(s, r, q))) {
		req_free(q);
		return e;
	}
	q->blocks = (int)((q->n_prompt + q->max_new + (uint32_t)s->block_size - 1) /
			  (uint32_t)s->block_size);
	if (q->blocks > fi_model_cache(s->m)->kv.n_blocks) {
		int cap = fi_model_cache(s->m)->kv.n_blocks * s->block_size;
		uint32_t need = q->n_prompt + q->max_new;
		req_free(q);
		return fi_fail(FI_EFULL, "request '%s': needs %u tokens of KV cache, which holds %d",
			       id, need, cap);
	}
	first = take_pending(s, id);
	q->has_first = r->has_first || first >= 0;
	q->first = r->has_first ? (int32_t)r->first_token : first;
	if (q->has_first && (q->first < 0 || q->first >= c->vocab)) {
		req_free(q);
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
	if (find(s, r->id) >= 0)
		return fi_fail(FI_EEXIST, "a request with this id is running");
	if (s->n >= s->o.max_requests)
		return fi_fail(FI_EBUSY, "too many requests waiting");
	if ((e = make_req(s, r, &q)))
		return e;
	s->r[s->n++] = q;
	return FI_OK;
}

static fi_err emit_done(struct fi_sched *s, struct sreq *q, enum fi_finish why)
{
	struct fi_sched_event ev = {.type = FI_SCHED_EV_DONE, .id = q->id, .user = q->user,
				    .stream = q->stream};
	double now = fi_now();
	if (stext_end(s, q))
		warn(s, q->id, q->user); /* the text ends where it was */
	ev.finish = why;
	ev.prompt_tokens = q->n_prompt;
	ev.gen_tokens = q->n_gen;
	ev.cached_tokens = (uint32_t)q->cached;
	ev.queue_ms = q->admitted ? (q->t_admit - q->t_arrive) * 1e3 : (now - q->t_arrive) * 1e3;
	ev.ttft_ms = q->n_gen ? (q->t_first - q->t_arrive) * 1e3 : -1;
	ev.tpot_ms = q->n_gen > 1 ? (q->t_last - q->t_first) * 1e3 / (q->n_gen - 1) : -1;
	ev.total_ms = (now - q->t_arrive) * 1e3;
	ev.tokens = (const uint32_t *)(q->hist + q->n_prompt);
	ev.stored_blocks = q->stored;
	ev.text = q->txt.buf ? q->txt.buf : "";
	ev.text_len = q->txt.len;
	ev.text_sent = q->txt.sent;
	q->dead = 1;
	return s->o.cb ? s->o.cb(s->o.cb_user, &ev) : FI_OK;
}

fi_err fi_sched_cancel(struct fi_sched *s, const char *id)
{
	int i = find(s, id);
	fi_err e;
	if (i < 0)
		return fi_fail(FI_ENOTFOUND, "no request '%s'", id);
	e = emit_done(s, s->r[i], FI_FINISH_CANCEL);
	drop(s, i);
	return e;
}

fi_err fi_sched_cancel_all(struct fi_sched *s)
{
	fi_err e = FI_OK, e1;
	while (s->n) {
		e1 = emit_done(s, s->r[0], FI_FINISH_CANCEL);
		e = e ? e : e1;
		drop(s, 0);
	}
	return e;
}

static int n_admitted(const struct fi_sched *s)
{
	int k = 0;
	while (k < s->n && s->r[k]->admitted)
		k++;
	return k;
}

/* Admits waiting requests in arrival order while they fit (batch size, KV blocks reserved
 * for their whole prompt + max_new, so a running batch never runs out of cache). */
static fi_err admit(struct fi_sched *s)
{
	fi_err e;
	for (int i = n_admitted(s); i < s->n && i < s->o.max_batch; i++) {
		struct sreq *q = s->r[i];
		if (q->blocks > s->blocks_free)
			break;
		if ((e = fi_model_seq_new(s->m, &q->seq)))
			return e;
		s->blocks_free -= q->blocks;
		q->admitted = 1;
		q->t_admit = fi_now();
		/* A failing arena costs speed, never the request: the prompt is computed. */
		if (q->arena && s->x &&
		    fi_kvx_fetch(s->x, q->seq, (const uint32_t *)q->hist, q->n_prompt,
				 (size_t)q->max_blocks, &q->cached) &&
		    (e = arena_failed(s, q)))
			return e;
		q->pos = (uint32_t)q->cached;
	}
	return FI_OK;
}

static fi_err batch_room(struct fi_sched *s, int T)
{
	if (T <= s->cap_tok)
		return FI_OK;
	int cap = T < 256 ? 256 : T;
	free(s->btok);
	free(s->bseq);
	free(s->bwant);
	s->btok = malloc(sizeof(int32_t) * (size_t)cap);
	s->bseq = malloc(sizeof(int32_t) * (size_t)cap);
	s->bwant = malloc((size_t)cap);
	s->cap_tok = s->btok && s->bseq && s->bwant ? cap : 0;
	return s->cap_tok ? FI_OK : fi_fail(FI_ENOMEM, "out of memory");
}

/* Tokens request q puts in this step's batch (budget: prompt tokens left this step). */
static uint32_t chunk_of(const struct sreq *q, long *budget)
{
	uint32_t n;
	if (q->decoding)
		return 1;
	n = q->n_prompt - q->pos;
	if (*budget >= 0) {
		if ((long)n > *budget)
			n = (uint32_t)*budget;
		*budget -= n;
	}
	return n;
}

/* The sampled token t of request q: stops, text, events. */
static fi_err take_token(struct fi_sched *s, struct sreq *q, int32_t t)
{
	struct fi_sched_event ev = {.type = FI_SCHED_EV_TOKEN, .id = q->id, .user = q->user,
				    .stream = q->stream};
	double now = fi_now();
	int stopped = 0, last;
	fi_err e;
	for (int i = 0; i < q->n_stop; i++)
		if (q->stop[i] == t)
			return emit_done(s, q, FI_FINISH_STOP);
	q->hist[q->n_prompt + q->n_gen] = t;
	if (!q->n_gen)
		q->t_first = now;
	q->t_last = now;
	last = q->n_gen + 1 >= q->max_new;
	if ((e = stext_push(s, q, (uint32_t)t, last, &ev.text, &ev.text_len, &stopped))) {
		struct fi_sched_event er = {.type = FI_SCHED_EV_ERROR, .id = q->id, .user = q->user,
					    .stream = q->stream, .code = e};
		snprintf(s->msg, sizeof s->msg, "request '%s': %s", q->id, fi_errmsg());
		er.message = s->msg;
		if (s->o.cb && (e = s->o.cb(s->o.cb_user, &er)))
			return e;
		return emit_done(s, q, FI_FINISH_ERROR);
	}
	ev.token = (uint32_t)t;
	ev.index = q->n_gen++;
	q->next = t;
	if (s->o.cb && (e = s->o.cb(s->o.cb_user, &ev)))
		return e;
	if (stopped)
		return emit_done(s, q, FI_FINISH_STOP);
	if (last)
		return emit_done(s, q, FI_FINISH_LENGTH);
	return FI_OK;
}

/* A request whose token is the plain argmax of its logits (greedy, no penalty): the model
 * can pick it on the device instead of sending the logits row to the host. */
static int plain_greedy(const struct sreq *q)
{
	return q->smp.p.temperature <= 0 && q->smp.p.repeat_penalty == 1.0f;
}

/* One forward over the admitted requests: prompt chunks of new ones, one token of the
 * others; then one sampled token for each whose prompt is complete. */
static fi_err forward(struct fi_sched *s, int na)
{
	long budget = s->o.max_prefill_tokens ? s->o.max_prefill_tokens : -1;
	int T = 0, n_rows, greedy = 1, nr = 0;
	/* FI_DEVICE_SAMPLE=0: sampled rows go to the host sampler as logits (A/B, debugging) */
	const struct fi_backend *be = fi_model_backend(s->m);
	int dev = be->ops->sample != NULL && be->settings->device_sample;
	fi_err e = FI_OK;
	for (int i = 0; i < na; i++)
		T += (int)chunk_of(s->r[i], &budget);
	if (!T)
		return FI_OK;
	if ((e = batch_room(s, T)))
		return e;
	budget = s->o.max_prefill_tokens ? s->o.max_prefill_tokens : -1;
	T = 0;
	for (int i = 0; i < na; i++) {
		struct sreq *q = s->r[i];
		uint32_t n = chunk_of(q, &budget);
		for (uint32_t j = 0; j < n; j++) {
			s->btok[T] = q->decoding ? q->next : q->hist[q->pos + j];
			s->bseq[T] = q->seq;
			/* logits of a sequence's last token once its prompt is complete */
			s->bwant[T++] = j == n - 1 && (q->decoding || q->pos + n == q->n_prompt);
		}
		if (n && (q->decoding || q->pos + n == q->n_prompt)) {
			if (!plain_greedy(q))
				greedy = 0;
			if (!fi_sampler_rowable(&q->smp))
				dev = 0;
			else
				fi_sampler_row(&q->smp, &s->srow[nr++]);
		}
	}
	struct fi_batch b = {T, s->btok, s->bseq, s->bwant};
	/* Every row greedy: only the chosen tokens come back (the sampler would pick the same:
	 * the lowest id among equal maxima, and greedy draws no random numbers). Otherwise,
	 * when no row has a repetition penalty, the device draws each row's token with the u
	 * its sampler would use (fi_sampler_row); rows it hands back come as logits. */
	if (greedy)
		e = fi_model_forward_ex(s->m, &b, NULL, s->greedy, &n_rows);
	else if (dev)
		e = fi_model_forward_sample(s->m, &b, s->srow, s->logits, s->greedy, s->skept,
					    &n_rows);
	else
		e = fi_model_forward_ex(s->m, &b, s->logits, NULL, &n_rows);
	if (e)
		return e;
	budget = s->o.max_prefill_tokens ? s->o.max_prefill_tokens : -1;
	for (int i = 0, row = 0; i < na && !e; i++) {
		struct sreq *q = s->r[i];
		uint32_t n = chunk_of(q, &budget);
		int32_t t;
		if (!n)
			continue;
		if (!q->decoding) {
			q->pos += n;
			if (q->pos < q->n_prompt)
				continue;
			if (q->store && s->x &&
			    fi_kvx_store(s->x, q->seq, (const uint32_t *)q->hist, q->n_prompt,
					 &q->stored) &&
			    (e = arena_failed(s, q)))
				break;
		}
		/* rows come in batch order: admission order */
		if (greedy || (dev && s->greedy[row] >= 0)) {
			t = s->greedy[row];
			if (!greedy)
				fi_sampler_commit(&q->smp, s->skept[row]);
			row++;
		} else {
			t = fi_sampler_next(&q->smp, s->logits + (size_t)row++ * s->c->vocab, q->hist,
					    (int)(q->n_prompt + q->n_gen));
		}
		/* A first token drawn elsewhere is kept, and the draw above left the sampler's
		 * state as if it had been drawn here. */
		if (!q->decoding && q->has_first)
			t = q->first;
		q->decoding = 1;
		e = take_token(s, q, t);
	}
	return e;
}

fi_err fi_sched_step(struct fi_sched *s)
{
	fi_err e;
	int na;
	if ((e = admit(s)))
		return e;
	if ((na = n_admitted(s)))
		e = forward(s, na);
	for (int i = s->n - 1; i >= 0; i--)
		if (s->r[i]->dead)
			drop(s, i);
	return e;
}

fi_err fi_sched_run(struct fi_sched *s)
{
	fi_err e = FI_OK;
	while (s->n && !(e = fi_sched_step(s)))
		;
	return e;
}
