/* stream_signal: the process's stop flag, which every blocking read and write of frames
 * checks (stream.c, frame_reader.c). A file of its own, below both, so that neither reaches
 * up into the other for it.
 *
 * fi_stream_catch_signals() makes SIGINT and SIGTERM set the flag (no SA_RESTART, so
 * blocking waits return); a second signal while shutting down takes its default action. */
#ifndef FI_STREAM_SIGNAL_H
#define FI_STREAM_SIGNAL_H

/* SIGINT/SIGTERM -> flag. Idempotent. */
void fi_stream_catch_signals(void);
int fi_stream_interrupted(void);
/* Tests and commands that want to stop themselves: sets or clears the flag. */
void fi_stream_set_interrupted(int on);

#endif
