/* settings: everything fi reads from the environment, read once, in one place (fi(7),
 * ENVIRONMENT, lists every variable). No other file of libfi or kernels/ reads the
 * environment.
 *
 * The first fi_settings() reads the environment; backends keep the pointer (be->settings)
 * and the model, the scheduler and the kernels' launchers read their switches from it.
 * Tests and benchmarks that flip a switch at run time set the variable and call
 * fi_settings_reload() (or change a copy and fi_settings_set()); the next op sees the new
 * value, as before when each launch read the environment. Reloading while other threads
 * run ops is not safe: it is for tests and benchmarks between runs. */
#ifndef FI_SETTINGS_H
#define FI_SETTINGS_H

#ifdef __cplusplus
extern "C" {
#endif

/* FI_HOME when unset: FI_HOME_PREFIX followed by the effective user id (home.h). */
#define FI_HOME_PREFIX "/dev/shm/fi-"

struct fi_settings {
	/* Where shared state lives and scratch goes. */
	char home[4096];   /* FI_HOME, non-empty (default FI_HOME_PREFIX and the user id) */
	char tmpdir[4096]; /* TMPDIR, non-empty (default /tmp) */
	int log_level;     /* FI_LOG as an enum fi_log_level (log.h); -1 when unset or unknown */
	char chat_now[64]; /* FI_CHAT_NOW as given ("" unset): the time templates see */
	char arena_crash[64]; /* FI_ARENA_CRASH as given ("" unset): KV arena crash tests */
	char arena_stop[64];  /* FI_ARENA_STOP as given ("" unset): stopped lock holder tests */
	double arena_lock_timeout; /* FI_ARENA_LOCK_TIMEOUT: seconds (0: the default bound) */
	double live_delay; /* FI_LIVE_DELAY: seconds before a progress line shows; -1 unset */
	char step_log[4096]; /* FI_STEP_LOG as given ("" unset): a file for one line a step */
	/* ZeroMQ streams (fi-frame(5)): seconds a connecting producer waits for its consumer
	 * before failing, and a bound worker waits for a client to take a reply before treating
	 * it as gone (0: the defaults, 10 and 30). */
	double connect_timeout; /* FI_CONNECT_TIMEOUT */
	double reply_timeout;   /* FI_REPLY_TIMEOUT */
	/* FI_ROUTE_KV_DROP: fi-route ignores every Nth KV event batch it is sent (0: none), as
	 * if the publisher had dropped it, so that tests reach its replay path. */
	int route_kv_drop;
	/* The CUDA backend's fast paths: 1 on (the default), 0 off ("0" in the variable). */
	int graphs;        /* FI_GRAPHS: decode steps through CUDA graphs */
	int decode_fuse;   /* FI_DECODE_FUSE: the fused decode-layer products */
	/* FI_QFUSE=1: quantized and ternary layer weights in the fused decode products too
	 * (kernels/gemv_qfused.cuh, BitNet's layer in four launches); off by default */
	int qfuse;
	/* FI_FAMILY_FUSE: the families of lib/model/arch.h and Qwen3 in the fused decode
	 * products too, and the q/k norms inside rope_kv_write (on; 0 off) */
	int family_fuse;
	int gemv;          /* FI_GEMV: the weight-streaming products for small batches */
	int glu;           /* FI_GLU: the gated product in one kernel */
	int fuse;          /* FI_FUSE: q/k/v and gate/up weights fused; 2 with "kv" */
	int pf_wgmma;      /* FI_PF_WGMMA: the wgmma prefill attention (sm_90a) */
	int device_sample; /* FI_DEVICE_SAMPLE: sampled rows drawn on the device */
	int moe_one;       /* FI_MOE_ONE: one-token steps take the one-pair expert row kernels */
	int moe_grouped;   /* FI_MOE_GROUPED: large mixture-of-experts batches as grouped GEMMs */
	int int4_half;     /* FI_INT4_HALF: one-token INT4 products in half2 (gemv_q4h) */
	int fp8_half;      /* FI_FP8_HALF: one-token FP8 products in half2 (gemv_f8h) */
	int q4k_half;      /* FI_Q4K_HALF: one-token Q4_K products in half2 (gemv_q4kh) */
	int half_parts;    /* FI_HALF_PARTS: q/k/v, gate/up of those in one launch each */
	int half_stay;     /* FI_HALF_STAY: their blocks stay, three an SM, and take rows in turn */
	int int4_mma;      /* FI_INT4_MMA (on unless 0): one-token INT4 products on the tensor cores (gemv_q4m) */
	int fp8_gemm;      /* FI_FP8_GEMM: W8A8 prompts through cuBLASLt's FP8 GEMM */
	/* FI_FP8_UNIT: where cuBLASLt has no FP8 kernel for per-row and per-token scales,
	 * the FP8 GEMM with unit scales and a pass applying them (gemm_fp8.c; 2.1x the 8B's
	 * pp2048 on an H100) */
	int fp8_unit;
	int fp8_fast;      /* FI_FP8_FAST: cuBLASLt's FP8 GEMMs accumulate in the tensor cores
			    * throughout (CUBLASLT_MATMUL_DESC_FAST_ACCUM) */
	int half_stage;    /* FI_HALF_STAGE: the INT4 and Q4_K one-token products stage x in one
			    * pass */
	int fp8_fold;      /* FI_FP8_FOLD: the gated activation and RMSNorm write the next W8A8
			    * product's input codes themselves (no quantizer launch) */
	int dec_plan;      /* FI_DEC_PLAN: decode attention in balanced pieces; -1 unset (by
			    * batch size), 0 never, 1 whenever it fits */
	int dec_async;     /* FI_DEC_ASYNC: decode attention's K/V rows pipelined (cp.async) */
	int dec_tc;        /* FI_DEC_TC: the planned decode attention on tensor cores */
	int gemm_bucket;   /* FI_GEMM_BUCKET: one cuBLASLt heuristic query per bucket of T */
	/* Opt-in paths and timing knobs of the CUDA backend; 0 or "" leaves the default. */
	int gemm_tune;     /* FI_GEMM_TUNE=1: time cuBLASLt's candidates, keep the fastest */
	int half_ahead;    /* FI_HALF_AHEAD=1: gemv_q4m loads an item's first quad early */
	int half_balance;  /* FI_HALF_BALANCE=1: the half2 products' slices fill their rounds of
			    * row blocks */
	int dec_merge;     /* FI_DEC_MERGE=1: decode attention's last CTA merges the splits */
	int upload_alloc;  /* FI_UPLOAD_PIN=alloc: cudaHostAlloc staging, not registered pages */
	int upload_threads; /* FI_UPLOAD_THREADS: weight-upload threads (0: one per core) */
	int dec_min_chunk; /* FI_DEC_MIN_CHUNK: least positions per decode-attention split */
	int dec_waves;     /* FI_DEC_WAVES: decode-attention CTAs per SM to aim for */
	int fg_slices;     /* FI_FG_SLICES: K slices of the fused decode products (1, 2, 4, 8) */
	int qkv_cat_t;     /* FI_QKV_CAT_T: the most rows of the joined bf16 q/k/v GEMM (0: 256) */
	char pf_br[16];    /* FI_PF_BR: the prefill-attention kernel (wg, wgl, 64, 128, ...) */
	/* Tensor parallelism (--tp): NCCL_NVLS_ENABLE=1 lets NCCL use NVLink multicast; off
	 * otherwise (the variable is set to 0 for NCCL before its communicators start). */
	int nccl_nvls;
};

/* The settings, read from the environment at the first call. Never NULL. */
const struct fi_settings *fi_settings(void);
/* Reads the environment again (after setenv in a test or benchmark). */
void fi_settings_reload(void);
/* Replaces the settings with *s (tests). */
void fi_settings_set(const struct fi_settings *s);
/* The settings as an environment of none would give them. */
void fi_settings_defaults(struct fi_settings *s);

#ifdef __cplusplus
}
#endif

#endif
