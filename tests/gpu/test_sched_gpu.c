/* The scheduler's device side, on a GPU:
 *   kv_copy   whole KV blocks to and from host memory (the arena's block layout) against
 *             the layout the CPU twin copies, for runs, scattered blocks and both ways,
 *             exact bytes; and its speed on the Llama-3-8B geometry for a 4096-token prefix
 *             (256 blocks of 2 MiB) from pageable and from registered host memory;
 *   overlap   the embedded tiny model (models/tiny, bf16 on the GPU): 256 requests give the
 *             same tokens with the host's events overlapped with the next step as without
 *             (the same steps run either way), and the scheduler's host, planning and
 *             model time per step at 256 sequences;
 *   pool      the same requests in a 256-block pool (preempted and recomputed): how many
 *             greedy outputs match (bf16 GEMMs of other batch shapes can move near ties, so
 *             it is reported, and most must match).
 * Prints one table at the end. */
#include <cuda_runtime_api.h>
#include <time.h>

#include "gpu_util.h"
#include "model/model.h"
#include "sched/scheduler.h"
#include "../unit/util.h"

static struct pair P;
static uint64_t seed = 0x5eed;

/* A small table printed last. */
static char table[16][160];
static int n_table;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The cache's K/V [n_blocks, bs, Hk, hd] of every layer as uploaded from host images img_k,
 * img_v (bf16 bit patterns); block b layer l K is at img_k[l] + b * part. */
static void check_copy(struct fi_kv_cache *kv, uint16_t **img_k, uint16_t **img_v,
		       const int32_t *blocks, int n, size_t host_stride, const char *what)
{
	struct fi_backend *be = P.gpu;
	size_t part = (size_t)kv->block_size * kv->n_kv_heads * kv->head_dim * 2;
	size_t bb = 2 * (size_t)kv->n_layers * part;
	uint8_t *host = malloc(host_stride * (size_t)n);
	void **ptr = malloc(sizeof *ptr * (size_t)n);
	memset(host, 0xa5, host_stride * (size_t)n);
	for (int i = 0; i < n; i++)
		ptr[i] = host + (size_t)i * host_stride;
	/* cache -> host: each host block holds every layer's K then V of its cache block */
	ck_assert_msg(!be->ops->kv_copy(be, kv, 0, n, blocks, ptr, NULL) && !be->ops->sync(be), "%s",
		      fi_errmsg());
	for (int i = 0; i < n; i++)
		for (int l = 0; l < kv->n_layers; l++) {
			ck_assert_msg(!memcmp((uint8_t *)ptr[i] + 2 * l * part,
					      (uint8_t *)img_k[l] + (size_t)blocks[i] * part, part),
				      "%s: block %d layer %d K differs", what, i, l);
			ck_assert_msg(!memcmp((uint8_t *)ptr[i] + (2 * l + 1) * part,
					      (uint8_t *)img_v[l] + (size_t)blocks[i] * part, part),
				      "%s: block %d layer %d V differs", what, i, l);
		}
	/* host -> cache into other blocks (shifted by one), read back whole */
	int32_t *to = malloc(sizeof *to * (size_t)n);
	for (int i = 0; i < n; i++)
		to[i] = (blocks[i] + 1) % kv->n_blocks;
	ck_assert_msg(!be->ops->kv_copy(be, kv, 1, n, to, ptr, NULL) && !be->ops->sync(be), "%s",
		      fi_errmsg());
	size_t lay = (size_t)kv->n_blocks * part;
	uint8_t *back = malloc(lay);
	for (int l = 0; l < kv->n_layers; l++)
		for (int k = 0; k < 2; k++) {
			ck_assert(!be->ops->download(be, back, k ? kv->v_d[l] : kv->k_d[l], lay));
			for (int i = 0; i < n; i++)
				ck_assert_msg(!memcmp(back + (size_t)to[i] * part,
						      (uint8_t *)ptr[i] + (2 * l + k) * part, part),
					      "%s: host->cache block %d layer %d", what, i, l);
		}
	/* restore the images in the cache for the next case */
	for (int l = 0; l < kv->n_layers; l++) {
		ck_assert(!be->ops->upload(be, kv->k_d[l], img_k[l], lay));
		ck_assert(!be->ops->upload(be, kv->v_d[l], img_v[l], lay));
	}
	ck_assert(!be->ops->sync(be));
	(void)bb;
	free(back);
	free(to);
	free(ptr);
	free(host);
	printf("%-44s ok\n", what);
}

