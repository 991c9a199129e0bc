/* sched_plan: the next step: decode tokens first, then prompt chunks under the token budget,
 * then admissions by present need; preemption of the most recently admitted request when a
 * running one needs a block that is not there (scheduler.h). Runs between steps: no step is
 * in flight, so the cache's counts are exact. */
#include <stdlib.h>
#include <string.h>

#include "base/settings.h"
#include "base/log.h"
#include "sched_int.h"

/* Tokens request q must hold before its next token is drawn: its prompt and what it
 * generated (after a preemption they are all computed again). */
static uint32_t ctx_len(const struct sreq *q)
{
	return q->n_prompt + q->n_gen;
}

/* The step being planned: its token budget and the blocks it takes (cache counts exclude
 * them until the model reserves them at launch). */
struct plan {
	int budget, planned, T;
};

static int available(const struct fi_sched *s, const struct plan *p)
{
	return fi_kvcache_available(s->kc) - p->planned;
}

static void schedule(struct fi_sched *s, struct plan *p, struct sreq *q, uint32_t n, int need)
{
	q->chunk = n;
	q->row = -1;
	p->budget -= (int)n;
	p->planned += need;
	p->T += (int)n;
	s->bq[s->n_bq++] = q;
}

/* Takes q out of the step being planned. */
static void unschedule(struct fi_sched *s, struct plan *p, struct sreq *q)
{
	for (int i = 0; i < s->n_bq; i++)
		if (s->bq[i] == q) {
			p->budget += (int)q->chunk;
			p->T -= (int)q->chunk;
			p->planned -= fi_kvcache_blocks_needed(s->kc, q->seq, (int)(q->filled + q->chunk));
			memmove(&s->bq[i], &s->bq[i + 1], sizeof s->bq[0] * (size_t)(s->n_bq - i - 1));
			s->n_bq--;
			q->chunk = 0;
			return;
		}
}

void sched_preempt(struct fi_sched *s, struct sreq *q)
{
	sched_unrun(s, q);
	prefix_fly_drop(s, q);
	prefix_fetch_end(s, q);
	fi_model_seq_free(s->m, q->seq); /* its published blocks stay, idle */
	q->seq = -1;
	q->filled = 0;
	q->published = 0;
	q->state = R_PREEMPTED;
	q->n_preempt++;
	s->st.preemptions++;
	rlist_insert_by_arrival(&s->preempted, q);
	fi_debug("scheduler: '%s' preempted (%u tokens to compute again)", q->id, ctx_len(q));
}

/* Makes room for n more tokens of running request q, preempting the most recently admitted
 * requests while blocks are missing. Returns the blocks it takes, or -1 when q itself was
 * preempted. */
static int room_for(struct fi_sched *s, struct plan *p, struct sreq *q, uint32_t n)
{
	for (;;) {
		int need = fi_kvcache_blocks_needed(s->kc, q->seq, (int)(q->filled + n));
		struct sreq *v;
		if (need <= available(s, p))
			return need;
		v = s->run[s->n_run - 1];
		if (v->chunk)
			unschedule(s, p, v);
		sched_preempt(s, v);
		if (v == q)
			return -1;
	}
}

/* Prompt tokens q may take this step. */
static uint32_t chunk_of(const struct fi_sched *s, const struct plan *p, const struct sreq *q)
{
	uint32_t n = ctx_len(q) - q->filled;
	if (s->o.max_prefill_tokens && n > (uint32_t)s->o.max_prefill_tokens)
		n = (uint32_t)s->o.max_prefill_tokens;
	if (n > (uint32_t)p->budget)
		n = p->budget > 0 ? (uint32_t)p->budget : 0;
	return n;
}

enum admit { ADMITTED, WAIT, NO_ROOM };

/* Admits q if its context fits with the watermark to spare (any size fits an empty batch),
 * attaching its cached prefix, fetching what the arena has, and schedules its first chunk. */
