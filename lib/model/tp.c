/* tp: the tensor-parallel group (tp.h): rank threads, the step broadcast, the shards merged. */
#include "tp.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/comm.h"
#include "backend/sample.h"
#include "model_int.h"
#include "shard.h"

#define TP_MAX FI_COMM_MAX
#define TP_TOPK_MAX 64 /* top-k rows merged from the shards' candidates up to this k */

enum job { JOB_NONE, JOB_CREATE, JOB_LOAD, JOB_PREP, JOB_STEP, JOB_COLLECT, JOB_CACHE,
	   JOB_SCRATCH, JOB_COPY, JOB_EXIT };

struct rank_out {    /* what a rank's collect brings to the host */
	float *logits;   /* [n_out, vn] */
	size_t cap;
	int32_t *am;     /* [n_out] the shard's argmax (device argmax) */
	float *amv;      /* [n_out] its logit */
	int cap_am;
};

struct fi_tp {
	int n;
	struct fi_model *m[TP_MAX];
	struct fi_backend *be[TP_MAX]; /* be[0] is the caller's */
	struct fi_comm *comm[TP_MAX];
	pthread_t th[TP_MAX];
	int started;                   /* threads running */
	/* the job every rank runs; the caller is rank 0 */
	pthread_mutex_t mu;
	pthread_cond_t cv_job, cv_done;
	uint64_t seq;
	int n_done;
	enum job job;
	fi_err err[TP_MAX];
	char msg[TP_MAX][256];
	/* job arguments */
	const struct fi_config *c;
	const struct fi_tensor_set *ts;
	const struct step_args *step;
	int a1, a2, a3;                /* PREP, CACHE, SCRATCH, COPY: sizes; COLLECT: mode */
	struct rank_out out[TP_MAX];
	struct fi_sample_work w;       /* merged candidates of one row */
};

int fi_model_tp_size(const struct fi_model *m)
{
	return m->tp ? m->tp->n : m->comm ? 1 : 0;
}

/* ---- one rank's part of each job ---- */

static fi_err rank_load(struct fi_tp *tp, int r)
{
	struct fi_shard_set ss;
	struct fi_config sc;
	struct fi_model *m = NULL;
	struct fi_backend *be = tp->be[r];
	fi_err e;
	if ((e = fi_shard_tensors(tp->c, tp->ts, r, tp->n, &ss)))
		return e;
	fi_shard_config(tp->c, r, tp->n, &sc);
	if (!(e = fi_model_load(&sc, &ss.set, be, &m)) &&
	    !(e = be->ops->weight(be, &ss.head, &m->head))) {
		fi_shard_vocab(tp->c->vocab, r, tp->n, &m->vocab_lo, &m->vocab_n);
		m->comm = tp->comm[r];
		tp->comm[r] = NULL; /* the model's now: fi_model_close_rank destroys it */
		m->fusable = 0; /* the fused products add into the residual stream: no all-reduce */
	}
	fi_shard_set_free(&ss);
	if (e) {
		fi_model_close_rank(m);
		return e;
	}
	tp->m[r] = m;
	return FI_OK;
}

static fi_err grow(void **p, size_t *cap, size_t need)
{
	if (need <= *cap)
		return FI_OK;
	void *q = realloc(*p, need);
	if (!q)
		return fi_fail(FI_ENOMEM, "tensor parallelism: out of memory");
	*p = q;
	*cap = need;
	return FI_OK;
}

/* The rank's shard of the step's rows to the host: its logits, or (a1 = 1: greedy tokens
 * from a device argmax) its argmax and that logit alone. */
static fi_err rank_collect(struct fi_tp *tp, int r)
{
	struct fi_model *m = tp->m[r];
	struct fi_backend *be = m->be;
	struct rank_out *o = &tp->out[r];
	int n = tp->a2, vn = m->vocab_n;
	fi_err e;
	if (!n)
		return be->ops->sync(be);
	if (tp->a1 == 1) {
		if (n > o->cap_am) {
			free(o->am);
			free(o->amv);
			o->am = malloc(sizeof *o->am * (size_t)n);
			o->amv = malloc(sizeof *o->amv * (size_t)n);
			o->cap_am = o->am && o->amv ? n : 0;
			if (!o->cap_am)
				return fi_fail(FI_ENOMEM, "tensor parallelism: out of memory");
		}
		if ((e = be->ops->download(be, o->am, m->s.am, sizeof(int32_t) * (size_t)n)))
			return e;
		for (int i = 0; i < n; i++)
			if ((e = be->ops->download(be, &o->amv[i],
						   m->s.logits + (size_t)i * vn + o->am[i], sizeof(float))))
				return e;
		return FI_OK;
	}
	if ((e = grow((void **)&o->logits, &o->cap, sizeof(float) * (size_t)n * vn)))
		return e;
	return be->ops->download(be, o->logits, m->s.logits, sizeof(float) * (size_t)n * vn);
}

