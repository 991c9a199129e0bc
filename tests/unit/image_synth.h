/* Helpers shared by the image and store suites: a tiny config, synthetic tensors, a
 * scratch directory. */
#ifndef FI_TEST_IMAGE_SYNTH_H
#define FI_TEST_IMAGE_SYNTH_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/image.h"
#include "model/names.h"
#include "util.h"

/* A tiny Llama: D 16, 2 layers, 4 heads of 4, 2 KV heads, F 24, V 32, untied. */
static inline struct fi_config tiny(void)
{
	struct fi_config c = {
		.family = FI_FAM_LLAMA, .arch = "LlamaForCausalLM", .hidden = 16, .n_layers = 2,
		.n_heads = 4, .n_kv_heads = 2, .head_dim = 4, .ffn = 24, .vocab = 32,
		.max_pos = 64, .rms_eps = 1e-5f, .rope_theta = 10000, .bos_id = 1,
		.eos_ids = {2}, .n_eos = 1, .torch_dtype = FI_DT_F32,
	};
	return c;
}

/* Synthetic tensors for a config, f32 values from a seed. */
struct synth {
	int n;
	struct fi_image_src src[64];
	struct fi_expected ex[64];
	float *data[64];
};

static inline void synth_make(struct synth *s, const struct fi_config *c, unsigned seed)
{
	unsigned x = seed * 2654435761u + 1;
	memset(s, 0, sizeof *s);
	while (fi_expected_tensor(c, s->n, &s->ex[s->n])) {
		struct fi_expected *e = &s->ex[s->n];
		int64_t numel = e->shape[0] * (e->ndim == 2 ? e->shape[1] : 1);
		float *d = malloc((size_t)numel * sizeof *d);
		for (int64_t i = 0; i < numel; i++) {
			x = x * 1103515245u + 12345u;
			d[i] = ((float)(x >> 8) / 16777216.0f - 0.5f) * 3.0f;
		}
		s->data[s->n] = d;
		s->src[s->n] = (struct fi_image_src){e->name, e->ndim, {e->shape[0], e->shape[1]},
						     FI_DT_F32, d, 0};
		s->n++;
	}
}

static inline void synth_free(struct synth *s)
{
	for (int i = 0; i < s->n; i++)
		free(s->data[i]);
}

static char tmpdir[256];

static inline void mk_tmp(void)
{
	snprintf(tmpdir, sizeof tmpdir, "%s/fi-test-image.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static inline void rm_tree(const char *d)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	ck_assert_int_eq(system(cmd), 0);
}

/* Number of entries in a directory besides . and .. */
static inline int count_entries(const char *d)
{
	DIR *dh = opendir(d);
	struct dirent *e;
	int n = 0;
	if (!dh)
		return -1;
	while ((e = readdir(dh)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(dh);
	return n;
}

#endif
