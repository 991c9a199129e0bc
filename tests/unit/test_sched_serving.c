/* The scheduler's serving policies on the llama HF fixture (CPU backend): hundreds of
 * requests get exactly the tokens each gets alone whether they run in a full batch, in
 * small chunks under a small token budget, in a pool small enough to force preemption, with
 * the host overlapping the device, or from a warm prefix cache; a shared system prompt is
 * computed once (counted) while the others wait for it; a conversation's next turn reuses
 * the blocks of the previous turn's output (counted); 10,000 requests fed only while the
 * scheduler has room all finish and none is refused; log-probabilities match the model's
 * logits; ignore_eos runs past the end-of-generation token. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/model.h"
#include "sched/scheduler.h"
#include "util.h"

#define MAXT 64   /* tokens generated per request at most */
#define MAXP 160  /* prompt tokens at most */
#define NREQ 300

static struct fi_backend *be;

struct req {
	char id[16];
	uint32_t prompt[MAXP + MAXT + 16];
	int n_prompt;
	uint32_t max;
	float temp;
	uint64_t seed;
	int ignore_eos, logprobs, top;
	uint32_t stop_id; /* 0: none */
	float penalty;    /* 0: none */
};

struct out {
	uint32_t tok[MAXT];
	float lp[MAXT];
	uint32_t top_ids[MAXT][8];
	float top_lp[MAXT][8];
	int n, done, finish;
	uint32_t cached, preempted;
};

struct run {
	const struct req *q;
	struct out *o;
	int n;
	int n_done, bad_order;
};

static struct out *out_of(struct run *R, const char *id)
{
	int i = atoi(id + 1);
	ck_assert_int_lt(i, R->n);
	return &R->o[i];
}

static fi_err on_event(void *user, const struct fi_sched_event *ev)
{
	struct run *R = user;
	struct out *o;
	if (ev->type == FI_SCHED_EV_WARN)
		return FI_OK;
	ck_assert_int_ne(ev->type, FI_SCHED_EV_ERROR);
	o = out_of(R, ev->id);
	ck_assert_msg(!o->done, "event after done for '%s'", ev->id);
	if (ev->type == FI_SCHED_EV_TOKEN) {
		ck_assert_int_eq(ev->index, o->n);
		ck_assert_int_lt(o->n, MAXT);
		o->tok[o->n] = ev->token;
		o->lp[o->n] = ev->has_logprob ? ev->logprob : 1;
		for (int i = 0; i < ev->n_top && i < 8; i++) {
			o->top_ids[o->n][i] = ev->top_ids[i];
			o->top_lp[o->n][i] = ev->top_logprobs[i];
		}
		o->n++;
	} else {
		o->done = 1;
		o->finish = ev->finish;
		o->cached = ev->cached_tokens;
		o->preempted = ev->preemptions;
		ck_assert_int_eq(ev->gen_tokens, o->n);
		R->n_done++;
	}
	return FI_OK;
}

static struct fi_model *model(int n_blocks)
{
	struct fi_model *m;
	ck_assert_msg(!fi_model_load_hf(fi_test_fixture("hf/llama"), be, &m), "%s", fi_errmsg());
	ck_assert(!fi_model_cache_init(m, n_blocks, 16));
	return m;
}

/* A small LCG: the same requests on every run and machine. */
static uint32_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*s >> 33);
}

/* n requests: prompts of 1..MAXP tokens (a third of them starting with one of two shared
 * 40-token prefixes), 1..40 tokens each, two thirds greedy, the rest sampled with a seed,
 * a fifth with a repetition penalty. */
static void make_reqs(struct req *q, int n, uint64_t seed)
{
	uint32_t pre[2][40];
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < 40; i++)
			pre[k][i] = rnd(&seed) % 300;
	for (int i = 0; i < n; i++) {
		memset(&q[i], 0, sizeof q[i]);
		snprintf(q[i].id, sizeof q[i].id, "r%d", i);
		q[i].n_prompt = 1 + (int)(rnd(&seed) % MAXP);
		for (int j = 0; j < q[i].n_prompt; j++)
			q[i].prompt[j] = rnd(&seed) % 300;
		if (i % 3 == 2 && q[i].n_prompt > 40)
			memcpy(q[i].prompt, pre[i % 2], sizeof pre[0]);
		q[i].max = 1 + rnd(&seed) % 40;
		if (i % 3 == 1) {
			q[i].temp = 0.8f;
			q[i].seed = rnd(&seed);
		}
		if (i % 5 == 4) /* a repetition penalty over the whole history, sampled or greedy */
			q[i].penalty = 1.3f;
	}
}

