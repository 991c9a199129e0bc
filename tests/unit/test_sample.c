/* Sampling: HF logits-processor parity (tests/fixtures/hf/sampling.json), greedy, the
 * seeded RNG, reproducibility and the distribution of draws; rows sampled elsewhere
 * (fi_sampler_row_hist + fi_sample_pick, the reference of the backends' sample op) against
 * fi_sampler_next, penalties included; raw log-probabilities and their alternatives against
 * a long-double evaluation; the CPU backend's sample op. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/sample.h"
#include "util.h"

START_TEST(test_rng)
{
	/* xoshiro256** seeded by splitmix64(42), from the reference algorithms */
	static const uint64_t want[4] = {0x15780b2e0c2ec716ull, 0x6104d9866d113a7eull,
					 0xae17533239e499a1ull, 0xecb8ad4703b360a1ull};
	struct fi_rng r;
	fi_rng_seed(&r, 42);
	for (int i = 0; i < 4; i++)
		ck_assert_uint_eq(fi_rng_next(&r), want[i]);
	for (int i = 0; i < 1000; i++) {
		double u = fi_rng_double(&r);
		ck_assert(u >= 0 && u < 1);
	}
}
END_TEST

START_TEST(test_hf_parity)
{
	json_error_t je;
	char p[512];
	json_t *o, *cases;
	snprintf(p, sizeof p, "%s", fi_test_fixture("hf/sampling.json"));
	o = json_load_file(p, 0, &je);
	ck_assert_msg(o, "%s: %s", p, je.text);
	cases = json_object_get(o, "cases");
	ck_assert_int_ge(json_array_size(cases), 7);
	for (size_t c = 0; c < json_array_size(cases); c++) {
		json_t *k = json_array_get(cases, c), *pa = json_object_get(k, "params");
		json_t *lg = json_object_get(k, "logits"), *hi = json_object_get(k, "history");
		json_t *ids = json_object_get(k, "ids"), *pr = json_object_get(k, "probs");
		int V = (int)json_array_size(lg), nh = (int)json_array_size(hi), n;
		float logits[64];
		int32_t hist[64], got[64];
		double prob[64];
		struct fi_sample_params sp;
		struct fi_sampler s;
		fi_sample_defaults(&sp);
		sp.temperature = (float)json_number_value(json_object_get(pa, "temperature"));
		sp.top_k = (int)json_integer_value(json_object_get(pa, "top_k"));
		sp.top_p = (float)json_number_value(json_object_get(pa, "top_p"));
		sp.min_p = (float)json_number_value(json_object_get(pa, "min_p"));
		sp.repeat_penalty = (float)json_number_value(json_object_get(pa, "repeat_penalty"));
		for (int i = 0; i < V; i++)
			logits[i] = (float)json_number_value(json_array_get(lg, (size_t)i));
		for (int i = 0; i < nh; i++)
			hist[i] = (int32_t)json_integer_value(json_array_get(hi, (size_t)i));
		ck_assert_int_eq(fi_sampler_init(&s, &sp, V), FI_OK);
		n = fi_sampler_dist(&s, logits, hist, nh, got, prob);
		ck_assert_msg(n == (int)json_array_size(ids), "case %zu: %d survivors, HF %zu", c, n,
			      json_array_size(ids));
		for (int i = 0; i < n; i++) {
			ck_assert_int_eq(got[i], json_integer_value(json_array_get(ids, (size_t)i)));
			ck_assert_msg(fabs(prob[i] - json_number_value(json_array_get(pr, (size_t)i))) <
					      1e-5,
				      "case %zu rank %d: %g", c, i, prob[i]);
		}
		fi_sampler_free(&s);
	}
	json_decref(o);
}
END_TEST

