/* sched_step: a step's results (tokens, stops, lengths, log-probabilities), its events, a
 * request's end (its done event), and the step itself: collect the step in flight, plan and
 * launch the next, report events; with overlap the launch comes before the events, so the
 * host reports step n while the device runs step n + 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "sched_int.h"

fi_err sched_qev(struct fi_sched *s, struct qev **e)
{
	if (s->n_ev == s->cap_ev) {
		int cap = s->cap_ev ? 2 * s->cap_ev : 256;
		struct qev *p = realloc(s->ev, sizeof *p * (size_t)cap);
		if (!p)
			return fi_fail(FI_ENOMEM, "out of memory");
		s->ev = p;
		s->cap_ev = cap;
	}
	*e = &s->ev[s->n_ev++];
	memset(*e, 0, sizeof **e);
	return FI_OK;
}

/* Queues q's done event and marks it done: out of its queue, the running list, the id
 * table and the blocks in flight; its sequence is freed by sched_reap. */
fi_err sched_finish(struct fi_sched *s, struct sreq *q, enum fi_finish why)
{
	struct qev *ev;
	fi_err e;
	if (q->state == R_DONE)
		return FI_OK;
	if (s->n_dead == s->cap_dead) {
		int cap = s->cap_dead ? 2 * s->cap_dead : 64;
		struct sreq **d = realloc(s->dead, sizeof *d * (size_t)cap);
		if (!d)
			return fi_fail(FI_ENOMEM, "out of memory");
		s->dead = d;
		s->cap_dead = cap;
	}
	if ((e = sched_qev(s, &ev)))
		return e;
	ev->q = q;
	ev->done = 1;
	ev->finish = why;
	if (q->state == R_WAITING)
		rlist_del(&s->waiting, q);
	else if (q->state == R_PREEMPTED)
		rlist_del(&s->preempted, q);
	else
		sched_unrun(s, q);
	prefix_fly_drop(s, q);
	prefix_forget(s, q);
	prefix_fetch_end(s, q); /* a fetch it began: its copy done, its lease gone */
	sched_id_del(s, q);
	q->state = R_DONE;
	s->n_held--;
	s->st.done++;
	s->dead[s->n_dead++] = q;
	return FI_OK;
}


/* The log-probabilities of token t of q (row r): from the device, or from the logits row
 * the host sampled (the reference, fi_sample_logprobs). */
static void set_logprobs(struct fi_sched *s, struct sreq *q, int32_t t, int r, const float *row,
			 struct qev *ev)
{
	struct fi_sample_top tmp[FI_SAMPLE_MAX_TOP];
	const struct fi_sample_top *top = tmp;
	int n = q->top_logprobs;
	if (row) {
		fi_sample_logprobs(row, s->c->vocab, t, n, &ev->logprob, tmp);
	} else if (s->out & FI_STEP_SAMPLE) {
		ev->logprob = s->rlp[r];
		top = s->rtop + (size_t)r * FI_SAMPLE_MAX_TOP;
	} else {
		n = 0; /* plain greedy steps never carry them (launch sends those rows to sample) */
	}
	ev->n_top = 0;
	for (int i = 0; i < n && top[i].id >= 0; i++) {
		ev->top_ids[i] = (uint32_t)top[i].id;
		ev->top_lp[i] = top[i].logprob;
		ev->n_top = i + 1;
	}
}

/* The sampled token t of request q (row row of the step): stops, the token event, length. */
static fi_err take_token(struct fi_sched *s, struct sreq *q, int32_t t, int r, const float *row)
{
	struct qev *ev;
	double now = fi_now();
	fi_err e;
	for (int i = 0; i < q->n_stop; i++)
		if (q->stop[i] == t)
			return sched_finish(s, q, FI_FINISH_STOP);
	if ((e = sched_hist_room(q, q->n_prompt + q->n_gen + 1)) || (e = sched_qev(s, &ev)))
		return e;
	q->hist[q->n_prompt + q->n_gen] = t;
	if (!q->n_gen)
		q->t_first = now;
	q->t_last = now;
	ev->q = q;
	ev->token = (uint32_t)t;
	ev->index = q->n_gen++;
	ev->last = q->n_gen >= q->max_new;
	q->queued++;
	if (q->logprobs)
		set_logprobs(s, q, t, r, row, ev);
	if (ev->last)
		return sched_finish(s, q, FI_FINISH_LENGTH);
	return FI_OK;
}

/* The token of q's row: from the device (greedy or drawn there) or from the host sampler. */
static int32_t pick(struct fi_sched *s, struct sreq *q, int r, const float **row)
{
	int32_t t;
	*row = NULL;
	if (s->out & FI_STEP_TOKENS) {
		t = s->rtok[r];
	} else if ((s->out & FI_STEP_SAMPLE) && s->rtok[r] >= 0) {
		t = s->rtok[r];
		fi_sampler_commit(&q->smp, s->rkept[r]);
	} else {
		*row = s->logits + (size_t)r * s->c->vocab;
		t = fi_sampler_next(&q->smp, *row, q->hist, (int)(q->n_prompt + q->n_gen));
	}
	/* A first token drawn elsewhere is kept; the draw above left the sampler's state as if
	 * it had been drawn here. */
	if (!q->n_gen && q->has_first)
		t = q->first;
	return t;
}