static void add(struct fi_sched *s, const struct req *q)
{
	struct fi_sched_req r = {.id = q->id, .tokens = q->prompt, .ntokens = (uint32_t)q->n_prompt,
				 .max_tokens = q->max, .stream = 1, .logprobs = q->logprobs,
				 .top_logprobs = q->top};
	fi_sample_defaults(&r.sp);
	r.sp.temperature = q->temp;
	r.sp.top_k = 50;
	r.sp.seed = q->seed;
	if (q->penalty)
		r.sp.repeat_penalty = q->penalty;
	r.flags = q->ignore_eos ? FI_SCHED_IGNORE_EOS : 0;
	if (q->stop_id) {
		r.stop_ids = &q->stop_id;
		r.nstop_ids = 1;
	}
	ck_assert_msg(!fi_sched_add(s, &r), "add '%s': %s", q->id, fi_errmsg());
}

struct cfg {
	int max_batch, step_tokens, chunk, overlap, reuse;
};

static struct fi_sched *sched(struct fi_model *m, const struct cfg *c, struct run *R)
{
	struct fi_sched_opts o;
	struct fi_sched *s;
	fi_sched_opts_default(&o);
	o.max_batch = c->max_batch;
	o.max_requests = c->max_batch + 2 * NREQ;
	o.max_step_tokens = c->step_tokens;
	o.max_prefill_tokens = c->chunk;
	o.overlap = c->overlap;
	o.prefix_reuse = c->reuse;
	o.cb = on_event;
	o.cb_user = R;
	ck_assert_msg(!fi_sched_create(m, &o, &s), "%s", fi_errmsg());
	return s;
}

/* Runs q[0..n) together under c; outputs in o. Returns the scheduler's counters. */
static struct fi_sched_stats run_all(struct fi_model *m, const struct cfg *c, const struct req *q,
				     int n, struct out *o)
{
	struct run R = {q, o, n, 0, 0};
	struct fi_sched_stats st;
	struct fi_sched *s;
	memset(o, 0, sizeof *o * (size_t)n);
	s = sched(m, c, &R);
	for (int i = 0; i < n; i++)
		add(s, &q[i]);
	ck_assert_msg(!fi_sched_run(s), "%s", fi_errmsg());
	fi_sched_stats(s, &st);
	fi_sched_destroy(s);
	ck_assert_int_eq(R.n_done, n);
	return st;
}

/* Each request alone, with nothing cached. */
static void run_alone(struct fi_model *m, const struct req *q, int n, struct out *o)
{
	struct cfg c = {4, 256, 0, 0, 0};
	for (int i = 0; i < n; i++) {
		struct run R = {q, o, n, 0, 0};
		struct fi_sched *s = sched(m, &c, &R);
		memset(&o[i], 0, sizeof o[i]);
		add(s, &q[i]);
		ck_assert(!fi_sched_run(s));
		fi_sched_destroy(s);
		ck_assert(o[i].done);
	}
}

static void same(const struct req *q, const struct out *a, const struct out *b, int n,
		 const char *what)
{
	for (int i = 0; i < n; i++) {
		ck_assert_msg(a[i].n == b[i].n && !memcmp(a[i].tok, b[i].tok, sizeof(uint32_t) * (size_t)a[i].n),
			      "%s: '%s' (%d prompt tokens, %s) got %d tokens, alone %d, or others",
			      what, q[i].id, q[i].n_prompt, q[i].temp > 0 ? "sampled" : "greedy",
			      b[i].n, a[i].n);
		ck_assert_int_eq(a[i].finish, b[i].finish);
	}
}