START_TEST(test_greedy)
{
	float l[6] = {1, 5, -3, 5, 4.9f, 0};
	int32_t hist[2] = {1, 2};
	struct fi_sample_params p;
	struct fi_sampler s;
	fi_sample_defaults(&p);
	p.temperature = 0;
	ck_assert_int_eq(fi_sampler_init(&s, &p, 6), FI_OK);
	ck_assert_int_eq(fi_sampler_next(&s, l, NULL, 0), 1); /* tie: lowest id */
	fi_sampler_free(&s);
	p.repeat_penalty = 1.1f; /* 5 / 1.1 = 4.55 for token 1 (in the history) */
	ck_assert_int_eq(fi_sampler_init(&s, &p, 6), FI_OK);
	ck_assert_int_eq(fi_sampler_next(&s, l, hist, 2), 3);
	p.repeat_last_n = 1; /* only token 2 is penalised now */
	fi_sampler_free(&s);
	ck_assert_int_eq(fi_sampler_init(&s, &p, 6), FI_OK);
	ck_assert_int_eq(fi_sampler_next(&s, l, hist, 2), 1);
	fi_sampler_free(&s);
	/* the logits were not touched */
	ck_assert(l[1] == 5 && l[2] == -3);
}
END_TEST

static void draw(uint64_t seed, int32_t *out, int n)
{
	float l[50];
	struct fi_sample_params p;
	struct fi_sampler s;
	fi_sample_defaults(&p);
	p.seed = seed;
	p.top_k = 30;
	p.top_p = 0.95f;
	p.min_p = 0.01f;
	p.temperature = 0.8f;
	p.repeat_penalty = 1.2f;
	ck_assert_int_eq(fi_sampler_init(&s, &p, 50), FI_OK);
	for (int i = 0; i < 50; i++)
		l[i] = (float)sin(i * 1.7) * 3;
	for (int i = 0; i < n; i++)
		out[i] = fi_sampler_next(&s, l, out, i);
	fi_sampler_free(&s);
}

START_TEST(test_reproducible)
{
	int32_t a[200], b[200], c[200];
	int same = 0;
	draw(1234, a, 200);
	draw(1234, b, 200);
	draw(1235, c, 200);
	ck_assert_mem_eq(a, b, sizeof a);
	for (int i = 0; i < 200; i++)
		same += a[i] == c[i];
	ck_assert_int_lt(same, 150);
}
END_TEST

/* Draw frequencies follow the softmax: p = softmax(log(0.1, 0.2, 0.3, 0.4)). */
START_TEST(test_frequencies)
{
	float l[4] = {logf(0.1f), logf(0.2f), logf(0.3f), logf(0.4f)};
	int cnt[4] = {0}, N = 40000;
	struct fi_sample_params p;
	struct fi_sampler s;
	fi_sample_defaults(&p);
	p.seed = 99;
	ck_assert_int_eq(fi_sampler_init(&s, &p, 4), FI_OK);
	for (int i = 0; i < N; i++)
		cnt[fi_sampler_next(&s, l, NULL, 0)]++;
	for (int i = 0; i < 4; i++)
		ck_assert_msg(fabs(cnt[i] / (double)N - 0.1 * (i + 1)) < 0.01, "token %d: %d", i,
			      cnt[i]);
	fi_sampler_free(&s);
}
END_TEST

START_TEST(test_params)
{
	struct fi_sample_params p;
	struct fi_sampler s;
	fi_sample_defaults(&p);
	ck_assert(p.temperature == 1.0f && p.top_p == 1.0f && p.repeat_penalty == 1.0f);
	p.n_stop = 2;
	p.stop[0] = 2;
	p.stop[1] = 7;
	ck_assert(fi_sample_is_stop(&p, 7));
	ck_assert(!fi_sample_is_stop(&p, 3));
	p.repeat_penalty = 0;
	ck_assert_int_eq(fi_sampler_init(&s, &p, 10), FI_EINVAL);
	p.repeat_penalty = 1;
	p.top_p = NAN;
	ck_assert_int_eq(fi_sampler_init(&s, &p, 10), FI_EINVAL);
	p.top_p = 1;
	ck_assert_int_eq(fi_sampler_init(&s, &p, 0), FI_EINVAL);
}
END_TEST

