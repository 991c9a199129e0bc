/* shard: the tensor-parallel plan (shard.h). */
#include "shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fi_err fi_shard_check(const struct fi_config *c, int n)
{
	if (n < 1 || n > 16)
		return fi_fail(FI_EUNSUPPORTED, "tensor parallelism over %d ranks (1 to 16)", n);
	if (fi_config_is_arch(c))
		return fi_fail(FI_EUNSUPPORTED, "tensor parallelism: %s is not split yet (the Llama "
			       "family is: Llama, Mistral, Qwen2, Qwen3)", c->arch);
	if (c->n_heads % n)
		return fi_fail(FI_EUNSUPPORTED, "tensor parallelism: %d attention heads do not split "
			       "%d ways", c->n_heads, n);
	if (c->n_kv_heads >= n ? c->n_kv_heads % n : n % c->n_kv_heads)
		return fi_fail(FI_EUNSUPPORTED, "tensor parallelism: %d KV heads over %d ranks (one "
			       "must divide the other)", c->n_kv_heads, n);
	if (c->ffn % n)
		return fi_fail(FI_EUNSUPPORTED, "tensor parallelism: an MLP of %d does not split %d "
			       "ways", c->ffn, n);
	if (c->vocab < n)
		return fi_fail(FI_EUNSUPPORTED, "tensor parallelism: a vocabulary of %d over %d "
			       "ranks", c->vocab, n);
	return FI_OK;
}

static int kv_per_rank(const struct fi_config *c, int n)
{
	return c->n_kv_heads >= n ? c->n_kv_heads / n : 1;
}

int fi_shard_kv_head(const struct fi_config *c, int r, int n)
{
	/* Hk >= n: the rank's own Hk/n; else the KV head of its first q head, (r Hq/n) / (Hq/Hk) */
	return c->n_kv_heads >= n ? r * (c->n_kv_heads / n) : r * c->n_kv_heads / n;
}

void fi_shard_config(const struct fi_config *c, int r, int n, struct fi_config *out)
{
	*out = *c;
	out->n_heads = c->n_heads / n;
	out->n_kv_heads = kv_per_rank(c, n);
	out->ffn = c->ffn / n;
	out->tie_embeddings = 1;
	(void)r;
}

void fi_shard_vocab(int vocab, int r, int n, int *lo, int *cnt)
{
	int a = (int)((long long)vocab * r / n), b = (int)((long long)vocab * (r + 1) / n);
	*lo = a;
	*cnt = b - a;
}

void fi_shard_set_free(struct fi_shard_set *s)
{
	for (int i = 0; i < s->n_own; i++)
		free(s->own[i]);
	free(s->own);
	free(s->t);
	free(s->names);
	memset(s, 0, sizeof *s);
}

/* dst = rows [r0, r0 + nr) of a 2-D (or 1-D) src: a view. */
static void rows(struct fi_tensor *dst, const struct fi_tensor *src, int64_t r0, int64_t nr)
{
	int64_t cols = src->ndim == 2 ? src->shape[1] : 1;
	size_t es = fi_dtype_size(src->dtype);
	*dst = *src;
	dst->shape[0] = nr;
	dst->nbytes = (uint64_t)(nr * cols) * es;
	dst->data = src->data ? (const char *)src->data + (size_t)(r0 * cols) * es : NULL;
}

/* dst = columns [c0, c0 + nc) of a 2-D src: a copy into *own (none for random weights). */
static fi_err cols(struct fi_tensor *dst, const struct fi_tensor *src, int64_t c0, int64_t nc,
		   void **own)
{
	size_t es = fi_dtype_size(src->dtype);
	int64_t R = src->shape[0], C = src->shape[1];
	*dst = *src;
	dst->shape[1] = nc;
	dst->nbytes = (uint64_t)(R * nc) * es;
	*own = NULL;
	if (!src->data)
		return FI_OK;
	if (!(*own = malloc(dst->nbytes)))
		return fi_fail(FI_ENOMEM, "tensor parallelism: out of memory");
	for (int64_t i = 0; i < R; i++)
		memcpy((char *)*own + (size_t)(i * nc) * es,
		       (const char *)src->data + (size_t)(i * C + c0) * es, (size_t)nc * es);
	dst->data = *own;
	return FI_OK;
}

