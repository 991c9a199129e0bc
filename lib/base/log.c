/* log: stderr diagnostics and the progress bar. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int level = -1;
static char prog[64] = "fi";

static void init_level(void)
{
	const char *e = getenv("FI_LOG");
	level = FI_LOG_WARN;
	if (!e)
		return;
	if (!strcasecmp(e, "error")) level = FI_LOG_ERROR;
	else if (!strcasecmp(e, "info")) level = FI_LOG_INFO;
	else if (!strcasecmp(e, "debug")) level = FI_LOG_DEBUG;
}

void fi_log_set_level(enum fi_log_level lv) { level = (int)lv; }

enum fi_log_level fi_log_get_level(void)
{
	if (level < 0)
		init_level();
	return (enum fi_log_level)level;
}

void fi_log_set_prog(const char *p) { snprintf(prog, sizeof prog, "%s", p); }

static int live_on = -1; /* -1: not decided yet */
static int live_shown;    /* a live line is on the screen */
static double live_last, live_t0, live_wait = 1.0;

void fi_live_delay(double seconds)
{
	fi_live_active(); /* FI_LIVE_DELAY read first: the caller's choice wins */
	live_wait = seconds;
}

int fi_live_active(void)
{
	if (live_on < 0) {
		const char *d = getenv("FI_LIVE_DELAY");
		char *end;
		double v = d ? strtod(d, &end) : 0;
		if (d && end != d && !*end && v >= 0 && v < 1e6)
			live_wait = v;
		live_on = isatty(2) && fi_log_get_level() >= FI_LOG_WARN;
	}
	return live_on;
}

void fi_live_clear(void)
{
	if (live_shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		live_shown = 0;
	}
}

void fi_live(int force, const char *fmt, ...)
{
	char line[512];
	double t;
	va_list ap;
	if (!fi_live_active())
		return;
	t = fi_now();
	if (!live_t0)
		live_t0 = t;
	if (t - live_t0 < live_wait || (!force && live_shown && t - live_last < 0.2))
		return;
	live_last = t;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	/* \033[K: erase what a longer previous line left. */
	fprintf(stderr, "\r%s: %s\033[K", prog, line);
	fflush(stderr);
	live_shown = 1;
}

void fi_log(enum fi_log_level lv, const char *fmt, ...)
{
	static const char *const tag[] = {"error: ", "warning: ", "", "debug: "};
	char line[2048];
	va_list ap;
	if ((int)lv > (int)fi_log_get_level())
		return;
	fi_live_clear();
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	/* One write so concurrent processes do not interleave within a line. */
	fprintf(stderr, "%s: %s%s\n", prog, tag[lv], line);
}

double fi_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void draw(struct fi_progress *p, int final)
{
	double el = fi_now() - p->t0;
	double f = p->total ? (double)p->done / (double)p->total : 0;
	int w = 30, n = (int)(f * w);
	char bar[64];
	if (f > 1) f = 1, n = w;
	memset(bar, '#', (size_t)n);
	memset(bar + n, '.', (size_t)(w - n));
	bar[w] = 0;
	fprintf(stderr, "\r%s: %s [%s] %3d%% %.1fs%s", prog, p->label, bar, (int)(f * 100), el,
		final ? "\n" : "");
	fflush(stderr);
}

void fi_progress_begin(struct fi_progress *p, const char *label, uint64_t total)
{
	p->label = label;
	p->total = total;
	p->done = 0;
	p->t0 = fi_now();
	p->last_draw = 0;
	p->active = isatty(2) && fi_log_get_level() >= FI_LOG_WARN;
}

void fi_progress_update(struct fi_progress *p, uint64_t done)
{
	double t;
	p->done = done;
	if (!p->active)
		return;
	t = fi_now();
	if (t - p->last_draw < 0.1)
		return;
	p->last_draw = t;
	draw(p, 0);
}

void fi_progress_end(struct fi_progress *p)
{
	if (p->active) {
		p->done = p->total;
		draw(p, 1);
	}
	p->active = 0;
}