START_TEST(test_identical_everywhere)
{
	static struct req q[NREQ];
	static struct out alone[NREQ], got[NREQ];
	struct fi_model *m = model(2048);
	struct fi_model *small = model(40); /* 640 tokens: preemption */
	struct fi_sched_stats st;
	uint32_t cached = 0;
	make_reqs(q, NREQ, 7);
	run_alone(m, q, NREQ, alone);
	/* all at once, in one batch as far as the budget goes */
	struct cfg full = {256, 8192, 0, 0, 0};
	st = run_all(m, &full, q, NREQ, got);
	same(q, alone, got, NREQ, "full batch");
	ck_assert_int_eq(st.max_running, 256);
	/* prompts in chunks of at most 7 tokens, 64 tokens a step */
	struct cfg chunked = {32, 64, 7, 0, 0};
	run_all(m, &chunked, q, NREQ, got);
	same(q, alone, got, NREQ, "chunked");
	/* overlapping the events of a step with the next one */
	struct cfg over = {64, 256, 0, 1, 1};
	run_all(m, &over, q, NREQ, got);
	same(q, alone, got, NREQ, "overlap");
	/* a pool of 40 blocks: requests are preempted and recompute */
	struct cfg pre = {64, 512, 0, 0, 1};
	st = run_all(small, &pre, q, NREQ, got);
	same(q, alone, got, NREQ, "preempted");
	ck_assert_uint_gt(st.preemptions, 20);
	int n_pre = 0;
	for (int i = 0; i < NREQ; i++)
		n_pre += got[i].preempted > 0;
	ck_assert_int_gt(n_pre, 10);
	/* the prefix cache: the shared prefixes, then a second run with everything warm */
	struct cfg warm = {64, 512, 0, 0, 1};
	fi_kvcache_clear(fi_model_cache(m));
	run_all(m, &warm, q, NREQ, got);
	same(q, alone, got, NREQ, "prefix cache, cold");
	st = run_all(m, &warm, q, NREQ, got);
	same(q, alone, got, NREQ, "prefix cache, warm");
	for (int i = 0; i < NREQ; i++)
		cached += got[i].cached;
	ck_assert_uint_eq(cached, st.cached_tokens);
	ck_assert_uint_gt(cached, NREQ * 40); /* most prompts are longer than two blocks */
	fi_model_close(small);
	fi_model_close(m);
}
END_TEST

/* 40 requests sharing a 64-token system prompt, added at once: the first computes it; the
 * others wait for its blocks, attach them, and compute their own suffix only. */
static void shared_prompt(int chunk)
{
	static struct req q[40];
	static struct out alone[40], got[40];
	struct fi_model *m = model(512);
	uint64_t seed = 99, suffix = 0;
	uint32_t sys[64];
	for (int i = 0; i < 64; i++)
		sys[i] = rnd(&seed) % 300;
	for (int i = 0; i < 40; i++) {
		memset(&q[i], 0, sizeof q[i]);
		snprintf(q[i].id, sizeof q[i].id, "r%d", i);
		memcpy(q[i].prompt, sys, sizeof sys);
		q[i].n_prompt = 64 + 5 + i % 17;
		for (int j = 64; j < q[i].n_prompt; j++)
			q[i].prompt[j] = rnd(&seed) % 300;
		q[i].max = 8;
		suffix += (uint64_t)(q[i].n_prompt - 64);
	}
	run_alone(m, q, 40, alone);
	struct cfg c = {64, 4096, chunk, 0, 1};
	struct fi_sched_stats st = run_all(m, &c, q, 40, got);
	same(q, alone, got, 40, "shared system prompt");
	/* computed once: 64 + every suffix; 39 x 64 tokens attached */
	ck_assert_uint_eq(st.prompt_tokens, 64 + suffix);
	ck_assert_uint_eq(st.cached_tokens, 39 * 64);
	ck_assert_uint_ge(st.prefix_waits, 39);
	ck_assert_uint_eq(got[0].cached, 0);
	for (int i = 1; i < 40; i++)
		ck_assert_uint_eq(got[i].cached, 64);
	fi_model_close(m);
}

START_TEST(test_shared_prompt_once)
{
	shared_prompt(0);
	shared_prompt(16); /* its prefix over four steps: the others wait all along */
}
END_TEST

/* A conversation: turn 2 is turn 1's prompt, its output and a new message. The blocks of
 * turn 1's prompt and output are reused: only the new part (and the partial block) runs. */
START_TEST(test_next_turn)
{
	static struct req q[2];
	static struct out cold[2], got[2];
	struct fi_model *m = model(512);
	uint64_t seed = 5;
	struct cfg c = {16, 512, 0, 0, 1}, off = {16, 512, 0, 0, 0};
	memset(q, 0, sizeof q);
	strcpy(q[0].id, "r0");
	q[0].n_prompt = 20;
	for (int j = 0; j < 20; j++)
		q[0].prompt[j] = rnd(&seed) % 300;
	q[0].max = 30;
	run_all(m, &c, q, 1, got);
	ck_assert_int_eq(got[0].n, 30);
	strcpy(q[1].id, "r0"); /* the output slot of run_all's one request */
	memcpy(q[1].prompt, q[0].prompt, 20 * sizeof(uint32_t));
	memcpy(q[1].prompt + 20, got[0].tok, 30 * sizeof(uint32_t));
	for (int j = 50; j < 60; j++)
		q[1].prompt[j] = rnd(&seed) % 300;
	q[1].n_prompt = 60;
	q[1].max = 10;
	/* turn 1 left 49 tokens of KV (its last token is never fed): 3 full blocks */
	struct fi_sched_stats st = run_all(m, &c, q + 1, 1, got + 1);
	ck_assert_uint_eq(got[1].cached, 48);
	ck_assert_uint_eq(st.prompt_tokens, 60 - 48);
	fi_kvcache_clear(fi_model_cache(m));
	run_all(m, &off, q + 1, 1, cold + 1);
	same(q + 1, cold + 1, got + 1, 1, "next turn");
	fi_model_close(m);
}
END_TEST

