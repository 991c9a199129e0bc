/* fi-prefill: compute the KV of prompts into the shared KV arena. Reads request frames,
 * fetches the cached prefix of each prompt from the arena, runs the rest of several prompts
 * in one forward pass, publishes the new full blocks, and passes each request on with a "kv"
 * reference, preceded by a token frame with its first generated token. */
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
#include "tokenizer.h"

static const char usage_text[] =
	"usage: fi-prefill -m MODEL [-b N] [--arena-size SIZE] [--temp T] [--top-k K]\n"
	"                  [--top-p P] [--min-p P] [--repeat-penalty R] [--seed S]\n"
	"                  [--backend auto|cuda|cpu] [-t THREADS] [-i IN] [-o OUT] [-e N] [-v]\n"
	"       fi-prefill -h\n";

#define BLOCK_TOKENS 16 /* the cache's and the arena's block size */

struct opts {
	const char *model, *backend, *in, *out;
	int batch, threads, verbose, eos_count;
	uint64_t arena_size;
	struct fi_sample_params sp;
};

struct pre {
	struct fi_frame f; /* the request, owned */
	uint32_t n;        /* prompt tokens */
	int seq, cached;
};

struct prefill {
	const struct opts *o;
	struct fi_model *m;
	const struct fi_config *c;
	struct fi_image *im;
	struct fi_tok *tok;
	int tok_failed;
	struct fi_kvx *x;
	struct fi_stream *out;
	struct pre *b; /* the batch being gathered [o->batch] */
	int nb, blocks_used, blocks_max, ctx;
	float *logits;
	uint64_t n_req, n_tok, n_cached;
	double t_busy;
};

static int usage(int rc)
{
	fputs(usage_text, rc ? stderr : stdout);
	return rc;
}

static int fail(void)
{
	fprintf(stderr, "fi-prefill: %s\n", fi_errmsg());
	return 1;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	*out = strtod(s, &end);
	return errno || end == s || *end || isnan(*out) || *out < lo || *out > hi;
}

/* "64M", "2G", "1048576": bytes. */
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

/* Text prompts: encoded with the model's tokenizer, loaded on first use. */
static fi_err encode_text(struct prefill *P, struct fi_request *r, const char *id)
{
	const struct fi_image_blob *b = fi_image_blob(P->im, "tokenizer.json");
	struct fi_tok_ids ids = {0};
	fi_err e;
	if (!P->tok && !P->tok_failed) {
		if (!b || fi_tok_load_mem(b->data, b->size, &P->tok)) {
			P->tok_failed = 1;
			if (!b)
				fi_fail(FI_EUNSUPPORTED, "the model image has no tokenizer.json");
			fi_warn("%s: text prompts are refused", fi_errmsg());
		}
	}
	if (!P->tok)
		return fi_fail(FI_EUNSUPPORTED, "request '%s': no tokenizer for text prompts (send "
			       "token ids)", id);
	if ((e = fi_tok_encode(P->tok, r->text, r->text_len,
			       FI_TOK_HF_DEFAULT | FI_TOK_REPLACE_INVALID, &ids)))
		return fi_fail_ctx(e, "request '%s'", id);
	if (!ids.n) {
		fi_tok_ids_free(&ids);
		return fi_fail(FI_EINVAL, "request '%s': empty prompt", id);
	}
	r->tokens = ids.v;
	r->ntokens = (uint32_t)ids.n;
	return FI_OK;
}

/* Fills the sampling keys a request leaves unset from the options, and marks them set: the
 * request passed on carries the parameters its first token was drawn with. */
