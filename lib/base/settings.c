/* settings: the environment, read once (settings.h). */
#include "settings.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"

static struct fi_settings cur;
static pthread_once_t once = PTHREAD_ONCE_INIT;

void fi_settings_defaults(struct fi_settings *s)
{
	memset(s, 0, sizeof *s);
	snprintf(s->home, sizeof s->home, "%s%u", FI_HOME_PREFIX, (unsigned)geteuid());
	snprintf(s->tmpdir, sizeof s->tmpdir, "/tmp");
	s->log_level = -1;
	s->live_delay = -1;
	s->graphs = s->decode_fuse = s->gemv = s->glu = s->fuse = s->pf_wgmma = 1;
	s->device_sample = 1;
	s->moe_grouped = s->moe_one = s->int4_half = 1;
	s->fp8_gemm = s->fp8_unit = s->fp8_half = s->q4k_half = 1;
	s->half_parts = s->half_stay = s->int4_mma = s->fp8_fast = s->fp8_fold = 1;
	s->half_stage = 1;
	s->dec_plan = -1;
	s->dec_async = 1;
	s->dec_tc = 1;
	s->gemm_bucket = 1;
	s->family_fuse = 1;
}

/* A fast path's switch: on unless the variable is "0". */
static int on_unless_0(const char *name)
{
	const char *v = getenv(name);
	return !(v && !strcmp(v, "0"));
}

static int is_1(const char *name)
{
	const char *v = getenv(name);
	return v && !strcmp(v, "1");
}

/* A positive count, or 0 (the default) for anything else. */
static int count(const char *name)
{
	const char *v = getenv(name);
	int n = v ? atoi(v) : 0;
	return n > 0 ? n : 0;
}

static void str(const char *name, char *out, size_t cap)
{
	const char *v = getenv(name);
	if (v && *v)
		snprintf(out, cap, "%s", v);
}

static void read_env(void)
{
	struct fi_settings s;
	const char *v;
	fi_settings_defaults(&s);
	str("FI_HOME", s.home, sizeof s.home);
	str("TMPDIR", s.tmpdir, sizeof s.tmpdir);
	if ((v = getenv("FI_LOG"))) {
		if (!strcasecmp(v, "error")) s.log_level = FI_LOG_ERROR;
		else if (!strcasecmp(v, "warn")) s.log_level = FI_LOG_WARN;
		else if (!strcasecmp(v, "info")) s.log_level = FI_LOG_INFO;
		else if (!strcasecmp(v, "debug")) s.log_level = FI_LOG_DEBUG;
	}
	str("FI_CHAT_NOW", s.chat_now, sizeof s.chat_now);
	str("FI_ARENA_CRASH", s.arena_crash, sizeof s.arena_crash);
	str("FI_ARENA_STOP", s.arena_stop, sizeof s.arena_stop);
	str("FI_STEP_LOG", s.step_log, sizeof s.step_log);
	if ((v = getenv("FI_ARENA_LOCK_TIMEOUT"))) {
		char *end;
		double d = strtod(v, &end);
		if (end != v && !*end && d > 0 && d <= 3600)
			s.arena_lock_timeout = d;
	}
	if ((v = getenv("FI_CONNECT_TIMEOUT"))) {
		char *end;
		double d = strtod(v, &end);
		if (end != v && !*end && d > 0 && d <= 86400)
			s.connect_timeout = d;
	}
	if ((v = getenv("FI_REPLY_TIMEOUT"))) {
		char *end;
		double d = strtod(v, &end);
		if (end != v && !*end && d > 0 && d <= 86400)
			s.reply_timeout = d;
	}
	if ((v = getenv("FI_ROUTE_KV_DROP"))) {
		char *end;
		long l = strtol(v, &end, 10);
		if (end != v && !*end && l >= 2 && l <= 1000000)
			s.route_kv_drop = (int)l;
	}
	if ((v = getenv("FI_LIVE_DELAY"))) {
		char *end;
		double d = strtod(v, &end);
		if (end != v && !*end && d >= 0 && d < 1e6)
			s.live_delay = d;
	}
	s.graphs = on_unless_0("FI_GRAPHS");
	s.decode_fuse = on_unless_0("FI_DECODE_FUSE");
	s.qfuse = is_1("FI_QFUSE");
	s.family_fuse = on_unless_0("FI_FAMILY_FUSE");
	s.gemv = on_unless_0("FI_GEMV");
	s.glu = on_unless_0("FI_GLU");
	s.fuse = on_unless_0("FI_FUSE");
	if ((v = getenv("FI_FUSE")) && !strcmp(v, "kv"))
		s.fuse = 2;
	s.pf_wgmma = on_unless_0("FI_PF_WGMMA");
	s.device_sample = on_unless_0("FI_DEVICE_SAMPLE");
	s.moe_grouped = on_unless_0("FI_MOE_GROUPED");
	s.moe_one = on_unless_0("FI_MOE_ONE");
	s.fp8_gemm = on_unless_0("FI_FP8_GEMM");
	s.fp8_unit = on_unless_0("FI_FP8_UNIT");
	s.int4_half = on_unless_0("FI_INT4_HALF");
	s.fp8_half = on_unless_0("FI_FP8_HALF");
	s.half_parts = on_unless_0("FI_HALF_PARTS");
	s.q4k_half = on_unless_0("FI_Q4K_HALF");
	s.half_stay = on_unless_0("FI_HALF_STAY");
	s.int4_mma = on_unless_0("FI_INT4_MMA");
	s.fp8_fast = on_unless_0("FI_FP8_FAST");
	if ((v = getenv("FI_DEC_PLAN")))
		s.dec_plan = strcmp(v, "0") != 0;
	s.dec_async = on_unless_0("FI_DEC_ASYNC");
	s.dec_tc = on_unless_0("FI_DEC_TC");
	s.gemm_bucket = on_unless_0("FI_GEMM_BUCKET");
	s.gemm_tune = is_1("FI_GEMM_TUNE");
	s.fp8_fold = on_unless_0("FI_FP8_FOLD");
	s.half_stage = on_unless_0("FI_HALF_STAGE");
	s.half_ahead = is_1("FI_HALF_AHEAD");
	s.half_balance = is_1("FI_HALF_BALANCE");
	s.dec_merge = is_1("FI_DEC_MERGE");
	s.upload_alloc = (v = getenv("FI_UPLOAD_PIN")) && !strcmp(v, "alloc");
	s.upload_threads = count("FI_UPLOAD_THREADS");
	s.dec_min_chunk = count("FI_DEC_MIN_CHUNK");
	s.dec_waves = count("FI_DEC_WAVES");
	s.fg_slices = count("FI_FG_SLICES");
	s.qkv_cat_t = count("FI_QKV_CAT_T");
	if (s.fg_slices != 1 && s.fg_slices != 2 && s.fg_slices != 4 && s.fg_slices != 8)
		s.fg_slices = 0;
	str("FI_PF_BR", s.pf_br, sizeof s.pf_br);
	s.nccl_nvls = is_1("NCCL_NVLS_ENABLE");
	cur = s;
}

const struct fi_settings *fi_settings(void)
{
	pthread_once(&once, read_env);
	return &cur;
}

void fi_settings_reload(void)
{
	pthread_once(&once, read_env);
	read_env();
}

void fi_settings_set(const struct fi_settings *s)
{
	pthread_once(&once, read_env);
	cur = *s;
}