fi_err fi_shard_tensors(const struct fi_config *c, const struct fi_tensor_set *ts, int r, int n,
			struct fi_shard_set *out)
{
	int hd = c->head_dim, q_r = c->n_heads / n, kv_r = kv_per_rank(c, n), F_r = c->ffn / n;
	int kv0 = fi_shard_kv_head(c, r, n), vlo, vn;
	const struct fi_tensor *hsrc;
	fi_err e;
	memset(out, 0, sizeof *out);
	if ((e = fi_shard_check(c, n)))
		return e;
	out->t = calloc((size_t)ts->n + 1, sizeof *out->t);
	out->names = calloc((size_t)ts->n + 1, sizeof *out->names);
	out->own = calloc((size_t)ts->n + 1, sizeof *out->own);
	if (!out->t || !out->names || !out->own) {
		fi_shard_set_free(out);
		return fi_fail(FI_ENOMEM, "tensor parallelism: out of memory");
	}
	for (int i = 0; i < ts->n; i++) {
		const struct fi_tensor *s = &ts->t[i];
		struct fi_tensor *d = &out->t[out->set.n];
		const char *part;
		int l, k = 0, split = 1;
		if (fi_dtype_is_quant(s->dtype)) {
			e = fi_fail(FI_EUNSUPPORTED, "tensor parallelism: '%s' is quantized (%s); only "
				    "f32, f16 and bf16 weights are split yet", s->name,
				    fi_dtype_lname(s->dtype));
			goto fail;
		}
		if (!strcmp(s->name, "output"))
			continue; /* the head below */
		if (sscanf(s->name, "blk.%d.%n", &l, &k) != 1 || !k) {
			*d = *s; /* tok_embd, out_norm: whole */
			split = 0;
		} else if (!strcmp(part = s->name + k, "attn_q") || !strcmp(part, "attn_q_bias")) {
			rows(d, s, (int64_t)r * q_r * hd, (int64_t)q_r * hd);
		} else if (!strcmp(part, "attn_k") || !strcmp(part, "attn_v") ||
			   !strcmp(part, "attn_k_bias") || !strcmp(part, "attn_v_bias")) {
			rows(d, s, (int64_t)kv0 * hd, (int64_t)kv_r * hd);
		} else if (!strcmp(part, "ffn_gate") || !strcmp(part, "ffn_up")) {
			rows(d, s, (int64_t)r * F_r, F_r);
		} else if (!strcmp(part, "attn_o")) {
			if ((e = cols(d, s, (int64_t)r * q_r * hd, (int64_t)q_r * hd,
				      &out->own[out->n_own++])))
				goto fail;
		} else if (!strcmp(part, "ffn_down")) {
			if ((e = cols(d, s, (int64_t)r * F_r, F_r, &out->own[out->n_own++])))
				goto fail;
		} else if (!strcmp(part, "attn_norm") || !strcmp(part, "ffn_norm") ||
			   !strcmp(part, "attn_q_norm") || !strcmp(part, "attn_k_norm")) {
			*d = *s;
			split = 0;
		} else {
			e = fi_fail(FI_EUNSUPPORTED, "tensor parallelism: no plan for tensor '%s'",
				    s->name);
			goto fail;
		}
		/* a slice of a random tensor draws values of its own (shard.h) */
		if (split && !s->data && n > 1) {
			snprintf(out->names[out->set.n], sizeof out->names[0], "%s@%d/%d", s->name, r, n);
			d->name = out->names[out->set.n];
		}
		out->set.n++;
	}
	out->set.t = out->t;
	hsrc = fi_tensor_find(ts, c->tie_embeddings ? "tok_embd" : "output");
	if (!hsrc || hsrc->ndim != 2 || hsrc->shape[0] != c->vocab) {
		e = fi_fail(FI_ENOTFOUND, "tensor '%s' is missing",
			    c->tie_embeddings ? "tok_embd" : "output");
		goto fail;
	}
	fi_shard_vocab(c->vocab, r, n, &vlo, &vn);
	rows(&out->head, hsrc, vlo, vn);
	if (!hsrc->data && n > 1) {
		snprintf(out->names[ts->n], sizeof out->names[0], "%s@%d/%d", hsrc->name, r, n);
		out->head.name = out->names[ts->n];
	}
	return FI_OK;
fail:
	fi_shard_set_free(out);
	return e;
}
