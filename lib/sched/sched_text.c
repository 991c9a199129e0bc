/* sched_text: the text of generated tokens and stop strings.
 *
 * Text comes from the tokenizer's streaming decode (complete UTF-8 only). Stop strings are
 * matched against the whole output text, so a stop string split over several tokens (or
 * inside one) is found. Text that could be the beginning of a stop string (a suffix of the
 * output equal to a proper prefix of some stop string) is held back until the next tokens
 * decide; everything before it can never be part of a match and is released. */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>

#include "sched_int.h"

void stext_free(struct sched_text *t)
{
	fi_tok_stream_free(t->st);
	free(t->buf);
	for (uint32_t i = 0; i < t->nstop; i++)
		free(t->stop[i]);
	free(t->stop);
	free(t->stop_len);
	memset(t, 0, sizeof *t);
}

fi_err stext_init(struct fi_sched *s, struct sreq *q, char *const *stop, uint32_t nstop)
{
	struct sched_text *t = &q->txt;
	fi_err e;
	for (uint32_t i = 0; i < nstop; i++)
		if (!stop[i] || !*stop[i])
			return fi_fail(FI_EINVAL, "request '%s': stop string %u is empty", q->id, i);
	if (nstop && !s->o.tok)
		return fi_fail(FI_EUNSUPPORTED, "request '%s': stop strings need the model's "
			       "tokenizer, and the model has none", q->id);
	if (!s->o.tok)
		return FI_OK;
	if ((e = fi_tok_stream_new(s->o.tok, s->o.tok_flags, &t->st)))
		return e;
	if (nstop && (!(t->stop = calloc(nstop, sizeof *t->stop)) ||
		      !(t->stop_len = calloc(nstop, sizeof *t->stop_len))))
		return fi_fail(FI_ENOMEM, "out of memory");
	for (uint32_t i = 0; i < nstop; i++) {
		if (!(t->stop[i] = strdup(stop[i])))
			return fi_fail(FI_ENOMEM, "out of memory");
		t->stop_len[i] = strlen(stop[i]);
		t->nstop = i + 1;
	}
	return FI_OK;
}

static fi_err append(struct sched_text *t, const char *p, size_t n)
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
static int find_stop(struct sched_text *t, size_t old)
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
static size_t held(const struct sched_text *t)
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

fi_err stext_push(struct fi_sched *s, struct sreq *q, uint32_t tok, int last,
		  const char **piece, size_t *n, int *stopped)
{
	struct sched_text *t = &q->txt;
	const char *p;
	size_t pn, old = t->len, end;
	fi_err e;
	*piece = "";
	*n = 0;
	*stopped = 0;
	if (!t->st || t->ended)
		return FI_OK;
	if ((e = fi_tok_stream_step(t->st, tok, &p, &pn)) || (e = append(t, p, pn)))
		return e;
	if (last && ((e = fi_tok_stream_flush(t->st, &p, &pn)) || (e = append(t, p, pn))))
		return e;
	*stopped = find_stop(t, old);
	t->ended = *stopped || last;
	end = *stopped || last ? t->len : t->len - held(t);
	*piece = t->buf + t->sent;
	*n = end - t->sent;
	t->sent = end;
	return FI_OK;
}

fi_err stext_end(struct fi_sched *s, struct sreq *q)
{
	struct sched_text *t = &q->txt;
	const char *p;
	size_t pn, old = t->len;
	fi_err e;
	if (!t->st || t->ended)
		return FI_OK;
	t->ended = 1;
	if ((e = fi_tok_stream_flush(t->st, &p, &pn)) || (e = append(t, p, pn)))
		return e;
	find_stop(t, old);
	return FI_OK;
}
