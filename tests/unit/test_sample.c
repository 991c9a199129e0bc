/* Sampling: HF logits-processor parity (tests/fixtures/hf/sampling.json), greedy, the
 * seeded RNG, reproducibility and the distribution of draws. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
