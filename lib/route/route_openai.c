/* route_openai: OpenAI request bodies to request frames (openai.h). Every key is either
 * understood or refused with a 400 that names it; values equal to the API's defaults of
 * features fi does not have (n = 1, penalties 0, echo false) are accepted, as they ask for
 * nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "openai.h"

#define MAX_BODY_TOKENS (1u << 20)

static int fail(struct oai_err *e, const char *param, const char *code, const char *fmt, const char *a)
{
	e->status = 400;
	e->param = param;
	e->code = code;
	snprintf(e->message, sizeof e->message, fmt, a ? a : "");
	return -1;
}

static int num(json_t *v, double lo, double hi, double *out)
{
	if (!json_is_number(v))
		return -1;
	*out = json_number_value(v);
	return isfinite(*out) && *out >= lo && *out <= hi ? 0 : -1;
}

static int stops(json_t *v, struct fi_frame *f, struct oai_err *e)
{
	size_t n = json_is_string(v) ? 1 : json_is_array(v) ? json_array_size(v) : 0;
	if (json_is_null(v))
		return 0;
	if (!json_is_string(v) && !json_is_array(v))
		return fail(e, "stop", "invalid_type", "'stop' must be a string or an array of strings%s", NULL);
	if (n > 16)
		return fail(e, "stop", "invalid_value", "'stop' takes at most 16 strings%s", NULL);
	if (!n)
		return 0;
	if (!(f->req.stop = calloc(n, sizeof *f->req.stop)))
		return fail(e, NULL, "server_error", "out of memory%s", NULL);
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_is_string(v) ? v : json_array_get(v, i);
		if (!json_is_string(s) || !json_string_length(s) || json_string_length(s) > 1024)
			return fail(e, "stop", "invalid_value", "each stop must be a string of 1 to 1024 bytes%s", NULL);
		if (!(f->req.stop[f->req.nstop++] = strdup(json_string_value(s))))
			return fail(e, NULL, "server_error", "out of memory%s", NULL);
	}
	return 0;
}

/* The prompt of /v1/completions: a string, [string], token ids or [[ids]] (one prompt). */
static int prompt(json_t *v, struct fi_frame *f, struct oai_err *e)
{
	if (json_is_array(v) && json_array_size(v) == 1 &&
	    (json_is_string(json_array_get(v, 0)) || json_is_array(json_array_get(v, 0))))
		v = json_array_get(v, 0);
	if (json_is_string(v)) {
		if (!json_string_length(v))
			return fail(e, "prompt", "invalid_value", "'prompt' is empty%s", NULL);
		f->req.text_len = json_string_length(v);
		if (!(f->req.text = malloc(f->req.text_len + 1)))
			return fail(e, NULL, "server_error", "out of memory%s", NULL);
		memcpy(f->req.text, json_string_value(v), f->req.text_len + 1);
		return 0;
	}
	if (json_is_array(v) && json_array_size(v) && json_array_size(v) <= MAX_BODY_TOKENS) {
		size_t n = json_array_size(v);
		if (!(f->req.tokens = malloc(sizeof *f->req.tokens * n)))
			return fail(e, NULL, "server_error", "out of memory%s", NULL);
		for (size_t i = 0; i < n; i++) {
			json_t *t = json_array_get(v, i);
			if (!json_is_integer(t) || json_integer_value(t) < 0 ||
			    json_integer_value(t) > UINT32_MAX)
				return fail(e, "prompt", "invalid_value",
					    "'prompt' must be a string, or one list of token ids%s", NULL);
			f->req.tokens[i] = (uint32_t)json_integer_value(t);
		}
		f->req.ntokens = (uint32_t)n;
		return 0;
	}
	return fail(e, "prompt", "invalid_value", "'prompt' must be one string or one list of token ids "
		    "(several prompts in one request are not supported)%s", NULL);
}

