/* cuda: the CUDA backend's op table: context, stream, memory, weights, KV cache, graphs.
 * The ops themselves are thin: argument checks, then a launcher from kernels/ or cuBLASLt.
 *
 * Memory is plain cudaMalloc (no managed memory). Activations and KV are bf16 (be->act),
 * accumulation f32. Everything runs on one non-blocking stream; download() and sync() wait. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_be.h"
#include "base/log.h"

static fi_err cu_alloc(struct fi_backend *be, size_t bytes, void **out_d)
{
	cudaError_t e;
	*out_d = NULL;
	if (!bytes)
		bytes = 1;
	e = cudaMalloc(out_d, bytes);
	if (e != cudaSuccess) {
		size_t fr = 0, tot = 0;
		cudaGetLastError(); /* clear the (non-sticky) allocation error */
		cudaMemGetInfo(&fr, &tot);
		*out_d = NULL;
		return fi_fail(FI_EDEVICE,
			       "cuda: out of GPU memory: %.1f MiB needed, %.1f MiB free of %.1f MiB "
			       "on %s (%s)",
			       bytes / 1048576.0, fr / 1048576.0, tot / 1048576.0, be->device,
			       cudaGetErrorString(e));
	}
	return FI_OK;
}

static void cu_free(struct fi_backend *be, void *p_d)
{
	if (p_d)
		cudaFree(p_d);
}

/* Through the pinned ring (ring.c): never waits for the stream, src reusable at once. */
static fi_err cu_upload(struct fi_backend *be, void *dst_d, const void *src, size_t bytes)
{
	return fi_cuda_ring_upload(fi_cuda_of(be), dst_d, src, bytes);
}

static fi_err cu_download(struct fi_backend *be, void *dst, const void *src_d, size_t bytes)
{
	struct fi_cuda *c = fi_cuda_of(be);
	if (bytes >= (4u << 20) && !c->capturing)
		return fi_cuda_download_big(c, dst, src_d, bytes);
	if (bytes)
		CU_CHECK(cudaMemcpyAsync(dst, src_d, bytes, cudaMemcpyDeviceToHost, c->stream));
	CU_CHECK(cudaStreamSynchronize(c->stream));
	return FI_OK;
}

/* A KV arena extent: already allocated (fallocate), so registering it pins what is there and
 * allocates nothing. It may run on a thread of its own (lib/kv/kvxfer.c registers an
 * arena's extents in the background), which must name the device first. */
static fi_err cu_host_register(struct fi_backend *be, void *p, size_t bytes)
{
	CU_CHECK(cudaSetDevice(fi_cuda_of(be)->device));
	CU_CHECK(cudaHostRegister(p, bytes, cudaHostRegisterDefault));
	return FI_OK;
}

static void cu_host_unregister(struct fi_backend *be, void *p)
{
	cudaHostUnregister(p);
}

static fi_err cu_sync(struct fi_backend *be)
{
	fi_err e = fi_cuda_xfer_wait(fi_cuda_of(be), -1);
	if (e)
		return e;
	CU_CHECK(cudaStreamSynchronize(fi_cuda_of(be)->stream));
	return FI_OK;
}

