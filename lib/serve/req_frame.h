/* req_frame: what a stage that answers request frames (fi-decode, fi-prefill) checks and
 * carries along, beside the scheduler (scheduler.h):
 *   - the tokenizer that made the request's tokens must be the model's (tok_ident.h);
 *   - the request's sampling keys against the stage's own options: where both say something
 *     different, the request's value is used and the conflict is reported (fi-frame(5),
 *     SAMPLING IN A PIPELINE);
 *   - the request's "seq" and text, echoed on its done and error frames, so that results can
 *     be ordered and read without the requests. */
#ifndef FI_REQ_FRAME_H
#define FI_REQ_FRAME_H

#include <stdint.h>

#include "base/err.h"
#include "frame/frame.h"
#include "backend/sample.h"
#include "text/tok_ident.h"

/* FI_EMISMATCH, with a message naming both tokenizers, when f carries a tokenizer
 * fingerprint and tokens, and own (the model's tokenizer; NULL: none to compare) differs. */
fi_err fi_req_check_tokenizer(const struct fi_frame *f, const struct fi_tok_ident *own);

/* The sampling keys (FI_REQ_*) that request f sets to another value than the stage's
 * options do; given: the FI_REQ_* bits of the options given on the command line. */
unsigned fi_req_sampling_conflicts(const struct fi_frame *f, const struct fi_sample_params *opt,
				   unsigned given);
/* A message about the first key of conflicts: "request '1' sets temperature 1, which is not
 * --temp 0: the request's value is used". */
void fi_req_conflict_message(const struct fi_frame *f, const struct fi_sample_params *opt,
			     unsigned conflicts, char *buf, size_t n);

/* What a request's answers repeat from it. */
struct fi_req_echo {
	uint64_t seq;
	int has_seq;
	char *prompt; /* the request's text, or NULL */
	size_t prompt_len;
	/* A worker serving clients (fi-frame(5), SOCKETS): who sent it and under which id; the
	 * scheduler holds it under key, the (client, id) pair. NULL id: not a client's. */
	char *id, *key;
	uint8_t peer[255];
	size_t peer_len;
	struct fi_req_echo *prev, *next; /* the worker's list of its clients' requests */
};
/* A copy of f's seq and text (NULL when f has neither, which is not an error). */
fi_err fi_req_echo_new(const struct fi_frame *f, struct fi_req_echo **out);
/* The same for a request from client peer (peer_len > 0: always allocated), held as key. */
fi_err fi_req_echo_new_peer(const struct fi_frame *f, const uint8_t *peer, size_t peer_len,
			    const char *key, struct fi_req_echo **out);
void fi_req_echo_free(struct fi_req_echo *e);
/* Puts e's seq and prompt on an answer frame (borrowing e's memory). NULL e: nothing. */
void fi_req_echo_apply(const struct fi_req_echo *e, struct fi_frame *answer);

/* An error frame about request f (borrowing f's id, seq and text, and msg): write it with
 * fi_stream_write. */
void fi_req_error_frame(const struct fi_frame *f, fi_err code, const char *msg,
			struct fi_frame *out);

#endif
