/* fi-decode: generate tokens. Reads request frames, runs them with continuous batching
 * (new prompts join the running batch between steps), writes token and done frames.
 * The KV of a prompt comes from the shared arena when the request carries a "kv" reference
 * (fi-prefill) or, with --prefix-cache, whenever its prefix is cached; the rest is computed.
 * --tokens runs one request given on the command line and prints the generated ids. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "frame.h"
#include "kvxfer.h"
#include "log.h"
#include "model.h"
#include "sample.h"
#include "store.h"
#include "stream.h"

static const char usage_text[] =
	"usage: fi-decode -m MODEL [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P]\n"
	"                 [--repeat-penalty R] [--seed S] [--backend auto|cuda|cpu]\n"
	"                 [--prefix-cache] [--arena-size SIZE] [-t THREADS] [-i IN] [-o OUT]\n"
	"                 [-e N] [--tokens ID,ID,...] [-v]\n"
	"       fi-decode -h\n";

#define MAX_BATCH 64   /* sequences decoding together */
#define MAX_STOP 80    /* model eos ids + a request's stop ids */
#define MAX_PENDING 256 /* first tokens (from fi-prefill) waiting for their request */
#define BLOCK_TOKENS 16 /* the cache's block size, equal to the arena's */

struct opts {
	const char *model, *backend, *in, *out, *tokens;
	int n, threads, verbose, prefix_cache, eos_count;
	uint64_t arena_size;
	struct fi_sample_params sp; /* defaults for requests that do not say */
};

struct req {
	char *id;
	int seq, admitted, prefilled, stream;
	uint32_t n_prompt, max_new, n_gen;
	int32_t *hist; /* prompt then generated tokens [n_prompt + max_new] */
	int32_t next;  /* the token to feed next step */
	int n_stop;
	int32_t stop[MAX_STOP];
	int blocks;    /* KV blocks reserved for it at admission */
	int arena;     /* fetch the prompt's cached prefix from the arena */
	int store;     /* publish the prompt's blocks after its prefill (--prefix-cache) */
	int max_blocks;/* at most this many blocks fetched */
	int cached;    /* prompt tokens fetched from the arena */
	int32_t first; /* first token given by fi-prefill, or -1 */
	struct fi_sampler smp;
	double t_arrive, t_admit, t_first, t_last;
};

struct pending {
	char *id;
	int32_t token;
};

struct engine {
	struct fi_model *m;
	struct fi_image *im;
	struct fi_kvx *x; /* the model's arena, attached on first use */
	int x_tried;
	struct pending pend[MAX_PENDING]; /* oldest first */
	int npend;
	const struct fi_config *c;
	struct fi_stream *out;
	struct req *r[MAX_BATCH + 1024]; /* admitted first, then waiting */
	int n;
	int blocks_free, block_size, ctx;
	float *logits;
};

static int usage(int rc)
{
	fputs(usage_text, rc ? stderr : stdout);
	return rc;
}

static int fail(void)
{
	fprintf(stderr, "fi-decode: %s\n", fi_errmsg());
	return 1;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	*out = strtod(s, &end);
	return errno || end == s || *end || isnan(*out) || *out < lo || *out > hi;
}

/* "64M", "2G", "1048576": bytes (at least 1 MiB). */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || isnan(v) || v <= 0)
		return -1;
	switch (*end) {
	case 'k': case 'K': v *= 1024.0; end++; break;
	case 'm': case 'M': v *= 1048576.0; end++; break;
	case 'g': case 'G': v *= 1073741824.0; end++; break;
	case 't': case 'T': v *= 1099511627776.0; end++; break;
	}
	if (*end == 'i' || *end == 'B')
		end += *end == 'i' && end[1] == 'B' ? 2 : 1;
	if (*end || v < 1048576.0 || v > 1e15)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

static int parse_ids(const char *s, int32_t **ids, int *n, int vocab)
{
	int cap = 16;
	*n = 0;
	*ids = malloc(sizeof(int32_t) * (size_t)cap);
	while (*ids && *s) {
		char *end;
		long v;
		errno = 0;
		v = strtol(s, &end, 10);
		if (errno || end == s || v < 0 || v >= vocab || (*end && *end != ',' && *end != ' '))
			return -1;
		if (*n == cap && !(*ids = realloc(*ids, sizeof(int32_t) * (size_t)(cap *= 2))))
			return -1;
		(*ids)[(*n)++] = (int32_t)v;
		s = *end ? end + 1 : end;
	}
	return *ids && *n ? 0 : -1;
}