static fi_err cu_weight(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *out)
{
	struct fi_cuda *c = fi_cuda_of(be);
	int64_t n = fi_tensor_numel(t);
	fi_err e;
	memset(out, 0, sizeof(*out));
	if (fi_dtype_is_quant(t->dtype))
		return fi_cuda_qweight(be, t, out);
	if (n < 0 || t->ndim < 1)
		return fi_fail(FI_EINVAL, "cuda: tensor '%s': bad shape", t->name ? t->name : "?");
	if (!fi_dtype_is_compute(t->dtype))
		return fi_fail(FI_EUNSUPPORTED, "cuda: tensor '%s': dtype %s is not f32, f16 or bf16",
			       t->name ? t->name : "?", fi_dtype_name(t->dtype));
	if ((uint64_t)n * fi_dtype_size(t->dtype) > t->nbytes)
		return fi_fail(FI_ERANGE, "cuda: tensor '%s': data shorter than its shape",
			       t->name ? t->name : "?");
	out->cols = t->shape[t->ndim - 1];
	out->rows = out->cols ? n / out->cols : 0;
	out->dtype = FI_DT_BF16;
	if (!t->data && !be->random_weights)
		return fi_fail(FI_EINVAL, "cuda: tensor '%s' has no data", t->name ? t->name : "?");
	if ((e = cu_alloc(be, (size_t)n * 2, &out->p)))
		return fi_fail_ctx(e, "tensor '%s'", t->name ? t->name : "?");
	if (!t->data) /* random weights, drawn here (backend.h) */
		e = fi_cuda_random_weight(c, out->p, t, be->random_seed);
	else
		e = fi_cuda_upload_bf16(c, out->p, t->data, t->dtype, (size_t)n);
	if (e) {
		cudaFree(out->p);
		out->p = NULL;
		return e;
	}
	c->weight_bytes += (size_t)n * 2;
	return FI_OK;
}

/* n tensors of equal cols in one allocation, rows in order; parts are views into it. */
static fi_err cu_weight_cat(struct fi_backend *be, const struct fi_tensor *const *t, int n,
			    struct fi_weight *cat, struct fi_weight *parts)
{
	struct fi_cuda *c = fi_cuda_of(be);
	int64_t rows = 0, cols = 0, off = 0;
	fi_err e;
	memset(cat, 0, sizeof(*cat));
	if (n < 1) /* any n: the experts of a layer are stacked with it */
		return fi_fail(FI_EINVAL, "cuda: weight_cat of %d tensors", n);
	for (int i = 0; i < n; i++) {
		int64_t k = fi_tensor_numel(t[i]);
		const char *nm = t[i]->name ? t[i]->name : "?";
		memset(&parts[i], 0, sizeof(parts[i]));
		if (k < 0 || t[i]->ndim < 1)
			return fi_fail(FI_EINVAL, "cuda: tensor '%s': bad shape", nm);
		if (!fi_dtype_is_compute(t[i]->dtype))
			return fi_fail(FI_EUNSUPPORTED, "cuda: tensor '%s': dtype %s is not f32, f16 or bf16",
				       nm, fi_dtype_name(t[i]->dtype));
		if ((uint64_t)k * fi_dtype_size(t[i]->dtype) > t[i]->nbytes)
			return fi_fail(FI_ERANGE, "cuda: tensor '%s': data shorter than its shape", nm);
		if (!t[i]->data && !be->random_weights)
			return fi_fail(FI_EINVAL, "cuda: tensor '%s' has no data", nm);
		if (i && t[i]->shape[t[i]->ndim - 1] != cols)
			return fi_fail(FI_EMISMATCH, "cuda: tensor '%s': %lld columns, not %lld", nm,
				       (long long)t[i]->shape[t[i]->ndim - 1], (long long)cols);
		cols = t[i]->shape[t[i]->ndim - 1];
		parts[i].rows = cols ? k / cols : 0;
		parts[i].cols = cols;
		parts[i].dtype = FI_DT_BF16;
		rows += parts[i].rows;
	}
	cat->rows = rows;
	cat->cols = cols;
	cat->dtype = FI_DT_BF16;
	if ((e = cu_alloc(be, (size_t)(rows * cols) * 2, &cat->p)))
		return fi_fail_ctx(e, "tensor '%s'", t[0]->name ? t[0]->name : "?");
	for (int i = 0; i < n; i++) {
		parts[i].p = (uint16_t *)cat->p + off;
		if (!t[i]->data)
			e = fi_cuda_random_weight(c, parts[i].p, t[i], be->random_seed);
		else
			e = fi_cuda_upload_bf16(c, parts[i].p, t[i]->data, t[i]->dtype,
						(size_t)(parts[i].rows * cols));
		if (e) {
			cudaFree(cat->p);
			memset(cat, 0, sizeof(*cat));
			return e;
		}
		off += parts[i].rows * cols;
	}
	c->weight_bytes += (size_t)(rows * cols) * 2;
	return FI_OK;
}

