/* api_frame: the public frame and stream calls of fi_frame.h, over frame/frame.h and
 * frame/stream.h. Frames are handed out whole (malloc'd struct fi_frame), kinds and finish
 * reasons by their wire names, so the public headers carry no layout. */
#include "fi/fi.h"

#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "frame/stream.h"

static fi_err new_frame(enum fi_frame_type type, const char *id, struct fi_frame **out)
{
	struct fi_frame *f = malloc(sizeof *f);
	*out = NULL;
	if (!f)
		return fi_fail(FI_ENOMEM, "frame: out of memory");
	fi_frame_init(f, type);
	if (id && !(f->id = strdup(id))) {
		free(f);
		return fi_fail(FI_ENOMEM, "frame: out of memory");
	}
	*out = f;
	return FI_OK;
}

void fi_frame_destroy(struct fi_frame *f)
{
	fi_frame_free(f);
	free(f);
}

fi_err fi_frame_request(const char *id, const uint32_t *tokens, size_t n, const char *text,
			struct fi_frame **out)
{
	struct fi_frame *f;
	fi_err e;
	*out = NULL;
	if (!id || (!text && (!tokens || !n)))
		return fi_fail(FI_EINVAL, "request frame: needs an id and a prompt (tokens or text)");
	if (n > UINT32_MAX)
		return fi_fail(FI_ERANGE, "request frame '%s': %zu tokens", id, n);
	if ((e = new_frame(FI_FRAME_REQUEST, id, &f)))
		return e;
	if (tokens && n) {
		if (!(f->req.tokens = malloc(n * sizeof *tokens)))
			goto oom;
		memcpy(f->req.tokens, tokens, n * sizeof *tokens);
		f->req.ntokens = (uint32_t)n;
	}
	if (text) {
		if (!(f->req.text = strdup(text)))
			goto oom;
		f->req.text_len = strlen(text);
	}
	*out = f;
	return FI_OK;
oom:
	fi_frame_destroy(f);
	return fi_fail(FI_ENOMEM, "request frame '%s': out of memory", id);
}

fi_err fi_frame_cancel(const char *id, struct fi_frame **out)
{
	*out = NULL;
	if (!id)
		return fi_fail(FI_EINVAL, "cancel frame: needs an id");
	return new_frame(FI_FRAME_CANCEL, id, out);
}

/* The frame as a consumer reads it: encoded and decoded again with the default limits, so
 * a value out of range is refused here with the consumer's message. */
static fi_err check_frame(const struct fi_frame *f)
{
	struct fi_frame_limits lim;
	struct fi_buf b = {0};
	struct fi_frame g;
	fi_err e;
	fi_frame_limits_default(&lim);
	fi_frame_init(&g, FI_FRAME_NONE);
	if (!(e = fi_frame_encode(f, &b)))
		e = fi_frame_decode(b.data, b.len, &lim, &g);
	fi_frame_free(&g);
	fi_buf_free(&b);
	return e;
}

fi_err fi_frame_set(struct fi_frame *f, const char *key, double v)
{
	struct fi_request *r = &f->req, old;
	fi_err e;
	if (f->type != FI_FRAME_REQUEST)
		return fi_fail(FI_EINVAL, "frame '%s': %s is a request key", f->id ? f->id : "", key);
	old = *r;
	/* Integers out of the field's range are made negative or huge on purpose, so that the
	 * decoder refuses them with the message a consumer gives. */
	if (!strcmp(key, "temperature"))
		r->temperature = (float)v, r->set |= FI_REQ_TEMPERATURE;
	else if (!strcmp(key, "top_k"))
		r->top_k = v < 0 ? -1 : v > INT32_MAX ? -1 : (int32_t)v, r->set |= FI_REQ_TOP_K;
	else if (!strcmp(key, "top_p"))
		r->top_p = (float)v, r->set |= FI_REQ_TOP_P;
	else if (!strcmp(key, "min_p"))
		r->min_p = (float)v, r->set |= FI_REQ_MIN_P;
	else if (!strcmp(key, "repeat_penalty"))
		r->repeat_penalty = (float)v, r->set |= FI_REQ_REPEAT_PENALTY;
	else if (!strcmp(key, "seed") && v >= 0 && v < 18446744073709551616.0 && v == (uint64_t)v)
		r->seed = (uint64_t)v, r->set |= FI_REQ_SEED;
	else if (!strcmp(key, "max_tokens") && v >= 0 && v <= UINT32_MAX && v == (uint32_t)v)
		r->max_tokens = (uint32_t)v, r->set |= FI_REQ_MAX_TOKENS;
	else if (!strcmp(key, "seed") || !strcmp(key, "max_tokens"))
		return fi_fail(FI_ERANGE, "frame: key '%s': %g is not a whole number in range", key,
			       v);
	else
		return fi_fail(FI_EINVAL, "frame: '%s' is not a request key fi_frame_set takes", key);
	if ((e = check_frame(f)))
		*r = old;
	return e;
}