static void resolve_sampling(const struct opts *o, struct fi_request *r)
{
	if (!(r->set & FI_REQ_TEMPERATURE))
		r->temperature = o->sp.temperature;
	if (!(r->set & FI_REQ_TOP_K))
		r->top_k = o->sp.top_k;
	if (!(r->set & FI_REQ_TOP_P))
		r->top_p = o->sp.top_p;
	if (!(r->set & FI_REQ_MIN_P))
		r->min_p = o->sp.min_p;
	if (!(r->set & FI_REQ_REPEAT_PENALTY))
		r->repeat_penalty = o->sp.repeat_penalty;
	if (!(r->set & FI_REQ_SEED))
		r->seed = o->sp.seed;
	r->set |= FI_REQ_TEMPERATURE | FI_REQ_TOP_K | FI_REQ_TOP_P | FI_REQ_MIN_P |
		  FI_REQ_REPEAT_PENALTY | FI_REQ_SEED;
}

static void sample_params(const struct fi_request *r, struct fi_sample_params *sp)
{
	fi_sample_defaults(sp);
	sp->temperature = r->temperature;
	sp->top_k = r->top_k;
	sp->top_p = r->top_p;
	sp->min_p = r->min_p;
	sp->repeat_penalty = r->repeat_penalty;
	sp->seed = r->seed;
}

/* Checks a request and makes it ready for the batch; an error is answered by the caller. */
static fi_err check_req(struct prefill *P, struct fi_frame *f)
{
	struct fi_request *r = &f->req;
	struct fi_sample_params sp;
	struct fi_sampler smp;
	fi_err e;
	if (!r->tokens && r->text && (e = encode_text(P, r, f->id)))
		return e;
	if (!r->tokens || !r->ntokens)
		return fi_fail(FI_EINVAL, "request '%s': empty prompt", f->id);
	for (uint32_t i = 0; i < r->ntokens; i++)
		if (r->tokens[i] >= (uint32_t)P->c->vocab)
			return fi_fail(FI_ERANGE, "request '%s': token %u outside the vocabulary (%d)",
				       f->id, r->tokens[i], P->c->vocab);
	if (r->ntokens >= (uint32_t)P->ctx)
		return fi_fail(FI_ERANGE, "request '%s': prompt of %u tokens does not fit the "
			       "context of %d", f->id, r->ntokens, P->ctx);
	if ((r->set & FI_REQ_KV) &&
	    (e = fi_kvx_check_ref(NULL, P->im->fingerprint, &r->kv, r->tokens, r->ntokens, &(int){0})))
		return fi_fail_ctx(e, "request '%s'", f->id);
	resolve_sampling(P->o, r);
	sample_params(r, &sp);
	if ((e = fi_sampler_init(&smp, &sp, P->c->vocab)))
		return fi_fail_ctx(e, "request '%s'", f->id);
	fi_sampler_free(&smp);
	return FI_OK;
}

static int blocks_of(uint32_t n)
{
	return (int)((n + BLOCK_TOKENS - 1) / BLOCK_TOKENS);
}

/* Emits the first token and the request with its kv reference. */
static fi_err emit(struct prefill *P, struct pre *q, int32_t t0)
{
	struct fi_request *r = &q->f.req;
	struct fi_frame tf;
	fi_err e;
	fi_frame_init(&tf, FI_FRAME_TOKEN);
	tf.id = q->f.id;
	tf.tok.token = (uint32_t)t0;
	tf.tok.index = 0;
	free(r->kv.arena);
	free(r->kv.blocks);
	memset(&r->kv, 0, sizeof r->kv);
	if ((e = fi_kvx_make_ref(P->x, P->im->fingerprint, r->tokens, r->ntokens, &r->kv)))
		return e;
	r->set |= FI_REQ_KV;
	if ((e = fi_stream_write(P->out, &tf)))
		return e;
	return fi_stream_write(P->out, &q->f);
}

static void batch_clear(struct prefill *P)
{
	for (int i = 0; i < P->nb; i++) {
		if (P->b[i].seq >= 0)
			fi_model_seq_free(P->m, P->b[i].seq);
		fi_frame_free(&P->b[i].f);
	}
	P->nb = 0;
	P->blocks_used = 0;
}

/* Fetches cached prefixes, runs the rest of every prompt in one forward, samples the first
 * tokens, publishes the new blocks, emits. A failure of the batch is reported per request. */