/* Opens -m: a directory is converted on the fly, in f32 for the CPU backend (exact), in
 * bf16 for CUDA; a store name or image file is used as it is. */
static fi_err open_model(const struct opts *o, struct fi_backend *be, struct fi_image **im,
			 struct fi_model **m)
{
	struct stat st;
	fi_err e;
	if (!stat(o->model, &st) && S_ISDIR(st.st_mode))
		e = fi_store_open_dtype(o->model, be->act == FI_DT_F32 ? FI_DT_F32 : FI_DT_BF16, im);
	else
		e = fi_store_open(o->model, im);
	if (e)
		return e;
	return fi_model_load(&(*im)->config, &(*im)->set, be, m);
}

static void req_free(struct req *q)
{
	if (!q)
		return;
	free(q->id);
	free(q->hist);
	fi_sampler_free(&q->smp);
	free(q);
}

static int is_stop(const struct req *q, int32_t t)
{
	for (int i = 0; i < q->n_stop; i++)
		if (q->stop[i] == t)
			return 1;
	return 0;
}

/* The model's arena, attached on first use (created only with --prefix-cache); NULL when it
 * cannot be had: prompts are then computed. An absent arena is looked for again later. */
static struct fi_kvx *arena(struct engine *E, const struct opts *o)
{
	fi_err e;
	if (!E->x && !E->x_tried &&
	    (e = fi_kvx_open(&E->x, E->m, E->im->fingerprint, o->arena_size, o->prefix_cache))) {
		if (e != FI_ENOTFOUND)
			E->x_tried = 1;
		fi_warn("%s: computing prompts without the arena", fi_errmsg());
	}
	return E->x;
}

/* The first token fi-prefill sent ahead of request id, or -1 (taken out of the list). */
static int32_t take_pending(struct engine *E, const char *id)
{
	for (int i = 0; i < E->npend; i++)
		if (!strcmp(E->pend[i].id, id)) {
			int32_t t = E->pend[i].token;
			free(E->pend[i].id);
			memmove(&E->pend[i], &E->pend[i + 1], sizeof E->pend[0] * (size_t)(E->npend - i - 1));
			E->npend--;
			return t;
		}
	return -1;
}

static void add_pending(struct engine *E, const struct fi_frame *f)
{
	char *id;
	if (f->tok.index != 0 || f->tok.token >= (uint32_t)E->c->vocab || !(id = strdup(f->id)))
		return;
	take_pending(E, f->id);
	if (E->npend == MAX_PENDING) { /* its request went elsewhere: forget the oldest */
		free(E->pend[0].id);
		memmove(&E->pend[0], &E->pend[1], sizeof E->pend[0] * (MAX_PENDING - 1));
		E->npend--;
	}
	E->pend[E->npend].id = id;
	E->pend[E->npend++].token = (int32_t)f->tok.token;
}

/* Arena use of a request: a usable kv reference, or --prefix-cache. At least the last prompt
 * token is always computed: its logits give the first token. */
static fi_err plan_kv(struct engine *E, const struct opts *o, const struct fi_frame *f,
		      struct req *q)
{
	const struct fi_request *rq = &f->req;
	int usable = 0, most = (int)((q->n_prompt - 1) / BLOCK_TOKENS);
	fi_err e;
	if (rq->set & FI_REQ_KV) {
		if ((e = fi_kvx_check_ref(arena(E, o), E->im->fingerprint, &rq->kv, rq->tokens,
					  rq->ntokens, &usable)))
			return fi_fail_ctx(e, "request '%s'", f->id);
		if (usable) {
			q->arena = 1;
			q->max_blocks = (int)rq->kv.nblocks;
		}
	}
	if (o->prefix_cache && arena(E, o)) {
		q->arena = q->store = 1;
		q->max_blocks = most;
	}
	if (q->max_blocks > most)
		q->max_blocks = most;
	q->first = take_pending(E, f->id);
	return FI_OK;
}

