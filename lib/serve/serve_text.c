/* serve_text: the text of generated tokens and stop strings, and the text layer over the
 * scheduler (serve.h).
 *
 * Text comes from the tokenizer's streaming decode (complete UTF-8 only). Stop strings are
 * matched against the whole output text, so a stop string split over several tokens (or
 * inside one) is found. Text that could be the beginning of a stop string (a suffix of the
 * output equal to a proper prefix of some stop string) is held back until the next tokens
 * decide; everything before it can never be part of a match and is released. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

struct fi_text_out {
	struct fi_tok_stream *st;
	char *buf;
	size_t len, cap;
	size_t sent;     /* bytes released */
	char **stop;     /* stop strings [nstop] */
	size_t *stop_len;
	uint32_t nstop;
	int ended;       /* cut at a stop string or flushed: nothing more comes */
};

void fi_text_out_free(struct fi_text_out *t)
{
	if (!t)
		return;
	fi_tok_stream_free(t->st);
	free(t->buf);
	for (uint32_t i = 0; i < t->nstop; i++)
		free(t->stop[i]);
	free(t->stop);
	free(t->stop_len);
	free(t);
}

fi_err fi_text_out_new(const struct fi_tok *tok, unsigned flags, char *const *stop,
		       uint32_t nstop, struct fi_text_out **out)
{
	struct fi_text_out *t;
	fi_err e;
	*out = NULL;
	for (uint32_t i = 0; i < nstop; i++)
		if (!stop[i] || !*stop[i])
			return fi_fail(FI_EINVAL, "stop string %u is empty", i);
	if (!(t = calloc(1, sizeof *t)))
		return fi_fail(FI_ENOMEM, "out of memory");
	if ((e = fi_tok_stream_new(tok, flags, &t->st))) {
		fi_text_out_free(t);
		return e;
	}
	if (nstop && (!(t->stop = calloc(nstop, sizeof *t->stop)) ||
		      !(t->stop_len = calloc(nstop, sizeof *t->stop_len)))) {
		fi_text_out_free(t);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < nstop; i++) {
		if (!(t->stop[i] = strdup(stop[i]))) {
			fi_text_out_free(t);
			return fi_fail(FI_ENOMEM, "out of memory");
		}
		t->stop_len[i] = strlen(stop[i]);
		t->nstop = i + 1;
	}
	*out = t;
	return FI_OK;
}

static fi_err append(struct fi_text_out *t, const char *p, size_t n)
{
	if (t->len + n + 1 > t->cap) {
		size_t cap = (t->len + n + 1) * 2;
		char *b = realloc(t->buf, cap < 256 ? 256 : cap);
		if (!b)
			return fi_fail(FI_ENOMEM, "out of memory");
		t->buf = b;
		t->cap = cap < 256 ? 256 : cap;
	}
	memcpy(t->buf + t->len, p, n);
	t->len += n;
	t->buf[t->len] = 0;
	return FI_OK;
}

/* Looks for stop strings in text that arrived after byte old (a match can start before old
 * but never before sent: that text was released because no match could start there). Cuts
 * the text at the earliest match; returns 1 if there was one. */
static int find_stop(struct fi_text_out *t, size_t old)
{
	size_t cut = t->len + 1;
	for (uint32_t i = 0; i < t->nstop; i++) {
		size_t sl = t->stop_len[i], from = old + 1 > sl ? old + 1 - sl : 0;
		const char *hit;
		if (from < t->sent)
			from = t->sent;
		if (t->len - from < sl)
			continue;
		hit = memmem(t->buf + from, t->len - from, t->stop[i], sl);
		if (hit && (size_t)(hit - t->buf) < cut)
			cut = (size_t)(hit - t->buf);
	}
	if (cut > t->len)
		return 0;
	t->len = cut;
	t->buf[cut] = 0;
	return 1;
}

/* Bytes at the end of the text that may begin a stop string. */
static size_t held(const struct fi_text_out *t)
{
	size_t h = 0, room = t->len - t->sent;
	for (uint32_t i = 0; i < t->nstop; i++) {
		size_t k = t->stop_len[i] - 1 < room ? t->stop_len[i] - 1 : room;
		for (; k > h; k--)
			if (!memcmp(t->buf + t->len - k, t->stop[i], k)) {
				h = k;
				break;
			}
	}
	return h;
}

fi_err fi_text_out_push(struct fi_text_out *t, uint32_t tok, int last, const char **piece,
			size_t *n, int *stopped)
{
	const char *p;
	size_t pn, old = t->len, end;
	fi_err e;
	*piece = "";
	*n = 0;
	*stopped = 0;
	if (t->ended)
		return FI_OK;
	if ((e = fi_tok_stream_step(t->st, tok, &p, &pn)) || (e = append(t, p, pn)))
		return e;
	if (last && ((e = fi_tok_stream_flush(t->st, &p, &pn)) || (e = append(t, p, pn))))
		return e;
	*stopped = find_stop(t, old);
	t->ended = *stopped || last;
	end = *stopped || last ? t->len : t->len - held(t);
	*piece = t->buf ? t->buf + t->sent : "";
	*n = end - t->sent;
	t->sent = end;
	return FI_OK;
}