static enum admit try_admit(struct fi_sched *s, struct plan *p, struct sreq *q)
{
	uint32_t L = ctx_len(q), n;
	int bs = s->block_size, limit = (int)((L - 1) / (uint32_t)bs), m = 0, idle = 0, wait = 0;
	int need, avail;
	fi_err e;
	if (s->o.prefix_reuse) {
		m = prefix_match(s, q, L, limit, &idle, &wait);
		if (m < 0)
			return NO_ROOM; /* out of memory: try again next step */
		if (wait) {
			s->st.prefix_waits++;
			return WAIT;
		}
	}
	need = (int)((L + (uint32_t)bs - 1) / (uint32_t)bs) - m;
	avail = available(s, p) - idle;
	if (s->n_run ? avail - need < s->watermark_blocks : need > avail)
		return NO_ROOM;
	if ((e = fi_model_seq_new(s->m, &q->seq)) ||
	    (m && (e = fi_kvcache_seq_attach(s->kc, q->seq, q->keys, m)))) {
		fi_model_seq_free(s->m, q->seq);
		q->seq = -1;
		fi_fail_ctx(e, "admitting '%s'", q->id);
		sched_warn(s, q->id, q->user);
		return NO_ROOM;
	}
	q->filled = (uint32_t)m * (uint32_t)bs;
	if (!q->admitted_once) { /* the load frames' prefix hit rate, in blocks */
		s->st.prefix_lookups += (uint64_t)limit;
		s->st.prefix_hits += (uint64_t)m;
	}
	q->published = m;
	s->st.cached_tokens += q->filled;
	if (q->arena && m < limit)
		q->filled += (uint32_t)prefix_fetch(s, q, limit);
	if (q->state == R_WAITING) {
		rlist_del(&s->waiting, q);
		q->t_admit = fi_now();
		q->cached = q->filled;
	} else {
		rlist_del(&s->preempted, q);
	}
	q->state = R_RUNNING;
	s->run[s->n_run++] = q;
	if (s->o.prefix_reuse)
		prefix_fly_add(s, q, L);
	n = chunk_of(s, p, q);
	need = fi_kvcache_blocks_needed(s->kc, q->seq, (int)(q->filled + n));
	schedule(s, p, q, n, need);
	return ADMITTED;
}

/* Admission: preempted requests in arrival order, then new ones; a preempted request that
 * does not fit stops it (nothing overtakes it), a new one too (arrival order); a request
 * waiting for a prefix another is computing is passed over. */
static void admit(struct fi_sched *s, struct plan *p)
{
	for (int pass = 0; pass < 2; pass++) {
		struct rlist *l = pass ? &s->waiting : &s->preempted;
		struct sreq *q = l->head, *next;
		for (; q && s->n_run < s->o.max_batch && p->budget > 0; q = next) {
			next = q->next;
			enum admit a = try_admit(s, p, q);
			if (a == NO_ROOM)
				return;
		}
		if (q && (s->n_run >= s->o.max_batch || p->budget <= 0))
			return;
	}
}

/* Room for the batch arrays. */
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

/* Room for n rows of logits on the host. */
static fi_err logits_room(struct fi_sched *s, int n)
{
	if (n <= s->cap_rows)
		return FI_OK;
	free(s->logits);
	s->logits = malloc(sizeof(float) * (size_t)s->c->vocab * (size_t)n);
	s->cap_rows = s->logits ? n : 0;
	return s->logits ? FI_OK : fi_fail(FI_ENOMEM, "out of memory");
}

/* FI_DEVICE_SAMPLE=0: sampled rows go to the host sampler as logits (A/B, debugging). */
static int no_dev_sample(void)
{
	return !fi_settings()->device_sample;
}

/* Room for n window tokens. */
static fi_err win_room(struct fi_sched *s, size_t n)
{
	if (n <= s->cap_win)
		return FI_OK;
	int32_t *w = realloc(s->win, sizeof(int32_t) * (n + n / 2));
	if (!w)
		return fi_fail(FI_ENOMEM, "out of memory");
	s->win = w;
	s->cap_win = n + n / 2;
	return FI_OK;
}

/* The batch of the planned requests, in plan order, and its launch. Rows: the requests
 * whose chunk ends their known tokens, in batch order. What comes back: greedy tokens when
 * every row is plain greedy (no penalty, no log-probabilities: the sampler would pick the
 * argmax and draw nothing); else, with the backend's sample op, every row's token drawn
 * there with its parameters, penalty window, u and log-probabilities (rows it hands back
 * come as logits); without the op, logits for the host sampler. */