static fi_err rank_job(struct fi_tp *tp, int r, enum job job)
{
	struct fi_model *m = tp->m[r];
	fi_err e;
	switch (job) {
	case JOB_CREATE: { /* the rank's backend, in the thread that drives it */
		struct fi_backend *b0 = tp->be[0];
		if (r == 0)
			return FI_OK;
#ifdef FI_HAVE_CUDA
		if (!strcmp(b0->ops->name, "cuda"))
			e = fi_backend_cuda_create(r, &tp->be[r]);
		else
#endif
			e = fi_backend_cpu_create(b0->n_threads / tp->n > 0 ? b0->n_threads / tp->n : 1,
						  &tp->be[r]);
		if (!e) {
			tp->be[r]->random_weights = b0->random_weights;
			tp->be[r]->random_seed = b0->random_seed;
		}
		return e;
	}
	case JOB_LOAD:
		return rank_load(tp, r);
	case JOB_PREP:
		return fi_model_scratch(m, tp->step->T, tp->step->need, tp->step->n_out);
	case JOB_STEP:
		return fi_model_step_body(m, tp->step);
	case JOB_COLLECT:
		return rank_collect(tp, r);
	case JOB_CACHE:
		if (r && (e = fi_kvcache_create_fp8(m->be, m->c.n_layers, m->c.n_kv_heads,
						    m->c.head_dim, tp->a1, tp->a2, tp->a3, &m->cache)))
			return e;
		m->cache->kv.shard_rank = r;
		m->cache->kv.shard_size = tp->n;
		return FI_OK;
	case JOB_SCRATCH:
		return r ? fi_model_scratch(m, tp->a1, 6 * (size_t)tp->a1, tp->a2) : FI_OK;
	case JOB_COPY:
		return r ? fi_kvcache_copy_block(tp->m[r]->cache, tp->a1, tp->a2) : FI_OK;
	default:
		return FI_OK;
	}
}

struct worker {
	struct fi_tp *tp;
	int r;
};

static void *worker_main(void *p)
{
	struct worker *w = p;
	struct fi_tp *tp = w->tp;
	int r = w->r;
	uint64_t seen = 0;
	free(w);
	for (;;) {
		enum job job;
		fi_err e;
		pthread_mutex_lock(&tp->mu);
		while (tp->seq == seen)
			pthread_cond_wait(&tp->cv_job, &tp->mu);
		seen = tp->seq;
		job = tp->job;
		pthread_mutex_unlock(&tp->mu);
		if (job == JOB_EXIT) { /* the rank's model and backend go in the thread they live in */
			fi_model_close_rank(tp->m[r]);
			fi_backend_destroy(tp->be[r]);
			tp->m[r] = NULL;
			tp->be[r] = NULL;
			e = FI_OK;
		} else {
			e = rank_job(tp, r, job);
		}
		tp->err[r] = e;
		if (e)
			snprintf(tp->msg[r], sizeof tp->msg[r], "%s", fi_errmsg());
		pthread_mutex_lock(&tp->mu);
		tp->n_done++;
		pthread_cond_signal(&tp->cv_done);
		pthread_mutex_unlock(&tp->mu);
		if (job == JOB_EXIT)
			return NULL;
	}
}

/* Every rank runs job: ranks 1.. in their threads, rank 0 here, at the same time (the
 * collectives inside meet). The first rank's failure is the caller's. */
static fi_err run(struct fi_tp *tp, enum job job)
{
	fi_err e0;
	pthread_mutex_lock(&tp->mu);
	tp->job = job;
	tp->n_done = 0;
	tp->seq++;
	pthread_cond_broadcast(&tp->cv_job);
	pthread_mutex_unlock(&tp->mu);
	e0 = job == JOB_EXIT ? FI_OK : rank_job(tp, 0, job);
	pthread_mutex_lock(&tp->mu);
	while (tp->n_done < tp->started)
		pthread_cond_wait(&tp->cv_done, &tp->mu);
	pthread_mutex_unlock(&tp->mu);
	if (e0)
		return e0;
	for (int r = 1; r <= tp->started; r++)
		if (tp->err[r])
			return fi_fail(tp->err[r], "rank %d: %s", r, tp->msg[r]);
	return FI_OK;
}

