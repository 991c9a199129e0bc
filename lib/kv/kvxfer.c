/* kvxfer: KV blocks between a model's paged cache and the shared arena. */
#include "kvxfer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "base/log.h"

struct fi_kvx {
	struct fi_kvcache *c;
	struct fi_arena *a;
	char id[2 * FI_ARENA_KEY_BYTES + 1];
	int bt;          /* tokens per block, the cache's and the arena's */
	size_t part;     /* bytes of one layer's K (or V) in one block: bt x Hk x hd x esize */
	/* Extents of the arena registered with the backend (cudaHostRegister), by index: those
	 * allocated when the arena is opened by a thread of their own (pinning 64 MiB takes
	 * milliseconds, which would otherwise fall inside the first request that reads them),
	 * later ones the first time a block of theirs is copied. NULL entries are not (yet, or it
	 * failed: (void *)1); busy[e] while a thread registers e. mu guards both. */
	void **reg;
	uint8_t *busy;
	uint32_t n_reg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t th;
	int th_on, stop;
	int told_full;   /* the arena was full once: said once, at warning level */
};

/* Registers the extent of arena block b with the backend, once; a copy that needs an extent
 * the background thread is registering waits for it. A failure only costs speed (copies from
 * unregistered memory are staged), so it is not an error. 0, or -1 past the allocated data. */
static int reg_extent(struct fi_kvx *x, uint32_t b)
{
	struct fi_backend *be = x->c->be;
	uint32_t e;
	void *base, *r;
	size_t len;
	if (!be->ops->host_register || fi_arena_extent(x->a, b, &e, &base, &len)) {
		fi_clear_error();
		return -1;
	}
	pthread_mutex_lock(&x->mu);
	if (e >= x->n_reg) { /* both arrays grow to n; until both have, n_reg stays */
		uint32_t n = e + 16;
		void **v = realloc(x->reg, n * sizeof *v);
		uint8_t *bz = v ? realloc(x->busy, n) : NULL;
		if (v)
			x->reg = v;
		if (bz)
			x->busy = bz;
		if (!bz) { /* unregistered: copies are staged, slower */
			pthread_mutex_unlock(&x->mu);
			return 0;
		}
		memset(v + x->n_reg, 0, (n - x->n_reg) * sizeof *v);
		memset(bz + x->n_reg, 0, n - x->n_reg);
		x->n_reg = n;
	}
	while (x->busy[e])
		pthread_cond_wait(&x->cv, &x->mu);
	if (x->reg[e]) {
		pthread_mutex_unlock(&x->mu);
		return 0;
	}
	x->busy[e] = 1;
	pthread_mutex_unlock(&x->mu);
	r = base;
	if (be->ops->host_register(be, base, len)) {
		fi_debug("kv arena %.16s: extent %u not registered: %s", x->id, e, fi_errmsg());
		fi_clear_error();
		r = (void *)1; /* not tried again */
	}
	pthread_mutex_lock(&x->mu);
	x->reg[e] = r;
	x->busy[e] = 0;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	return 0;
}

/* The background registration of the extents allocated at open, first to last. */
static void *reg_all(void *arg)
{
	struct fi_kvx *x = arg;
	uint32_t step = fi_arena_extent_blocks(x->a);
	for (uint32_t b = 0; step && b < fi_arena_n_blocks(x->a); b += step) {
		pthread_mutex_lock(&x->mu);
		int stop = x->stop;
		pthread_mutex_unlock(&x->mu);
		if (stop || reg_extent(x, b))
			break;
	}
	return NULL;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = 0;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

fi_err fi_kvx_id(const uint8_t model_fp[32], const struct fi_kv_cache *kv, enum fi_dtype dt,
		 char id[2 * FI_ARENA_KEY_BYTES + 1])
{
	char fph[65];
	const char *dn = fi_dtype_lname(dt);
	uint8_t geo[16], md[32], shard[8];
	int sharded = kv->shard_size > 1;
	unsigned len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok;
	hex(model_fp, 32, fph);
	put32(geo, (uint32_t)kv->block_size);
	put32(geo + 4, (uint32_t)kv->n_layers);
	put32(geo + 8, (uint32_t)kv->n_kv_heads);
	put32(geo + 12, (uint32_t)kv->head_dim);
	put32(shard, (uint32_t)kv->shard_rank);
	put32(shard + 4, (uint32_t)kv->shard_size);
	ok = ctx && dn && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, "fi-kvx-1", 8) == 1 && EVP_DigestUpdate(ctx, fph, 64) == 1 &&
	     EVP_DigestUpdate(ctx, dn, strlen(dn)) == 1 && EVP_DigestUpdate(ctx, geo, 16) == 1 &&
	     (!sharded || EVP_DigestUpdate(ctx, "shard", 5) == 1) &&
	     (!sharded || EVP_DigestUpdate(ctx, shard, 8) == 1) &&
	     EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return fi_fail(FI_ENOMEM, "kv arena id: SHA-256 failed");
	hex(md, 32, id);
	return FI_OK;
}