const char *fi_frame_kind(const struct fi_frame *f)
{
	return fi_frame_type_name(f->type);
}

const char *fi_frame_id(const struct fi_frame *f)
{
	return f->id ? f->id : "";
}

static fi_err not_kind(const struct fi_frame *f, const char *want)
{
	return fi_fail(FI_EINVAL, "frame '%s' is a %s frame, not a %s frame", fi_frame_id(f),
		       fi_frame_kind(f), want);
}

fi_err fi_frame_prompt(const struct fi_frame *f, const uint32_t **tokens, size_t *n,
		       const char **text, size_t *len)
{
	if (f->type != FI_FRAME_REQUEST)
		return not_kind(f, "request");
	if (tokens)
		*tokens = f->req.tokens;
	if (n)
		*n = f->req.ntokens;
	if (text)
		*text = f->req.text;
	if (len)
		*len = f->req.text_len;
	return FI_OK;
}

fi_err fi_frame_token(const struct fi_frame *f, uint32_t *token, uint32_t *index,
		      const char **text, size_t *len)
{
	if (f->type != FI_FRAME_TOKEN)
		return not_kind(f, "token");
	if (token)
		*token = f->tok.token;
	if (index)
		*index = f->tok.index;
	if (text)
		*text = f->tok.text;
	if (len)
		*len = f->tok.text_len;
	return FI_OK;
}

fi_err fi_frame_done(const struct fi_frame *f, const char **finish, uint32_t *prompt_tokens,
		     uint32_t *gen_tokens, const char **text, size_t *len)
{
	if (f->type != FI_FRAME_DONE)
		return not_kind(f, "done");
	if (finish)
		*finish = fi_finish_name(f->done.finish);
	if (prompt_tokens)
		*prompt_tokens = f->done.prompt_tokens;
	if (gen_tokens)
		*gen_tokens = f->done.gen_tokens;
	if (text)
		*text = f->done.text;
	if (len)
		*len = f->done.text_len;
	return FI_OK;
}

fi_err fi_frame_failure(const struct fi_frame *f, fi_err *code, const char **message)
{
	if (f->type != FI_FRAME_ERROR)
		return not_kind(f, "error");
	if (code)
		*code = f->err.code;
	if (message)
		*message = f->err.message ? f->err.message : fi_strerror(f->err.code);
	return FI_OK;
}

fi_err fi_stream_reader(const char *spec, struct fi_stream **out)
{
	return fi_stream_open(out, spec, FI_STREAM_IN, NULL);
}

fi_err fi_stream_writer(const char *spec, struct fi_stream **out)
{
	return fi_stream_open(out, spec, FI_STREAM_OUT, NULL);
}

fi_err fi_stream_next(struct fi_stream *s, struct fi_frame **out)
{
	struct fi_frame *f = malloc(sizeof *f);
	fi_err e;
	*out = NULL;
	if (!f)
		return fi_fail(FI_ENOMEM, "frame: out of memory");
	fi_frame_init(f, FI_FRAME_NONE);
	if ((e = fi_stream_read(s, f)) || f->type == FI_FRAME_EOS) {
		fi_frame_destroy(f);
		return e;
	}
	*out = f;
	return FI_OK;
}