static void cu_weight_free(struct fi_backend *be, struct fi_weight *w)
{
	struct fi_cuda *c = fi_cuda_of(be);
	if (w->p) {
		cudaFree(w->p);
		c->weight_bytes -= fi_dtype_is_quant(w->dtype) ? (size_t)w->q.nbytes
							      : (size_t)(w->rows * w->cols) * 2;
	}
	memset(w, 0, sizeof(*w));
}

/* All layers' K and V in one allocation: K of layer 0..L-1, then V of layer 0..L-1. */
static fi_err cu_kv_alloc(struct fi_backend *be, struct fi_kv_cache *kv)
{
	int64_t per;
	void *base;
	fi_err e;
	kv->k_d = kv->v_d = NULL;
	if (kv->n_layers <= 0 || kv->n_blocks <= 0 || kv->block_size <= 0 || kv->n_kv_heads <= 0 ||
	    kv->head_dim <= 0)
		return fi_fail(FI_EINVAL, "cuda: kv cache: bad geometry");
	if (kv->fp8)
		return fi_fail(FI_EUNSUPPORTED, "cuda: an FP8 KV cache (--kv-dtype fp8) is not "
			       "implemented on the GPU yet (the CPU backend has it)");
	per = (int64_t)kv->n_blocks * kv->block_size * kv->n_kv_heads * kv->head_dim * 2;
	if (per / kv->n_blocks / kv->block_size != (int64_t)kv->n_kv_heads * kv->head_dim * 2 ||
	    per > ((int64_t)1 << 40) / 2 / kv->n_layers)
		return fi_fail(FI_ERANGE, "cuda: kv cache of %d blocks is too large", kv->n_blocks);
	if ((e = cu_alloc(be, (size_t)per * 2 * kv->n_layers, &base)))
		return fi_fail_ctx(e, "kv cache (%d blocks of %d tokens, %d layers)", kv->n_blocks,
				   kv->block_size, kv->n_layers);
	kv->k_d = calloc((size_t)kv->n_layers, sizeof(void *));
	kv->v_d = calloc((size_t)kv->n_layers, sizeof(void *));
	if (!kv->k_d || !kv->v_d) {
		cudaFree(base);
		free(kv->k_d);
		free(kv->v_d);
		kv->k_d = kv->v_d = NULL;
		return fi_fail(FI_ENOMEM, "cuda: kv cache: no host memory");
	}
	for (int l = 0; l < kv->n_layers; l++) {
		kv->k_d[l] = (char *)base + per * l;
		kv->v_d[l] = (char *)base + per * (kv->n_layers + l);
	}
	return FI_OK;
}

static void cu_kv_free(struct fi_backend *be, struct fi_kv_cache *kv)
{
	if (kv->k_d && kv->k_d[0])
		cudaFree(kv->k_d[0]);
	free(kv->k_d);
	free(kv->v_d);
	kv->k_d = kv->v_d = NULL;
}

static fi_err need_bf16(const struct fi_weight *w, const char *op)
{
	if (w->dtype != FI_DT_BF16)
		return fi_fail(FI_EUNSUPPORTED, "%s: weight dtype %s", op, fi_dtype_name(w->dtype));
	return FI_OK;
}

/* A norm weight: bf16, n values. */
static fi_err norm_weight(const struct fi_weight *w, int64_t n, const char *op, const char *what)
{
	fi_err e = need_bf16(w, op);
	if (!e && w->rows * w->cols != n)
		e = fi_fail(FI_EMISMATCH, "%s: %s of %lld values for rows of %lld", op, what,
			    (long long)(w->rows * w->cols), (long long)n);
	return e;
}