void fi_tp_close(struct fi_tp *tp)
{
	if (!tp)
		return;
	if (tp->started)
		run(tp, JOB_EXIT);
	for (int r = 1; r <= tp->started; r++)
		pthread_join(tp->th[r], NULL);
	for (int r = 0; r < tp->n; r++)
		fi_comm_destroy(tp->comm[r]); /* those no model took */
	for (int r = 0; r < tp->n; r++) {
		free(tp->out[r].logits);
		free(tp->out[r].am);
		free(tp->out[r].amv);
	}
	fi_sample_work_free(&tp->w);
	pthread_cond_destroy(&tp->cv_job);
	pthread_cond_destroy(&tp->cv_done);
	pthread_mutex_destroy(&tp->mu);
	free(tp);
}

static fi_err make_comms(struct fi_backend *const *be, int n, struct fi_comm **comm)
{
#ifdef FI_HAVE_CUDA
	if (!strcmp(be[0]->ops->name, "cuda"))
		return fi_comm_nccl_create(be, n, comm);
#endif
	return fi_comm_cpu_create(n, comm);
}

static fi_err mirror_copy(void *arg, int32_t from, int32_t to)
{
	struct fi_tp *tp = arg;
	tp->a1 = from;
	tp->a2 = to;
	return run(tp, JOB_COPY);
}

fi_err fi_model_load_tp(const struct fi_config *c, const struct fi_tensor_set *ts,
			struct fi_backend *be, int n, struct fi_model **out)
{
	struct fi_tp *tp;
	fi_err e;
	*out = NULL;
	if ((e = fi_shard_check(c, n)))
		return e;
	if (!(tp = calloc(1, sizeof *tp)))
		return fi_fail(FI_ENOMEM, "tensor parallelism: out of memory");
	tp->n = n;
	tp->be[0] = be;
	tp->c = c;
	tp->ts = ts;
	pthread_mutex_init(&tp->mu, NULL);
	pthread_cond_init(&tp->cv_job, NULL);
	pthread_cond_init(&tp->cv_done, NULL);
	for (int r = 1; r < n; r++) {
		struct worker *w = malloc(sizeof *w);
		if (w) /* before the thread starts: it reads w at once */
			*w = (struct worker){tp, r};
		if (!w || pthread_create(&tp->th[r], NULL, worker_main, w)) {
			free(w);
			e = fi_fail(FI_ENOMEM, "tensor parallelism: cannot start rank %d's thread", r);
			goto fail;
		}
		tp->started = r;
	}
	if ((e = run(tp, JOB_CREATE)) || (e = make_comms(tp->be, n, tp->comm)) ||
	    (e = run(tp, JOB_LOAD)))
		goto fail;
	tp->c = NULL;
	tp->ts = NULL;
	*out = tp->m[0];
	if (n > 1)
		tp->m[0]->tp = tp;
	else
		fi_tp_close(tp); /* one rank: no threads to keep; the model keeps comm[0] */
	return FI_OK;
fail:
	/* ranks loaded so far close with their threads; rank 0's here */
	fi_model_close_rank(tp->m[0]); /* its comm with it */
	tp->m[0] = NULL;
	{
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", fi_errmsg());
		fi_tp_close(tp);
		return fi_fail(e, "%s", msg);
	}
}

/* ---- the calls of rank 0's model ---- */

fi_err fi_tp_step(struct fi_tp *tp, const struct step_args *a)
{
	fi_err e;
	tp->step = a;
	/* allocations first, so that no rank fails while the others wait in a collective */
	e = run(tp, JOB_PREP);
	if (!e)
		e = run(tp, JOB_STEP);
	tp->step = NULL;
	return e;
}

fi_err fi_tp_cache_init(struct fi_tp *tp, int n_blocks, int block_size)
{
	fi_err e;
	tp->a1 = n_blocks;
	tp->a2 = block_size;
	tp->a3 = tp->m[0]->kv_fp8;
	if ((e = run(tp, JOB_CACHE)))
		return e;
	tp->m[0]->cache->mirror_copy = mirror_copy;
	tp->m[0]->cache->mirror_arg = tp;
	return FI_OK;
}

fi_err fi_tp_reserve_scratch(struct fi_tp *tp, int T, int rows)
{
	tp->a1 = T;
	tp->a2 = rows;
	return run(tp, JOB_SCRATCH);
}

/* Candidates ordered as sample.h orders them: logit descending, id ascending. */
static int before(float a, int32_t ia, float b, int32_t ib)
{
	return a > b || (a == b && ia < ib);
}

/* The k best of x[vn] (ids lo + j) inserted into c[*m] (sorted, room for k). */
static void top_k(const float *x, int vn, int lo, int k, struct fi_sample_cand *c, int *m)
{
	int n = 0;
	for (int j = 0; j < vn; j++) {
		float v = isnan(x[j]) ? -INFINITY : x[j];
		int p;
		if (n == k && !before(v, lo + j, c[n - 1].logit, c[n - 1].id))
			continue;
		p = n < k ? n++ : n - 1;
		while (p > 0 && before(v, lo + j, c[p - 1].logit, c[p - 1].id)) {
			c[p] = c[p - 1];
			p--;
		}
		c[p] = (struct fi_sample_cand){v, lo + j};
	}
	*m = n;
}