int oai_parse(const char *body, size_t len, int chat, struct oai_req *o, struct oai_err *e)
{
	json_error_t je;
	const char *key;
	json_t *v, *root;
	double d;
	memset(o, 0, sizeof *o);
	memset(e, 0, sizeof *e);
	o->chat = chat;
	fi_frame_init(&o->f, FI_FRAME_REQUEST);
	root = o->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return fail(e, NULL, "invalid_json", "the body is not valid JSON: %s", je.text);
	if (!json_is_object(root))
		return fail(e, NULL, "invalid_json", "the body must be a JSON object%s", NULL);
	json_object_foreach(root, key, v) {
		if (!strcmp(key, "model")) {
			if (!json_is_string(v) || json_string_length(v) >= sizeof o->model)
				return fail(e, "model", "invalid_type", "'model' must be a string%s", NULL);
			snprintf(o->model, sizeof o->model, "%s", json_string_value(v));
		} else if (chat && !strcmp(key, "messages")) {
			if (!json_is_array(v) || !json_array_size(v))
				return fail(e, "messages", "invalid_value", "'messages' must be a non-empty array%s", NULL);
			o->messages = v;
		} else if (!chat && !strcmp(key, "prompt")) {
			if (prompt(v, &o->f, e))
				return -1;
		} else if (!strcmp(key, "max_tokens") || !strcmp(key, "max_completion_tokens")) {
			if (json_is_null(v))
				continue;
			if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 24)
				return fail(e, key, "invalid_value", "'%s' must be a whole number from 1", key);
			o->f.req.max_tokens = (uint32_t)json_integer_value(v);
			o->f.req.set |= FI_REQ_MAX_TOKENS;
		} else if (!strcmp(key, "temperature")) {
			if (json_is_null(v))
				continue;
			if (num(v, 0, 2, &d))
				return fail(e, key, "invalid_value", "'temperature' must be from 0 to 2%s", NULL);
			o->f.req.temperature = (float)d;
			o->f.req.set |= FI_REQ_TEMPERATURE;
		} else if (!strcmp(key, "top_p")) {
			if (json_is_null(v))
				continue;
			if (num(v, 0, 1, &d) || d == 0)
				return fail(e, key, "invalid_value", "'top_p' must be in (0, 1]%s", NULL);
			o->f.req.top_p = (float)d;
			o->f.req.set |= FI_REQ_TOP_P;
		} else if (!strcmp(key, "top_k")) { /* vLLM's extension */
			if (!json_is_integer(v) || json_integer_value(v) < -1 || json_integer_value(v) > INT32_MAX)
				return fail(e, key, "invalid_value", "'top_k' must be a whole number%s", NULL);
			o->f.req.top_k = json_integer_value(v) < 0 ? 0 : (int32_t)json_integer_value(v);
			o->f.req.set |= FI_REQ_TOP_K;
		} else if (!strcmp(key, "min_p")) {
			if (num(v, 0, 1, &d))
				return fail(e, key, "invalid_value", "'min_p' must be from 0 to 1%s", NULL);
			o->f.req.min_p = (float)d;
			o->f.req.set |= FI_REQ_MIN_P;
		} else if (!strcmp(key, "repetition_penalty")) {
			if (num(v, 1e-3, 1e3, &d))
				return fail(e, key, "invalid_value", "'repetition_penalty' must be from 0.001 to 1000%s", NULL);
			o->f.req.repeat_penalty = (float)d;
			o->f.req.set |= FI_REQ_REPEAT_PENALTY;
		} else if (!strcmp(key, "seed")) {
			if (json_is_null(v))
				continue;
			if (!json_is_integer(v))
				return fail(e, key, "invalid_type", "'seed' must be an integer%s", NULL);
			o->f.req.seed = (uint64_t)json_integer_value(v);
			o->f.req.set |= FI_REQ_SEED;
		} else if (!strcmp(key, "stop")) {
			if (stops(v, &o->f, e))
				return -1;
		} else if (!strcmp(key, "stream")) {
			if (!json_is_boolean(v) && !json_is_null(v))
				return fail(e, key, "invalid_type", "'stream' must be a boolean%s", NULL);
			o->stream = json_is_true(v);
		} else if (!strcmp(key, "stream_options")) {
			json_t *u;
			const char *k2;
			if (json_is_null(v))
				continue;
			if (!json_is_object(v))
				return fail(e, key, "invalid_type", "'stream_options' must be an object%s", NULL);
			json_object_foreach(v, k2, u) {
				if (strcmp(k2, "include_usage") || !json_is_boolean(u))
					return fail(e, "stream_options", "unsupported_parameter",
						    "stream_options.%s is not supported", k2);
				o->include_usage = json_is_true(u);
			}
		} else if (!strcmp(key, "logprobs")) {
			if (json_is_null(v))
				continue;
			if (chat) {
				if (!json_is_boolean(v))
					return fail(e, key, "invalid_type", "'logprobs' must be a boolean%s", NULL);
				o->logprobs = json_is_true(v);
			} else { /* completions: the number of alternatives, 0 to 5 */
				if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 5)
					return fail(e, key, "invalid_value", "'logprobs' must be from 0 to 5%s", NULL);
				o->logprobs = 1;
				o->top_logprobs = (uint32_t)json_integer_value(v);
			}
		} else if (chat && !strcmp(key, "top_logprobs")) {
			if (json_is_null(v))
				continue;
			if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 20)
				return fail(e, key, "invalid_value", "'top_logprobs' must be from 0 to 20%s", NULL);
			o->top_logprobs = (uint32_t)json_integer_value(v);
		} else if (!strcmp(key, "n")) {
			if (!json_is_null(v) && (!json_is_integer(v) || json_integer_value(v) != 1))
				return fail(e, key, "unsupported_parameter", "only n = 1 is supported%s", NULL);
		} else if (!strcmp(key, "user") || !strcmp(key, "session")) {
			if (json_is_null(v))
				continue;
			if (!json_is_string(v) || json_string_length(v) >= sizeof o->user)
				return fail(e, key, "invalid_type", "'%s' must be a string of at most 127 bytes", key);
			snprintf(o->user, sizeof o->user, "%s", json_string_value(v));
		} else if (!strcmp(key, "ignore_eos")) {
			if (!json_is_boolean(v))
				return fail(e, key, "invalid_type", "'ignore_eos' must be a boolean%s", NULL);
			o->f.req.ignore_eos = json_is_true(v);
			o->f.req.set |= FI_REQ_IGNORE_EOS;
		} else if (!strcmp(key, "frequency_penalty") || !strcmp(key, "presence_penalty")) {
			if (!json_is_null(v) && (!json_is_number(v) || json_number_value(v) != 0))
				return fail(e, key, "unsupported_parameter", "'%s' is not supported (only 0)", key);
		} else if (!chat && !strcmp(key, "echo")) {
			if (!json_is_null(v) && !json_is_false(v))
				return fail(e, key, "unsupported_parameter", "'echo' is not supported%s", NULL);
		} else {
			return fail(e, key, "unsupported_parameter", "unsupported parameter '%s'", key);
		}
	}
	if (!o->model[0])
		return fail(e, "model", "missing_parameter", "'model' is required%s", NULL);
	if (chat && !o->messages)
		return fail(e, "messages", "missing_parameter", "'messages' is required%s", NULL);
	if (!chat && !o->f.req.text && !o->f.req.tokens)
		return fail(e, "prompt", "missing_parameter", "'prompt' is required%s", NULL);
	if (o->top_logprobs && !o->logprobs)
		return fail(e, "top_logprobs", "invalid_value", "'top_logprobs' needs 'logprobs': true%s", NULL);
	if (o->include_usage && !o->stream)
		return fail(e, "stream_options", "invalid_value", "'stream_options' needs 'stream': true%s", NULL);
	if (o->logprobs)
		o->f.req.set |= FI_REQ_LOGPROBS;
	o->f.req.logprobs = o->logprobs;
	if (o->top_logprobs) {
		o->f.req.top_logprobs = o->top_logprobs;
		o->f.req.set |= FI_REQ_TOP_LOGPROBS;
	}
	o->f.req.stream = 1;
	return 0;
}

void oai_req_free(struct oai_req *o)
{
	fi_frame_free(&o->f);
	json_decref(o->root);
	o->root = o->messages = NULL;
}

char *oai_error_json(const struct oai_err *e)
{
	const char *type = e->status == 401 ? "authentication_error" :
			   e->status == 404 ? "not_found_error" :
			   e->status == 429 ? "rate_limit_error" :
			   e->status >= 500 ? "server_error" : "invalid_request_error";
	json_t *o = json_pack("{s:{s:s,s:s,s:o,s:o}}", "error", "message", e->message, "type", type,
			      "param", e->param ? json_string(e->param) : json_null(),
			      "code", e->code ? json_string(e->code) : json_null());
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	return s;
}