static fi_err cu_embed(struct fi_backend *be, void *x_d, const struct fi_weight *emb,
		       const int32_t *tok_d, int T)
{
	fi_err e;
	if (fi_dtype_is_quant(emb->dtype))
		return fi_cuda_qembed(be, x_d, emb, tok_d, T);
	e = need_bf16(emb, "embed");
	if (e)
		return e;
	return fi_cu_embed(fi_cuda_of(be)->stream, x_d, emb->p, emb->rows, tok_d, T, (int)emb->cols);
}

static fi_err cu_rmsnorm(struct fi_backend *be, void *out_d, void *x_d, const void *add_d,
			 const struct fi_weight *w, int T, int D, float eps)
{
	fi_err e = norm_weight(w, D, "rmsnorm", "weight");
	if (e)
		return e;
	struct fi_cuda *c = fi_cuda_of(be);
	void *codes;
	float *scales;
	if (add_d && out_d == x_d)
		return fi_fail(FI_EINVAL, "rmsnorm: out may not alias x when adding");
	/* FI_FP8_FOLD: the W8A8 products that read out next take its codes from here */
	if (c->w8a8_token && fi_cuda_xq_claim(c, out_d, T, D, &codes, &scales) == FI_OK) {
		e = fi_cu_rmsnorm_q(c->stream, out_d, x_d, add_d, w->p, T, D, eps, codes, scales);
		if (e != FI_EUNSUPPORTED)
			return e;
		c->xq_has.x = NULL;
	}
	return fi_cu_rmsnorm(c->stream, out_d, x_d, add_d, w->p, T, D, eps);
}

static fi_err cu_add_norm(struct fi_backend *be, void *x_d, const void *y_d,
			  const struct fi_weight *norm, float eps, int T, int D)
{
	fi_err e = norm ? norm_weight(norm, D, "add_norm", "weight") : FI_OK;
	if (e)
		return e;
	if (x_d == y_d)
		return fi_fail(FI_EINVAL, "add_norm: y may not alias x");
	if (!norm) /* the residual add alone, rounded as rmsnorm's add */
		return fi_cu_add(fi_cuda_of(be)->stream, x_d, y_d, (int64_t)T * D);
	return fi_cu_add_norm(fi_cuda_of(be)->stream, x_d, y_d, norm->p, T, D, eps);
}

static fi_err cu_rope(struct fi_backend *be, void *q_d, void *k_d, const int32_t *pos_d,
		      const struct fi_rope *r, int T, int Hq, int Hk)
{
	if (r->q_norm || r->k_norm)
		return fi_fail(FI_EUNSUPPORTED, "rope: q/k norms are rope_kv_write's");
	return fi_cu_rope(fi_cuda_of(be)->stream, q_d, k_d, pos_d, r->inv_freq_d, T, Hq, Hk,
			  r->head_dim);
}

static fi_err cu_kv_write(struct fi_backend *be, struct fi_kv_cache *kv, int layer,
			  const void *k_d, const void *v_d, const struct fi_attn_batch *b)
{
	if (layer < 0 || layer >= kv->n_layers)
		return fi_fail(FI_ERANGE, "kv_write: layer %d of %d", layer, kv->n_layers);
	return fi_cu_kv_write(fi_cuda_of(be)->stream, kv->k_d[layer], kv->v_d[layer], k_d, v_d,
			      b->slot_d, b->n_tokens, kv->n_kv_heads * kv->head_dim,
			      (int64_t)kv->n_blocks * kv->block_size);
}

