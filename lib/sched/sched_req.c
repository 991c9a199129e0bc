/* sched_req: a request's own state, below the rest of sched/: the queues, the running list,
 * the id table, the room of its token history, its end (freed once no step in flight holds
 * it), and warnings about it. Every other sched_*.c calls in here; this file calls none. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "sched_int.h"

/* ---- queues ---- */

void rlist_push(struct rlist *l, struct sreq *q)
{
	q->next = NULL;
	q->prev = l->tail;
	if (l->tail)
		l->tail->next = q;
	else
		l->head = q;
	l->tail = q;
	l->n++;
}

void rlist_insert_by_arrival(struct rlist *l, struct sreq *q)
{
	struct sreq *a = l->tail;
	while (a && a->arrival > q->arrival)
		a = a->prev;
	q->prev = a;
	q->next = a ? a->next : l->head;
	if (q->next)
		q->next->prev = q;
	else
		l->tail = q;
	if (a)
		a->next = q;
	else
		l->head = q;
	l->n++;
}

void rlist_del(struct rlist *l, struct sreq *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		l->head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	else
		l->tail = q->prev;
	q->prev = q->next = NULL;
	l->n--;
}

void sched_unrun(struct fi_sched *s, struct sreq *q)
{
	for (int i = 0; i < s->n_run; i++)
		if (s->run[i] == q) {
			memmove(&s->run[i], &s->run[i + 1], sizeof s->run[0] * (size_t)(s->n_run - i - 1));
			s->n_run--;
			return;
		}
}

/* ---- the id table ---- */

static uint32_t id_hash(const char *id)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	while (*id)
		h = (h ^ (uint8_t)*id++) * 16777619u;
	return h;
}

struct sreq *sched_find(const struct fi_sched *s, const char *id)
{
	for (struct sreq *q = s->htab[id_hash(id) & (s->hcap - 1)]; q; q = q->hnext)
		if (!strcmp(q->id, id))
			return q;
	return NULL;
}

void sched_id_put(struct fi_sched *s, struct sreq *q)
{
	uint32_t h = id_hash(q->id) & (s->hcap - 1);
	q->hnext = s->htab[h];
	s->htab[h] = q;
}

void sched_id_del(struct fi_sched *s, struct sreq *q)
{
	struct sreq **p = &s->htab[id_hash(q->id) & (s->hcap - 1)];
	while (*p && *p != q)
		p = &(*p)->hnext;
	if (*p)
		*p = q->hnext;
}

/* ---- a request ---- */

void sched_req_free(struct sreq *q)
{
	if (!q)
		return;
	free(q->id);
	free(q->hist);
	free(q->stop);
	free(q->keys);
	fi_sampler_free(&q->smp);
	free(q);
}

fi_err sched_hist_room(struct sreq *q, uint32_t n)
{
	if (n > q->cap_hist) {
		uint32_t cap = q->cap_hist * 2 > n ? q->cap_hist * 2 : n;
		int32_t *h = realloc(q->hist, sizeof(int32_t) * cap);
		if (!h)
			return fi_fail(FI_ENOMEM, "out of memory");
		q->hist = h;
		q->cap_hist = cap;
	}
	return FI_OK;
}

void sched_reap(struct fi_sched *s)
{
	int k = 0;
	for (int i = 0; i < s->n_dead; i++) {
		struct sreq *q = s->dead[i];
		/* a step in flight still writes its KV, or an event still names it */
		if ((s->inflight && q->chunk) || q->queued) {
			s->dead[k++] = q;
			continue;
		}
		fi_model_seq_free(s->m, q->seq);
		sched_req_free(q);
	}
	s->n_dead = k;
}


fi_err sched_warn(struct fi_sched *s, const char *id, void *user)
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