fi_err fi_text_out_end(struct fi_text_out *t)
{
	const char *p;
	size_t pn, old = t->len;
	fi_err e;
	if (t->ended)
		return FI_OK;
	t->ended = 1;
	if ((e = fi_tok_stream_flush(t->st, &p, &pn)) || (e = append(t, p, pn)))
		return e;
	find_stop(t, old);
	return FI_OK;
}

const char *fi_text_out_text(const struct fi_text_out *t, size_t *len, size_t *sent)
{
	*len = t->len;
	*sent = t->sent;
	return t->buf ? t->buf : "";
}

/* ---- over a scheduler ---- */

/* A request's state: its user pointer, its text (NULL without a tokenizer). */
struct sreq_text {
	void *user;
	struct fi_text_out *t;
	struct sreq_text *prev, *next;
};

struct fi_serve {
	struct fi_serve_opts o;
	struct sreq_text *live; /* every request's state, for fi_serve_free */
	char msg[1024];
};

fi_err fi_serve_new(const struct fi_serve_opts *o, struct fi_serve **out)
{
	if (!(*out = calloc(1, sizeof **out)))
		return fi_fail(FI_ENOMEM, "out of memory");
	(*out)->o = *o;
	return FI_OK;
}

static void state_free(struct fi_serve *v, struct sreq_text *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		v->live = q->next;
	if (q->next)
		q->next->prev = q->prev;
	fi_text_out_free(q->t);
	free(q);
}

void fi_serve_free(struct fi_serve *v)
{
	if (!v)
		return;
	while (v->live)
		state_free(v, v->live);
	free(v);
}

fi_err fi_serve_add(struct fi_serve *v, struct fi_sched *s, const struct fi_sched_req *r,
		    char *const *stop, uint32_t nstop)
{
	struct fi_sched_req r2 = *r;
	struct sreq_text *q;
	fi_err e;
	for (uint32_t i = 0; i < nstop; i++)
		if (!stop[i] || !*stop[i])
			return fi_fail(FI_EINVAL, "request '%s': stop string %u is empty", r->id, i);
	if (nstop && !v->o.tok)
		return fi_fail(FI_EUNSUPPORTED, "request '%s': stop strings need the model's "
			       "tokenizer, and the model has none", r->id);
	if (!(q = calloc(1, sizeof *q)))
		return fi_fail(FI_ENOMEM, "out of memory");
	q->user = r->user;
	if (v->o.tok && (e = fi_text_out_new(v->o.tok, v->o.tok_flags, stop, nstop, &q->t))) {
		free(q);
		return fi_fail_ctx(e, "request '%s'", r->id);
	}
	r2.user = q;
	if ((e = fi_sched_add(s, &r2))) {
		fi_text_out_free(q->t);
		free(q);
		return e;
	}
	q->next = v->live;
	if (v->live)
		v->live->prev = q;
	v->live = q;
	return FI_OK;
}

fi_err fi_serve_event(void *serve, const struct fi_sched_event *ev)
{
	struct fi_serve *v = serve;
	struct sreq_text *q = ev->user;
	struct fi_sched_event e2 = *ev;
	int stopped = 0;
	fi_err e = FI_OK, ce;
	if (!q) /* a warning for no request */
		return v->o.cb ? v->o.cb(v->o.cb_user, ev) : FI_OK;
	e2.user = q->user;
	if (ev->type == FI_SCHED_EV_TOKEN && q->t) {
		e = fi_text_out_push(q->t, ev->token, ev->last, &e2.text, &e2.text_len, &stopped);
		if (e) { /* the text cannot go on: an error, then the request ends */
			struct fi_sched_event er = {.type = FI_SCHED_EV_ERROR, .id = ev->id,
						    .user = q->user, .stream = ev->stream, .code = e};
			snprintf(v->msg, sizeof v->msg, "request '%s': %s", ev->id, fi_errmsg());
			er.message = v->msg;
			ce = v->o.cb ? v->o.cb(v->o.cb_user, &er) : FI_OK;
			return ce ? ce : FI_SCHED_FAIL;
		}
	} else if (ev->type == FI_SCHED_EV_DONE && q->t) {
		fi_text_out_end(q->t); /* failing, the text ends where it was */
		e2.text = fi_text_out_text(q->t, &e2.text_len, &e2.text_sent);
	}
	ce = v->o.cb ? v->o.cb(v->o.cb_user, &e2) : FI_OK;
	if (ev->type == FI_SCHED_EV_DONE)
		state_free(v, q);
	if (ce)
		return ce;
	return stopped ? FI_SCHED_STOP : FI_OK;
}