fi_err fi_kvx_open(struct fi_kvx **out, struct fi_kvcache *c, const uint8_t model_fp[32],
		   uint64_t size_bytes, int create)
{
	struct fi_backend *be = c ? c->be : NULL;
	struct fi_arena_opts o = {0};
	struct fi_kvx *x;
	fi_err e;
	*out = NULL;
	if (!c)
		return fi_fail(FI_ESTATE, "kv arena: the model has no kv cache yet");
	/* Each rank holds some heads of every block: one rank's copies alone would publish (or
	 * restore) part of the KV. Until every rank moves its part in step, a group keeps its
	 * KV to itself. */
	if (c->kv.shard_size > 1)
		return fi_fail(FI_EUNSUPPORTED, "kv arena: not with tensor parallelism (--tp %d) yet",
			       c->kv.shard_size);
	if (!(x = calloc(1, sizeof *x)))
		return fi_fail(FI_ENOMEM, "kv arena: out of memory");
	x->c = c;
	x->bt = c->kv.block_size;
	x->part = fi_kv_block_bytes(&c->kv, be->act);
	if ((e = fi_kvx_id(model_fp, &c->kv, c->kv.fp8 ? FI_DT_F8_E4M3 : be->act, x->id))) {
		free(x);
		return e;
	}
	o.block_tokens = (uint32_t)x->bt;
	o.token_bytes = x->part / (size_t)x->bt * 2 * (size_t)c->kv.n_layers;
	o.size_bytes = size_bytes;
	o.no_create = !create;
	if ((e = fi_arena_open(&x->a, x->id, &o))) {
		free(x);
		return e;
	}
	pthread_mutex_init(&x->mu, NULL);
	pthread_cond_init(&x->cv, NULL);
	x->th_on = be->ops->host_register && !pthread_create(&x->th, NULL, reg_all, x);
	*out = x;
	return FI_OK;
}

void fi_kvx_close(struct fi_kvx *x)
{
	if (!x)
		return;
	if (x->th_on) {
		pthread_mutex_lock(&x->mu);
		x->stop = 1;
		pthread_mutex_unlock(&x->mu);
		pthread_join(x->th, NULL);
	}
	for (uint32_t e = 0; e < x->n_reg; e++)
		if (x->reg[e] && x->reg[e] != (void *)1)
			x->c->be->ops->host_unregister(x->c->be, x->reg[e]);
	free(x->reg);
	free(x->busy);
	pthread_cond_destroy(&x->cv);
	pthread_mutex_destroy(&x->mu);
	fi_arena_close(x->a);
	free(x);
}

const char *fi_kvx_name(const struct fi_kvx *x)
{
	return x->id;
}

int fi_kvx_block_tokens(const struct fi_kvx *x)
{
	return x->bt;
}

struct fi_arena *fi_kvx_arena(struct fi_kvx *x)
{
	return x->a;
}

fi_err fi_kvx_keys(const struct fi_kvx *x, const uint32_t *toks, size_t n, fi_arena_key **keys,
		   size_t *n_keys)
{
	size_t nk = n / (size_t)x->bt;
	fi_err e;
	*keys = NULL;
	*n_keys = 0;
	if (!nk)
		return FI_OK;
	if (!(*keys = malloc(nk * sizeof **keys)))
		return fi_fail(FI_ENOMEM, "kv arena: out of memory");
	if ((e = fi_arena_chain_keys(x->id, toks, n, (uint32_t)x->bt, *keys))) {
		free(*keys);
		*keys = NULL;
		return e;
	}
	*n_keys = nk;
	return FI_OK;
}