/* Builds a request from a frame, filling what it leaves unset from the options. */
static fi_err make_req(struct engine *E, const struct opts *o, struct fi_frame *f,
		       struct req **out)
{
	const struct fi_request *rq = &f->req;
	struct fi_sample_params sp = o->sp;
	struct req *q;
	fi_err e;
	*out = NULL;
	if (!rq->tokens || !rq->ntokens)
		return fi_fail(FI_EUNSUPPORTED, "request '%s': fi-decode takes token prompts "
			       "(pipe text through fi-tokenize first)", f->id);
	for (uint32_t i = 0; i < rq->ntokens; i++)
		if (rq->tokens[i] >= (uint32_t)E->c->vocab)
			return fi_fail(FI_ERANGE, "request '%s': token %u outside the vocabulary (%d)",
				       f->id, rq->tokens[i], E->c->vocab);
	if (rq->ntokens >= (uint32_t)E->ctx)
		return fi_fail(FI_ERANGE, "request '%s': prompt of %u tokens does not fit the "
			       "context of %d", f->id, rq->ntokens, E->ctx);
	if (rq->set & FI_REQ_TEMPERATURE)
		sp.temperature = rq->temperature;
	if (rq->set & FI_REQ_TOP_K)
		sp.top_k = rq->top_k;
	if (rq->set & FI_REQ_TOP_P)
		sp.top_p = rq->top_p;
	if (rq->set & FI_REQ_MIN_P)
		sp.min_p = rq->min_p;
	if (rq->set & FI_REQ_REPEAT_PENALTY)
		sp.repeat_penalty = rq->repeat_penalty;
	if (rq->set & FI_REQ_SEED)
		sp.seed = rq->seed;
	if (!(q = calloc(1, sizeof *q)))
		return fi_fail(FI_ENOMEM, "out of memory");
	q->max_new = rq->max_tokens ? rq->max_tokens : (uint32_t)o->n;
	if (q->max_new > (uint32_t)E->ctx - rq->ntokens)
		q->max_new = (uint32_t)E->ctx - rq->ntokens; /* finish "length" at the context */
	q->n_prompt = rq->ntokens;
	q->stream = rq->stream;
	q->id = strdup(f->id ? f->id : "");
	q->hist = malloc(sizeof(int32_t) * (q->n_prompt + q->max_new + 1));
	if (!q->id || !q->hist) {
		req_free(q);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	for (uint32_t i = 0; i < q->n_prompt; i++)
		q->hist[i] = (int32_t)rq->tokens[i];
	for (int i = 0; i < E->c->n_eos && q->n_stop < MAX_STOP; i++)
		q->stop[q->n_stop++] = E->c->eos_ids[i];
	for (uint32_t i = 0; i < rq->nstop_ids && q->n_stop < MAX_STOP; i++)
		q->stop[q->n_stop++] = (int32_t)rq->stop_ids[i];
	if ((e = fi_sampler_init(&q->smp, &sp, E->c->vocab))) {
		req_free(q);
		return fi_fail_ctx(e, "request '%s'", f->id);
	}
	if ((e = plan_kv(E, o, f, q))) {
		req_free(q);
		return e;
	}
	q->blocks = (int)((q->n_prompt + q->max_new + E->block_size - 1) / E->block_size);
	if (q->blocks > fi_model_cache(E->m)->kv.n_blocks) {
		int cap = fi_model_cache(E->m)->kv.n_blocks * E->block_size;
		req_free(q);
		return fi_fail(FI_EFULL, "request '%s': needs %u tokens of KV cache, which holds %d",
			       f->id, rq->ntokens + (uint32_t)o->n, cap);
	}
	q->seq = -1;
	q->t_arrive = fi_now();
	*out = q;
	return FI_OK;
}

static fi_err emit_done(struct engine *E, struct req *q, enum fi_finish why)
{
	struct fi_frame f;
	double now = fi_now();
	fi_frame_init(&f, FI_FRAME_DONE);
	f.id = q->id;
	f.done.finish = why;
	f.done.prompt_tokens = q->n_prompt;
	f.done.gen_tokens = q->n_gen;
	f.done.cached_tokens = (uint32_t)q->cached;
	f.done.queue_ms = q->admitted ? (q->t_admit - q->t_arrive) * 1e3 : (now - q->t_arrive) * 1e3;
	f.done.ttft_ms = q->n_gen ? (q->t_first - q->t_arrive) * 1e3 : -1;
	f.done.tpot_ms = q->n_gen > 1 ? (q->t_last - q->t_first) * 1e3 / (q->n_gen - 1) : -1;
	f.done.total_ms = (now - q->t_arrive) * 1e3;
	if (!q->stream) {
		f.done.tokens = (uint32_t *)(q->hist + q->n_prompt);
		f.done.ntokens = q->n_gen;
	}
	return fi_stream_write(E->out, &f);
}

/* Removes request i (finished or cancelled), releasing its sequence and blocks. */
static void drop(struct engine *E, int i)
{
	struct req *q = E->r[i];
	if (q->admitted) {
		fi_model_seq_free(E->m, q->seq);
		E->blocks_free += q->blocks;
	}
	req_free(q);
	memmove(&E->r[i], &E->r[i + 1], sizeof E->r[0] * (size_t)(E->n - i - 1));
	E->n--;
}

static int n_admitted(const struct engine *E)
{
	int k = 0;
	while (k < E->n && E->r[k]->admitted)
		k++;
	return k;
}

/* Admits waiting requests in arrival order while they fit (batch size, KV blocks reserved
 * for their whole prompt + max_new, so a running batch never runs out of cache). */
static fi_err admit(struct engine *E)
{
	fi_err e;
	for (int i = n_admitted(E); i < E->n && i < MAX_BATCH; i++) {
		struct req *q = E->r[i];
		if (q->blocks > E->blocks_free)
			break;
		if ((e = fi_model_seq_new(E->m, &q->seq)))
			return e;
		E->blocks_free -= q->blocks;
		q->admitted = 1;
		q->t_admit = fi_now();
		/* A failing arena costs speed, never the request: the prompt is computed. */
		if (q->arena && E->x &&
		    fi_kvx_fetch(E->x, q->seq, (const uint32_t *)q->hist, q->n_prompt,
				 (size_t)q->max_blocks, &q->cached))
			fi_warn("request '%s': %s", q->id, fi_errmsg());
	}
	return FI_OK;
}

/* One forward over every admitted request: whole prompts for new ones, one token for the
 * others; then one sampled token each. */
static fi_err step(struct engine *E)
{
	int na = n_admitted(E), T = 0, n_rows;
	int32_t *tok, *seq;
	fi_err e;
	for (int i = 0; i < na; i++)
		T += E->r[i]->prefilled ? 1 : (int)E->r[i]->n_prompt - E->r[i]->cached;
	tok = malloc(sizeof(int32_t) * (size_t)T);
	seq = malloc(sizeof(int32_t) * (size_t)T);
	if (!tok || !seq) {
		free(tok);
		free(seq);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	T = 0;
	for (int i = 0; i < na; i++) {
		struct req *q = E->r[i];
		if (q->prefilled) {
			tok[T] = q->next;
			seq[T++] = q->seq;
		} else {
			for (uint32_t j = (uint32_t)q->cached; j < q->n_prompt; j++) {
				tok[T] = q->hist[j];
				seq[T++] = q->seq;
			}
		}
	}
	struct fi_batch b = {T, tok, seq, NULL};
	e = fi_model_forward(E->m, &b, E->logits, &n_rows);
	free(tok);
	free(seq);
	if (e)
		return e;
	for (int i = 0; i < na; i++) {
		struct req *q = E->r[i];
		if (!q->prefilled && q->store &&
		    fi_kvx_store(E->x, q->seq, (const uint32_t *)q->hist, q->n_prompt, NULL))
			fi_warn("request '%s': %s", q->id, fi_errmsg());
	}
	/* rows come in order of first appearance, which is admission order */
	for (int i = 0, row = 0; i < na; row++) {
		struct req *q = E->r[i];
		const float *l = E->logits + (size_t)row * E->c->vocab;
		int32_t t = fi_sampler_next(&q->smp, l, q->hist, (int)(q->n_prompt + q->n_gen));
		double now = fi_now();
		/* fi-prefill drew the first token already: the same one is kept, and the draw above
		 * left the sampler's state as if it had been drawn here. */
		if (!q->prefilled && q->first >= 0)
			t = q->first;
		q->prefilled = 1;
		if (is_stop(q, t)) {
			if ((e = emit_done(E, q, FI_FINISH_STOP)))
				return e;
			drop(E, i);
			na--;
			continue;
		}
		q->hist[q->n_prompt + q->n_gen] = t;
		if (!q->n_gen)
			q->t_first = now;
		q->t_last = now;
		if (q->stream) {
			struct fi_frame f;
			fi_frame_init(&f, FI_FRAME_TOKEN);
			f.id = q->id;
			f.tok.token = (uint32_t)t;
			f.tok.index = q->n_gen;
			if ((e = fi_stream_write(E->out, &f)))
				return e;
		}
		q->n_gen++;
		q->next = t;
		if (q->n_gen >= q->max_new) {
			if ((e = emit_done(E, q, FI_FINISH_LENGTH)))
				return e;
			drop(E, i);
			na--;
			continue;
		}
		i++;
	}
	return FI_OK;
}

static int find(const struct engine *E, const char *id)
{
	for (int i = 0; i < E->n; i++)
		if (!strcmp(E->r[i]->id, id))
			return i;
	return -1;
}

/* Handles one input frame; returns 1 at the end of input. */
static int take_frame(struct engine *E, const struct opts *o, struct fi_frame *f, fi_err *fatal)
{
	struct req *q;
	fi_err e;
	int i;
	switch (f->type) {
	case FI_FRAME_EOS:
		return 1;
	case FI_FRAME_REQUEST:
		if (find(E, f->id) >= 0) {
			*fatal = fi_stream_write_error(E->out, f->id, FI_EEXIST,
						       "a request with this id is running");
			break;
		}
		if (E->n >= (int)(sizeof E->r / sizeof E->r[0])) {
			*fatal = fi_stream_write_error(E->out, f->id, FI_EBUSY, "too many requests waiting");
			break;
		}
		if ((e = make_req(E, o, f, &q)))
			*fatal = fi_stream_write_error(E->out, f->id, e, fi_errmsg());
		else
			E->r[E->n++] = q;
		break;
	case FI_FRAME_CANCEL:
		if ((i = find(E, f->id)) >= 0) {
			*fatal = emit_done(E, E->r[i], FI_FINISH_CANCEL);
			drop(E, i);
		}
		break;
	case FI_FRAME_TOKEN: /* fi-prefill's first token, ahead of its request */
		add_pending(E, f);
		break;
	case FI_FRAME_ERROR: /* from upstream (fi-prefill): passed on */
	case FI_FRAME_DONE:
		*fatal = fi_stream_write(E->out, f);
		break;
	default:
		*fatal = fi_stream_write_error(E->out, f->id, FI_EINVAL,
					       "fi-decode reads request, cancel and token frames");
	}
	return 0;
}

/* After a signal: requests still queued on the input get an error frame, not silence. */
static fi_err drain(struct engine *E, struct fi_stream *in)
{
	struct fi_frame f;
	fi_err e = FI_OK;
	for (int k = 0; !e && k < 100000; k++) {
		fi_frame_init(&f, FI_FRAME_NONE);
		if (fi_stream_read_timeout(in, &f, 0) || f.type == FI_FRAME_NONE ||
		    f.type == FI_FRAME_EOS) {
			fi_frame_free(&f);
			break;
		}
		if (f.type == FI_FRAME_REQUEST)
			e = fi_stream_write_error(E->out, f.id, FI_EINTERRUPT, "fi-decode is shutting down");
		else if (f.type == FI_FRAME_ERROR || f.type == FI_FRAME_DONE)
			e = fi_stream_write(E->out, &f);
		fi_frame_free(&f);
	}
	return e;
}

static int run_frames(struct engine *E, const struct opts *o)
{
	struct fi_stream_opts so;
	struct fi_stream *in = NULL;
	struct fi_frame f;
	fi_err e = FI_OK;
	int eof = 0, rc = 0;
	fi_stream_opts_default(&so);
	so.eos_count = o->eos_count;
	if ((e = fi_stream_open(&in, o->in, FI_STREAM_IN, &so)) ||
	    (e = fi_stream_open(&E->out, o->out, FI_STREAM_OUT, NULL)))
		goto out;
	fi_stream_catch_signals();
	while (!e && (!eof || E->n)) {
		/* Wait for work when idle; otherwise take what has arrived without waiting. */
		for (int k = 0; !eof && !e && k < 256; k++) {
			fi_frame_init(&f, FI_FRAME_NONE);
			e = E->n ? fi_stream_read_timeout(in, &f, 0) : fi_stream_read(in, &f);
			if (e == FI_EFORMAT || e == FI_ERANGE || e == FI_EUNSUPPORTED) {
				if (fi_stream_broken(in)) {
					fprintf(stderr, "fi-decode: %s\n", fi_errmsg());
					rc = 1;
					eof = 1;
					e = FI_OK;
				} else {
					e = fi_stream_write_error(E->out, f.id, e, fi_errmsg());
				}
				fi_frame_free(&f);
				continue;
			}
			if (e || f.type == FI_FRAME_NONE) {
				fi_frame_free(&f);
				break;
			}
			eof = take_frame(E, o, &f, &e);
			fi_frame_free(&f);
		}
		if (e)
			break;
		if (fi_stream_interrupted()) {
			while (E->n && !(e = emit_done(E, E->r[0], FI_FINISH_CANCEL)))
				drop(E, 0);
			if (!e)
				e = drain(E, in);
			break;
		}
		if ((e = admit(E)))
			break;
		if (n_admitted(E) && (e = step(E)))
			break;
		if ((e = fi_stream_flush(E->out)))
			break;
	}
out:
	if (e && e != FI_EINTERRUPT) {
		fprintf(stderr, "fi-decode: %s\n", fi_errmsg());
		rc = 1;
	}
	while (E->n)
		drop(E, 0);
	if (fi_stream_close(E->out) && !rc) {
		fprintf(stderr, "fi-decode: %s\n", fi_errmsg());
		rc = 1;
	}
	fi_stream_close(in);
	return rc;
}

/* --tokens: one request, ids printed on one line. */
static int run_tokens(struct engine *E, const struct opts *o)
{
	struct fi_sampler smp;
	int32_t *ids, *hist;
	int n, s, n_rows, n_gen = 0, cached = 0;
	double t0, t1;
	if (parse_ids(o->tokens, &ids, &n, E->c->vocab)) {
		fprintf(stderr, "fi-decode: --tokens: expected comma-separated ids below %d\n",
			E->c->vocab);
		return 2;
	}
	if (n >= E->ctx) {
		fprintf(stderr, "fi-decode: prompt of %d tokens does not fit the context of %d\n", n,
			E->ctx);
		return 1;
	}
	int max_new = o->n < E->ctx - n ? o->n : E->ctx - n;
	hist = malloc(sizeof(int32_t) * (size_t)(n + max_new));
	if (!hist || fi_sampler_init(&smp, &o->sp, E->c->vocab) || fi_model_seq_new(E->m, &s))
		return fail();
	memcpy(hist, ids, sizeof(int32_t) * (size_t)n);
	int32_t *seq = calloc((size_t)n, sizeof(int32_t));
	for (int i = 0; i < n; i++)
		seq[i] = s;
	t0 = fi_now();
	if (o->prefix_cache && arena(E, o) &&
	    fi_kvx_fetch(E->x, s, (const uint32_t *)ids, (size_t)n, (size_t)(n - 1) / BLOCK_TOKENS,
			 &cached))
		fi_warn("%s", fi_errmsg());
	struct fi_batch b = {n - cached, ids + cached, seq, NULL};
	t1 = t0;
	while (n_gen < max_new) {
		int32_t t;
		if (fi_model_forward(E->m, &b, E->logits, &n_rows))
			return fail();
		if (!n_gen && E->x && o->prefix_cache &&
		    fi_kvx_store(E->x, s, (const uint32_t *)ids, (size_t)n, NULL))
			fi_warn("%s", fi_errmsg());
		if (!n_gen)
			t1 = fi_now();
		t = fi_sampler_next(&smp, E->logits, hist, n + n_gen);
		if (fi_sample_is_stop(&o->sp, t))
			break;
		{
			int stop = 0;
			for (int i = 0; i < E->c->n_eos; i++)
				stop |= E->c->eos_ids[i] == t;
			if (stop)
				break;
		}
		hist[n + n_gen++] = t;
		printf("%s%d", n_gen > 1 ? " " : "", t);
		b.n_tokens = 1;
		b.tokens = &hist[n + n_gen - 1];
	}
	printf("\n");
	if (o->verbose) {
		double t2 = fi_now();
		fprintf(stderr, "fi-decode: prompt %d tokens (%d cached) in %.2f ms (%.1f tok/s); "
			"generated %d tokens in %.2f ms (%.1f tok/s)\n", n, cached, (t1 - t0) * 1e3,
			(n - cached) / (t1 - t0), n_gen,
			(t2 - t1) * 1e3, n_gen > 1 ? (n_gen - 1) / (t2 - t1) : 0.0);
	}
	fi_sampler_free(&smp);
	free(seq);
	free(ids);
	free(hist);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"temp", required_argument, NULL, 'T'},
		{"top-k", required_argument, NULL, 'K'},
		{"top-p", required_argument, NULL, 'P'},
		{"min-p", required_argument, NULL, 'M'},
		{"repeat-penalty", required_argument, NULL, 'R'},
		{"seed", required_argument, NULL, 'S'},
		{"backend", required_argument, NULL, 'B'},
		{"tokens", required_argument, NULL, 'k'},
		{"prefix-cache", no_argument, NULL, 'C'},
		{"arena-size", required_argument, NULL, 'A'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {.backend = "auto", .in = "-", .out = "-", .n = 256, .eos_count = 1};
	struct engine E = {0};
	struct fi_backend *be = NULL;
	struct fi_image *im = NULL;
	int c, rc;
	double v;
	fi_log_set_prog("fi-decode");
	fi_sample_defaults(&o.sp);
	while ((c = getopt_long(argc, argv, "m:n:t:i:o:e:vh", lo, NULL)) != -1) {
		switch (c) {
		case 'm': o.model = optarg; break;
		case 'i': o.in = optarg; break;
		case 'o': o.out = optarg; break;
		case 'B': o.backend = optarg; break;
		case 'k': o.tokens = optarg; break;
		case 'C': o.prefix_cache = 1; break;
		case 'A':
			if (parse_size(optarg, &o.arena_size))
				goto bad;
			break;
		case 'e':
			if (parse_num(optarg, 0, 1 << 20, &v))
				goto bad;
			o.eos_count = (int)v;
			break;
		case 'v': o.verbose = 1; break;
		case 'h': return usage(0);
		case 'n':
			if (parse_num(optarg, 1, 1 << 30, &v))
				goto bad;
			o.n = (int)v;
			break;
		case 't':
			if (parse_num(optarg, 1, 1024, &v))
				goto bad;
			o.threads = (int)v;
			break;
		case 'T':
			if (parse_num(optarg, 0, 1e6, &v))
				goto bad;
			o.sp.temperature = (float)v;
			break;
		case 'K':
			if (parse_num(optarg, 0, 1 << 30, &v))
				goto bad;
			o.sp.top_k = (int)v;
			break;
		case 'P':
			if (parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.top_p = (float)v;
			break;
		case 'M':
			if (parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.min_p = (float)v;
			break;
		case 'R':
			if (parse_num(optarg, 1e-6, 1e6, &v))
				goto bad;
			o.sp.repeat_penalty = (float)v;
			break;
		case 'S':
			if (parse_num(optarg, 0, 18446744073709551615.0, &v))
				goto bad;
			o.sp.seed = strtoull(optarg, NULL, 10);
			break;
		default:
			return usage(2);
		}
		continue;
bad:
		fprintf(stderr, "fi-decode: invalid value '%s' for %s\n", optarg, argv[optind - 1]);
		return 2;
	}
	if (!o.model || optind != argc)
		return usage(2);
	if (fi_backend_create(o.backend, o.threads, &be))
		return fail() + 1; /* an unknown backend name is a usage error */
	if (open_model(&o, be, &im, &E.m)) {
		rc = fail();
		goto out;
	}
	E.im = im;
	E.c = fi_model_config(E.m);
	E.ctx = E.c->max_pos > 0 ? E.c->max_pos : 4096;
	if (fi_model_cache_init(E.m, 4 * ((E.ctx < 4096 ? E.ctx : 4096) + BLOCK_TOKENS - 1) /
				 BLOCK_TOKENS, BLOCK_TOKENS) ||
	    !(E.logits = malloc(sizeof(float) * (size_t)E.c->vocab * MAX_BATCH))) {
		rc = fail();
		goto out;
	}
	E.block_size = fi_model_cache(E.m)->kv.block_size;
	E.blocks_free = fi_model_cache(E.m)->kv.n_blocks;
	fi_info("%s on %s", o.model, be->device);
	rc = o.tokens ? run_tokens(&E, &o) : run_frames(&E, &o);
out:
	while (E.npend)
		free(E.pend[--E.npend].id);
	fi_kvx_close(E.x);
	free(E.logits);
	fi_model_close(E.m);
	if (im)
		fi_image_close(im);
	fi_backend_destroy(be);
	return rc;
}