static long maxrss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* 10,000 requests fed as a stream reader feeds them (only while fi_sched_room > 0): the
 * queue never holds more than max_requests, none is refused, every one finishes, and
 * memory stays where it was. */
START_TEST(test_ten_thousand)
{
	enum { N = 10000 };
	static struct out o[N];
	static struct req q1;
	struct run R = {&q1, o, N, 0, 0};
	struct fi_model *m = model(256);
	struct fi_sched_opts op;
	struct fi_sched *s;
	uint64_t seed = 3;
	int next = 0, most = 0;
	long rss0;
	fi_sched_opts_default(&op);
	op.max_batch = 32;
	op.max_requests = 96;
	op.max_step_tokens = 256;
	op.cb = on_event;
	op.cb_user = &R;
	ck_assert(!fi_sched_create(m, &op, &s));
	rss0 = maxrss_kb();
	while (next < N || fi_sched_pending(s)) {
		for (int room = fi_sched_room(s); room > 0 && next < N; room--, next++) {
			struct req q = {.n_prompt = 3 + next % 5, .max = 1 + next % 3};
			snprintf(q.id, sizeof q.id, "r%d", next);
			for (int j = 0; j < q.n_prompt; j++)
				q.prompt[j] = rnd(&seed) % 300;
			add(s, &q);
		}
		if (fi_sched_pending(s) > most)
			most = fi_sched_pending(s);
		ck_assert(!fi_sched_step(s));
	}
	fi_sched_destroy(s);
	ck_assert_int_eq(R.n_done, N);
	ck_assert_int_eq(most, 96);
	for (int i = 0; i < N; i++)
		ck_assert(o[i].done && o[i].n >= 1 && o[i].n <= 1 + i % 3);
#ifndef __SANITIZE_ADDRESS__ /* AddressSanitizer keeps freed memory in quarantine */
	ck_assert_msg(maxrss_kb() - rss0 < 16 * 1024, "memory grew by %ld kB", maxrss_kb() - rss0);
#else
	(void)rss0;
#endif
	fi_model_close(m);
}
END_TEST

/* Log-probabilities: of the chosen token and the top 5, against the softmax of the logits
 * the model gives for the same prompt; greedy picks the first of the top. */
START_TEST(test_logprobs)
{
	static struct req q[2];
	static struct out got[2];
	struct fi_model *m = model(512);
	struct cfg c = {8, 256, 0, 0, 1};
	uint64_t seed = 11;
	float *lg = malloc(sizeof(float) * 300);
	int32_t seq, toks[MAXP];
	int nr;
	memset(q, 0, sizeof q);
	for (int k = 0; k < 2; k++) {
		snprintf(q[k].id, sizeof q[k].id, "r%d", k);
		q[k].n_prompt = 24;
		for (int j = 0; j < 24; j++)
			q[k].prompt[j] = rnd(&seed) % 300;
		q[k].max = 6;
		q[k].logprobs = 1;
		q[k].top = 5;
	}
	q[1].temp = 0.9f;
	q[1].seed = 4;
	run_all(m, &c, q, 2, got);
	for (int k = 0; k < 2; k++) {
		double mx, sum = 0;
		/* the first token: the logits of the prompt's last position */
		for (int j = 0; j < 24; j++)
			toks[j] = (int32_t)q[k].prompt[j];
		fi_kvcache_clear(fi_model_cache(m));
		ck_assert(!fi_model_seq_new(m, &seq));
		struct fi_batch b = {24, toks, NULL, NULL};
		int32_t sq[MAXP];
		for (int j = 0; j < 24; j++)
			sq[j] = seq;
		b.seq = sq;
		ck_assert(!fi_model_forward(m, &b, lg, &nr));
		fi_model_seq_free(m, seq);
		mx = lg[0];
		for (int i = 1; i < 300; i++)
			mx = lg[i] > mx ? lg[i] : mx;
		for (int i = 0; i < 300; i++)
			sum += exp(lg[i] - mx);
		ck_assert(fabs(got[k].lp[0] - (lg[got[k].tok[0]] - mx - log(sum))) < 1e-4);
		for (int t = 0; t < got[k].n; t++) {
			ck_assert(got[k].lp[t] <= 0);
			for (int i = 1; i < 5; i++)
				ck_assert(got[k].top_lp[t][i] <= got[k].top_lp[t][i - 1]);
			if (!k) {
				ck_assert_uint_eq(got[k].tok[t], got[k].top_ids[t][0]);
				ck_assert(got[k].lp[t] == got[k].top_lp[t][0]);
			}
		}
		for (int i = 0; i < 5; i++)
			ck_assert(fabs(got[k].top_lp[0][i] - (lg[got[k].top_ids[0][i]] - mx - log(sum))) < 1e-4);
	}
	free(lg);
	fi_model_close(m);
}
END_TEST