static fi_err cu_rope_kv_write(struct fi_backend *be, void *q_d, void *k_d, const void *v_d,
			       const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
			       const struct fi_attn_batch *b)
{
	fi_err e;
	if (layer < 0 || layer >= kv->n_layers)
		return fi_fail(FI_ERANGE, "kv_write: layer %d of %d", layer, kv->n_layers);
	if (r->head_dim != kv->head_dim)
		return fi_fail(FI_EMISMATCH, "rope: head size %d, cache %d", r->head_dim, kv->head_dim);
	if (!r->q_norm != !r->k_norm)
		return fi_fail(FI_EINVAL, "rope: a q norm without a k norm, or the reverse");
	if (r->q_norm && ((e = norm_weight(r->q_norm, r->head_dim, "rope", "q norm")) ||
			  (e = norm_weight(r->k_norm, r->head_dim, "rope", "k norm"))))
		return e;
	return fi_cu_rope_kv(fi_cuda_of(be)->stream, q_d, k_d, v_d, kv->k_d[layer], kv->v_d[layer],
			     b->tok_pos_d, b->slot_d, r->inv_freq_d,
			     r->q_norm ? r->q_norm->p : NULL, r->k_norm ? r->k_norm->p : NULL,
			     r->norm_eps, b->n_tokens, Hq, kv->n_kv_heads, kv->head_dim,
			     (int64_t)kv->n_blocks * kv->block_size);
}

/* Many tokens per sequence: the tensor-core kernel; decode steps (and anything it does not
 * cover) the split-K kernel. */
static fi_err attn_run(struct fi_cuda *c, const struct fi_cu_attn *a, const struct fi_attn_batch *b)
{
	if (b->n_tokens >= 8 * (b->n_seqs > 0 ? b->n_seqs : 1)) {
		fi_err e = fi_cu_attn_prefill(c->stream, a, b);
		if (e != FI_EUNSUPPORTED)
			return e;
	}
	if (b->n_tokens > 65535)
		return fi_fail(FI_ERANGE, "attention: %d tokens for the decode kernel", b->n_tokens);
	return fi_cu_attn_decode(c->stream, a, b);
}

static fi_err cu_attention(struct fi_backend *be, void *out_d, const void *q_d,
			   const struct fi_kv_cache *kv, int layer, int Hq,
			   const struct fi_attn_batch *b)
{
	struct fi_cuda *c = fi_cuda_of(be);
	struct fi_cu_attn a;
	fi_err e;
	if (layer < 0 || layer >= kv->n_layers)
		return fi_fail(FI_ERANGE, "attention: layer %d of %d", layer, kv->n_layers);
	if ((e = fi_cuda_xfer_wait(c, layer))) /* a prefix fetched from the arena */
		return e;
	if (b->n_tokens > 65535 * 64)
		return fi_fail(FI_ERANGE, "attention: %d tokens in one batch", b->n_tokens);
	a.out = out_d;
	a.q = q_d;
	a.kc = kv->k_d[layer];
	a.vc = kv->v_d[layer];
	a.Hq = Hq;
	a.Hk = kv->n_kv_heads;
	a.hd = kv->head_dim;
	a.block_size = kv->block_size;
	a.n_blocks = kv->n_blocks;
	a.n_sm = c->n_sm;
	a.ws = c->attn_ws;
	a.ws_bytes = FI_ATTN_WS_BYTES;
	a.cnt = c->attn_cnt;
	a.cnt_n = FI_ATTN_CNT / 2;
	a.layer = layer;
	a.plan = &c->attn_plan;
	/* A mixed batch: its decode rows (first, b->n_decode) through the decode kernel, the
	 * prompt chunks after them as a batch of their own (two launches, not one per
	 * sequence). */
	if (b->n_decode > 0 && b->n_decode < b->n_tokens && b->n_decode <= 65535) {
		struct fi_attn_batch d = *b, r = *b;
		size_t off = (size_t)b->n_decode * Hq * a.hd * 2; /* bytes of the decode rows' q */
		d.n_tokens = b->n_decode;
		if ((e = fi_cu_attn_decode(c->stream, &a, &d)))
			return e;
		r.n_tokens = b->n_tokens - b->n_decode;
		r.n_seqs = b->n_seqs - b->n_decode;
		r.n_decode = 0;
		r.tok_seq_d += b->n_decode;
		r.tok_pos_d += b->n_decode;
		r.slot_d += b->n_decode;
		a.q = (const char *)q_d + off;
		a.out = (char *)out_d + off;
		return attn_run(c, &a, &r);
	}
	return attn_run(c, &a, b);
}

