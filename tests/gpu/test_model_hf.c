/* The whole model on the CUDA backend against Hugging Face transformers.
 *
 * Each reference directory holds a checkpoint (config.json, *.safetensors) and ref.json /
 * logits.bin from tools/hf_gpu_ref.py or tools/make_hf_fixtures.py: the prompt, HF's greedy
 * continuation and the logits of every position of prompt + continuation (one full forward,
 * teacher forcing). Here:
 *   teacher forcing  the prompt in one batch (prefill kernels), then the continuation one
 *                    token per call (decode kernels); every row's logits against HF's:
 *                    relative error ||g - r|| / ||r|| and top-1 agreement;
 *   greedy           argmax generation from the prompt; the length of the common prefix
 *                    with HF's continuation;
 *   batched          5 copies of the prompt in one prefill, then teacher-forced decode steps
 *                    of the 5 together (a CUDA graph padded to 8 rows: first step eager,
 *                    second captured, then replayed), logits and device argmax from one
 *                    call: every row within the worst-row limit against HF, every token
 *                    the argmax of its row.
 * Directories: the committed fixtures (tests/fixtures/hf/NAME) and those in $FI_HF_REFS
 * (colon-separated). Limits (bf16 weights and activations vs an f32 reference):
 * mean row error <= 3e-2, worst row <= 8e-2, top-1 agreement >= 95%, greedy agrees for
 * at least half the continuation (a near-tie may flip one token; after it, texts differ).
 * Where ref.json records HF's own bf16 forward against the same reference (random models
 * have flat logits, so bf16 rounding alone flips argmaxes; hf_gpu_ref.py records it, and
 * make_hf_fixtures.py --bf16 for the committed fixtures), the limits become: errors
 * <= 1.5x HF bf16's (or the above, if larger), top-1 within max(2, 2%) of HF bf16's, greedy
 * prefix >= half of HF bf16's. A greedy run that leaves HF's at a near-tie (our token's
 * reference logit within 2% of the best) passes: the same function, a different rounding.
 * Rows at a router near-tie of a mixture of experts (ref.json's router_gap below
 * router_bf16_err, from hf_gpu_ref.py) are kept out of the worst-row limits (see run_dir). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "backend/backend.h"
#include "base/err.h"
#include "base/log.h"
#include "model/model.h"

static int argmax(const float *x, int n)
{
	int b = 0;
	for (int i = 1; i < n; i++)
		if (x[i] > x[b])
			b = i;
	return b;
}

static int load_ids(json_t *a, int32_t **out)
{
	int n = (int)json_array_size(a);
	*out = malloc(sizeof(int32_t) * (n ? n : 1));
	for (int i = 0; i < n; i++)
		(*out)[i] = (int32_t)json_integer_value(json_array_get(a, i));
	return n;
}

/* Sequences of the batched check: a decode batch of NB pads to a graph bucket of 8. */
#define NB 5

static double row_err(const float *g, const float *w, int V)
{
	double num = 0, den = 0;
	for (int v = 0; v < V; v++) {
		double d = (double)g[v] - w[v];
		num += d * d;
		den += (double)w[v] * w[v];
	}
	double rel = sqrt(num / (den > 0 ? den : 1));
	return isnan(rel) ? INFINITY : rel;
}

/* NB copies of the prompt in one prefill, then teacher-forced decode steps of all NB at
 * once (graph path with padding: eager, capture, replays), logits and device argmax from
 * the same call. Every row must meet the single-sequence bound against HF; every token
 * must be the argmax of its row. Returns the worst row error (router near-ties apart),
 * or -1 on a failure. */
static double batched(struct fi_model *m, const int32_t *prompt, int np, const int32_t *greedy,
		      int ng, const float *want, const int8_t *tie, int V, int *tok_bad)
{
	int sq[NB], steps = ng < 6 ? ng : 6;
	int32_t *tok = malloc(sizeof(int32_t) * NB * np), *sid = malloc(sizeof(int32_t) * NB * np);
	int32_t am[NB];
	float *lg = malloc(sizeof(float) * NB * (size_t)V);
	double worst = 0;
	*tok_bad = 0;
	for (int k = 0; k < NB; k++)
		if (fi_model_seq_new(m, &sq[k]))
			return -1;
	for (int k = 0; k < NB; k++)
		for (int i = 0; i < np; i++)
			tok[k * np + i] = prompt[i], sid[k * np + i] = sq[k];
	struct fi_batch b = {.n_tokens = NB * np, .tokens = tok, .seq = sid};
	if (fi_model_forward_ex(m, &b, lg, am, NULL))
		return -1;
	for (int i = -1; i < steps; i++) {
		if (i >= 0) {
			for (int k = 0; k < NB; k++)
				tok[k] = greedy[i], sid[k] = sq[k];
			struct fi_batch d = {.n_tokens = NB, .tokens = tok, .seq = sid};
			if (fi_model_forward_ex(m, &d, lg, am, NULL))
				return -1;
		}
		for (int k = 0; k < NB; k++) {
			double e = row_err(lg + (size_t)k * V, want + (size_t)(np + i) * V, V);
			if (!tie[np + i])
				worst = e > worst ? e : worst;
			*tok_bad += am[k] != argmax(lg + (size_t)k * V, V);
		}
	}
	for (int k = 0; k < NB; k++)
		fi_model_seq_free(m, sq[k]);
	free(tok), free(sid), free(lg);
	return worst;
}