/* ignore_eos: with the fixture's config saying 227 ends generation (its greedy output for
 * its own prompt is 216 227 ...), the request stops after one token; with ignore_eos it runs
 * to max_tokens, 227 second, and its own stop ids still end it. */
START_TEST(test_ignore_eos)
{
	char dir[] = "/tmp/fi-eos-XXXXXX", path[512], src[512];
	static struct req q[3];
	static struct out got[3];
	struct fi_model *m;
	struct cfg c = {8, 256, 0, 0, 1};
	json_error_t je;
	json_t *cfg, *ref;
	ck_assert(mkdtemp(dir));
	snprintf(src, sizeof src, "%s/config.json", fi_test_fixture("hf/llama"));
	ck_assert((cfg = json_load_file(src, 0, &je)));
	json_object_set_new(cfg, "eos_token_id", json_integer(227));
	snprintf(path, sizeof path, "%s/config.json", dir);
	ck_assert(!json_dump_file(cfg, path, 0));
	json_decref(cfg);
	snprintf(src, sizeof src, "%s/model.safetensors", fi_test_fixture("hf/llama"));
	if (src[0] != '/') { /* relative to the repository root, the working directory */
		char cwd[256];
		ck_assert(getcwd(cwd, sizeof cwd));
		snprintf(path, sizeof path, "%s/%s", cwd, src);
		snprintf(src, sizeof src, "%s", path);
	}
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	ck_assert(!symlink(src, path));
	ck_assert_msg(!fi_model_load_hf(dir, be, &m), "%s", fi_errmsg());
	ck_assert(!fi_model_cache_init(m, 256, 16));
	snprintf(src, sizeof src, "%s/ref.json", fi_test_fixture("hf/llama"));
	ck_assert((ref = json_load_file(src, 0, &je)));
	memset(q, 0, sizeof q);
	for (int k = 0; k < 3; k++) {
		json_t *p = json_object_get(ref, "prompt");
		snprintf(q[k].id, sizeof q[k].id, "r%d", k);
		q[k].n_prompt = (int)json_array_size(p);
		for (int j = 0; j < q[k].n_prompt; j++)
			q[k].prompt[j] = (uint32_t)json_integer_value(json_array_get(p, (size_t)j));
		q[k].max = 20;
		q[k].ignore_eos = k > 0;
	}
	q[2].stop_id = 227;
	json_decref(ref);
	run_all(m, &c, q, 3, got);
	ck_assert_int_eq(got[0].finish, FI_FINISH_STOP);
	ck_assert_int_eq(got[0].n, 1);
	ck_assert_uint_eq(got[0].tok[0], 216);
	ck_assert_int_eq(got[1].finish, FI_FINISH_LENGTH);
	ck_assert_int_eq(got[1].n, 20);
	ck_assert_uint_eq(got[1].tok[1], 227);
	ck_assert_int_eq(got[2].finish, FI_FINISH_STOP);
	ck_assert_int_eq(got[2].n, 1);
	fi_model_close(m);
	snprintf(path, sizeof path, "%s/config.json", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	unlink(path);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sched_serving");
	TCase *tc = tcase_create("sched_serving");
	int rc;
	if (fi_backend_cpu_create(2, &be)) {
		fprintf(stderr, "test_sched_serving: %s\n", fi_errmsg());
		return 1;
	}
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_identical_everywhere);
	tcase_add_test(tc, test_shared_prompt_once);
	tcase_add_test(tc, test_next_turn);
	tcase_add_test(tc, test_ten_thousand);
	tcase_add_test(tc, test_logprobs);
	tcase_add_test(tc, test_ignore_eos);
	suite_add_tcase(s, tc);
	rc = fi_test_run(s);
	fi_backend_destroy(be);
	return rc;
}