static fi_err launch(struct fi_sched *s, const struct plan *p)
{
	int T = 0, nr = 0, greedy = 1, lp = 0, top = 0;
	int dev = fi_model_backend(s->m)->ops->sample != NULL && !no_dev_sample();
	size_t n_win = 0, need_win = 0;
	unsigned out;
	fi_err e;
	if ((e = batch_room(s, p->T)))
		return e;
	for (int i = 0; i < s->n_bq; i++) {
		struct sreq *q = s->bq[i];
		int last = q->filled + q->chunk == ctx_len(q);
		for (uint32_t j = 0; j < q->chunk; j++) {
			s->btok[T] = q->hist[q->filled + j];
			s->bseq[T] = q->seq;
			s->bwant[T++] = last && j == q->chunk - 1;
		}
		if (!last)
			continue;
		q->row = nr++;
		if (q->smp.p.temperature > 0 || q->smp.p.repeat_penalty != 1.0f || q->logprobs)
			greedy = 0;
		if (q->smp.p.repeat_penalty != 1.0f)
			need_win += ctx_len(q);
		lp |= q->logprobs;
		top |= q->top_logprobs > 0;
	}
	out = greedy ? FI_STEP_TOKENS : dev ? FI_STEP_SAMPLE : FI_STEP_LOGITS;
	if (!greedy && (e = logits_room(s, nr)))
		return e;
	if (out == FI_STEP_SAMPLE) {
		if ((e = win_room(s, need_win)))
			return e;
		for (int i = 0; i < s->n_bq; i++) {
			struct sreq *q = s->bq[i];
			struct fi_sample_row *r;
			if (q->row < 0)
				continue;
			r = &s->srow[q->row];
			fi_sampler_row_hist(&q->smp, q->hist, (int)ctx_len(q), r, s->win, &n_win);
			r->n_logprobs = q->logprobs ? q->top_logprobs : -1;
		}
		s->io = (struct fi_sample_io){.rows = s->srow, .win = n_win ? s->win : NULL,
					      .n_win = n_win, .tokens = s->rtok, .n_kept = s->rkept,
					      .logprob = lp ? s->rlp : NULL, .top = top ? s->rtop : NULL,
					      .logits = s->logits};
	}
	struct fi_batch b = {T, s->btok, s->bseq, s->bwant};
	double t0 = fi_now();
	e = fi_model_launch(s->m, &b, out, out == FI_STEP_SAMPLE ? &s->io : NULL);
	s->t_model += fi_now() - t0;
	if (e)
		return e;
	s->inflight = 1;
	s->out = out;
	s->n_rows = nr;
	s->st.last_tokens = T;
	s->st.last_rows = nr;
	return FI_OK;
}

fi_err sched_plan_launch(struct fi_sched *s)
{
	struct plan p = {s->o.max_step_tokens, 0, 0};
	fi_err e;
	s->n_bq = 0;
	s->st.last_tokens = s->st.last_rows = 0;
	/* 1. one decode token of every running request past its prompt, oldest first */
	for (int i = 0; i < s->n_run;) {
		struct sreq *q = s->run[i];
		int need;
		if (q->filled + 1 != ctx_len(q)) {
			i++;
			continue;
		}
		if ((need = room_for(s, &p, q, 1)) < 0)
			break; /* q was the most recent: it is preempted, nothing follows it */
		schedule(s, &p, q, 1, need);
		i++;
	}
	/* 2. prompt chunks of running requests, oldest first, while the budget lasts */
	for (int i = 0; i < s->n_run && p.budget > 0;) {
		struct sreq *q = s->run[i];
		uint32_t n;
		int need;
		if (q->chunk || q->filled + 1 >= ctx_len(q)) {
			i++;
			continue;
		}
		n = chunk_of(s, &p, q);
		if ((need = room_for(s, &p, q, n)) < 0)
			break;
		schedule(s, &p, q, n, need);
		i++;
	}
	/* 3. new and preempted requests */
	admit(s, &p);
	if (!s->n_bq)
		return FI_OK;
	if (s->n_run > s->st.max_running)
		s->st.max_running = s->n_run;
	if ((e = launch(s, &p))) {
		for (int i = 0; i < s->n_bq; i++)
			s->bq[i]->chunk = 0, s->bq[i]->row = -1;
		s->n_bq = 0;
	}
	return e;
}