static fi_err cu_silu_mul(struct fi_backend *be, void *out_d, const void *gate_d,
			  const void *up_d, int T, int F)
{
	return fi_cu_silu_mul(fi_cuda_of(be)->stream, out_d, gate_d, up_d, T, F);
}

static fi_err cu_gather_rows(struct fi_backend *be, void *out_d, const void *x_d,
			     const int32_t *idx_d, int n, int D)
{
	return fi_cu_gather_rows(fi_cuda_of(be)->stream, out_d, x_d, idx_d, n, D);
}

static fi_err cu_argmax(struct fi_backend *be, int32_t *tok_d, const float *logits_d, int n,
			int V)
{
	struct fi_cuda *c = fi_cuda_of(be);
	/* attention's split scratch is free once the LM head runs (same stream) */
	c->attn_plan.valid = 0;
	return fi_cu_argmax(c->stream, tok_d, logits_d, n, V, c->attn_ws, FI_ATTN_WS_BYTES,
			    c->attn_cnt + FI_ATTN_CNT / 2, FI_ATTN_CNT / 2);
}

static fi_err cu_sample(struct fi_backend *be, const struct fi_sample_args *a)
{
	struct fi_cuda *c = fi_cuda_of(be);
	return fi_cu_sample(c->stream, a, c->smem_optin);
}

/* Graphs: one executable graph per key (the caller's choice, e.g. the batch size). */
static struct fi_cuda_graph *graph_find(struct fi_cuda *c, uint64_t key)
{
	for (int i = 0; i < c->n_graphs; i++)
		if (c->graphs[i].key == key)
			return &c->graphs[i];
	return NULL;
}

static fi_err cu_graph_replay(struct fi_backend *be, uint64_t key)
{
	struct fi_cuda *c = fi_cuda_of(be);
	struct fi_cuda_graph *g = graph_find(c, key);
	fi_err e;
	if (!g)
		return FI_ENOTFOUND;
	if ((e = fi_cuda_xfer_wait(c, -1))) /* a graph holds no waits for copies */
		return e;
	CU_CHECK(cudaGraphLaunch(g->exec, c->stream));
	return FI_OK;
}

static fi_err cu_graph_capture_begin(struct fi_backend *be, uint64_t key)
{
	struct fi_cuda *c = fi_cuda_of(be);
	fi_err e;
	if (c->capturing)
		return fi_fail(FI_ESTATE, "cuda: graph capture already in progress");
	if ((e = fi_cuda_xfer_wait(c, -1))) /* no wait on an event from outside the capture */
		return e;
	CU_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
	c->capturing = 1;
	c->capture_key = key;
	return FI_OK;
}

static fi_err cu_graph_capture_end(struct fi_backend *be, uint64_t key)
{
	struct fi_cuda *c = fi_cuda_of(be);
	cudaGraph_t graph = NULL;
	cudaGraphExec_t exec = NULL;
	struct fi_cuda_graph *g;
	cudaError_t e;
	if (!c->capturing || c->capture_key != key)
		return fi_fail(FI_ESTATE, "cuda: no graph capture in progress for this key");
	c->capturing = 0;
	e = cudaStreamEndCapture(c->stream, &graph);
	if (e != cudaSuccess) {
		cudaGetLastError();
		return fi_fail(FI_EDEVICE, "cuda: graph capture failed: %s", cudaGetErrorString(e));
	}
	e = cudaGraphInstantiate(&exec, graph, 0);
	cudaGraphDestroy(graph);
	if (e != cudaSuccess)
		return fi_fail(FI_EDEVICE, "cuda: graph instantiate failed: %s", cudaGetErrorString(e));
	if ((g = graph_find(c, key))) {
		cudaGraphExecDestroy(g->exec);
	} else {
		if (c->n_graphs == FI_MAX_GRAPHS) {
			cudaGraphExecDestroy(c->graphs[0].exec);
			memmove(c->graphs, c->graphs + 1, (FI_MAX_GRAPHS - 1) * sizeof(c->graphs[0]));
			c->n_graphs--;
		}
		g = &c->graphs[c->n_graphs++];
	}
	g->key = key;
	g->exec = exec;
	return FI_OK;
}