/* Returns 0 pass, 1 fail, 2 could not run. */
static int run_dir(struct fi_backend *be, const char *dir)
{
	char p[4096];
	json_error_t je;
	snprintf(p, sizeof p, "%s/ref.json", dir);
	json_t *ref = json_load_file(p, 0, &je);
	if (!ref) {
		printf("%s: cannot read ref.json: %s\n", dir, je.text);
		return 2;
	}
	int32_t *prompt, *greedy;
	int np = load_ids(json_object_get(ref, "prompt"), &prompt);
	int ng = load_ids(json_object_get(ref, "greedy"), &greedy);
	int V = (int)json_integer_value(json_object_get(ref, "vocab"));
	int rows = np + ng;
	size_t nl = (size_t)rows * V;
	float *want = malloc(nl * sizeof(float)), *got = malloc(nl * sizeof(float));
	snprintf(p, sizeof p, "%s/%s", dir, json_string_value(json_object_get(ref, "logits")));
	FILE *f = fopen(p, "rb");
	if (!f || fread(want, sizeof(float), nl, f) != nl) {
		printf("%s: cannot read %s\n", dir, p);
		return 2;
	}
	fclose(f);

	struct fi_model *m;
	double t0 = fi_now();
	if (fi_model_load_hf(dir, be, &m) || be->ops->sync(be)) {
		printf("%s: load: %s\n", dir, fi_errmsg());
		return 1;
	}
	double tl = fi_now() - t0;
	int blocks = (2 + NB) * ((rows + 15) / 16 + 2);
	if (fi_model_cache_init(m, blocks, 16)) {
		printf("%s: cache: %s\n", dir, fi_errmsg());
		return 1;
	}
	/* teacher forcing */
	int s, fails = 0;
	int32_t *seq = malloc(sizeof(int32_t) * rows);
	int8_t *all = malloc(rows);
	for (int i = 0; i < rows; i++)
		seq[i] = 0, all[i] = 1;
	if (fi_model_seq_new(m, &s))
		return 1;
	for (int i = 0; i < rows; i++)
		seq[i] = s;
	struct fi_batch b = {.n_tokens = np, .tokens = prompt, .seq = seq, .want = all};
	if (fi_model_forward(m, &b, got, NULL)) {
		printf("%s: prefill: %s\n", dir, fi_errmsg());
		return 1;
	}
	for (int i = 0; i < ng; i++) {
		struct fi_batch d = {.n_tokens = 1, .tokens = &greedy[i], .seq = seq};
		if (fi_model_forward(m, &d, got + (size_t)(np + i) * V, NULL)) {
			printf("%s: decode: %s\n", dir, fi_errmsg());
			return 1;
		}
	}
	/* Router near-ties (mixture of experts; hf_gpu_ref.py records them): rows where, in some
	 * layer, the reference's k-th and (k+1)-th router logits lie closer than HF's own bf16
	 * forward moves a router logit anywhere in the sequence. There bf16 arithmetic may pick
	 * the other expert, and the row then differs by a whole expert's output: such rows are
	 * counted and shown but kept out of the worst-row limit (mean and top-1 keep them). */
	int8_t *tie = calloc((size_t)rows, 1);
	int n_tie = 0;
	double tie_worst = 0;
	{
		json_t *gap = json_object_get(ref, "router_gap");
		double eps = json_number_value(json_object_get(ref, "router_bf16_err"));
		for (int r = 0; gap && r < rows && r < (int)json_array_size(gap); r++)
			n_tie += tie[r] = json_number_value(json_array_get(gap, r)) < eps;
	}
	/* row r of `got` is the logits after token r of prompt+greedy */
	double sum = 0, worst = 0;
	int agree = 0;
	for (int r = 0; r < rows; r++) {
		const float *g = got + (size_t)r * V, *w = want + (size_t)r * V;
		double num = 0, den = 0;
		for (int v = 0; v < V; v++) {
			double d = (double)g[v] - w[v];
			num += d * d;
			den += (double)w[v] * w[v];
		}
		double rel = sqrt(num / (den > 0 ? den : 1));
		if (isnan(rel))
			rel = INFINITY;
		sum += rel;
		if (tie[r])
			tie_worst = rel > tie_worst ? rel : tie_worst;
		else
			worst = rel > worst ? rel : worst;
		agree += argmax(g, V) == argmax(w, V);
	}
	fi_model_seq_free(m, s);
	/* greedy from the prompt */
	int match = 0, flip_tok = -1;
	{
		float *lg = malloc(sizeof(float) * V);
		if (fi_model_seq_new(m, &s))
			return 1;
		struct fi_batch d = {.n_tokens = np, .tokens = prompt, .seq = seq};
		int ok = !fi_model_forward(m, &d, lg, NULL);
		for (int i = 0; ok && i < ng; i++) {
			int32_t t = argmax(lg, V);
			if (t != greedy[i]) {
				flip_tok = t;
				break;
			}
			match++;
			struct fi_batch e = {.n_tokens = 1, .tokens = &t, .seq = seq};
			ok = !fi_model_forward(m, &e, lg, NULL);
		}
		free(lg);
		fi_model_seq_free(m, s);
	}
	int tok_bad = 0;
	double bworst = batched(m, prompt, np, greedy, ng, want, tie, V, &tok_bad);
	if (bworst < 0)
		printf("%s: batched decode: %s\n", dir, fi_errmsg());
	double mean = sum / rows;
	/* HF's own bf16 forward against the same f32 reference, when recorded */
	json_t *bm = json_object_get(ref, "bf16_rel_mean");
	double lim_mean = 3e-2, lim_max = 8e-2, min_top1 = 0.95 * rows, min_match = ng / 2;
	char base[384] = "";
	if (bm) {
		double b_mean = json_number_value(bm);
		double b_max = json_number_value(json_object_get(ref, "bf16_rel_max"));
		int b_top1 = (int)json_integer_value(json_object_get(ref, "bf16_top1"));
		int b_match = (int)json_integer_value(json_object_get(ref, "bf16_greedy_match"));
		lim_mean = fmax(lim_mean, 1.5 * b_mean);
		lim_max = fmax(lim_max, 1.5 * b_max);
		min_top1 = b_top1 - fmax(2, rows / 50.0);
		min_match = fmin(ng / 2, b_match / 2);
		snprintf(base, sizeof base, "  [HF bf16: mean=%.2e max=%.2e top1=%d greedy=%d]", b_mean,
			 b_max, b_top1, b_match);
	}
	/* A greedy run that leaves HF's at a near-tie (our token's reference logit within 2% of
	 * the reference's best) has followed the same function; after it the texts differ. */
	double tie_gap = -1;
	if (flip_tok >= 0) {
		const float *w = want + (size_t)(np - 1 + match) * V;
		float best = w[greedy[match]];
		tie_gap = (best - w[flip_tok]) / fmax(fabs(best), 1e-6);
	}
	int greedy_ok = match >= min_match || (tie_gap >= 0 && tie_gap < 2e-2);
	if (flip_tok >= 0)
		snprintf(base + strlen(base), sizeof base - strlen(base),
			 "  [greedy left HF at %d, reference gap %.1e]", match, tie_gap);
	if (n_tie)
		snprintf(base + strlen(base), sizeof base - strlen(base),
			 "  [router near-ties: %d rows, worst %.2e]", n_tie, tie_worst);
	int pass = mean <= lim_mean && worst <= lim_max && agree >= min_top1 && greedy_ok &&
		   bworst >= 0 && bworst <= lim_max && !tok_bad;
	const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
	printf("%-14s rows=%-4d V=%-6d load=%.2fs  rel_err mean=%.2e max=%.2e  top1=%d/%d  "
	       "greedy=%d/%d  batch%d max=%.2e argmax_bad=%d  %s%s\n",
	       name, rows, V, tl, mean, worst, agree, rows, match, ng, NB, bworst, tok_bad,
	       pass ? "ok" : "FAIL", base);
	fails = !pass;
	fi_model_close(m);
	free(prompt), free(greedy), free(want), free(got), free(seq), free(all), free(tie);
	json_decref(ref);
	return fails;
}