/* Copies between cache block cb and arena bytes p, one layer's K and V at a time. */
static fi_err copy_block(struct fi_kvx *x, int32_t cb, uint8_t *p, int to_cache)
{
	struct fi_backend *be = x->c->be;
	struct fi_kv_cache *kv = &x->c->kv;
	size_t off = (size_t)cb * x->part;
	fi_err e = FI_OK;
	for (int l = 0; !e && l < kv->n_layers; l++) {
		uint8_t *k = (uint8_t *)kv->k_d[l] + off, *v = (uint8_t *)kv->v_d[l] + off;
		uint8_t *ak = p + 2 * (size_t)l * x->part, *av = ak + x->part;
		if (to_cache) {
			if (!(e = be->ops->upload(be, k, ak, x->part)))
				e = be->ops->upload(be, v, av, x->part);
		} else {
			if (!(e = be->ops->download(be, ak, k, x->part)))
				e = be->ops->download(be, av, v, x->part);
		}
	}
	return e;
}

/* The checksums of the fetched blocks, checked in a thread (itself spreading the blocks over
 * more) while this one copies them. */
struct verify {
	struct fi_arena *a;
	const uint32_t *blk;
	size_t n, first_bad;
	fi_err e;
};

static void *verify_main(void *p)
{
	struct verify *v = p;
	v->e = fi_arena_verify_blocks(v->a, v->blk, v->n, &v->first_bad);
	return NULL;
}

/* The extent of arena block b (UINT32_MAX when it has none). */
static uint32_t extent_of(const struct fi_kvx *x, uint32_t b)
{
	uint32_t e;
	void *base;
	size_t len;
	if (fi_arena_extent(x->a, b, &e, &base, &len)) {
		fi_clear_error();
		return UINT32_MAX;
	}
	return e;
}

/* n whole blocks between cache blocks cbs[] and the data ptrs[] of arena blocks ab[]: the
 * backend's kv_copy when it has one (one call, queued), else layer by layer. kv_copy moves
 * a run of blocks with one strided copy, which must stay inside one registration of host
 * memory (CUDA refuses one that spans two: "invalid argument"), and each extent is
 * registered apart: every extent is registered first (once), and each block's extent given
 * as its segment. One call, not one an extent: the CUDA backend copies into the cache layer
 * by layer over the blocks of a call, so that layer 0 of a 4096-token prefix lands first
 * rather than after seven of its eight extents. */
static fi_err copy_blocks(struct fi_kvx *x, int to_cache, int n, const int32_t *cbs,
			  void *const *ptrs, const uint32_t *ab)
{
	struct fi_backend *be = x->c->be;
	fi_err e = FI_OK;
	if (be->ops->kv_copy) {
		int32_t *seg = malloc(sizeof *seg * (size_t)(n > 0 ? n : 1));
		if (!seg)
			return fi_fail(FI_ENOMEM, "kv arena: out of memory");
		for (int i = 0; i < n; i++) {
			uint32_t ext = extent_of(x, ab[i]);
			if (!i || ext == UINT32_MAX || (uint32_t)seg[i - 1] != ext)
				reg_extent(x, ab[i]);
			seg[i] = ext == UINT32_MAX ? -1 - i : (int32_t)ext; /* unknown: alone */
		}
		e = be->ops->kv_copy(be, &x->c->kv, to_cache, n, cbs, ptrs, seg);
		free(seg);
		return e;
	}
	for (int i = 0; !e && i < n; i++)
		e = copy_block(x, cbs[i], ptrs[i], to_cache);
	return e;
}

/* A fetch under way: its copies queued on the backend, its checksums checked in a thread,
 * its blocks pinned by the lease until fi_kvx_fetch_end. */
struct fi_kvx_fetch {
	struct fi_kvx *x;
	struct fi_arena_lease *l;
	fi_arena_key *keys;
	uint32_t *blk;
	size_t first, found;
	struct verify v;
	pthread_t th;
	int threaded;
	double tb, t0;
};

static void fetch_free(struct fi_kvx_fetch *f)
{
	fi_arena_unlease(f->l);
	free(f->blk);
	free(f->keys);
	free(f);
}

