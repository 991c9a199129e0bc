/* Tensor parallelism on CUDA (model/tp.h) through NCCL: for each model directory (the
 * committed fixtures hf/llama and hf/qwen2, then those in $FI_HF_REFS, e.g. the 8B shape of
 * tools/hf_gpu_ref.py), the whole model against the same model loaded through the plan at
 * TP = 1 (one NCCL rank on GPU 0: the all-reduces called, decode steps captured in CUDA
 * graphs with them) and at TP = 2 and 4 where that many GPUs exist (one thread per GPU).
 * Each run: a 24-token prompt (every row's logits), then 16 greedy decode steps (tokens
 * from the device argmax, or the shards' candidates). Limits: bf16 against bf16, the sums
 * in another order: worst row ||g - r|| / ||r|| <= 2e-2 and the greedy tokens equal for at
 * least 12 of 16 steps (a near-tie may flip one; after it the texts differ).
 * Prints one line per (model, TP) with the errors and the decode time per step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "backend/backend.h"
#include "base/err.h"
#include "base/log.h"
#include "model/image.h"
#include "model/model.h"
#include "model/store.h"
#include "model/tp.h"

#define STEPS 16
#define PROMPT 24

struct out {
	int V;
	float *lg;           /* [PROMPT, V] */
	int32_t tok[STEPS];
	double ms_per_step;
};

static int run(const char *dir, int tp, struct out *o)
{
	struct fi_backend *be;
	struct fi_image *im;
	struct fi_model *m;
	int32_t ids[PROMPT], seq[PROMPT], t;
	int8_t want[PROMPT];
	int s, n;
	if (fi_backend_create("cuda", 0, &be)) {
		printf("SKIPPED: %s\n", fi_errmsg());
		return 0;
	}
	if (fi_store_open_dtype(dir, FI_DT_BF16, &im) ||
	    (tp ? fi_model_load_tp(&im->config, &im->set, be, tp, &m)
		: fi_model_load(&im->config, &im->set, be, &m))) {
		fprintf(stderr, "%s tp %d: %s\n", dir, tp, fi_errmsg());
		return -1;
	}
	o->V = im->config.vocab;
	o->lg = malloc(sizeof(float) * PROMPT * (size_t)o->V);
	if (fi_model_cache_init(m, 256, 16) || fi_model_seq_new(m, &s))
		goto fail;
	for (int i = 0; i < PROMPT; i++) {
		ids[i] = (int32_t)((i * 131 + 7) % o->V);
		seq[i] = s;
		want[i] = 1;
	}
	struct fi_batch b = {PROMPT, ids, seq, want};
	if (fi_model_forward(m, &b, o->lg, &n))
		goto fail;
	t = ids[PROMPT - 1];
	double t0 = 0;
	for (int k = 0; k < STEPS; k++) {
		struct fi_batch d = {1, &t, &s, NULL};
		if (k == 2) /* steps 0, 1 run eagerly and capture the graph */
			t0 = fi_now();
		if (fi_model_forward_ex(m, &d, NULL, &t, &n))
			goto fail;
		o->tok[k] = t;
	}
	o->ms_per_step = (fi_now() - t0) * 1e3 / (STEPS - 2);
	fi_model_close(m);
	fi_image_close(im);
	fi_backend_destroy(be);
	return 1;
fail:
	fprintf(stderr, "%s tp %d: %s\n", dir, tp, fi_errmsg());
	fi_model_close(m);
	fi_image_close(im);
	fi_backend_destroy(be);
	return -1;
}

static int check(const char *dir, int tp, const struct out *ref)
{
	struct out o = {0};
	double worst = 0;
	int same = 0, r = run(dir, tp, &o);
	if (r <= 0)
		return r < 0 ? 1 : 0;
	for (int i = 0; i < PROMPT; i++) {
		double d = 0, m = 0;
		for (int j = 0; j < o.V; j++) {
			double a = o.lg[(size_t)i * o.V + j], b = ref->lg[(size_t)i * o.V + j];
			d += (a - b) * (a - b);
			m += b * b;
		}
		worst = fmax(worst, sqrt(d / m));
	}
	while (same < STEPS && o.tok[same] == ref->tok[same])
		same++;
	int ok = worst <= 2e-2 && same >= 12;
	printf("%s %s tp %d (nccl): worst row %.2e, greedy %d/%d equal, %.3f ms/step (whole "
	       "model %.3f)\n", ok ? "ok" : "FAIL", dir, tp, worst, same, STEPS, o.ms_per_step,
	       ref->ms_per_step);
	free(o.lg);
	return !ok;
}

int main(void)
{
	const char *dirs[16] = {"tests/fixtures/hf/llama", "tests/fixtures/hf/qwen2"};
	int nd = 2, gpus = 0, bad = 0;
	char *env = getenv("FI_HF_REFS") ? strdup(getenv("FI_HF_REFS")) : NULL;
	for (char *p = env ? strtok(env, ":") : NULL; p && nd < 16; p = strtok(NULL, ":"))
		dirs[nd++] = p;
	if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus < 1) {
		printf("SKIPPED: no CUDA GPU\n");
		return 77;
	}
	for (int i = 0; i < nd; i++) {
		struct out ref = {0};
		int r = run(dirs[i], 0, &ref);
		if (r <= 0) {
			bad |= r < 0;
			continue;
		}
		for (int tp = 1; tp <= 4 && tp <= gpus; tp *= 2)
			bad |= check(dirs[i], tp, &ref);
		if (gpus < 2)
			printf("not run: %s at tp 2 and 4 (%d GPU)\n", dirs[i], gpus);
		free(ref.lg);
	}
	free(env);
	printf("%s\n", bad ? "FAILED" : "all ok");
	return bad;
}
