/* Sampled steps through the model (fi_model_forward_sample_io on the CPU backend's sample
 * op) against the host sampler over fi_model_forward's logits: three sequences with
 * different settings (penalty windows, greedy with a penalty, top-p, log-probabilities and
 * alternatives), a mixed prefill batch then decode steps; the same tokens every step and the
 * log-probabilities fi_sample_logprobs gives. And a backend without the op: every row comes
 * back as logits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model.h"
#include "util.h"

#define NS 3
#define STEPS 24

static void params(int k, struct fi_sample_params *p)
{
	fi_sample_defaults(p);
	p->seed = 100 + (uint64_t)k;
	/* strong penalties over the tiny model's peaked logits (a spread of ~45), so that they
	 * change tokens (counted below) */
	if (k == 0) {
		p->temperature = 2.5f;
		p->top_p = 0.98f;
		p->repeat_penalty = 4.0f;
		p->repeat_last_n = 12;
	} else if (k == 1) {
		p->temperature = 0;
		p->repeat_penalty = 50.0f;
	} else {
		p->temperature = 1.1f;
		p->top_k = 50;
	}
}

static struct fi_sample_work work;
static int pen_mattered;

static void run(struct fi_backend *be, int with_op)
{
	struct fi_model *ma, *mb;
	const struct fi_config *c;
	struct fi_sampler sa[NS], sb[NS];
	int32_t hist[NS][64], n_hist[NS], seq_a[NS], seq_b[NS];
	int V, step;
	ck_assert_msg(!fi_model_load_hf(fi_test_fixture("hf/llama"), be, &ma), "%s", fi_errmsg());
	ck_assert_msg(!fi_model_load_hf(fi_test_fixture("hf/llama"), be, &mb), "%s", fi_errmsg());
	c = fi_model_config(ma);
	V = c->vocab;
	float *la = malloc(sizeof(float) * NS * (size_t)V), *lb = malloc(sizeof(float) * NS * (size_t)V);
	for (int k = 0; k < NS; k++) {
		struct fi_sample_params p;
		params(k, &p);
		ck_assert_int_eq(fi_sampler_init(&sa[k], &p, V), FI_OK);
		ck_assert_int_eq(fi_sampler_init(&sb[k], &p, V), FI_OK);
		ck_assert_int_eq(fi_model_seq_new(ma, &seq_a[k]), FI_OK);
		ck_assert_int_eq(fi_model_seq_new(mb, &seq_b[k]), FI_OK);
		n_hist[k] = 3 + 2 * k; /* prompts of 3, 5, 7 tokens */
		for (int i = 0; i < n_hist[k]; i++)
			hist[k][i] = (int32_t)((i * 37 + k * 11 + 1) % V);
	}
	for (step = 0; step < STEPS; step++) {
		int32_t tok[32], sq_a[32], sq_b[32], win[NS * 64], out_tok[NS], kept[NS];
		struct fi_sample_row rows[NS];
		struct fi_sample_top top[NS * FI_SAMPLE_MAX_TOP];
		float lp[NS];
		size_t n_win = 0;
		int T = 0, na, nb;
		for (int k = 0; k < NS; k++) { /* first the prompts, then one token each */
			int from = step ? n_hist[k] - 1 : 0;
			for (int i = from; i < n_hist[k]; i++) {
				tok[T] = hist[k][i];
				sq_a[T] = seq_a[k];
				sq_b[T++] = seq_b[k];
			}
			fi_sampler_row_hist(&sa[k], hist[k], n_hist[k], &rows[k], win, &n_win);
			rows[k].n_logprobs = k == 2 ? -1 : k == 0 ? 3 : 0;
		}
		struct fi_batch ba = {T, tok, sq_a, NULL}, bb = {T, tok, sq_b, NULL};
		struct fi_sample_io io = {.rows = rows, .win = win, .n_win = n_win, .tokens = out_tok,
					  .n_kept = kept, .logprob = lp, .top = top, .logits = la};
		ck_assert_msg(!fi_model_forward_sample_io(ma, &ba, &io, &na), "%s", fi_errmsg());
		ck_assert_msg(!fi_model_forward(mb, &bb, lb, &nb), "%s", fi_errmsg());
		ck_assert_int_eq(na, NS);
		ck_assert_int_eq(nb, NS);
		for (int k = 0; k < NS; k++) {
			const float *row = lb + (size_t)k * V;
			int32_t t = fi_sampler_next(&sb[k], row, hist[k], n_hist[k]), ta = out_tok[k];
			if (!with_op) { /* left to the host: the row's logits came back */
				ck_assert_int_eq(ta, -1);
				for (int i = 0; i < V; i++)
					ck_assert(la[(size_t)k * V + i] == row[i]);
				ta = fi_sampler_next(&sa[k], la + (size_t)k * V, hist[k], n_hist[k]);
			} else {
				fi_sampler_commit(&sa[k], kept[k]);
			}
			ck_assert_msg(ta == t, "step %d seq %d: %d, host %d", step, k, ta, t);
			if (rows[k].penalty != 1.0f) { /* would the row without its penalty differ? */
				struct fi_sample_row q = rows[k];
				int32_t kq;
				q.penalty = 1.0f;
				pen_mattered += fi_sample_pick(&q, row, NULL, &work, &kq) != t;
			}
			if (with_op && rows[k].n_logprobs >= 0) {
				struct fi_sample_top rt[3];
				float rlp;
				fi_sample_logprobs(row, V, t, rows[k].n_logprobs, &rlp, rt);
				ck_assert_msg(fabsf(lp[k] - rlp) <= 1e-5f, "step %d seq %d: logprob %g, %g",
					      step, k, lp[k], rlp);
				for (int j = 0; j < rows[k].n_logprobs; j++)
					ck_assert(top[k * FI_SAMPLE_MAX_TOP + j].id == rt[j].id);
			}
			hist[k][n_hist[k]++] = t;
		}
	}
	for (int k = 0; k < NS; k++) {
		ck_assert_mem_eq(&sa[k].rng, &sb[k].rng, sizeof sa[k].rng);
		fi_sampler_free(&sa[k]);
		fi_sampler_free(&sb[k]);
	}
	free(la);
	free(lb);
	fi_model_close(ma);
	fi_model_close(mb);
}

START_TEST(test_sample_op)
{
	struct fi_backend *be;
	ck_assert_int_eq(fi_backend_cpu_create(2, &be), FI_OK);
	ck_assert(be->ops->sample != NULL);
	ck_assert_int_eq(fi_sample_work_init(&work, 300), FI_OK);
	pen_mattered = 0;
	run(be, 1);
	printf("penalties changed %d of %d tokens\n", pen_mattered, 2 * STEPS);
	ck_assert_int_ge(pen_mattered, 4);
	fi_sample_work_free(&work);
	fi_backend_destroy(be);
}
END_TEST

START_TEST(test_without_op)
{
	struct fi_backend *be;
	struct fi_backend_ops ops;
	const struct fi_backend_ops *keep;
	ck_assert_int_eq(fi_backend_cpu_create(2, &be), FI_OK);
	keep = be->ops;
	ops = *keep;
	ops.sample = NULL;
	be->ops = &ops;
	ck_assert_int_eq(fi_sample_work_init(&work, 300), FI_OK);
	run(be, 0);
	fi_sample_work_free(&work);
	be->ops = keep;
	fi_backend_destroy(be);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("model_sample");
	TCase *tc = tcase_create("model_sample");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_sample_op);
	tcase_add_test(tc, test_without_op);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
