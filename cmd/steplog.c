/* steplog: FI_STEP_LOG's lines (steplog.h). Columns: the step, seconds since the start,
 * tokens run and rows sampled by the step launched, requests running and waiting (preempted
 * ones included), free KV blocks, then host, planning and model milliseconds. */
#include "steplog.h"

#include <errno.h>
#include <string.h>

#include "base/log.h"
#include "base/settings.h"
#include "sched/scheduler.h"

FILE *steplog_open(const char *prog)
{
	const char *path = fi_settings()->step_log;
	FILE *f;
	if (!*path)
		return NULL;
	if (!(f = fopen(path, "w"))) {
		fprintf(stderr, "%s: warning: cannot open '%s' (FI_STEP_LOG): %s\n", prog, path,
			strerror(errno));
		return NULL;
	}
	fputs("step\tt_s\ttokens\trows\trunning\twaiting\tkv_free\thost_ms\tplan_ms\tmodel_ms\n", f);
	return f;
}

void steplog_line(FILE *f, const struct fi_sched *s, double t0)
{
	struct fi_sched_stats st;
	if (!f)
		return;
	fi_sched_stats(s, &st);
	if (!st.last_tokens && st.last_model_ms <= 0)
		return;
	fprintf(f, "%llu\t%.4f\t%d\t%d\t%d\t%d\t%d\t%.3f\t%.3f\t%.3f\n",
		(unsigned long long)st.steps, fi_now() - t0, st.last_tokens, st.last_rows,
		st.running, st.waiting + st.preempted, st.kv_available, st.last_host_ms,
		st.last_plan_ms, st.last_model_ms);
}

void steplog_close(FILE *f)
{
	if (f)
		fclose(f);
}