static void cu_destroy(struct fi_backend *be)
{
	struct fi_cuda *c;
	if (!be)
		return;
	c = fi_cuda_of(be);
	if (c) {
		if (c->stream)
			cudaStreamSynchronize(c->stream);
		for (int i = 0; i < c->n_graphs; i++)
			cudaGraphExecDestroy(c->graphs[i].exec);
		fi_cuda_upload_free(c);
		fi_cuda_ring_free(c);
		fi_cuda_gemm_free(c);
		fi_cuda_family_free(c);
		fi_cuda_qweight_free(c);
		fi_cuda_xfer_free(c);
		if (c->lt)
			cublasLtDestroy(c->lt);
		cudaFree(c->lt_ws);
		cudaFree(c->attn_ws);
		cudaFree(c->multi_ws);
		cudaFree(c->attn_cnt);
		if (c->stream)
			cudaStreamDestroy(c->stream);
		free(c);
	}
	free(be);
}

static fi_err cu_mem_info(struct fi_backend *be, size_t *free_bytes, size_t *total_bytes)
{
	CU_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
	return FI_OK;
}

static const struct fi_backend_ops cuda_ops = {
	.name = "cuda",
	.destroy = cu_destroy,
	.alloc = cu_alloc,
	.free = cu_free,
	.upload = cu_upload,
	.download = cu_download,
	.sync = cu_sync,
	.weight = cu_weight,
	.weight_free = cu_weight_free,
	.kv_alloc = cu_kv_alloc,
	.kv_free = cu_kv_free,
	.host_register = cu_host_register,
	.host_unregister = cu_host_unregister,
	.embed = cu_embed,
	.rmsnorm = cu_rmsnorm,
	.matmul = fi_cuda_matmul,
	.matmul_f32out = fi_cuda_matmul_f32out,
	.weight_cat = cu_weight_cat,
	.qweight_cat = fi_cuda_qweight_cat,
	.matmul_multi = fi_cuda_matmul_multi,
	.matmul_glu = fi_cuda_matmul_glu,
	.rope = cu_rope,
	.kv_write = cu_kv_write,
	.rope_kv_write = cu_rope_kv_write,
	.attention = cu_attention,
	.silu_mul = cu_silu_mul,
	.gather_rows = cu_gather_rows,
	.norm_qkv_rope = fi_cuda_norm_qkv_rope,
	.matmul_add = fi_cuda_matmul_add,
	.norm_glu = fi_cuda_norm_glu,
	.add_norm = cu_add_norm,
	.argmax = cu_argmax,
	.sample = cu_sample,
	.graph_replay = cu_graph_replay,
	.graph_capture_begin = cu_graph_capture_begin,
	.graph_capture_end = cu_graph_capture_end,
	/* model families (arch.h, family.c) */
	.scale = fi_cuda_scale,
	.gelu_mul = fi_cuda_gelu_mul,
	.relu2_mul = fi_cuda_relu2_mul,
	.norm_matmul = fi_cuda_norm_matmul,
	.softcap = fi_cuda_softcap,
	.moe = fi_cuda_moe,
	.mem_info = cu_mem_info,
	.kv_copy = fi_cuda_kv_copy,
};