START_TEST(test_kv_copy)
{
	struct fi_kv_cache kv = {.n_layers = 3, .n_blocks = 40, .block_size = 16, .n_kv_heads = 2,
				 .head_dim = 64};
	struct fi_backend *be = P.gpu;
	size_t part = (size_t)kv.block_size * kv.n_kv_heads * kv.head_dim * 2;
	size_t lay = (size_t)kv.n_blocks * part, bb = 2 * (size_t)kv.n_layers * part;
	uint16_t *img_k[3], *img_v[3];
	ck_assert(be->ops->kv_copy);
	ck_assert_msg(!be->ops->kv_alloc(be, &kv), "%s", fi_errmsg());
	for (int l = 0; l < kv.n_layers; l++) {
		img_k[l] = malloc(lay);
		img_v[l] = malloc(lay);
		for (size_t i = 0; i < lay / 2; i++) {
			img_k[l][i] = (uint16_t)(next(&seed) >> 48);
			img_v[l][i] = (uint16_t)(next(&seed) >> 48);
		}
		ck_assert(!be->ops->upload(be, kv.k_d[l], img_k[l], lay));
		ck_assert(!be->ops->upload(be, kv.v_d[l], img_v[l], lay));
	}
	int32_t run[8] = {3, 4, 5, 6, 7, 8, 9, 10};
	int32_t scattered[6] = {30, 2, 17, 18, 0, 39};
	int32_t mixed[7] = {5, 6, 7, 20, 21, 1, 2};
	check_copy(&kv, img_k, img_v, run, 8, bb, "kv_copy: one run, packed host blocks");
	check_copy(&kv, img_k, img_v, run, 8, bb + 4096, "kv_copy: one run, spaced host blocks");
	check_copy(&kv, img_k, img_v, scattered, 6, bb, "kv_copy: scattered blocks");
	check_copy(&kv, img_k, img_v, mixed, 7, bb + 512, "kv_copy: runs and gaps");
	be->ops->kv_free(be, &kv);
	for (int l = 0; l < kv.n_layers; l++) {
		free(img_k[l]);
		free(img_v[l]);
	}
}
END_TEST

/* 256 blocks of the 8B geometry (32 layers, 8 KV heads x 128, bf16: 2 MiB a block, 512 MiB
 * for a 4096-token prefix), the arena's 4 KiB-aligned block stride, into ascending blocks. */
START_TEST(test_kv_copy_speed)
{
	struct fi_kv_cache kv = {.n_layers = 32, .n_blocks = 512, .block_size = 16, .n_kv_heads = 8,
				 .head_dim = 128};
	struct fi_backend *be = P.gpu;
	size_t bb = 2 * 32 * (size_t)16 * 8 * 128 * 2;
	int n = 256;
	uint8_t *host = aligned_alloc(4096, bb * (size_t)n);
	void **ptr = malloc(sizeof *ptr * (size_t)n);
	int32_t *bl = malloc(sizeof *bl * (size_t)n);
	ck_assert(host);
	memset(host, 1, bb * (size_t)n);
	ck_assert_msg(!be->ops->kv_alloc(be, &kv), "%s", fi_errmsg());
	for (int i = 0; i < n; i++) {
		ptr[i] = host + (size_t)i * bb;
		bl[i] = 100 + i;
	}
	for (int reg = 0; reg < 2; reg++) {
		double best[2] = {1e9, 1e9};
		if (reg && cudaHostRegister(host, bb * (size_t)n, cudaHostRegisterDefault) != cudaSuccess) {
			printf("kv_copy: cudaHostRegister failed\n");
			break;
		}
		for (int rep = 0; rep < 4; rep++)
			for (int dir = 0; dir < 2; dir++) {
				double t = now();
				ck_assert(!be->ops->kv_copy(be, &kv, dir, n, bl, ptr, NULL) && !be->ops->sync(be));
				t = now() - t;
				if (t < best[dir])
					best[dir] = t;
			}
		snprintf(table[n_table++], sizeof table[0],
			 "| kv_copy 8B 4096-token prefix, %s host | %.2f ms (%.1f GB/s) | %.2f ms (%.1f GB/s) |",
			 reg ? "registered" : "pageable", best[1] * 1e3,
			 bb * n / best[1] / 1e9, best[0] * 1e3, bb * n / best[0] / 1e9);
		if (reg)
			cudaHostUnregister(host);
	}
	be->ops->kv_free(be, &kv);
	free(host);
	free(ptr);
	free(bl);
}
END_TEST

/* ---- the scheduler on the tiny model ---- */

#define NR 256
#define NT 48

struct outs {
	uint32_t tok[NR][NT];
	int n[NR], done;
};

static fi_err on_ev(void *user, const struct fi_sched_event *ev)
{
	struct outs *o = user;
	int i;
	if (ev->type == FI_SCHED_EV_WARN || ev->type == FI_SCHED_EV_ERROR)
		return FI_OK;
	i = atoi(ev->id + 1);
	if (ev->type == FI_SCHED_EV_TOKEN && o->n[i] < NT)
		o->tok[i][o->n[i]++] = ev->token;
	else if (ev->type == FI_SCHED_EV_DONE)
		o->done++;
	return FI_OK;
}