fi_err sched_collect(struct fi_sched *s)
{
	double t0 = fi_now();
	/* me: the model failed (no sequence grew); e: the first failure */
	fi_err me = fi_model_collect(s->m, s->logits, s->rtok, NULL), e = me, e1;
	s->t_model += fi_now() - t0;
	s->inflight = 0;
	s->st.steps++;
	for (int i = 0; i < s->n_bq; i++) {
		struct sreq *q = s->bq[i];
		const float *row;
		int r = q->row;
		uint32_t n = q->chunk;
		q->chunk = 0;
		q->row = -1;
		if (q->fetch && prefix_fetch_end(s, q)) {
			s->st.prompt_tokens += n; /* computed, then dropped: its KV read bad blocks */
			continue;
		}
		if (me)
			continue;
		q->filled += n;
		if (r >= 0 && n == 1 && q->filled > q->n_prompt)
			s->st.decode_tokens++;
		else
			s->st.prompt_tokens += n;
		if (e || q->state == R_DONE)
			continue;
		if (s->o.prefix_reuse)
			prefix_publish(s, q);
		if (r < 0)
			continue;
		if (q->store && !q->stored_q && q->filled >= q->n_prompt && (e1 = prefix_store(s, q))) {
			e = e1;
			continue;
		}
		int32_t t = pick(s, q, r, &row);
		if ((e1 = take_token(s, q, t, r, row)))
			e = e1;
	}
	s->n_bq = 0;
	return e;
}

fi_err sched_emit(struct fi_sched *s)
{
	fi_err e = FI_OK;
	int i;
	for (i = 0; i < s->n_ev && !e; i++) {
		struct qev *v = &s->ev[i];
		struct sreq *q = v->q;
		struct fi_sched_event ev = {.id = q->id, .user = q->user, .stream = q->stream};
		double now = fi_now();
		q->queued -= !v->done;
		if (!v->done) {
			ev.type = FI_SCHED_EV_TOKEN;
			ev.token = v->token;
			ev.index = v->index;
			ev.last = v->last;
			ev.has_logprob = q->logprobs;
			ev.logprob = v->logprob;
			ev.n_top = v->n_top;
			ev.top_ids = v->top_ids;
			ev.top_logprobs = v->top_lp;
			ev.text = "";
		} else {
			ev.type = FI_SCHED_EV_DONE;
			ev.finish = v->finish;
			ev.prompt_tokens = q->n_prompt;
			ev.gen_tokens = q->n_gen;
			ev.cached_tokens = q->cached;
			ev.queue_ms = ((q->t_admit ? q->t_admit : now) - q->t_arrive) * 1e3;
			ev.ttft_ms = q->n_gen ? (q->t_first - q->t_arrive) * 1e3 : -1;
			ev.tpot_ms = q->n_gen > 1 ? (q->t_last - q->t_first) * 1e3 / (q->n_gen - 1) : -1;
			ev.total_ms = (now - q->t_arrive) * 1e3;
			ev.tokens = (const uint32_t *)(q->hist + q->n_prompt);
			ev.stored_blocks = q->stored;
			ev.preemptions = q->n_preempt;
			ev.text = "";
		}
		if (!s->o.cb)
			continue;
		e = s->o.cb(s->o.cb_user, &ev);
		if (e == FI_SCHED_STOP || e == FI_SCHED_FAIL) {
			enum fi_finish why = e == FI_SCHED_STOP ? FI_FINISH_STOP : FI_FINISH_ERROR;
			e = FI_OK;
			if (v->done)
				continue;
			if (q->state != R_DONE) {
				e = sched_finish(s, q, why);
				continue;
			}
			/* its last token: the done event already queued says why, not length */
			for (int j = i + 1; j < s->n_ev; j++)
				if (s->ev[j].q == q && s->ev[j].done)
					s->ev[j].finish = why;
		}
	}
	for (; i < s->n_ev; i++) /* after a failed callback: what was not reported */
		s->ev[i].q->queued -= !s->ev[i].done;
	s->n_ev = 0;
	return e;
}

fi_err fi_sched_step(struct fi_sched *s)
{
	double t0 = fi_now(), dt;
	fi_err e = FI_OK, e1;
	s->t_model = 0;
	if (s->n_jobs)
		e = prefix_run_jobs(s);
	if (!e && s->inflight)
		e = sched_collect(s);
	if (!e) {
		double t1 = fi_now(), m1 = s->t_model;
		e = sched_plan_launch(s);
		s->st.last_plan_ms = (fi_now() - t1 - (s->t_model - m1)) * 1e3;
		s->st.plan_ms += s->st.last_plan_ms;
	}
	if (!e && !s->overlap && s->inflight)
		e = sched_collect(s);
	e1 = sched_emit(s);
	e = e ? e : e1;
	sched_reap(s);
	dt = fi_now() - t0;
	s->st.last_model_ms = s->t_model * 1e3;
	s->st.last_host_ms = (dt - s->t_model) * 1e3;
	s->st.model_ms += s->st.last_model_ms;
	s->st.host_ms += s->st.last_host_ms;
	return e;
}

fi_err fi_sched_run(struct fi_sched *s)
{
	fi_err e = FI_OK;
	while ((s->n_held || s->inflight || s->n_jobs) && !(e = fi_sched_step(s)))
		;
	return e;
}