fi_err fi_kvx_fetch_begin(struct fi_kvx *x, int seq, const uint32_t *toks, size_t n,
			  size_t max_blocks, int *n_tokens, struct fi_kvx_fetch **out)
{
	struct fi_kvx_fetch *f;
	int32_t *cbs = NULL;
	void **ptrs = NULL;
	size_t nk;
	int len = fi_kvcache_seq_len(x->c, seq);
	fi_err e;
	*n_tokens = 0;
	*out = NULL;
	if (len < 0 || len % x->bt)
		return fi_fail(FI_ESTATE, "kv arena: fetch into sequence %d of %d tokens", seq, len);
	if (!(f = calloc(1, sizeof *f)))
		return fi_fail(FI_ENOMEM, "kv arena: out of memory");
	f->x = x;
	f->tb = fi_now();
	f->first = (size_t)len / (size_t)x->bt;
	if ((e = fi_kvx_keys(x, toks, n, &f->keys, &nk)) || !nk)
		goto fail;
	if (nk > max_blocks)
		nk = max_blocks;
	if (nk <= f->first)
		goto fail;
	if (!(f->blk = malloc((nk - f->first) * sizeof *f->blk))) {
		e = fi_fail(FI_ENOMEM, "kv arena: out of memory");
		goto fail;
	}
	if ((e = fi_arena_lease(x->a, &f->l)) ||
	    (e = fi_arena_lookup(f->l, f->keys + f->first, nk - f->first, f->blk, &f->found)) ||
	    !f->found)
		goto fail;
	if ((e = fi_kvcache_reserve(x->c, seq, (int)((f->first + f->found) * (size_t)x->bt))))
		goto fail;
	if (!(cbs = malloc(f->found * sizeof *cbs)) || !(ptrs = malloc(f->found * sizeof *ptrs))) {
		e = fi_fail(FI_ENOMEM, "kv arena: out of memory");
		goto fail;
	}
	f->t0 = fi_now();
	f->v = (struct verify){x->a, f->blk, f->found, f->found, FI_OK};
	f->threaded = !pthread_create(&f->th, NULL, verify_main, &f->v);
	for (size_t i = 0; i < f->found; i++) {
		cbs[i] = fi_kvcache_slot(x->c, seq, (int)((f->first + i) * (size_t)x->bt)) / x->bt;
		ptrs[i] = fi_arena_data(x->a, f->blk[i]);
	}
	e = copy_blocks(x, 1, (int)f->found, cbs, ptrs, f->blk);
	free(cbs);
	free(ptrs);
	if (!e)
		e = fi_kvcache_set_len(x->c, seq, (int)((f->first + f->found) * (size_t)x->bt));
	if (e) {
		x->c->be->ops->sync(x->c->be); /* nothing copies into the blocks any more */
		fi_clear_error();
		if (f->threaded)
			pthread_join(f->th, NULL);
		fi_kvcache_set_len(x->c, seq, len);
		goto fail;
	}
	*n_tokens = (int)(f->found * (size_t)x->bt);
	*out = f;
	return FI_OK;
fail:
	fetch_free(f);
	return e;
}

