/* cpu: the CPU backend's constructor, its op table and memory ops (the thread pool is
 * cpu_pool.c). */
#include "cpu.h"

#include "base/quant.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- memory ---- */

static fi_err cpu_alloc(struct fi_backend *be, size_t bytes, void **out)
{
	/* 64-byte alignment keeps BLAS and vector loops on cache lines. */
	size_t n = (bytes + 63) & ~(size_t)63;
	*out = aligned_alloc(64, n ? n : 64);
	if (!*out)
		return fi_fail(FI_ENOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
	return FI_OK;
}

static void cpu_free(struct fi_backend *be, void *p)
{
	free(p);
}

static fi_err cpu_upload(struct fi_backend *be, void *dst, const void *src, size_t bytes)
{
	if (bytes)
		memcpy(dst, src, bytes);
	return FI_OK;
}

static fi_err cpu_download(struct fi_backend *be, void *dst, const void *src, size_t bytes)
{
	if (bytes)
		memcpy(dst, src, bytes);
	return FI_OK;
}

static fi_err cpu_sync(struct fi_backend *be)
{
	return FI_OK;
}

struct deq_job {
	const struct fi_qlayout *l;
	const void *data;
	float *out;
};

static void deq_rows(void *ctx, int64_t b, int64_t e)
{
	struct deq_job *j = ctx;
	fi_quant_dequant_rows(j->l, j->data, b, e - b, j->out + b * j->l->cols);
}

/* A quantized weight, dequantized once to f32 (the reference computes in f32 on exactly
 * the values the layout holds); a W8A8 weight keeps its activation rounding. */
static fi_err quant_weight(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *w)
{
	struct fi_qlayout l;
	struct deq_job j;
	fi_err e;
	if (t->ndim != 2)
		return fi_fail(FI_EUNSUPPORTED, "tensor '%s': a %s weight must have 2 dimensions",
			       t->name ? t->name : "?", fi_dtype_name(t->dtype));
	if ((e = fi_quant_layout(t->dtype, t->shape[0], t->shape[1], t->data, t->nbytes, &l)))
		return fi_fail_ctx(e, "tensor '%s'", t->name ? t->name : "?");
	if ((uint64_t)l.rows * (uint64_t)l.cols > SIZE_MAX / sizeof(float))
		return fi_fail(FI_ERANGE, "tensor '%s': too large", t->name ? t->name : "?");
	if ((e = cpu_alloc(be, (size_t)(l.rows * l.cols) * sizeof(float), &w->p)))
		return e;
	j = (struct deq_job){&l, t->data, w->p};
	fi_cpu_parallel_for(be, l.rows, 16, deq_rows, &j);
	w->dtype = FI_DT_F32;
	w->rows = l.rows;
	w->cols = l.cols;
	w->aq = l.aq;
	return FI_OK;
}

/* Every weight becomes a private f32 copy: rows x cols with a 1-D tensor as 1 x D. */
static fi_err cpu_weight(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *w)
{
	int64_t n = fi_tensor_numel(t), rows, cols;
	fi_err e;
	memset(w, 0, sizeof *w);
	if (t->ndim < 1 || t->ndim > 2 || n < 0)
		return fi_fail(FI_EUNSUPPORTED, "tensor '%s': %d dimensions (expected 1 or 2)",
			       t->name ? t->name : "?", t->ndim);
	if (t->dtype == FI_DT_TQ2 && t->ndim == 2) /* kept packed: cpu_tq2.c */
		return fi_cpu_tq2_weight(be, t, w);
	if (fi_dtype_is_quant(t->dtype))
		return quant_weight(be, t, w);
	if (!fi_dtype_is_compute(t->dtype))
		return fi_fail(FI_EUNSUPPORTED, "tensor '%s': dtype %s is not a float type",
			       t->name ? t->name : "?", fi_dtype_name(t->dtype));
	if (t->nbytes != (uint64_t)n * fi_dtype_size(t->dtype))
		return fi_fail(FI_EFORMAT, "tensor '%s': %llu bytes for %lld elements of %s",
			       t->name ? t->name : "?", (unsigned long long)t->nbytes,
			       (long long)n, fi_dtype_name(t->dtype));
	rows = t->ndim == 2 ? t->shape[0] : 1;
	cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
	if (be->keep_bf16 && t->ndim == 2 && t->dtype == FI_DT_BF16 &&
	    (t->data || be->random_weights))
		return fi_cpu_bf16_weight(be, t, rows, cols, w);
	if ((e = cpu_alloc(be, (size_t)n * sizeof(float), &w->p)))
		return e;
	if (!t->data && be->random_weights) { /* random weights (backend.h) */
		fi_random_fill_f32(w->p, fi_random_name_hash(be->random_seed, t->name), (uint64_t)n,
				   cols, t->ndim);
	} else if (!t->data) {
		free(w->p);
		w->p = NULL;
		return fi_fail(FI_EINVAL, "tensor '%s' has no data", t->name ? t->name : "?");
	} else if ((e = fi_convert(w->p, FI_DT_F32, t->data, t->dtype, (size_t)n))) {
		free(w->p);
		w->p = NULL;
		return fi_fail_ctx(e, "tensor '%s'", t->name ? t->name : "?");
	}
	w->dtype = FI_DT_F32;
	w->rows = rows;
	w->cols = cols;
	return FI_OK;
}

static void cpu_weight_free(struct fi_backend *be, struct fi_weight *w)
{
	if (w) {
		free(w->p);
		memset(w, 0, sizeof *w);
	}
}

static void cpu_kv_free(struct fi_backend *be, struct fi_kv_cache *kv)
{
	for (int l = 0; kv->k_d && l < kv->n_layers; l++) {
		free(kv->k_d[l]);
		free(kv->v_d[l]);
	}
	free(kv->k_d);
	free(kv->v_d);
	kv->k_d = kv->v_d = NULL;
}

/* Per layer K and V [n_blocks, block_size, Hk, hd] f32, zeroed (unwritten slots are
 * never read, but zeros keep a stray read finite). */
static fi_err cpu_kv_alloc(struct fi_backend *be, struct fi_kv_cache *kv)
{
	size_t per;
	if (kv->n_layers <= 0 || kv->n_blocks <= 0 || kv->block_size <= 0 ||
	    kv->n_kv_heads <= 0 || kv->head_dim <= 0)
		return fi_fail(FI_EINVAL, "kv cache: invalid geometry");
	per = (size_t)kv->n_blocks * kv->block_size * kv->n_kv_heads * kv->head_dim;
	if (per > SIZE_MAX / sizeof(float) / 2 / (size_t)kv->n_layers)
		return fi_fail(FI_ERANGE, "kv cache: %d blocks of %d tokens is too large",
			       kv->n_blocks, kv->block_size);
	/* per: in floats (f32 cache) or, for FP8, bytes counted as floats, rounded up */
	if (kv->fp8)
		per = ((size_t)kv->n_blocks * fi_kv_block_bytes(kv, FI_DT_F32) + 3) / 4;
	kv->k_d = calloc((size_t)kv->n_layers, sizeof(void *));
	kv->v_d = calloc((size_t)kv->n_layers, sizeof(void *));
	if (!kv->k_d || !kv->v_d)
		goto nomem;
	for (int l = 0; l < kv->n_layers; l++) {
		kv->k_d[l] = calloc(per, sizeof(float));
		kv->v_d[l] = calloc(per, sizeof(float));
		if (!kv->k_d[l] || !kv->v_d[l])
			goto nomem;
	}
	return FI_OK;
nomem:
	cpu_kv_free(be, kv);
	return fi_fail(FI_ENOMEM, "kv cache: cannot allocate %zu bytes per layer",
		       2 * per * sizeof(float));
}

static void cpu_destroy(struct fi_backend *be)
{
	if (!be)
		return;
	if (be->priv) {
		fi_cpu_pool_stop(&((struct fi_cpu *)be->priv)->pool);
		free(be->priv);
	}
	free(be);
}

static fi_err cpu_mem_info(struct fi_backend *be, size_t *free_bytes, size_t *total_bytes)
{
	long pg = sysconf(_SC_PAGESIZE), mem = sysconf(_SC_PHYS_PAGES), av = sysconf(_SC_AVPHYS_PAGES);
	if (pg <= 0 || mem <= 0 || av < 0)
		return fi_fail(FI_EIO, "cpu: memory size unknown");
	*free_bytes = (size_t)av * (size_t)pg;
	*total_bytes = (size_t)mem * (size_t)pg;
	return FI_OK;
}

static fi_err cpu_kv_copy(struct fi_backend *be, struct fi_kv_cache *kv, int to_cache, int n,
			  const int32_t *blocks, void *const *host, const int32_t *seg)
{
	size_t part = (size_t)kv->block_size * kv->n_kv_heads * kv->head_dim * sizeof(float);
	for (int i = 0; i < n; i++) {
		char *h = host[i];
		if (blocks[i] < 0 || blocks[i] >= kv->n_blocks)
			return fi_fail(FI_ERANGE, "kv copy: block %d of %d", blocks[i], kv->n_blocks);
		for (int l = 0; l < kv->n_layers; l++, h += 2 * part) {
			char *k = (char *)kv->k_d[l] + (size_t)blocks[i] * part;
			char *v = (char *)kv->v_d[l] + (size_t)blocks[i] * part;
			if (to_cache) {
				memcpy(k, h, part);
				memcpy(v, h + part, part);
			} else {
				memcpy(h, k, part);
				memcpy(h + part, v, part);
			}
		}
	}
	return FI_OK;
}

static const struct fi_backend_ops cpu_ops = {
	.name = "cpu",
	.destroy = cpu_destroy,
	.alloc = cpu_alloc,
	.free = cpu_free,
	.upload = cpu_upload,
	.download = cpu_download,
	.sync = cpu_sync,
	.weight = cpu_weight,
	.weight_free = cpu_weight_free,
	.kv_alloc = cpu_kv_alloc,
	.kv_free = cpu_kv_free,
	.embed = fi_cpu_embed,
	.rmsnorm = fi_cpu_rmsnorm,
	.norm_qkv_rope = fi_cpu_norm_qkv_rope,
	.matmul_add = fi_cpu_matmul_add,
	.norm_glu = fi_cpu_norm_glu,
	.add_norm = fi_cpu_add_norm,
	.matmul = fi_cpu_matmul,
	.matmul_f32out = fi_cpu_matmul_f32out,
	.rope = fi_cpu_rope,
	.kv_write = fi_cpu_kv_write,
	.attention = fi_cpu_attention,
	.silu_mul = fi_cpu_silu_mul,
	.gather_rows = fi_cpu_gather_rows,
	.argmax = fi_cpu_argmax,
	.sample = fi_cpu_sample,
	/* model families (arch.h) */
	.scale = fi_cpu_scale,
	.gelu_mul = fi_cpu_gelu_mul,
	.relu2_mul = fi_cpu_relu2_mul,
	.softcap = fi_cpu_softcap,
	.moe = fi_cpu_moe,
	.weight_cat = fi_cpu_weight_cat,
	.mem_info = cpu_mem_info,
	.kv_copy = cpu_kv_copy,
};

fi_err fi_backend_cpu_create(int n_threads, struct fi_backend **out)
{
	struct fi_backend *be;
	struct fi_cpu *c;
	long mem = sysconf(_SC_PHYS_PAGES), pg = sysconf(_SC_PAGESIZE);
	long avail = sysconf(_SC_AVPHYS_PAGES);
	*out = NULL;
	if (n_threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		n_threads = n > 0 ? (int)n : 1;
	}
	if (n_threads > 256)
		n_threads = 256;
	be = calloc(1, sizeof *be);
	c = calloc(1, sizeof *c);
	if (!be || !c) {
		free(be);
		free(c);
		return fi_fail(FI_ENOMEM, "cpu backend: out of memory");
	}
	be->ops = &cpu_ops;
	be->act = FI_DT_F32;
	be->settings = fi_settings();
	be->fuse_families = 1; /* for the tests that set fuse_max_T (cpu_fused.c) */
	be->priv = c;
	if (fi_cpu_pool_start(&c->pool, n_threads)) {
		cpu_destroy(be);
		return fi_fail(FI_ENOMEM, "cpu backend: cannot start %d threads", n_threads);
	}
	be->n_threads = c->pool.n;
	if (mem > 0 && pg > 0)
		be->mem_total = (size_t)mem * (size_t)pg;
	if (avail > 0 && pg > 0)
		be->mem_free = (size_t)avail * (size_t)pg;
	snprintf(be->device, sizeof be->device, "cpu (%d thread%s)", be->n_threads,
		 be->n_threads == 1 ? "" : "s");
	openblas_set_num_threads(be->n_threads);
	*out = be;
	return FI_OK;
}