static fi_err setup(struct fi_backend *be, struct fi_cuda *c, int device)
{
	struct cudaDeviceProp prop;
	int n = 0, v;
	cudaError_t e = cudaGetDeviceCount(&n);
	if (e != cudaSuccess || n == 0) {
		const char *why = e == cudaErrorInsufficientDriver ? "no NVIDIA driver, or one older "
								       "than this build's CUDA runtime"
				  : e == cudaErrorNoDevice || e == cudaSuccess ? "no CUDA device"
									       : cudaGetErrorString(e);
		cudaGetLastError();
		return fi_fail(FI_EDEVICE, "no CUDA GPU available (%s); use --backend cpu", why);
	}
	if (device < 0 || device >= n)
		return fi_fail(FI_EDEVICE, "CUDA device %d does not exist (%d present)", device, n);
	CU_CHECK(cudaSetDevice(device));
	CU_CHECK(cudaGetDeviceProperties(&prop, device));
	snprintf(be->device, sizeof(be->device), "%s", prop.name);
	if (prop.major < 9)
		return fi_fail(FI_EDEVICE,
			       "GPU '%s' has compute capability %d.%d; this build of fi needs 9.0 "
			       "(Hopper) or newer",
			       prop.name, prop.major, prop.minor);
	c->device = device;
	c->n_sm = prop.multiProcessorCount;
	CU_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
	c->smem_optin = (size_t)v;
	CU_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
	LT_CHECK(cublasLtCreate(&c->lt));
	CU_CHECK(cudaMalloc(&c->lt_ws, FI_LT_WS_BYTES));
	CU_CHECK(cudaMalloc(&c->attn_ws, FI_ATTN_WS_BYTES));
	CU_CHECK(cudaMalloc(&c->multi_ws, FI_MULTI_WS_BYTES));
	CU_CHECK(cudaMalloc((void **)&c->attn_cnt, FI_ATTN_CNT * sizeof(int)));
	CU_CHECK(cudaMemset(c->attn_cnt, 0, FI_ATTN_CNT * sizeof(int)));
	/* FI_GEMV=0, FI_FUSE=0|kv, FI_GLU=0: the plain paths, to time against */
	c->no_glu = !be->settings->glu;
	c->no_gemv = !be->settings->gemv;
	c->fuse_mode = be->settings->fuse;
	c->no_fp8_gemm = !be->settings->fp8_gemm;
	c->fp8_unit = be->settings->fp8_unit;
	c->fp8_fast = be->settings->fp8_fast;
	fi_err fe = fi_cuda_upload_init(c);
	if (fe)
		return fe;
	CU_CHECK(cudaMemGetInfo(&be->mem_free, &be->mem_total));
	return FI_OK;
}

fi_err fi_backend_cuda_create(int device, struct fi_backend **out)
{
	struct fi_backend *be = calloc(1, sizeof(*be));
	struct fi_cuda *c = calloc(1, sizeof(*c));
	fi_err e;
	*out = NULL;
	if (!be || !c) {
		free(be);
		free(c);
		return fi_fail(FI_ENOMEM, "cuda: no memory for the backend");
	}
	be->ops = &cuda_ops;
	be->act = FI_DT_BF16;
	be->n_threads = 1;
	be->priv = c;
	be->settings = fi_settings();
	/* FI_DECODE_FUSE=0: decode layers through the plain ops, to time against */
	be->fuse_max_T = be->settings->decode_fuse ? 4 : 0;
	be->fuse_quant = be->settings->qfuse;
	be->fuse_families = be->settings->family_fuse;
	if ((e = setup(be, c, device))) {
		cu_destroy(be);
		return e;
	}
	fi_info("cuda: %s, %d SMs, %.1f GiB free of %.1f GiB", be->device, c->n_sm,
		be->mem_free / 1073741824.0, be->mem_total / 1073741824.0);
	*out = be;
	return FI_OK;
}