static uint64_t xs(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Logits of one step: uniform in [-a, a], some bf16-rounded (exact ties), and the last few
 * history tokens pushed up so that a penalty changes the outcome. */
static void step_logits(float *l, int V, const int32_t *hist, int n_hist, uint64_t *sd, int k)
{
	float a = (float[]){2, 8, 30}[k % 3];
	for (int i = 0; i < V; i++) {
		l[i] = (float)((xs(sd) >> 11) * 0x1.0p-53 * 2 - 1) * a;
		if (k % 2)
			l[i] = fi_bf16_to_f32(fi_f32_to_bf16(l[i]));
	}
	for (int i = n_hist - 1; i >= 0 && i >= n_hist - 6; i--)
		if (hist[i] >= 0 && hist[i] < V)
			l[hist[i]] = (i % 2 ? -1.f : 1.f) * (a + 1);
}

/* A request's tokens drawn by fi_sampler_next and by rows (fi_sampler_row_hist,
 * fi_sample_pick, fi_sampler_commit) from the same seed: equal, step after step, with the
 * RNGs in the same state at the end. */
START_TEST(test_pick_matches_next)
{
	static const struct {
		float temp, top_p, min_p, pen;
		int top_k, last_n;
	} ps[] = {
		{0, 1, 0, 1.3f, 0, 0},     {0, 1, 0, 1.1f, 0, 4},      {0.8f, 0.9f, 0, 1.2f, 0, 0},
		{1, 1, 0, 1.5f, 40, 16},   {0.7f, 0.95f, 0.05f, 0.8f, 50, 0}, {1.3f, 1, 0.1f, 1.1f, 0, 3},
		{1, 1, 0, 1, 0, 0},        {0.6f, 0.5f, 0, 1, 0, 0},    {2, 0.8f, 0.2f, 1.05f, 1000, 64},
		{1, 0.99f, 0, 2, 1, 0},
	};
	static const int vs[] = {7, 1000, 5003};
	uint64_t sd = 77;
	long differ_from_plain = 0;
	for (int vi = 0; vi < 3; vi++) {
		int V = vs[vi], steps = 60;
		float *l = malloc(sizeof(float) * (size_t)V);
		int32_t hist[128], win[128];
		struct fi_sample_work w;
		ck_assert_int_eq(fi_sample_work_init(&w, V), FI_OK);
		for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++) {
			struct fi_sample_params p;
			struct fi_sampler a, b;
			int n_hist = 5;
			fi_sample_defaults(&p);
			p.temperature = ps[pi].temp;
			p.top_p = ps[pi].top_p;
			p.min_p = ps[pi].min_p;
			p.repeat_penalty = ps[pi].pen;
			p.top_k = ps[pi].top_k;
			p.repeat_last_n = ps[pi].last_n;
			p.seed = xs(&sd);
			ck_assert_int_eq(fi_sampler_init(&a, &p, V), FI_OK);
			ck_assert_int_eq(fi_sampler_init(&b, &p, V), FI_OK);
			for (int i = 0; i < n_hist; i++)
				hist[i] = (int32_t)(xs(&sd) % (uint64_t)V);
			hist[1] = -3; /* outside the vocabulary: skipped by both */
			for (int st = 0; st < steps; st++) {
				struct fi_sample_row r;
				size_t n_win = 3; /* the window lands after what is there */
				int32_t kept, ta, tb;
				step_logits(l, V, hist, n_hist, &sd, st);
				ta = fi_sampler_next(&a, l, hist, n_hist);
				fi_sampler_row_hist(&b, hist, n_hist, &r, win, &n_win);
				ck_assert_int_eq(r.hist_off, 3);
				ck_assert_int_eq(r.penalty != 1.0f ? r.n_hist : 0, (int)n_win - 3);
				ck_assert(ps[pi].pen == 1.0f || r.n_hist ==
					  (ps[pi].last_n > 0 && n_hist > ps[pi].last_n ? ps[pi].last_n : n_hist));
				tb = fi_sample_pick(&r, l, win + r.hist_off, &w, &kept);
				fi_sampler_commit(&b, kept);
				ck_assert_msg(ta == tb, "V %d set %zu step %d: next %d, pick %d", V, pi, st,
					      ta, tb);
				if (ps[pi].pen != 1.0f) { /* the same row without its penalty */
					struct fi_sample_row q = r;
					int32_t k2;
					q.penalty = 1.0f;
					differ_from_plain += fi_sample_pick(&q, l, NULL, &w, &k2) != tb;
				}
				if (n_hist < 128)
					hist[n_hist++] = ta;
			}
			ck_assert_mem_eq(&a.rng, &b.rng, sizeof a.rng);
			fi_sampler_free(&a);
			fi_sampler_free(&b);
		}
		fi_sample_work_free(&w);
		free(l);
	}
	/* the penalty rows are not plain rows in disguise */
	ck_assert_int_gt(differ_from_plain, 50);
}
END_TEST

