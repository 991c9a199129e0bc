/* results: frames gathered per request and released in order (results.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame_json.h"
#include "results.h"

struct dreq {
	char *id;
	struct dreq *hnext;       /* hash chain */
	struct fi_tok_stream *st; /* decoding ids (mode 2) */
	struct fi_buf text;
	size_t streamed;
	int mode;     /* 0 undecided, 1 the frames carry text pieces, 2 decode the ids */
	int finished; /* a done or error frame came */
	int queued;   /* in the ready queue or the window (or given out) */
	int gone;     /* given out: only the id is kept */
	uint32_t ntok;
	char *prompt, *message;
	size_t prompt_len;
	struct fi_result r; /* the numbers; pointers are set when given out */
};

struct vec {
	struct dreq **v;
	size_t n, cap;
};

struct fi_results {
	const struct fi_tok *tok;
	unsigned tok_flags;
	enum fi_results_order order;
	uint32_t window;
	struct dreq **hash;
	size_t nbuckets, nreq;
	struct vec all;    /* every request, in first appearance order */
	size_t head;       /* FIRST: the first request not yet queued */
	struct vec ready;  /* finished, in the order they go out */
	size_t rhead;
	struct vec heap;   /* SEQ: held results, a min-heap on seq */
	uint64_t next_seq; /* SEQ: the number due next */
	uint64_t gaps, first_gap;
	struct dreq *last; /* given out by the last fi_results_next */
};

static fi_err push(struct vec *v, struct dreq *q)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 64;
		struct dreq **nv = realloc(v->v, cap * sizeof *nv);
		if (!nv)
			return fi_fail(FI_ENOMEM, "results: %zu requests", cap);
		v->v = nv;
		v->cap = cap;
	}
	v->v[v->n++] = q;
	return FI_OK;
}

static uint64_t hash_id(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

fi_err fi_results_new(const struct fi_tok *tok, unsigned tok_flags, enum fi_results_order order,
		      uint32_t window, struct fi_results **out)
{
	struct fi_results *R = calloc(1, sizeof *R);
	*out = NULL;
	if (!R || !(R->hash = calloc(R->nbuckets = 1024, sizeof *R->hash))) {
		free(R);
		return fi_fail(FI_ENOMEM, "results");
	}
	R->tok = tok;
	R->tok_flags = tok_flags;
	R->order = order;
	R->window = window ? window : 1;
	R->next_seq = 1;
	*out = R;
	return FI_OK;
}

/* Everything but the id and the hash link. */
static void release(struct dreq *q)
{
	fi_tok_stream_free(q->st);
	fi_buf_free(&q->text);
	free(q->prompt);
	free(q->message);
	q->st = NULL;
	q->prompt = q->message = NULL;
	q->gone = 1;
}

void fi_results_free(struct fi_results *R)
{
	if (!R)
		return;
	for (size_t i = 0; i < R->all.n; i++) {
		release(R->all.v[i]);
		free(R->all.v[i]->id);
		free(R->all.v[i]);
	}
	free(R->all.v);
	free(R->ready.v);
	free(R->heap.v);
	free(R->hash);
	free(R);
}

static fi_err rehash(struct fi_results *R)
{
	size_t nb = R->nbuckets * 2;
	struct dreq **h = calloc(nb, sizeof *h);
	if (!h)
		return fi_fail(FI_ENOMEM, "results: %zu requests", R->nreq);
	for (size_t i = 0; i < R->all.n; i++) {
		struct dreq *q = R->all.v[i];
		size_t b = hash_id(q->id) & (nb - 1);
		q->hnext = h[b];
		h[b] = q;
	}
	free(R->hash);
	R->hash = h;
	R->nbuckets = nb;
	return FI_OK;
}

static fi_err find(struct fi_results *R, const char *id, struct dreq **out)
{
	size_t b = hash_id(id) & (R->nbuckets - 1);
	struct dreq *q;
	fi_err e;
	for (q = R->hash[b]; q; q = q->hnext)
		if (!strcmp(q->id, id)) {
			*out = q;
			return FI_OK;
		}
	if (!(q = calloc(1, sizeof *q)) || !(q->id = strdup(id))) {
		free(q);
		return fi_fail(FI_ENOMEM, "results: request '%s'", id);
	}
	if ((e = push(&R->all, q))) {
		free(q->id);
		free(q);
		return e;
	}
	q->r.finish = FI_FINISH_STOP;
	q->r.queue_ms = q->r.ttft_ms = q->r.tpot_ms = q->r.total_ms = -1;
	q->hnext = R->hash[b];
	R->hash[b] = q;
	if (++R->nreq > 2 * R->nbuckets && (e = rehash(R)))
		return e;
	*out = q;
	return FI_OK;
}

/* ---- ordering ---- */

static int before(const struct dreq *a, const struct dreq *b)
{
	return a->r.seq < b->r.seq;
}

static fi_err heap_push(struct vec *h, struct dreq *q)
{
	fi_err e = push(h, q);
	for (size_t i = h->n - 1; !e && i > 0;) {
		size_t p = (i - 1) / 2;
		struct dreq *t;
		if (!before(h->v[i], h->v[p]))
			break;
		t = h->v[i];
		h->v[i] = h->v[p];
		h->v[p] = t;
		i = p;
	}
	return e;
}

static struct dreq *heap_pop(struct vec *h)
{
	struct dreq *top = h->v[0];
	size_t i = 0;
	h->v[0] = h->v[--h->n];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		struct dreq *t;
		if (l < h->n && before(h->v[l], h->v[m]))
			m = l;
		if (r < h->n && before(h->v[r], h->v[m]))
			m = r;
		if (m == i)
			break;
		t = h->v[i];
		h->v[i] = h->v[m];
		h->v[m] = t;
		i = m;
	}
	return top;
}