static struct fi_sched_stats run(struct fi_model *m, int overlap, struct outs *o, double *secs)
{
	struct fi_sched_opts op;
	struct fi_sched *s;
	struct fi_sched_stats st;
	uint64_t sd = 77;
	double t;
	memset(o, 0, sizeof *o);
	fi_sched_opts_default(&op);
	op.max_batch = NR;
	op.max_requests = NR;
	op.overlap = overlap;
	op.cb = on_ev;
	op.cb_user = o;
	ck_assert_msg(!fi_sched_create(m, &op, &s), "%s", fi_errmsg());
	for (int i = 0; i < NR; i++) {
		uint32_t toks[200];
		char id[16];
		int n = 8 + (int)(next(&sd) % 180);
		for (int j = 0; j < n; j++)
			toks[j] = 2 + (uint32_t)(next(&sd) % 4000);
		snprintf(id, sizeof id, "r%d", i);
		struct fi_sched_req r = {.id = id, .tokens = toks, .ntokens = (uint32_t)n,
					 .max_tokens = NT, .stream = 1, .flags = FI_SCHED_IGNORE_EOS};
		fi_sample_defaults(&r.sp);
		r.sp.temperature = 0;
		ck_assert_msg(!fi_sched_add(s, &r), "%s", fi_errmsg());
	}
	t = now();
	ck_assert_msg(!fi_sched_run(s), "%s", fi_errmsg());
	*secs = now() - t;
	fi_sched_stats(s, &st);
	fi_sched_destroy(s);
	ck_assert_int_eq(o->done, NR);
	return st;
}

START_TEST(test_overlap_and_pool)
{
	static struct outs a, b, c;
	struct fi_model *m, *small;
	struct fi_sched_stats sa, sb, sc;
	double ta, tb, tc;
	int same = 0;
	ck_assert_msg(!fi_model_load_hf("models/tiny", P.gpu, &m), "%s", fi_errmsg());
	ck_assert(!fi_model_cache_init(m, 8192, 16));
	sa = run(m, 0, &a, &ta);
	sb = run(m, 1, &b, &tb);
	for (int i = 0; i < NR; i++)
		ck_assert_msg(a.n[i] == NT && b.n[i] == NT && !memcmp(a.tok[i], b.tok[i], sizeof a.tok[i]),
			      "request %d: overlapped steps gave other tokens", i);
	printf("%-44s ok\n", "overlap: the same tokens");
	fi_model_close(m);
	ck_assert_msg(!fi_model_load_hf("models/tiny", P.gpu, &small), "%s", fi_errmsg());
	ck_assert(!fi_model_cache_init(small, 256, 16));
	sc = run(small, 1, &c, &tc);
	for (int i = 0; i < NR; i++)
		same += !memcmp(a.tok[i], c.tok[i], sizeof a.tok[i]);
	fi_model_close(small);
	printf("pool of 256 blocks: %llu preemptions, %d of %d outputs as with a large pool\n",
	       (unsigned long long)sc.preemptions, same, NR);
	ck_assert_uint_gt(sc.preemptions, 0);
	ck_assert_msg(same * 10 >= NR * 9, "only %d of %d outputs match after preemption", same, NR);
	const struct {
		const char *what;
		struct fi_sched_stats *st;
		double secs;
	} rows[] = {{"tiny, 256 requests, no overlap", &sa, ta},
		    {"tiny, 256 requests, overlap", &sb, tb},
		    {"tiny, 256 requests, 256-block pool", &sc, tc}};
	for (int k = 0; k < 3; k++)
		snprintf(table[n_table++], sizeof table[0],
			 "| %s | %llu steps, %.0f tok/s | host %.3f ms/step (planning %.3f), model %.3f ms/step |",
			 rows[k].what, (unsigned long long)rows[k].st->steps,
			 NR * NT / rows[k].secs, rows[k].st->host_ms / rows[k].st->steps,
			 rows[k].st->plan_ms / rows[k].st->steps,
			 rows[k].st->model_ms / rows[k].st->steps);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gpu_sched");
	TCase *tc = tcase_create("sched");
	int rc;
	if (!pair_open(&P))
		return 77;
	printf("gpu: %s\n", P.gpu->device);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_kv_copy);
	tcase_add_test(tc, test_kv_copy_speed);
	tcase_add_test(tc, test_overlap_and_pool);
	suite_add_tcase(s, tc);
	rc = fi_test_run(s);
	printf("\n| scheduler on the GPU | | |\n| --- | --- | --- |\n");
	printf("| kv_copy (256 blocks of 2 MiB) | to the cache | to the host |\n");
	for (int i = 0; i < n_table; i++)
		printf("%s\n", table[i]);
	pair_close(&P);
	return rc;
}
