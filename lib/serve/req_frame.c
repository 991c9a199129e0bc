/* req_frame: tokenizer and sampling checks of request frames, and what answers echo. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "req_frame.h"

fi_err fi_req_check_tokenizer(const struct fi_frame *f, const struct fi_tok_ident *own)
{
	const struct fi_request *r = &f->req;
	char hex[65];
	if (!own || !(r->set & FI_REQ_TOKENIZER) || !r->tokens ||
	    !memcmp(r->tok_sha256, own->sha256, 32))
		return FI_OK;
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", r->tok_sha256[i]);
	/* 12 hex digits tell tokenizers apart for people; the frames carry all 64. */
	return fi_fail(FI_EMISMATCH, "request '%s': its tokens come from the tokenizer of '%s' "
		       "(%.12s), and the model '%s' has another tokenizer (%.12s)", f->id,
		       r->tok_name ? r->tok_name : "?", hex, own->name, own->hex);
}

/* The sampling keys: frame bit, option name, and the value in a request and in options. */
struct skey {
	unsigned bit;
	const char *key, *opt;
};
static const struct skey skeys[] = {
	{ FI_REQ_TEMPERATURE, "temperature", "--temp" },
	{ FI_REQ_TOP_K, "top_k", "--top-k" },
	{ FI_REQ_TOP_P, "top_p", "--top-p" },
	{ FI_REQ_MIN_P, "min_p", "--min-p" },
	{ FI_REQ_REPEAT_PENALTY, "repeat_penalty", "--repeat-penalty" },
	{ FI_REQ_SEED, "seed", "--seed" },
};

/* The value of key bit in a request and in options, as text (floats with the fewest digits
 * that tell them apart: 0.7, not 0.699999988). */
static void value(unsigned bit, const struct fi_request *r, const struct fi_sample_params *o,
		  char *rb, char *ob, size_t n)
{
	switch (bit) {
	case FI_REQ_TOP_K:
		snprintf(rb, n, "%d", (int)r->top_k);
		snprintf(ob, n, "%d", o->top_k);
		return;
	case FI_REQ_SEED:
		snprintf(rb, n, "%llu", (unsigned long long)r->seed);
		snprintf(ob, n, "%llu", (unsigned long long)o->seed);
		return;
	default: {
		float rv = bit == FI_REQ_TEMPERATURE ? r->temperature : bit == FI_REQ_TOP_P ? r->top_p :
			   bit == FI_REQ_MIN_P ? r->min_p : r->repeat_penalty;
		float ov = bit == FI_REQ_TEMPERATURE ? o->temperature : bit == FI_REQ_TOP_P ? o->top_p :
			   bit == FI_REQ_MIN_P ? o->min_p : o->repeat_penalty;
		snprintf(rb, n, "%g", (double)rv);
		snprintf(ob, n, "%g", (double)ov);
	}
	}
}

unsigned fi_req_sampling_conflicts(const struct fi_frame *f, const struct fi_sample_params *opt,
				   unsigned given)
{
	const struct fi_request *r = &f->req;
	unsigned both = r->set & given & FI_REQ_SAMPLING, out = 0;
	if (both & FI_REQ_TEMPERATURE && r->temperature != opt->temperature)
		out |= FI_REQ_TEMPERATURE;
	if (both & FI_REQ_TOP_K && r->top_k != opt->top_k)
		out |= FI_REQ_TOP_K;
	if (both & FI_REQ_TOP_P && r->top_p != opt->top_p)
		out |= FI_REQ_TOP_P;
	if (both & FI_REQ_MIN_P && r->min_p != opt->min_p)
		out |= FI_REQ_MIN_P;
	if (both & FI_REQ_REPEAT_PENALTY && r->repeat_penalty != opt->repeat_penalty)
		out |= FI_REQ_REPEAT_PENALTY;
	if (both & FI_REQ_SEED && r->seed != opt->seed)
		out |= FI_REQ_SEED;
	return out;
}

void fi_req_conflict_message(const struct fi_frame *f, const struct fi_sample_params *opt,
			     unsigned conflicts, char *buf, size_t n)
{
	char rb[32], ob[32];
	for (size_t i = 0; i < sizeof skeys / sizeof skeys[0]; i++)
		if (conflicts & skeys[i].bit) {
			value(skeys[i].bit, &f->req, opt, rb, ob, sizeof rb);
			snprintf(buf, n, "%s %s conflicts with %s %s in request '%s' (set upstream); "
				 "the request's value is used (fi-frame(5), SAMPLING IN A PIPELINE)",
				 skeys[i].opt, ob, skeys[i].key, rb, f->id);
			return;
		}
	snprintf(buf, n, "no conflict");
}

fi_err fi_req_echo_new(const struct fi_frame *f, struct fi_req_echo **out)
{
	struct fi_req_echo *e;
	*out = NULL;
	if (!f->has_seq && !f->req.text)
		return FI_OK;
	if (!(e = calloc(1, sizeof *e)))
		return fi_fail(FI_ENOMEM, "request '%s'", f->id);
	e->seq = f->seq;
	e->has_seq = f->has_seq;
	if (f->req.text) {
		if (!(e->prompt = malloc(f->req.text_len + 1))) {
			free(e);
			return fi_fail(FI_ENOMEM, "request '%s': prompt of %zu bytes", f->id, f->req.text_len);
		}
		memcpy(e->prompt, f->req.text, f->req.text_len);
		e->prompt[f->req.text_len] = 0;
		e->prompt_len = f->req.text_len;
	}
	*out = e;
	return FI_OK;
}

fi_err fi_req_echo_new_peer(const struct fi_frame *f, const uint8_t *peer, size_t peer_len,
			    const char *key, struct fi_req_echo **out)
{
	struct fi_req_echo *e;
	fi_err r;
	if (!peer_len)
		return fi_req_echo_new(f, out);
	if ((r = fi_req_echo_new(f, out)))
		return r;
	if (!(e = *out) && !(e = calloc(1, sizeof *e)))
		return fi_fail(FI_ENOMEM, "request '%s'", f->id);
	*out = e;
	e->peer_len = peer_len < sizeof e->peer ? peer_len : sizeof e->peer;
	memcpy(e->peer, peer, e->peer_len);
	if (!(e->id = strdup(f->id ? f->id : "")) || !(e->key = strdup(key))) {
		fi_req_echo_free(e);
		*out = NULL;
		return fi_fail(FI_ENOMEM, "request '%s'", f->id);
	}
	return FI_OK;
}

void fi_req_echo_free(struct fi_req_echo *e)
{
	if (e) {
		free(e->prompt);
		free(e->id);
		free(e->key);
	}
	free(e);
}

void fi_req_echo_apply(const struct fi_req_echo *e, struct fi_frame *answer)
{
	if (!e)
		return;
	answer->seq = e->seq;
	answer->has_seq = e->has_seq;
	answer->prompt = e->prompt;
	answer->prompt_len = e->prompt_len;
}

void fi_req_error_frame(const struct fi_frame *f, fi_err code, const char *msg,
			struct fi_frame *out)
{
	fi_frame_init(out, FI_FRAME_ERROR);
	out->id = f->id ? f->id : (char *)"";
	out->seq = f->seq;
	out->has_seq = f->has_seq;
	if (f->type == FI_FRAME_REQUEST && f->req.text) {
		out->prompt = f->req.text;
		out->prompt_len = f->req.text_len;
	}
	out->err.code = (unsigned)code < FI_ENCODE_COUNT ? code : FI_EINVAL;
	out->err.message = (char *)(msg ? msg : fi_strerror(code));
}