/* fi_sample_logprobs against long double: log p within 1e-6, the alternatives the best n in
 * (logit desc, id asc), NaN never among them, -1 past the last finite one. */
START_TEST(test_logprobs)
{
	static const int vs[] = {1, 6, 1000, 32000};
	uint64_t sd = 5;
	for (int vi = 0; vi < 4; vi++) {
		int V = vs[vi];
		float *l = malloc(sizeof(float) * (size_t)V);
		for (int k = 0; k < 6; k++) {
			struct fi_sample_top top[FI_SAMPLE_MAX_TOP + 1];
			long double M = -INFINITY, Z = 0;
			int nt = (int[]){0, 1, 5, 20, 20, 3}[k], n_ok = 0;
			float lp;
			for (int i = 0; i < V; i++) {
				l[i] = (float)((xs(&sd) >> 11) * 0x1.0p-53 * 2 - 1) * 12;
				if (k >= 3)
					l[i] = fi_bf16_to_f32(fi_f32_to_bf16(l[i] / 8)); /* many ties */
				if (k == 5 && i % 3)
					l[i] = NAN;
			}
			for (int i = 0; i < V; i++)
				if (!isnan(l[i]) && l[i] > M)
					M = l[i];
			for (int i = 0; i < V; i++)
				if (!isnan(l[i])) {
					Z += expl(l[i] - M);
					n_ok++;
				}
			int32_t tok = (int32_t)(xs(&sd) % (uint64_t)V);
			if (isnan(l[tok]))
				tok = 0;
			top[nt].id = 12345; /* must stay */
			fi_sample_logprobs(l, V, tok, nt, &lp, top);
			ck_assert_int_eq(top[nt].id, 12345);
			ck_assert_msg(fabsl(lp - (l[tok] - M - logl(Z))) < 1e-6, "V %d: %g", V, lp);
			for (int j = 0; j < nt; j++) {
				if (j >= n_ok) {
					ck_assert_int_eq(top[j].id, -1);
					continue;
				}
				int id = top[j].id, better = 0;
				ck_assert(id >= 0 && id < V && !isnan(l[id]));
				ck_assert(fabsl(top[j].logprob - (l[id] - M - logl(Z))) < 1e-6);
				/* exactly j tokens come before it in the order */
				for (int i = 0; i < V; i++)
					better += !isnan(l[i]) && (l[i] > l[id] || (l[i] == l[id] && i < id));
				ck_assert_msg(better == j, "V %d k %d: rank %d holds a token of rank %d", V, k,
					      j, better);
			}
		}
		free(l);
	}
	{ /* out of range token: NaN */
		float l[3] = {1, 2, 3}, lp;
		fi_sample_logprobs(l, 3, 3, 0, &lp, NULL);
		ck_assert(isnan(lp));
	}
}
END_TEST