/* SEQ: moves what is due from the window to the ready queue; with full, also gives up the
 * missing number when the window holds `window` results. */
static fi_err seq_release(struct fi_results *R, int all)
{
	fi_err e = FI_OK;
	while (!e && R->heap.n) {
		struct dreq *t = R->heap.v[0];
		if (t->r.seq > R->next_seq) {
			if (!all && R->heap.n < R->window)
				break;
			if (!R->gaps++)
				R->first_gap = R->next_seq;
			R->next_seq = t->r.seq;
		}
		heap_pop(&R->heap);
		if (t->r.seq == R->next_seq)
			R->next_seq++;
		e = push(&R->ready, t);
	}
	return e;
}

/* A request finished (or the input ended): queues what may go out now. */
static fi_err finished(struct fi_results *R, struct dreq *q)
{
	fi_err e = FI_OK;
	switch (R->order) {
	case FI_RESULTS_FINISH:
		q->queued = 1;
		return push(&R->ready, q);
	case FI_RESULTS_SEQ:
		q->queued = 1;
		if (!q->r.has_seq || q->r.seq < R->next_seq)
			return push(&R->ready, q);
		return (e = heap_push(&R->heap, q)) ? e : seq_release(R, 0);
	default:
		while (!e && R->head < R->all.n && R->all.v[R->head]->finished) {
			R->all.v[R->head]->queued = 1;
			e = push(&R->ready, R->all.v[R->head++]);
		}
		return e;
	}
}

/* ---- frames ---- */

static fi_err add_text(struct dreq *q, const char *p, size_t n)
{
	return n ? fi_buf_append(&q->text, p, n) : FI_OK;
}

static fi_err decode(struct fi_results *R, struct dreq *q, const uint32_t *ids, uint32_t n, int end)
{
	const char *p;
	size_t pn;
	fi_err e = FI_OK;
	if (!R->tok)
		return FI_OK;
	if (!q->st && (e = fi_tok_stream_new(R->tok, R->tok_flags, &q->st)))
		return e;
	for (uint32_t i = 0; !e && i < n; i++)
		if (!(e = fi_tok_stream_step(q->st, ids[i], &p, &pn)))
			e = add_text(q, p, pn);
	if (!e && end && !(e = fi_tok_stream_flush(q->st, &p, &pn)))
		e = add_text(q, p, pn);
	return e;
}

static fi_err copy(const char *s, size_t n, char **out, size_t *outlen)
{
	if (!s)
		return FI_OK;
	free(*out);
	if (!(*out = malloc(n + 1)))
		return fi_fail(FI_ENOMEM, "results: %zu bytes", n);
	memcpy(*out, s, n);
	(*out)[n] = 0;
	if (outlen)
		*outlen = n;
	return FI_OK;
}

static fi_err take_end(struct fi_results *R, struct dreq *q, const struct fi_frame *f)
{
	fi_err e = FI_OK;
	if (f->has_seq) {
		q->r.seq = f->seq;
		q->r.has_seq = 1;
	}
	if (f->prompt && (e = copy(f->prompt, f->prompt_len, &q->prompt, &q->prompt_len)))
		return e;
	if (f->type == FI_FRAME_ERROR) {
		const char *m = f->err.message ? f->err.message : fi_strerror(f->err.code);
		q->r.failed = 1;
		q->r.code = f->err.code;
		q->r.finish = FI_FINISH_ERROR;
		q->r.gen_tokens = q->ntok;
		if ((e = copy(m, strlen(m), &q->message, NULL)))
			return e;
		if (q->mode != 1)
			e = decode(R, q, NULL, 0, 1);
	} else {
		const struct fi_done *d = &f->done;
		q->r.finish = d->finish;
		q->r.prompt_tokens = d->prompt_tokens;
		q->r.gen_tokens = d->gen_tokens;
		q->r.cached_tokens = d->cached_tokens;
		q->r.queue_ms = d->queue_ms;
		q->r.ttft_ms = d->ttft_ms;
		q->r.tpot_ms = d->tpot_ms;
		q->r.total_ms = d->total_ms;
		if (q->mode == 1)
			e = d->text ? add_text(q, d->text, d->text_len) : FI_OK;
		else
			e = decode(R, q, d->tokens, d->ntokens, 1);
	}
	q->finished = q->r.finished = 1;
	return e;
}

