/* openai: the OpenAI API's request bodies to fi request frames, and its response bodies
 * (route_openai.c). No I/O, no model: the HTTP front renders and tokenizes the prompt. */
#ifndef FI_ROUTE_OPENAI_H
#define FI_ROUTE_OPENAI_H

#include <jansson.h>
#include <stddef.h>

#include "frame/frame.h"

struct oai_req {
	int chat;              /* /v1/chat/completions */
	int stream, include_usage;
	int logprobs;          /* token frames' logprob wanted */
	uint32_t top_logprobs;
	char model[128];
	char user[128];        /* "user" (or "session"): the stickiness key, or "" */
	json_t *root;          /* the parsed body (owned) */
	json_t *messages;      /* chat: the messages (borrowed from root) */
	struct fi_frame f;     /* the request: completions' text or tokens, sampling, stop,
				* max_tokens (owned) */
};

/* An OpenAI error: HTTP status, message, the offending parameter (or NULL), code. */
struct oai_err {
	int status;
	char message[256];
	const char *param, *code;
};

/* Parses a body of /v1/completions (chat 0) or /v1/chat/completions (chat 1). 0 and *o filled,
 * or -1 and *err (400 for anything malformed or unsupported, never silently ignored). */
int oai_parse(const char *body, size_t len, int chat, struct oai_req *o, struct oai_err *err);
void oai_req_free(struct oai_req *o);

/* {"error": {...}} as a malloc'd string. type from the status. */
char *oai_error_json(const struct oai_err *e);

#endif
