/* stream_signal: the stop flag set by SIGINT and SIGTERM (stream_signal.h). */
#include "stream_signal.h"

#include <signal.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t interrupted;
static volatile time_t first_at; /* CLOCK_MONOTONIC seconds of the first signal */

static time_t now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts); /* async-signal-safe */
	return ts.tv_sec;
}

static void on_signal(int sig)
{
	/* A second signal while shutting down is not ignored: the default action ends us. One
	 * that comes within a second of the first is the same request twice: timeout(1) signals
	 * its child and then its whole process group, and the two arrive apart when the first
	 * is handled in between. */
	if (interrupted && now_s() - first_at > 1) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
	if (!interrupted)
		first_at = now_s();
	interrupted = 1;
}

void fi_stream_catch_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0; /* no SA_RESTART: blocking calls return EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int fi_stream_interrupted(void)
{
	return interrupted;
}

void fi_stream_set_interrupted(int on)
{
	interrupted = on ? 1 : 0;
}
