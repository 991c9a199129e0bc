/* FI_STEP_LOG (fi(7)): one tab-separated line a scheduler step, to see where the time of a
 * serving run goes (how full each step was, how long host and model took). */
#ifndef FI_CMD_STEPLOG_H
#define FI_CMD_STEPLOG_H

#include <stdio.h>

struct fi_sched;

/* The file FI_STEP_LOG names, opened for writing with its header line; NULL when unset, or
 * (with a warning naming prog) when it cannot be opened: the run goes on without it. */
FILE *steplog_open(const char *prog);
/* The line of the step fi_sched_step just ran; nothing for a step that launched and
 * collected nothing (an idle wait). t0: the run's start (fi_now()). */
void steplog_line(FILE *f, const struct fi_sched *s, double t0);
void steplog_close(FILE *f);

#endif