static fi_err run_batch(struct prefill *P)
{
	int T = 0, n_rows;
	int32_t *tok = NULL, *seq = NULL;
	double t0 = fi_now();
	fi_err e = FI_OK, w = FI_OK;
	if (!P->nb)
		return FI_OK;
	for (int i = 0; !e && i < P->nb; i++) {
		struct pre *q = &P->b[i];
		/* Keep at least the last prompt token to compute: its logits give the first token. */
		if (!(e = fi_model_seq_new(P->m, &q->seq)))
			e = fi_kvx_fetch(P->x, q->seq, q->f.req.tokens, q->n, (q->n - 1) / BLOCK_TOKENS,
					 &q->cached);
		T += (int)q->n - q->cached;
	}
	if (!e && (!(tok = malloc(sizeof *tok * (size_t)T)) || !(seq = malloc(sizeof *seq * (size_t)T))))
		e = fi_fail(FI_ENOMEM, "out of memory");
	if (!e) {
		T = 0;
		for (int i = 0; i < P->nb; i++)
			for (uint32_t j = (uint32_t)P->b[i].cached; j < P->b[i].n; j++) {
				tok[T] = (int32_t)P->b[i].f.req.tokens[j];
				seq[T++] = P->b[i].seq;
			}
		struct fi_batch fb = {T, tok, seq, NULL};
		e = fi_model_forward(P->m, &fb, P->logits, &n_rows);
	}
	free(tok);
	free(seq);
	for (int i = 0; i < P->nb && !w; i++) {
		struct pre *q = &P->b[i];
		struct fi_sample_params sp;
		struct fi_sampler smp;
		size_t stored = 0;
		int32_t t;
		if (e) {
			w = fi_stream_write_error(P->out, q->f.id, e, fi_errmsg());
			continue;
		}
		sample_params(&q->f.req, &sp);
		if ((w = fi_sampler_init(&smp, &sp, P->c->vocab)))
			break;
		t = fi_sampler_next(&smp, P->logits + (size_t)i * P->c->vocab,
				    (const int32_t *)q->f.req.tokens, (int)q->n);
		fi_sampler_free(&smp);
		if ((w = fi_kvx_store(P->x, q->seq, q->f.req.tokens, q->n, &stored)))
			break;
		if (P->o->verbose)
			fprintf(stderr, "fi-prefill: '%s': %u prompt tokens, %d cached, %u computed, "
				"%zu blocks stored, %.2f ms\n", q->f.id, q->n, q->cached,
				q->n - (uint32_t)q->cached, stored, (fi_now() - t0) * 1e3);
		P->n_req++;
		P->n_tok += q->n;
		P->n_cached += (uint64_t)q->cached;
		w = emit(P, q, t);
	}
	P->t_busy += fi_now() - t0;
	batch_clear(P);
	if (!w)
		w = fi_stream_flush(P->out);
	return w;
}

/* Takes one input frame; returns 1 at the end of input. */
static int take_frame(struct prefill *P, struct fi_frame *f, fi_err *fatal)
{
	fi_err e;
	if (f->type == FI_FRAME_EOS)
		return 1;
	if (f->type != FI_FRAME_REQUEST) {
		/* cancel, token, done and error frames pass through, in order */
		if (!(*fatal = run_batch(P)))
			*fatal = fi_stream_write(P->out, f);
		return 0;
	}
	if ((e = check_req(P, f))) {
		*fatal = fi_stream_write_error(P->out, f->id, e, fi_errmsg());
		return 0;
	}
	if (blocks_of(f->req.ntokens) > P->blocks_max) {
		*fatal = fi_stream_write_error(P->out, f->id, FI_EFULL, "prompt larger than the KV cache");
		return 0;
	}
	if (P->nb == P->o->batch || P->blocks_used + blocks_of(f->req.ntokens) > P->blocks_max)
		if ((*fatal = run_batch(P)))
			return 0;
	P->b[P->nb].n = f->req.ntokens;
	P->b[P->nb].seq = -1;
	P->b[P->nb].cached = 0;
	fi_frame_move(&P->b[P->nb].f, f);
	P->blocks_used += blocks_of(P->b[P->nb].n);
	P->nb++;
	return 0;
}

