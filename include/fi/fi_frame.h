/* fi_frame: frames (fi-frame(5)) and the streams that carry them (libfi(3)).
 *
 * A frame is one request, generated token, end of a request (done), error, cancel or end
 * of stream. A stream reads or writes frames on "-" (standard input or output), a file, or
 * ZeroMQ endpoints ("ipc://PATH", "tcp://HOST:PORT"; an input binds, an output connects),
 * exactly as the fi commands' -i and -o do, so a program can sit anywhere in a pipeline:
 *
 *   struct fi_stream *in;
 *   struct fi_frame *f;
 *   fi_stream_reader("-", &in);
 *   while (!fi_stream_next(in, &f) && f) {
 *           if (!strcmp(fi_frame_kind(f), "token")) ...
 *           fi_frame_destroy(f);
 *   }
 *   fi_stream_close(in);
 */
#ifndef FI_FI_FRAME_H
#define FI_FI_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "fi_err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fi_frame;
struct fi_stream;

/* ---- frames ---- */

/* A request frame: the prompt as token ids (tokens[n]), as text, or both (the ids are
 * the prompt then). The sampling keys are unset: the consumer's defaults apply. */
fi_err fi_frame_request(const char *id, const uint32_t *tokens, size_t n, const char *text,
			struct fi_frame **out);
/* Sets a request key of fi-frame(5): "temperature", "top_k", "top_p", "min_p",
 * "repeat_penalty", "seed", "max_tokens"; out of its range is FI_ERANGE with the message
 * a consumer would give. */
fi_err fi_frame_set(struct fi_frame *f, const char *key, double value);
/* A cancel frame for request id. */
fi_err fi_frame_cancel(const char *id, struct fi_frame **out);
void fi_frame_destroy(struct fi_frame *f);

/* "request", "token", "done", "error" or "cancel"; the request id. */
const char *fi_frame_kind(const struct fi_frame *f);
const char *fi_frame_id(const struct fi_frame *f);
/* The parts of each kind; FI_EINVAL for a frame of another kind. Pointers stay valid while
 * f lives; any out-pointer may be NULL. */
fi_err fi_frame_prompt(const struct fi_frame *f, const uint32_t **tokens, size_t *n,
		       const char **text, size_t *len);
fi_err fi_frame_token(const struct fi_frame *f, uint32_t *token, uint32_t *index,
		      const char **text, size_t *len);
/* finish: "stop", "length", "cancel" or "error"; text: what token frames did not carry. */
fi_err fi_frame_done(const struct fi_frame *f, const char **finish, uint32_t *prompt_tokens,
		     uint32_t *gen_tokens, const char **text, size_t *len);
fi_err fi_frame_failure(const struct fi_frame *f, fi_err *code, const char **message);

/* ---- streams ---- */

/* Opens spec ("-", a file, ZeroMQ endpoints) to read frames from, or to write them to. Frames
 * are binary: an output "-" that is a terminal is refused (FI_EINVAL), as the commands refuse
 * it without -f. */
fi_err fi_stream_reader(const char *spec, struct fi_stream **out);
fi_err fi_stream_writer(const char *spec, struct fi_stream **out);
/* The next frame (*f, to fi_frame_destroy), or *f NULL at the end of the stream. A frame
 * that cannot be read is an error for it alone (read on), unless fi_stream_broken(). */
fi_err fi_stream_next(struct fi_stream *s, struct fi_frame **f);
int fi_stream_broken(const struct fi_stream *s);
/* Writes one frame; pipes and files are buffered until fi_stream_flush or close. */
fi_err fi_stream_write(struct fi_stream *s, const struct fi_frame *f);
fi_err fi_stream_flush(struct fi_stream *s);
/* Flushes, ends a ZeroMQ output with an eos frame, frees s; the first write error. */
fi_err fi_stream_close(struct fi_stream *s);

#ifdef __cplusplus
}
#endif

#endif