fi_err fi_kvx_fetch_end(struct fi_kvx_fetch *f, int *n_tokens)
{
	struct fi_kvx *x;
	fi_err e;
	double t1, t2;
	*n_tokens = 0;
	if (!f)
		return FI_OK;
	x = f->x;
	/* The lease keeps the blocks from being reused while the copy reads them. */
	e = x->c->be->ops->sync(x->c->be);
	t1 = fi_now();
	if (f->threaded)
		pthread_join(f->th, NULL);
	else
		verify_main(&f->v);
	t2 = fi_now();
	fi_debug("kv arena %.16s: %zu blocks fetched: found in %.2f ms, copied and waited for "
		 "%.2f ms later, checksums done %.2f ms after that", x->id, f->found,
		 (f->t0 - f->tb) * 1e3, (t1 - f->t0) * 1e3, (t2 - t1) * 1e3);
	if (!e && f->v.e)
		e = f->v.e;
	if (!e && f->v.first_bad < f->found) {
		/* Corrupt KV (a flipped or zeroed byte, a key that is not the block's): the good
		 * blocks before it are kept, it is withdrawn from the arena, and the rest of the
		 * prompt is computed (and stored again by whoever stores it). */
		char hex[2 * FI_ARENA_KEY_BYTES + 1];
		size_t bad = f->v.first_bad;
		fi_arena_key_hex(&f->keys[f->first + bad], hex);
		fi_arena_withdraw(f->l, f->blk[bad]);
		/* later bad blocks too, or the recomputed prompt could not replace them */
		for (size_t i = bad + 1; i < f->found; i++)
			if (fi_arena_verify(x->a, f->blk[i]) == FI_EFORMAT)
				fi_arena_withdraw(f->l, f->blk[i]);
		*n_tokens = (int)(bad * (size_t)x->bt);
		e = fi_fail(FI_EFORMAT, "kv arena %.16s: block %zu of the prompt (key %.16s) failed "
			    "its checksum (corrupt KV): withdrawn, its tokens and the rest computed",
			    x->id, f->first + bad, hex);
	} else if (!e) {
		*n_tokens = (int)(f->found * (size_t)x->bt);
	}
	fetch_free(f);
	return e;
}

fi_err fi_kvx_fetch(struct fi_kvx *x, int seq, const uint32_t *toks, size_t n,
		    size_t max_blocks, int *n_tokens)
{
	struct fi_kvx_fetch *f;
	int len = fi_kvcache_seq_len(x->c, seq), got;
	fi_err e = fi_kvx_fetch_begin(x, seq, toks, n, max_blocks, &got, &f);
	*n_tokens = 0;
	if (e || !f)
		return e;
	e = fi_kvx_fetch_end(f, n_tokens);
	if (*n_tokens < got)
		fi_kvcache_set_len(x->c, seq, len + *n_tokens);
	return e;
}

fi_err fi_kvx_store_blocks(struct fi_kvx *x, const int32_t *blocks, const uint32_t *toks,
			   size_t n_blocks, size_t *n_stored)
{
	struct fi_arena_lease *l = NULL;
	fi_arena_key *keys = NULL;
	uint32_t *ab = NULL;   /* arena blocks reserved for writing */
	int32_t *cbs = NULL;   /* their cache blocks */
	void **ptrs = NULL;
	size_t nk, nw = 0, stored = 0;
	fi_err e;
	if (n_stored)
		*n_stored = 0;
	if ((e = fi_kvx_keys(x, toks, n_blocks * (size_t)x->bt, &keys, &nk)) || !nk)
		return e;
	if (!(ab = malloc(nk * sizeof *ab)) || !(cbs = malloc(nk * sizeof *cbs)) ||
	    !(ptrs = malloc(nk * sizeof *ptrs))) {
		e = fi_fail(FI_ENOMEM, "kv arena: out of memory");
		goto out;
	}
	if ((e = fi_arena_lease(x->a, &l)))
		goto out;
	/* Reserve every block the arena lacks, copy them all, then publish: readers never see
	 * half a block. */
	for (size_t i = 0; i < nk; i++) {
		enum fi_arena_reserve_result r;
		uint32_t b;
		void *data;
		if ((e = fi_arena_reserve(l, &keys[i], &b, &data, &r))) {
			if (e == FI_EFULL) {
				/* a cache: what does not fit is computed again later, but a prefix
				 * that never fits would leave every later process computing it */
				if (!x->told_full++)
					fi_warn("kv arena %.16s: full, %zu of %zu blocks stored (every "
						"block in use; a larger --arena-size holds more)", x->id,
						nw, nk);
				else
					fi_debug("kv arena %.16s: full, %zu of %zu blocks stored", x->id,
						 nw, nk);
				e = FI_OK;
			}
			break;
		}
		if (r != FI_ARENA_WRITE) {
			if (r == FI_ARENA_CACHED)
				fi_arena_unpin(l, b);
			continue;
		}
		ab[nw] = b;
		cbs[nw] = blocks[i];
		ptrs[nw++] = data;
	}
	if (!e && nw && !(e = copy_blocks(x, 0, (int)nw, cbs, ptrs, ab)))
		e = x->c->be->ops->sync(x->c->be);
	for (size_t i = 0; i < nw; i++) {
		if (!e && !(e = fi_arena_publish(l, ab[i]))) {
			fi_arena_unpin(l, ab[i]);
			stored++;
		} else {
			fi_arena_abort(l, ab[i]);
		}
	}
out:
	fi_arena_unlease(l);
	free(keys);
	free(ab);
	free(cbs);
	free(ptrs);
	if (n_stored)
		*n_stored = stored;
	return e;
}