static int by_id(const void *a, const void *b)
{
	int32_t x = ((const struct fi_sample_cand *)a)->id, y = ((const struct fi_sample_cand *)b)->id;
	return (x > y) - (x < y);
}

/* Row i of a sampled step: from the shards' candidates when the row needs no more than its
 * top k (greedy: k = 1), else its whole logits for the host sampler (token -1). */
static fi_err sample_row(struct fi_tp *tp, struct fi_sample_io *io, int i, int V)
{
	const struct fi_sample_row *row = &io->rows[i];
	int k = row->temperature <= 0 ? 1 : row->top_k, M = 0;
	struct fi_sample_cand cand[TP_MAX * TP_TOPK_MAX];
	float comp[TP_MAX * TP_TOPK_MAX];
	fi_err e;
	if (row->penalty != 1 || row->n_logprobs >= 0 || k <= 0 || k > TP_TOPK_MAX || k >= V) {
		for (int r = 0; r < tp->n; r++) {
			const struct fi_model *m = tp->m[r];
			memcpy(io->logits + (size_t)i * V + m->vocab_lo,
			       tp->out[r].logits + (size_t)i * m->vocab_n,
			       sizeof(float) * (size_t)m->vocab_n);
		}
		io->tokens[i] = -1;
		return FI_OK;
	}
	for (int r = 0; r < tp->n; r++) {
		const struct fi_model *m = tp->m[r];
		int got;
		top_k(tp->out[r].logits + (size_t)i * m->vocab_n, m->vocab_n, m->vocab_lo, k,
		      cand + M, &got);
		M += got;
	}
	/* the union in id order is a small vocabulary of its own: the same filters and draw */
	qsort(cand, (size_t)M, sizeof *cand, by_id);
	for (int j = 0; j < M; j++)
		comp[j] = cand[j].logit;
	if (tp->w.vocab != M) {
		fi_sample_work_free(&tp->w);
		if ((e = fi_sample_work_init(&tp->w, M)))
			return e;
	}
	struct fi_sample_row rw = *row;
	int32_t kept = 1, t = fi_sample_pick(&rw, comp, NULL, &tp->w, &kept);
	io->tokens[i] = t >= 0 && t < M ? cand[t].id : -1;
	if (io->n_kept)
		io->n_kept[i] = kept;
	return FI_OK;
}

fi_err fi_tp_collect(struct fi_tp *tp, unsigned out, struct fi_sample_io *io, int n_out,
		     float *logits, int32_t *tokens)
{
	int V = tp->m[0]->c.vocab;
	int dev_am = (out & FI_STEP_TOKENS) && tokens && tp->be[0]->ops->argmax &&
		     !((out & FI_STEP_LOGITS) && logits);
	fi_err e;
	tp->a1 = dev_am;
	tp->a2 = n_out;
	if ((e = run(tp, JOB_COLLECT)) || !n_out)
		return e;
	if (out & FI_STEP_SAMPLE) {
		for (int i = 0; i < n_out; i++)
			if ((e = sample_row(tp, io, i, V)))
				return e;
		return FI_OK;
	}
	if ((out & FI_STEP_LOGITS) && logits)
		for (int r = 0; r < tp->n; r++) {
			const struct fi_model *m = tp->m[r];
			for (int i = 0; i < n_out; i++)
				memcpy(logits + (size_t)i * V + m->vocab_lo,
				       tp->out[r].logits + (size_t)i * m->vocab_n,
				       sizeof(float) * (size_t)m->vocab_n);
		}
	if ((out & FI_STEP_TOKENS) && tokens)
		for (int i = 0; i < n_out; i++) {
			/* each shard's best, then the best of those: ranks in order, so the lowest
			 * id wins a tie */
			float best = 0;
			int32_t id = -1;
			for (int r = 0; r < tp->n; r++) {
				const struct fi_model *m = tp->m[r];
				float v;
				int32_t j;
				if (dev_am) {
					j = tp->out[r].am[i];
					v = tp->out[r].amv[i];
				} else {
					struct fi_sample_cand c1;
					int got;
					top_k(tp->out[r].logits + (size_t)i * m->vocab_n, m->vocab_n, 0, 1,
					      &c1, &got);
					j = c1.id;
					v = c1.logit;
				}
				if (id < 0 || v > best) {
					best = v;
					id = m->vocab_lo + j;
				}
			}
			tokens[i] = id;
		}
	return FI_OK;
}