fi_err fi_results_add(struct fi_results *R, const struct fi_frame *f)
{
	struct dreq *q = NULL;
	fi_err e;
	if (f->type != FI_FRAME_TOKEN && f->type != FI_FRAME_DONE && f->type != FI_FRAME_ERROR)
		return FI_OK;
	if ((e = find(R, f->id ? f->id : "", &q)))
		return e;
	if (q->finished)
		return FI_OK; /* the done after an error frame, or a repeated id */
	/* A generator that knows the tokenizer sends text pieces with stop strings already cut;
	 * they are used rather than decoding the ids again. */
	if (!q->mode && f->type == FI_FRAME_TOKEN)
		q->mode = f->tok.text ? 1 : 2;
	if (!q->mode && f->type == FI_FRAME_DONE)
		q->mode = f->done.text ? 1 : 2;
	if (f->type == FI_FRAME_TOKEN) {
		q->ntok++;
		if (q->mode == 1)
			return f->tok.text ? add_text(q, f->tok.text, f->tok.text_len) : FI_OK;
		return decode(R, q, &f->tok.token, 1, 0);
	}
	e = take_end(R, q, f);
	/* Finished even when its text failed, so that it still comes out. */
	{
		fi_err e2 = finished(R, q);
		return e ? e : e2;
	}
}

void fi_results_end(struct fi_results *R)
{
	for (size_t i = 0; i < R->all.n; i++) {
		struct dreq *q = R->all.v[i];
		if (q->finished)
			continue;
		if (q->mode != 1)
			decode(R, q, NULL, 0, 1);
		q->finished = 1;
		q->r.finished = 0;
		q->r.gen_tokens = q->ntok;
		if (R->order != FI_RESULTS_FIRST)
			finished(R, q);
	}
	if (R->order == FI_RESULTS_FIRST)
		finished(R, NULL);
	else if (R->order == FI_RESULTS_SEQ)
		seq_release(R, 1);
}

size_t fi_results_stream(struct fi_results *R, const char **text)
{
	struct dreq *q;
	size_t n;
	*text = NULL;
	if (R->order != FI_RESULTS_FIRST || R->head >= R->all.n)
		return 0;
	q = R->all.v[R->head];
	n = q->text.len - q->streamed;
	*text = (const char *)q->text.data + q->streamed;
	q->streamed = q->text.len;
	return n;
}

int fi_results_next(struct fi_results *R, struct fi_result *r)
{
	struct dreq *q;
	if (R->last) {
		release(R->last);
		R->last = NULL;
	}
	if (R->rhead == R->ready.n) {
		R->rhead = R->ready.n = 0;
		return 0;
	}
	q = R->ready.v[R->rhead++];
	*r = q->r;
	r->id = q->id;
	r->prompt = q->prompt;
	r->prompt_len = q->prompt_len;
	r->text = q->text.data ? (const char *)q->text.data : "";
	r->text_len = q->text.len;
	r->streamed = q->streamed;
	r->message = q->message;
	R->last = q;
	return 1;
}

uint64_t fi_results_gaps(const struct fi_results *R, uint64_t *first)
{
	if (first)
		*first = R->first_gap;
	return R->gaps;
}

fi_err fi_result_to_json(const struct fi_result *r, json_t **out)
{
	static const char *const tk[4] = { "queue_ms", "ttft_ms", "tpot_ms", "total_ms" };
	double tm[4] = { r->queue_ms, r->ttft_ms, r->tpot_ms, r->total_ms };
	json_t *o = json_object(), *t = json_object(), *v;
	int bad = !o || !t;

	bad |= json_object_set_new(o, "id", fi_json_text(r->id, strlen(r->id)));
	if (r->has_seq)
		bad |= json_object_set_new(o, "seq", json_integer((json_int_t)r->seq));
	if (r->prompt)
		bad |= json_object_set_new(o, "prompt", fi_json_text(r->prompt, r->prompt_len));
	bad |= json_object_set_new(o, "completion", fi_json_text(r->text, r->text_len));
	bad |= json_object_set_new(o, "finish", r->finished ? json_string(fi_finish_name(r->finish)) : json_null());
	bad |= json_object_set_new(o, "counts", json_pack("{s:I,s:I,s:I}",
			"prompt_tokens", (json_int_t)r->prompt_tokens, "gen_tokens",
			(json_int_t)r->gen_tokens, "cached_tokens", (json_int_t)r->cached_tokens));
	/* Microseconds are plenty for people (the done frames keep every digit). */
	for (int i = 0; t && i < 4; i++)
		if (tm[i] >= 0)
			bad |= json_object_set_new(t, tk[i], json_real(round(tm[i] * 1e3) / 1e3));
	bad |= json_object_set_new(o, "timings", t);
	if (r->failed) {
		const char *m = r->message ? r->message : "";
		v = json_pack("{s:s,s:o}", "code", fi_err_code_name(r->code) ? fi_err_code_name(r->code) : "inval",
			      "message", fi_json_text(m, strlen(m)));
		bad |= json_object_set_new(o, "error", v);
	}
	if (bad) {
		json_decref(o);
		return fi_fail(FI_ENOMEM, "result '%s' as JSON", r->id);
	}
	*out = o;
	return FI_OK;
}
