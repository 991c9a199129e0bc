/* log: diagnostics to stderr with levels, and a progress bar for long work.
 *
 * Level from $FI_LOG (error, warn, info, debug; default warn) or fi_log_set_level().
 * The progress bar draws only when stderr is a terminal; otherwise it is silent. */
#ifndef FI_LOG_H
#define FI_LOG_H

#include <stdint.h>

enum fi_log_level { FI_LOG_ERROR, FI_LOG_WARN, FI_LOG_INFO, FI_LOG_DEBUG };

void fi_log_set_level(enum fi_log_level lv);
enum fi_log_level fi_log_get_level(void);
/* Sets the "prog: " prefix of every line (commands pass their name). */
void fi_log_set_prog(const char *prog);
void fi_log(enum fi_log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define fi_warn(...) fi_log(FI_LOG_WARN, __VA_ARGS__)
#define fi_info(...) fi_log(FI_LOG_INFO, __VA_ARGS__)
#define fi_debug(...) fi_log(FI_LOG_DEBUG, __VA_ARGS__)

struct fi_progress {
	const char *label;
	uint64_t total, done;
	double t0, last_draw;
	int active; /* nonzero when drawing (stderr is a tty) */
};
void fi_progress_begin(struct fi_progress *p, const char *label, uint64_t total);
void fi_progress_update(struct fi_progress *p, uint64_t done);
void fi_progress_end(struct fi_progress *p);

/* A status line on a terminal, redrawn in place ("fi-decode: 12 done, 8 running, ..."):
 * fi_live draws it when stderr is a terminal, at most every 0.2 s unless force, and not
 * before a delay (default 1 s) from its first call: as git's delayed progress, short work
 * shows none, and a pipeline's text streaming to the same terminal is not interleaved with
 * it. fi_log clears it before writing a message (the next fi_live draws it again);
 * fi_live_clear erases it for good. Off a terminal both do nothing, so piped stderr gets
 * only messages. The delay comes from $FI_LIVE_DELAY (seconds) when set; fi_live_delay sets
 * it (0: draw at once). */
void fi_live(int force, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fi_live_clear(void);
void fi_live_delay(double seconds);
/* Whether fi_live draws (stderr is a terminal and the level shows warnings). */
int fi_live_active(void);

/* Monotonic seconds. */
double fi_now(void);

#endif
