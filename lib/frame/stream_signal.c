/* stream_signal: the stop flag set by SIGINT and SIGTERM (stream_signal.h). */
#include "stream_signal.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	/* A second signal while shutting down is not ignored: the default action ends us. */
	if (interrupted) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
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