int main(int argc, char **argv)
{
	struct fi_backend *be;
	static const char *fixtures[] = {"llama", "llama_tied", "llama3_rope", "mistral", "qwen2",
					 "qwen3", "gemma2", "gemma3", "gemma3_mm", "phi3",
					 "phi3_longrope", "mixtral", "qwen3_moe", "qwen2_yarn"};
	int fail = 0, ran = 0;
	if (fi_backend_create(argc > 1 ? argv[1] : "cuda", 0, &be)) {
		printf("SKIPPED: %s\n", fi_errmsg());
		return 77;
	}
	printf("backend %s on %s\n", be->ops->name, be->device);
	for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
		char d[256];
		snprintf(d, sizeof d, "tests/fixtures/hf/%s", fixtures[i]);
		int r = run_dir(be, d);
		fail |= r == 1;
		ran += r != 2;
	}
	const char *env = getenv("FI_HF_REFS");
	if (env && *env) {
		char *s = strdup(env), *save = NULL;
		for (char *d = strtok_r(s, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
			int r = run_dir(be, d);
			fail |= r != 0;
			ran++;
		}
		free(s);
	}
	fi_backend_destroy(be);
	printf("model parity: %d checkpoints, %s\n", ran, fail ? "FAIL" : "ok");
	return fail;
}