/* The CPU backend's sample op: rows in parallel through the pool, each as fi_sample_pick
 * and fi_sample_logprobs give it; bad requests refused. */
START_TEST(test_cpu_op)
{
	struct fi_backend *be;
	int n = 37, V = 3001;
	float *l = malloc(sizeof(float) * (size_t)n * V), lp[37];
	struct fi_sample_row rows[37];
	int32_t win[37 * 40], out[74], hist[40];
	struct fi_sample_top top[37 * 4];
	size_t n_win = 0;
	uint64_t sd = 11;
	struct fi_sample_work w;
	ck_assert_int_eq(fi_backend_cpu_create(4, &be), FI_OK);
	ck_assert_int_eq(fi_sample_work_init(&w, V), FI_OK);
	for (int r = 0; r < n; r++) {
		struct fi_sample_params p;
		struct fi_sampler s;
		fi_sample_defaults(&p);
		p.temperature = r % 4 ? 0.3f * (float)(r % 4) : 0;
		p.repeat_penalty = r % 3 ? 1.3f : 1;
		p.top_k = r % 5 == 1 ? 20 : 0;
		p.seed = (uint64_t)r;
		for (int i = 0; i < 40; i++)
			hist[i] = (int32_t)(xs(&sd) % (uint64_t)V);
		step_logits(l + (size_t)r * V, V, hist, 40, &sd, r);
		ck_assert_int_eq(fi_sampler_init(&s, &p, V), FI_OK);
		fi_sampler_row_hist(&s, hist, 40, &rows[r], win, &n_win);
		rows[r].n_logprobs = r % 6 == 0 ? -1 : r % 5;
		fi_sampler_free(&s);
	}
	struct fi_sample_args a = {.n = n, .V = V, .logits_d = l, .rows_d = rows, .hist_d = win,
				   .max_top = 4, .out_d = out, .logprob_d = lp, .top_d = top};
	ck_assert_int_eq(be->ops->sample(be, &a), FI_OK);
	for (int r = 0; r < n; r++) {
		int32_t kept;
		int32_t t = fi_sample_pick(&rows[r], l + (size_t)r * V, win + rows[r].hist_off, &w,
					   &kept);
		struct fi_sample_top rt[4];
		float rlp;
		ck_assert_int_eq(out[r], t);
		ck_assert_int_eq(out[n + r], kept);
		if (rows[r].n_logprobs < 0)
			continue;
		fi_sample_logprobs(l + (size_t)r * V, V, t, rows[r].n_logprobs, &rlp, rt);
		ck_assert(lp[r] == rlp);
		for (int k = 0; k < rows[r].n_logprobs; k++)
			ck_assert(top[r * 4 + k].id == rt[k].id && top[r * 4 + k].logprob == rt[k].logprob);
	}
	rows[3].n_logprobs = 5; /* more than max_top */
	ck_assert_int_eq(be->ops->sample(be, &a), FI_EINVAL);
	rows[3].n_logprobs = 1;
	a.hist_d = NULL; /* penalty rows without their windows */
	ck_assert_int_eq(be->ops->sample(be, &a), FI_EINVAL);
	fi_sample_work_free(&w);
	fi_backend_destroy(be);
	free(l);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sample");
	TCase *tc = tcase_create("sample");
	tcase_add_test(tc, test_rng);
	tcase_add_test(tc, test_hf_parity);
	tcase_add_test(tc, test_greedy);
	tcase_add_test(tc, test_reproducible);
	tcase_add_test(tc, test_frequencies);
	tcase_add_test(tc, test_params);
	tcase_add_test(tc, test_pick_matches_next);
	tcase_add_test(tc, test_logprobs);
	tcase_add_test(tc, test_cpu_op);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
