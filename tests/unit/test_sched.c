/* The scheduler (lib/sched/scheduler.h) on the HF fixtures: one request reproduces transformers'
 * greedy tokens; every request of a batch (greedy or seeded, added at once or while others
 * run, prompts whole or in chunks, a small cache that makes requests wait) gets exactly the
 * tokens it gets alone; stop ids, stop strings across token boundaries (with a synthetic
 * tokenizer whose tokens are their own 3-digit ids), max_tokens and the context, cancel,
 * the first-token handoff, and refusals. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model.h"
#include "sched/scheduler.h"
#include "serve/serve.h"
#include "text/tokenizer.h"
#include "util.h"

#define MAXR 16
#define MAXT 300

static struct fi_backend *be;

/* What the events said about each request. */
struct rec {
	char id[16];
	uint32_t tok[MAXT];
	int n;
	char text[4096]; /* token pieces then the done tail */
	size_t tlen;
	int done, finish, gen, ntok_done, first_after_done;
	char full[4096]; /* the done event's whole text */
	double ttft;
};

struct log {
	struct rec r[MAXR];
	int n, n_done, order_bad;
	int n_err;
};

static struct rec *rec_of(struct log *L, const char *id)
{
	for (int i = 0; i < L->n; i++)
		if (!strcmp(L->r[i].id, id))
			return &L->r[i];
	ck_assert_int_lt(L->n, MAXR);
	snprintf(L->r[L->n].id, sizeof L->r[0].id, "%s", id);
	return &L->r[L->n++];
}

static fi_err on_event(void *user, const struct fi_sched_event *ev)
{
	struct log *L = user;
	struct rec *r;
	if (ev->type == FI_SCHED_EV_WARN)
		return FI_OK;
	r = rec_of(L, ev->id);
	ck_assert_msg(!r->done, "event after done for '%s'", ev->id);
	switch (ev->type) {
	case FI_SCHED_EV_TOKEN:
		ck_assert_int_eq(ev->index, r->n);
		ck_assert_int_lt(r->n, MAXT);
		if (!r->n)
			r->first_after_done = L->n_done;
		r->tok[r->n++] = ev->token;
		memcpy(r->text + r->tlen, ev->text, ev->text_len);
		r->tlen += ev->text_len;
		break;
	case FI_SCHED_EV_DONE:
		r->done = 1;
		r->finish = ev->finish;
		r->gen = (int)ev->gen_tokens;
		r->ttft = ev->ttft_ms;
		ck_assert_int_eq(ev->gen_tokens, r->n);
		ck_assert(!memcmp(ev->tokens, r->tok, sizeof(uint32_t) * (size_t)r->n));
		ck_assert_uint_le(ev->text_sent, ev->text_len);
		ck_assert_uint_eq(ev->text_sent, r->tlen);
		ck_assert(!memcmp(ev->text, r->text, r->tlen));
		memcpy(r->text + r->tlen, ev->text + ev->text_sent, ev->text_len - ev->text_sent);
		r->tlen = ev->text_len;
		memcpy(r->full, ev->text, ev->text_len);
		L->n_done++;
		break;
	default:
		L->n_err++;
	}
	return FI_OK;
}

struct fx {
	struct fi_model *m;
	int32_t prompt[64], greedy[64];
	int n_prompt, n_greedy, ctx;
};