fi_err fi_kvx_store(struct fi_kvx *x, int seq, const uint32_t *toks, size_t n,
		    size_t *n_stored)
{
	const int32_t *bl;
	int nb;
	if (n_stored)
		*n_stored = 0;
	if (fi_kvcache_seq_len(x->c, seq) < (int)n)
		return fi_fail(FI_ESTATE, "kv arena: sequence %d holds fewer than %zu tokens", seq, n);
	bl = fi_kvcache_seq_blocks(x->c, seq, &nb);
	return fi_kvx_store_blocks(x, bl, toks, n / (size_t)x->bt, n_stored);
}

fi_err fi_kvx_make_ref(const struct fi_kvx *x, const uint8_t model_fp[32], const uint32_t *toks,
		       size_t n, struct fi_kv_ref *ref)
{
	fi_arena_key *keys;
	size_t nk;
	fi_err e;
	memset(ref, 0, sizeof *ref);
	if ((e = fi_kvx_keys(x, toks, n, &keys, &nk)))
		return e;
	ref->arena = strdup(x->id);
	ref->blocks = malloc(nk ? nk * 32 : 32);
	if (!ref->arena || !ref->blocks) {
		free(keys);
		fi_kvx_ref_free(ref);
		return fi_fail(FI_ENOMEM, "kv arena: out of memory");
	}
	for (size_t i = 0; i < nk; i++)
		memcpy(ref->blocks[i], keys[i].b, 32);
	free(keys);
	memcpy(ref->fingerprint, model_fp, 32);
	ref->nblocks = (uint32_t)nk;
	ref->ntokens = (uint32_t)n;
	ref->block_tokens = (uint32_t)x->bt;
	return FI_OK;
}

void fi_kvx_ref_free(struct fi_kv_ref *ref)
{
	free(ref->arena);
	free(ref->blocks);
	memset(ref, 0, sizeof *ref);
}

fi_err fi_kvx_check_ref(const struct fi_kvx *x, const uint8_t model_fp[32],
			const struct fi_kv_ref *ref, const uint32_t *toks, size_t n, int *usable)
{
	char want[65], got[65];
	fi_arena_key *keys;
	size_t nk;
	fi_err e;
	*usable = 0;
	if (memcmp(ref->fingerprint, model_fp, 32)) {
		hex(ref->fingerprint, 32, got);
		hex(model_fp, 32, want);
		return fi_fail(FI_EMISMATCH, "kv reference is for model %.16s, this model is %.16s",
			       got, want);
	}
	if (ref->ntokens > n)
		return fi_fail(FI_ERANGE, "kv reference covers %u tokens, the prompt has %zu",
			       ref->ntokens, n);
	if (!x || !ref->nblocks)
		return FI_OK;
	if ((ref->arena && *ref->arena && strcmp(ref->arena, x->id)) ||
	    (ref->block_tokens && ref->block_tokens != (uint32_t)x->bt)) {
		fi_info("kv reference to arena %.16s, this process uses %.16s (another KV dtype or "
			"block size): computing the prompt", ref->arena ? ref->arena : "", x->id);
		return FI_OK;
	}
	if ((uint64_t)ref->nblocks * (uint64_t)x->bt > ref->ntokens)
		return fi_fail(FI_ERANGE, "kv reference: %u blocks of %d tokens exceed its %u tokens",
			       ref->nblocks, x->bt, ref->ntokens);
	if ((e = fi_kvx_keys(x, toks, (size_t)ref->nblocks * (size_t)x->bt, &keys, &nk)))
		return e;
	for (size_t i = 0; i < nk; i++)
		if (memcmp(keys[i].b, ref->blocks[i], 32)) {
			free(keys);
			return fi_fail(FI_EMISMATCH, "kv reference: block %zu is not the prompt's", i);
		}
	free(keys);
	*usable = 1;
	return FI_OK;
}