/* After a signal: requests already queued on the input get an error frame, not silence. */
static fi_err drain(struct prefill *P, struct fi_stream *in)
{
	struct fi_frame f;
	fi_err e = FI_OK, r;
	for (int k = 0; !e && k < 100000; k++) {
		fi_frame_init(&f, FI_FRAME_NONE);
		r = fi_stream_read_timeout(in, &f, 0);
		if (r || f.type == FI_FRAME_NONE || f.type == FI_FRAME_EOS) {
			fi_frame_free(&f);
			break;
		}
		if (f.type == FI_FRAME_REQUEST)
			e = fi_stream_write_error(P->out, f.id, FI_EINTERRUPT,
						  "fi-prefill is shutting down");
		else
			e = fi_stream_write(P->out, &f);
		fi_frame_free(&f);
	}
	return e;
}

static int run(struct prefill *P)
{
	struct fi_stream_opts so;
	struct fi_stream *in = NULL;
	struct fi_frame f;
	fi_err e;
	int eof = 0, rc = 0;
	fi_stream_opts_default(&so);
	so.eos_count = P->o->eos_count;
	if ((e = fi_stream_open(&in, P->o->in, FI_STREAM_IN, &so)) ||
	    (e = fi_stream_open(&P->out, P->o->out, FI_STREAM_OUT, NULL)))
		goto out;
	fi_stream_catch_signals();
	while (!e && !eof) {
		/* Wait for the first request, then take what has already arrived, up to a batch. */
		for (int k = 0; !eof && !e && k < 4 * P->o->batch; k++) {
			fi_frame_init(&f, FI_FRAME_NONE);
			e = P->nb ? fi_stream_read_timeout(in, &f, 0) : fi_stream_read(in, &f);
			if (e == FI_EFORMAT || e == FI_ERANGE || e == FI_EUNSUPPORTED) {
				if (fi_stream_broken(in)) {
					fprintf(stderr, "fi-prefill: %s\n", fi_errmsg());
					rc = 1;
					eof = 1;
					e = FI_OK;
				} else {
					e = fi_stream_write_error(P->out, f.id, e, fi_errmsg());
				}
				fi_frame_free(&f);
				continue;
			}
			if (e || f.type == FI_FRAME_NONE) {
				fi_frame_free(&f);
				break;
			}
			eof = take_frame(P, &f, &e);
			fi_frame_free(&f);
		}
		if (e == FI_EINTERRUPT)
			e = FI_OK;
		if (!e)
			e = run_batch(P);
		if (!e && fi_stream_interrupted()) {
			e = drain(P, in);
			break;
		}
	}
out:
	if (e && e != FI_EINTERRUPT) {
		fprintf(stderr, "fi-prefill: %s\n", fi_errmsg());
		rc = 1;
	}
	batch_clear(P);
	if (fi_stream_close(P->out) && !rc) {
		fprintf(stderr, "fi-prefill: %s\n", fi_errmsg());
		rc = 1;
	}
	fi_stream_close(in);
	if (P->o->verbose && P->n_req)
		fprintf(stderr, "fi-prefill: %llu requests, %llu prompt tokens, %llu cached, "
			"%.1f tok/s computed\n", (unsigned long long)P->n_req,
			(unsigned long long)P->n_tok, (unsigned long long)P->n_cached,
			P->t_busy > 0 ? (double)(P->n_tok - P->n_cached) / P->t_busy : 0.0);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_TEMP = 256, O_TOPK, O_TOPP, O_MINP, O_REP, O_SEED, O_BACKEND, O_ASIZE };
	static const struct option lo[] = {
		{"temp", required_argument, NULL, O_TEMP},
		{"top-k", required_argument, NULL, O_TOPK},
		{"top-p", required_argument, NULL, O_TOPP},
		{"min-p", required_argument, NULL, O_MINP},
		{"repeat-penalty", required_argument, NULL, O_REP},
		{"seed", required_argument, NULL, O_SEED},
		{"backend", required_argument, NULL, O_BACKEND},
		{"arena-size", required_argument, NULL, O_ASIZE},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {.backend = "auto", .in = "-", .out = "-", .batch = 16, .eos_count = 1};
	struct prefill P = {.o = &o};
	struct fi_backend *be = NULL;
	int c, rc = 1;
	double v;
	fi_log_set_prog("fi-prefill");
	fi_sample_defaults(&o.sp);
	while ((c = getopt_long(argc, argv, "m:b:t:i:o:e:vh", lo, NULL)) != -1) {
		switch (c) {
		case 'm': o.model = optarg; break;
		case 'i': o.in = optarg; break;
		case 'o': o.out = optarg; break;
		case O_BACKEND: o.backend = optarg; break;
		case 'v': o.verbose = 1; break;
		case 'h': return usage(0);
		case 'b':
			if (parse_num(optarg, 1, 256, &v))
				goto bad;
			o.batch = (int)v;
			break;
		case 'e':
			if (parse_num(optarg, 0, 1 << 20, &v))
				goto bad;
			o.eos_count = (int)v;
			break;
		case 't':
			if (parse_num(optarg, 1, 1024, &v))
				goto bad;
			o.threads = (int)v;
			break;
		case O_ASIZE:
			if (parse_size(optarg, &o.arena_size))
				goto bad;
			break;
		case O_TEMP:
			if (parse_num(optarg, 0, 1e6, &v))
				goto bad;
			o.sp.temperature = (float)v;
			break;
		case O_TOPK:
			if (parse_num(optarg, 0, 1 << 30, &v))
				goto bad;
			o.sp.top_k = (int)v;
			break;
		case O_TOPP:
			if (parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.top_p = (float)v;
			break;
		case O_MINP:
			if (parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.min_p = (float)v;
			break;
		case O_REP:
			if (parse_num(optarg, 1e-6, 1e6, &v))
				goto bad;
			o.sp.repeat_penalty = (float)v;
			break;
		case O_SEED:
			if (parse_num(optarg, 0, 18446744073709551615.0, &v))
				goto bad;
			o.sp.seed = strtoull(optarg, NULL, 10);
			break;
		default:
			return usage(2);
		}
		continue;
bad:
		fprintf(stderr, "fi-prefill: invalid value '%s' for %s\n", optarg, argv[optind - 1]);
		return 2;
	}
	if (!o.model || optind != argc)
		return usage(2);
	if (fi_backend_create(o.backend, o.threads, &be))
		return fail() + 1; /* an unknown backend name is a usage error */
	if (open_model(&o, be, &P.im, &P.m))
		goto fail;
	P.c = fi_model_config(P.m);
	P.ctx = P.c->max_pos > 0 ? P.c->max_pos : 4096;
	/* Room for a batch of o.batch full-context prompts, or 4 contexts, whichever is less. */
	P.blocks_max = blocks_of((uint32_t)P.ctx) * (o.batch < 4 ? o.batch : 4);
	if (fi_model_cache_init(P.m, P.blocks_max, BLOCK_TOKENS) ||
	    fi_kvx_open(&P.x, P.m, P.im->fingerprint, o.arena_size, 1))
		goto fail;
	if (!(P.b = calloc((size_t)o.batch, sizeof *P.b)) ||
	    !(P.logits = malloc(sizeof(float) * (size_t)P.c->vocab * (size_t)o.batch))) {
		fi_fail(FI_ENOMEM, "out of memory");
		goto fail;
	}
	fi_info("%s on %s, arena %s", o.model, be->device, fi_arena_file(fi_kvx_arena(P.x)));
	rc = run(&P);
	goto out;
fail:
	rc = fail();
out:
	free(P.b);
	free(P.logits);
	fi_kvx_close(P.x);
	fi_tok_free(P.tok);
	fi_model_close(P.m);
	if (P.im)
		fi_image_close(P.im);
	fi_backend_destroy(be);
	return rc;
}