static void fx_open(struct fx *f, const char *name, int n_blocks)
{
	char p[512];
	json_error_t je;
	json_t *o, *a;
	snprintf(p, sizeof p, "%s/ref.json", fi_test_fixture(name));
	ck_assert_msg((o = json_load_file(p, 0, &je)), "%s: %s", p, je.text);
	a = json_object_get(o, "prompt");
	f->n_prompt = (int)json_array_size(a);
	for (int i = 0; i < f->n_prompt; i++)
		f->prompt[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
	a = json_object_get(o, "greedy");
	f->n_greedy = (int)json_array_size(a);
	for (int i = 0; i < f->n_greedy; i++)
		f->greedy[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
	json_decref(o);
	ck_assert_msg(!fi_model_load_hf(fi_test_fixture(name), be, &f->m), "%s", fi_errmsg());
	if (n_blocks)
		ck_assert(!fi_model_cache_init(f->m, n_blocks, 16));
	f->ctx = fi_model_config(f->m)->max_pos;
}

/* Every scheduler of these tests reports through a text layer (lib/serve), freed with it. */
static struct fi_serve *serve_of[64];
static struct fi_sched *sched_of[64];

/* overlap: -1 the backend's default (off on the CPU), 0, 1 */
static struct fi_sched *sched_new_ex(struct fx *f, struct log *L, const struct fi_tok *tok,
				     int max_batch, int chunk, int overlap)
{
	struct fi_sched_opts o;
	struct fi_serve_opts so = {.tok = tok, .cb = on_event, .cb_user = L};
	struct fi_sched *s;
	struct fi_serve *v;
	memset(L, 0, sizeof *L);
	fi_sched_opts_default(&o);
	o.max_batch = max_batch;
	o.max_requests = max_batch + 8;
	o.max_step_tokens = max_batch > 64 ? max_batch : 64;
	o.max_prefill_tokens = chunk;
	o.overlap = overlap;
	o.cb = fi_serve_event;
	ck_assert(!fi_serve_new(&so, &v));
	o.cb_user = v;
	ck_assert_msg(!fi_sched_create(f->m, &o, &s), "%s", fi_errmsg());
	for (int i = 0; i < 64; i++)
		if (!sched_of[i]) {
			sched_of[i] = s;
			serve_of[i] = v;
			break;
		}
	return s;
}

/* The overlap of the schedulers sched_new makes (-1: the backend's default, off here). */
static int g_overlap = -1;

static struct fi_sched *sched_new(struct fx *f, struct log *L, const struct fi_tok *tok,
				  int max_batch, int chunk)
{
	return sched_new_ex(f, L, tok, max_batch, chunk, g_overlap);
}

static struct fi_serve *serve_for(struct fi_sched *s)
{
	for (int i = 0; i < 64; i++)
		if (sched_of[i] == s)
			return serve_of[i];
	ck_abort_msg("no text layer");
	return NULL;
}

static void sched_free(struct fi_sched *s)
{
	for (int i = 0; i < 64; i++)
		if (sched_of[i] == s) {
			fi_sched_destroy(s);
			fi_serve_free(serve_of[i]);
			sched_of[i] = NULL;
			serve_of[i] = NULL;
			return;
		}
}

/* A request: prompt = the fixture prompt's first n tokens, then extra ids (rotated). */
struct spec {
	const char *id;
	int n, rot;          /* prompt length, rotation of the fixture prompt */
	uint32_t max;
	float temp;
	uint64_t seed;
	uint32_t stop_id;    /* 0: none */
	const char *stop[3]; /* stop strings */
};

static void add(struct fi_sched *s, struct fx *f, const struct spec *q, fi_err want)
{
	uint32_t toks[256];
	char *stop[3];
	uint32_t ns = 0;
	struct fi_sched_req r = {.id = q->id, .tokens = toks, .ntokens = (uint32_t)q->n,
				 .max_tokens = q->max, .stream = 1};
	for (int i = 0; i < q->n; i++)
		toks[i] = (uint32_t)f->prompt[(i + q->rot) % f->n_prompt];
	fi_sample_defaults(&r.sp);
	r.sp.temperature = q->temp;
	r.sp.top_k = 50;
	r.sp.seed = q->seed;
	if (q->stop_id) {
		r.stop_ids = &q->stop_id;
		r.nstop_ids = 1;
	}
	while (ns < 3 && q->stop[ns]) {
		stop[ns] = (char *)q->stop[ns];
		ns++;
	}
	fi_err e = fi_serve_add(serve_for(s), s, &r, stop, ns);
	ck_assert_msg(e == want, "add '%s': %d (%s), want %d", q->id, e, fi_errmsg(), want);
}

/* Runs one spec alone in a fresh scheduler. */
static struct rec run_alone(struct fx *f, const struct spec *q, const struct fi_tok *tok)
{
	struct log L;
	struct fi_sched *s = sched_new(f, &L, tok, 4, 0);
	add(s, f, q, FI_OK);
	ck_assert(!fi_sched_run(s));
	sched_free(s);
	ck_assert_int_eq(L.n, 1);
	ck_assert(L.r[0].done);
	return L.r[0];
}

static const struct spec mix[] = {
	{"g16", 16, 0, 32, 0, 0, 0, {0}},
	{"g5", 5, 3, 20, 0, 0, 0, {0}},
	{"s1", 16, 0, 24, 0.9f, 1, 0, {0}},
	{"s2", 16, 0, 24, 0.9f, 2, 0, {0}},
	{"s3", 9, 7, 40, 1.2f, 3, 0, {0}},
	{"g40", 40, 1, 12, 0, 0, 0, {0}},
	{"g1", 1, 0, 8, 0, 0, 0, {0}},
};
#define NMIX (int)(sizeof mix / sizeof mix[0])

static void check_mix(struct fx *f, int max_batch, int chunk, int staggered)
{
	struct rec alone[NMIX];
	struct log L;
	struct fi_sched *s;
	for (int i = 0; i < NMIX; i++)
		alone[i] = run_alone(f, &mix[i], NULL);
	s = sched_new(f, &L, NULL, max_batch, chunk);
	for (int i = 0; i < NMIX; i++) {
		add(s, f, &mix[i], FI_OK);
		/* staggered: requests join a batch that is already generating */
		for (int k = 0; staggered && k < 3; k++)
			ck_assert(!fi_sched_step(s));
	}
	ck_assert(!fi_sched_run(s));
	ck_assert_int_eq(fi_sched_pending(s), 0);
	sched_free(s);
	ck_assert_int_eq(L.n_done, NMIX);
	for (int i = 0; i < NMIX; i++) {
		struct rec *r = rec_of(&L, mix[i].id);
		ck_assert_msg(r->n == alone[i].n && !memcmp(r->tok, alone[i].tok, sizeof(uint32_t) * (size_t)r->n),
			      "'%s': batched tokens differ from alone (batch %d, chunk %d)", mix[i].id,
			      max_batch, chunk);
		ck_assert_int_eq(r->finish, alone[i].finish);
	}
	ck_assert(memcmp(rec_of(&L, "s1")->tok, rec_of(&L, "s2")->tok, 24 * sizeof(uint32_t)));
}

START_TEST(test_greedy_matches_hf)
{
	static const char *fam[] = {"hf/llama", "hf/qwen2", "hf/qwen3"};
	for (int k = 0; k < 3; k++) {
		struct fx f;
		fx_open(&f, fam[k], 0);
		struct spec q = {"g", f.n_prompt, 0, (uint32_t)f.n_greedy, 0, 0, 0, {0}};
		struct rec r = run_alone(&f, &q, NULL);
		ck_assert_int_eq(r.n, f.n_greedy);
		for (int i = 0; i < r.n; i++)
			ck_assert_msg(r.tok[i] == (uint32_t)f.greedy[i], "%s: token %d: %u, HF %d",
				      fam[k], i, r.tok[i], f.greedy[i]);
		ck_assert_int_eq(r.finish, FI_FINISH_LENGTH);
		fi_model_close(f.m);
	}
}
END_TEST

START_TEST(test_batch_equals_alone)
{
	struct fx f;
	fx_open(&f, "hf/llama", 0);
	check_mix(&f, 64, 0, 0);  /* all at once */
	check_mix(&f, 64, 0, 1);  /* joining a running batch */
	check_mix(&f, 3, 0, 0);   /* at most 3 at a time: the rest wait */
	check_mix(&f, 64, 7, 1);  /* prompts in chunks of at most 7 tokens per step */
	g_overlap = 1;            /* events overlapping the next step */
	check_mix(&f, 64, 0, 1);
	check_mix(&f, 3, 5, 0);
	g_overlap = -1;
	fi_model_close(f.m);
}
END_TEST

/* 6 blocks of 16 tokens (96 tokens): four requests of 16 + 32 tokens need 3 blocks each at
 * their end, 12 in all. Admitted by present need (one block each), they grow until blocks
 * run out: the most recently admitted is preempted, resumes later and recomputes, and every
 * request still gets the tokens it gets alone. A request whose prompt fits but whose
 * generation would outgrow the pool ends with finish "length" at the pool's size; one whose
 * prompt alone does not fit is refused, with both sizes. */
START_TEST(test_small_pool)
{
	struct fx f;
	struct log L;
	struct rec alone[4];
	struct fi_sched_stats st;
	struct spec q[4] = {
		{"a", 16, 0, 32, 0, 0, 0, {0}}, {"b", 16, 2, 32, 0.8f, 5, 0, {0}},
		{"c", 16, 4, 32, 0, 0, 0, {0}}, {"d", 16, 6, 32, 0.8f, 6, 0, {0}},
	};
	struct spec big = {"big", 40, 0, 60, 0, 0, 0, {0}}, huge = {"huge", 97, 0, 4, 0, 0, 0, {0}};
	fx_open(&f, "hf/llama", 6);
	for (int i = 0; i < 4; i++)
		alone[i] = run_alone(&f, &q[i], NULL);
	struct fi_sched *s = sched_new(&f, &L, NULL, 64, 0);
	add(s, &f, &huge, FI_EFULL);
	ck_assert_msg(strstr(fi_errmsg(), "'huge'") && strstr(fi_errmsg(), "97 tokens") &&
		      strstr(fi_errmsg(), "holds 96"), "%s", fi_errmsg());
	for (int i = 0; i < 4; i++)
		add(s, &f, &q[i], FI_OK);
	ck_assert(!fi_sched_run(s));
	fi_sched_stats(s, &st);
	sched_free(s);
	ck_assert_int_ge(st.preemptions, 1);
	ck_assert_int_eq(st.max_running, 4);
	for (int i = 0; i < 4; i++) {
		struct rec *r = rec_of(&L, q[i].id);
		ck_assert_int_eq(r->n, 32);
		ck_assert_msg(!memcmp(r->tok, alone[i].tok, sizeof(uint32_t) * 32),
			      "'%s' differs from alone after preemption", q[i].id);
	}
	ck_assert_int_eq(fi_kvcache_available(fi_model_cache(f.m)), 6);
	/* 40 prompt tokens + 57 generated: the KV holds 96, the pool's size */
	s = sched_new(&f, &L, NULL, 64, 0);
	add(s, &f, &big, FI_OK);
	ck_assert(!fi_sched_run(s));
	sched_free(s);
	ck_assert_int_eq(rec_of(&L, "big")->n, 57);
	ck_assert_int_eq(rec_of(&L, "big")->finish, FI_FINISH_LENGTH);
	/* the default batch on this backend, the CPU: 256 (1024 is a GPU's) */
	ck_assert_int_eq(fi_sched_default_batch(fi_model_backend(f.m)), FI_SCHED_MAX_BATCH);
	ck_assert_int_eq(fi_sched_default_batch(NULL), FI_SCHED_MAX_BATCH);
	fi_model_close(f.m);
}
END_TEST

START_TEST(test_stops_and_length)
{
	struct fx f;
	struct log L;
	fx_open(&f, "hf/llama", 0);
	int cut = 3; /* greedy[3] as a stop id: three tokens, finish stop */
	struct spec st = {"stop", f.n_prompt, 0, 32, 0, 0, (uint32_t)f.greedy[cut], {0}};
	struct spec len = {"len", f.n_prompt, 0, 5, 0, 0, 0, {0}};
	/* a prompt 2 tokens short of the context: 2 tokens whatever max_tokens says */
	struct spec ctx = {"ctx", f.ctx - 2, 0, 50, 0, 0, 0, {0}};
	struct fi_sched *s = sched_new(&f, &L, NULL, 64, 0);
	add(s, &f, &st, FI_OK);
	add(s, &f, &len, FI_OK);
	add(s, &f, &ctx, FI_OK);
	ck_assert(!fi_sched_run(s));
	sched_free(s);
	struct rec *r = rec_of(&L, "stop");
	ck_assert_int_eq(r->finish, FI_FINISH_STOP);
	ck_assert_int_eq(r->n, cut);
	for (int i = 0; i < cut; i++)
		ck_assert_int_eq(r->tok[i], f.greedy[i]);
	r = rec_of(&L, "len");
	ck_assert_int_eq(r->finish, FI_FINISH_LENGTH);
	ck_assert_int_eq(r->n, 5);
	r = rec_of(&L, "ctx");
	ck_assert_int_eq(r->finish, FI_FINISH_LENGTH);
	ck_assert_int_eq(r->n, 2);
	fi_model_close(f.m);
}
END_TEST

/* FI_SCHED_IGNORE_EOS (the frames' ignore_eos): the model's end-of-generation id, made here
 * the fixture's 4th greedy token, ends a request without the flag; with it the request runs
 * to max_tokens, the id emitted as any token; its own stop ids still end it. */
START_TEST(test_ignore_eos)
{
	struct fx f;
	struct log L;
	fx_open(&f, "hf/llama", 0);
	struct fi_config *c = (struct fi_config *)fi_model_config(f.m);
	int cut = 3, max = 8;
	uint32_t toks[64], stop_id = (uint32_t)f.greedy[5];
	c->eos_ids[0] = f.greedy[cut];
	c->n_eos = 1;
	for (int i = 0; i < f.n_prompt; i++)
		toks[i] = (uint32_t)f.prompt[i];
	struct fi_sched *s = sched_new(&f, &L, NULL, 8, 0);
	struct fi_sched_req r = {.id = "eos", .tokens = toks, .ntokens = (uint32_t)f.n_prompt,
				 .max_tokens = (uint32_t)max, .stream = 1};
	fi_sample_defaults(&r.sp);
	r.sp.temperature = 0;
	ck_assert(!fi_serve_add(serve_for(s), s, &r, NULL, 0));
	r.id = "ignore";
	r.flags = FI_SCHED_IGNORE_EOS;
	ck_assert(!fi_serve_add(serve_for(s), s, &r, NULL, 0));
	r.id = "stop-id";
	r.stop_ids = &stop_id;
	r.nstop_ids = 1;
	ck_assert(!fi_serve_add(serve_for(s), s, &r, NULL, 0));
	ck_assert(!fi_sched_run(s));
	sched_free(s);
	struct rec *e = rec_of(&L, "eos"), *g = rec_of(&L, "ignore"), *st = rec_of(&L, "stop-id");
	ck_assert_int_eq(e->finish, FI_FINISH_STOP);
	ck_assert_int_eq(e->n, cut);
	ck_assert_int_eq(g->finish, FI_FINISH_LENGTH);
	ck_assert_int_eq(g->n, max);
	for (int i = 0; i < max; i++)
		ck_assert_int_eq(g->tok[i], f.greedy[i]);
	ck_assert_int_eq(st->finish, FI_FINISH_STOP);
	ck_assert_int_eq(st->n, 5);
	fi_model_close(f.m);
}
END_TEST

START_TEST(test_cancel)
{
	struct fx f;
	struct log L;
	fx_open(&f, "hf/llama", 0);
	struct spec a = {"a", 16, 0, 30, 0, 0, 0, {0}}, b = {"b", 10, 1, 30, 0, 0, 0, {0}},
		    c = {"c", 12, 2, 30, 0, 0, 0, {0}};
	struct rec alone = run_alone(&f, &b, NULL);
	struct fi_sched *s = sched_new(&f, &L, NULL, 2, 0);
	add(s, &f, &a, FI_OK);
	add(s, &f, &b, FI_OK);
	add(s, &f, &c, FI_OK); /* waits: the batch holds 2 */
	for (int k = 0; k < 4; k++)
		ck_assert(!fi_sched_step(s));
	ck_assert(!fi_sched_cancel(s, "a"));
	ck_assert(!fi_sched_cancel(s, "c"));
	ck_assert_int_eq(fi_sched_cancel(s, "a"), FI_ENOTFOUND);
	ck_assert(!fi_sched_has(s, "a") && fi_sched_has(s, "b"));
	ck_assert(!fi_sched_run(s));
	struct rec *r = rec_of(&L, "a");
	ck_assert_int_eq(r->finish, FI_FINISH_CANCEL);
	ck_assert_int_eq(r->n, 4);
	r = rec_of(&L, "c");
	ck_assert_int_eq(r->finish, FI_FINISH_CANCEL);
	ck_assert_int_eq(r->n, 0);
	ck_assert(r->ttft < 0);
	r = rec_of(&L, "b");
	ck_assert_int_eq(r->finish, FI_FINISH_LENGTH);
	ck_assert(r->n == alone.n && !memcmp(r->tok, alone.tok, sizeof(uint32_t) * (size_t)r->n));
	sched_free(s);
	/* cancel_all ends everything held, in order */
	s = sched_new(&f, &L, NULL, 2, 0);
	add(s, &f, &a, FI_OK);
	add(s, &f, &c, FI_OK);
	ck_assert(!fi_sched_step(s));
	ck_assert(!fi_sched_cancel_all(s));
	ck_assert_int_eq(fi_sched_pending(s), 0);
	ck_assert(!strcmp(L.r[0].id, "a") && !strcmp(L.r[1].id, "c"));
	ck_assert(L.r[0].finish == FI_FINISH_CANCEL && L.r[0].n == 1 && L.r[1].n == 1);
	sched_free(s);
	ck_assert_int_eq(fi_kvcache_available(fi_model_cache(f.m)),
			 fi_model_cache(f.m)->kv.n_blocks);
	fi_model_close(f.m);
}
END_TEST

/* A first token drawn elsewhere is kept; what follows continues from it. */
START_TEST(test_first_token)
{
	struct fx f;
	struct log L;
	uint32_t toks[64];
	fx_open(&f, "hf/llama", 0);
	for (int i = 0; i < f.n_prompt; i++)
		toks[i] = (uint32_t)f.prompt[i];
	struct fi_sched *s = sched_new(&f, &L, NULL, 8, 0);
	struct fi_sched_req r = {.id = "x", .tokens = toks, .ntokens = (uint32_t)f.n_prompt,
				 .max_tokens = 6, .has_first = 1, .first_token = 7};
	fi_sample_defaults(&r.sp);
	r.sp.temperature = 0;
	ck_assert(!fi_serve_add(serve_for(s), s, &r, NULL, 0));
	/* the same through the list of first tokens that arrived ahead of their request */
	fi_sched_first_token(s, "y", 7);
	r.id = "y";
	r.has_first = 0;
	ck_assert(!fi_serve_add(serve_for(s), s, &r, NULL, 0));
	ck_assert(!fi_sched_run(s));
	toks[f.n_prompt] = 7;
	struct fi_sched_req rc = {.id = "c", .tokens = toks, .ntokens = (uint32_t)f.n_prompt + 1,
				  .max_tokens = 5};
	fi_sample_defaults(&rc.sp);
	rc.sp.temperature = 0;
	ck_assert(!fi_serve_add(serve_for(s), s, &rc, NULL, 0));
	ck_assert(!fi_sched_run(s));
	sched_free(s);
	for (int k = 0; k < 2; k++) {
		struct rec *x = rec_of(&L, k ? "y" : "x"), *c = rec_of(&L, "c");
		ck_assert_int_eq(x->n, 6);
		ck_assert_int_eq(x->tok[0], 7);
		ck_assert(!memcmp(x->tok + 1, c->tok, sizeof(uint32_t) * 5));
	}
	fi_model_close(f.m);
}
END_TEST

START_TEST(test_refusals)
{
	struct fx f;
	struct log L;
	uint32_t bad[2] = {1, 300};
	fx_open(&f, "hf/llama", 0);
	struct fi_sched *s = sched_new(&f, &L, NULL, 1, 0);
	struct spec a = {"a", 4, 0, 4, 0, 0, 0, {0}};
	add(s, &f, &a, FI_OK);
	add(s, &f, &a, FI_EEXIST);
	struct spec over = {"over", f.ctx, 0, 4, 0, 0, 0, {0}};
	add(s, &f, &over, FI_ERANGE);
	struct spec ss = {"ss", 4, 0, 4, 0, 0, 0, {"ab"}};
	add(s, &f, &ss, FI_EUNSUPPORTED); /* stop strings, no tokenizer */
	ck_assert(strstr(fi_errmsg(), "tokenizer"));
	struct fi_sched_req r = {.id = "v", .tokens = bad, .ntokens = 2};
	fi_sample_defaults(&r.sp);
	ck_assert_int_eq(fi_serve_add(serve_for(s), s, &r, NULL, 0), FI_ERANGE);
	ck_assert(strstr(fi_errmsg(), "'v'") && strstr(fi_errmsg(), "300"));
	r.ntokens = 0;
	ck_assert_int_eq(fi_serve_add(serve_for(s), s, &r, NULL, 0), FI_EINVAL);
	r.ntokens = 1;
	r.sp.top_p = -1;
	ck_assert_int_eq(fi_serve_add(serve_for(s), s, &r, NULL, 0), FI_EINVAL);
	/* max_requests = max_batch + 8 */
	for (int i = 0; i < 8; i++) {
		char id[8];
		struct spec w = {id, 3, i, 2, 0, 0, 0, {0}};
		snprintf(id, sizeof id, "w%d", i);
		add(s, &f, &w, FI_OK);
	}
	struct spec more = {"more", 3, 0, 2, 0, 0, 0, {0}};
	add(s, &f, &more, FI_EBUSY);
	ck_assert(!fi_sched_run(s));
	ck_assert_int_eq(L.n_done, 9);
	sched_free(s);
	fi_model_close(f.m);
}
END_TEST

/* A tokenizer for the 300-token fixtures whose token i is the text "%03d" of i. */
static struct fi_tok *digits_tok(void)
{
	size_t cap = 300 * 16 + 256, n;
	char *j = malloc(cap);
	struct fi_tok *t;
	n = (size_t)snprintf(j, cap, "{\"model\":{\"type\":\"BPE\",\"vocab\":{");
	for (int i = 0; i < 300; i++)
		n += (size_t)snprintf(j + n, cap - n, "%s\"%03d\":%d", i ? "," : "", i, i);
	n += (size_t)snprintf(j + n, cap - n, "},\"merges\":[]},\"decoder\":{\"type\":\"Fuse\"}}");
	ck_assert_msg(!fi_tok_load_json(j, n, &t), "%s", fi_errmsg());
	free(j);
	return t;
}

/* Greedy on the llama fixture starts 216 227 214 238 256 032: text "216227214238256032". */
START_TEST(test_stop_strings)
{
	struct fx f;
	struct fi_tok *tok = digits_tok();
	fx_open(&f, "hf/llama", 0);
	ck_assert(f.greedy[0] == 216 && f.greedy[1] == 227 && f.greedy[2] == 214 &&
		  f.greedy[3] == 238 && f.greedy[4] == 256 && f.greedy[5] == 32);
	static const struct {
		const char *stop[3];
		uint32_t stop_id, max;
		int n, finish;
		const char *text;
	} cases[] = {
		/* across the boundary of tokens 1 and 2: three tokens, text cut before it */
		{{"7214"}, 0, 32, 3, FI_FINISH_STOP, "21622"},
		/* inside token 3 */
		{{"23"}, 0, 32, 4, FI_FINISH_STOP, "216227214"},
		/* the earliest match of several wins, whichever completes first */
		{{"3825", "2142"}, 0, 32, 4, FI_FINISH_STOP, "216227"},
		/* at the very start */
		{{"216"}, 0, 32, 1, FI_FINISH_STOP, ""},
		/* a prefix held back, then released when it does not continue */
		{{"7999", "14x"}, 0, 5, 5, FI_FINISH_LENGTH, "216227214238256"},
		/* a stop id ends it while a prefix is held: the tail comes with the done */
		{{"14x"}, 238, 32, 3, FI_FINISH_STOP, "216227214"},
		/* no stop string: the whole text */
		{{NULL}, 0, 6, 6, FI_FINISH_LENGTH, "216227214238256032"},
	};
	/* the same with the host's events overlapping the next step: a request stopped by its
	 * text has one more token computed, which never shows */
	for (size_t kk = 0; kk < 2 * sizeof cases / sizeof cases[0]; kk++) {
		size_t k = kk % (sizeof cases / sizeof cases[0]);
		g_overlap = kk >= sizeof cases / sizeof cases[0];
		struct spec q = {"t", f.n_prompt, 0, cases[k].max, 0, 0, cases[k].stop_id,
				 {cases[k].stop[0], cases[k].stop[1], cases[k].stop[2]}};
		struct rec r = run_alone(&f, &q, tok);
		ck_assert_msg(r.n == cases[k].n, "case %zu (overlap %d): %d tokens", k, g_overlap, r.n);
		for (int i = 0; i < r.n; i++)
			ck_assert_int_eq(r.tok[i], f.greedy[i]);
		ck_assert_int_eq(r.finish, cases[k].finish);
		r.text[r.tlen] = 0;
		r.full[r.tlen] = 0;
		ck_assert_msg(!strcmp(r.text, cases[k].text), "case %zu: text '%s'", k, r.text);
		ck_assert_str_eq(r.full, cases[k].text);
	}
	g_overlap = -1;
	/* pieces: nothing of a possible stop string is released early */
	{
		struct log L;
		struct spec q = {"p", f.n_prompt, 0, 3, 0, 0, 0, {"7214"}};
		struct fi_sched *s = sched_new(&f, &L, tok, 4, 0);
		add(s, &f, &q, FI_OK);
		ck_assert(!fi_sched_step(s));
		ck_assert_int_eq(L.r[0].tlen, 3); /* "216" */
		ck_assert(!fi_sched_step(s));
		ck_assert_int_eq(L.r[0].tlen, 5); /* "21622", the "7" held back */
		ck_assert(!fi_sched_run(s));
		ck_assert_int_eq(L.r[0].finish, FI_FINISH_STOP);
		sched_free(s);
	}
	fi_tok_free(tok);
	fi_model_close(f.m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("sched");
	int rc;
	if (fi_backend_cpu_create(2, &be)) {
		fprintf(stderr, "test_sched: %s\n", fi_errmsg());
		return 1;
	}
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_greedy_matches_hf);
	tcase_add_test(tc, test_batch_equals_alone);
	tcase_add_test(tc, test_small_pool);
	tcase_add_test(tc, test_stops_and_length);
	tcase_add_test(tc, test_ignore_eos);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_first_token);
	tcase_add_test(tc, test_refusals);
	tcase_add_test(tc, test_stop_strings);
	suite_add_tcase(s, tc);
	rc = fi_test_run(s);
	fi_backend_destroy(be);
	return rc;
}
