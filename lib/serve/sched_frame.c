/* sched_frame: request frames into scheduler requests, events into frames (fi-frame(5)). */
#include <stdlib.h>
#include <string.h>

#include "serve.h"

fi_err fi_sched_encode_prompt(const struct fi_tok *tok, struct fi_frame *f)
{
	struct fi_request *r = &f->req;
	struct fi_tok_ids ids = {0};
	fi_err e;
	if (r->tokens || !r->text)
		return FI_OK;
	if (!tok)
		return fi_fail(FI_EUNSUPPORTED, "request '%s': a text prompt, and the model has no "
			       "tokenizer to encode it (send token ids)", f->id);
	if ((e = fi_tok_encode(tok, r->text, r->text_len, FI_SCHED_ENCODE_FLAGS, &ids)))
		return fi_fail_ctx(e, "request '%s'", f->id);
	if (!ids.n) {
		fi_tok_ids_free(&ids);
		return fi_fail(FI_EINVAL, "request '%s': empty prompt", f->id);
	}
	r->tokens = ids.v;
	r->ntokens = (uint32_t)ids.n;
	return FI_OK;
}

void fi_sched_req_from_frame(const struct fi_frame *f, const struct fi_sample_params *dflt,
			     unsigned dflt_flags, struct fi_sched_req *r)
{
	const struct fi_request *rq = &f->req;
	memset(r, 0, sizeof *r);
	r->id = f->id ? f->id : "";
	r->tokens = rq->tokens;
	r->ntokens = rq->ntokens;
	r->sp = *dflt;
	if (rq->set & FI_REQ_TEMPERATURE)
		r->sp.temperature = rq->temperature;
	if (rq->set & FI_REQ_TOP_K)
		r->sp.top_k = rq->top_k;
	if (rq->set & FI_REQ_TOP_P)
		r->sp.top_p = rq->top_p;
	if (rq->set & FI_REQ_MIN_P)
		r->sp.min_p = rq->min_p;
	if (rq->set & FI_REQ_REPEAT_PENALTY)
		r->sp.repeat_penalty = rq->repeat_penalty;
	if (rq->set & FI_REQ_SEED)
		r->sp.seed = rq->seed;
	r->max_tokens = rq->max_tokens;
	r->stop_ids = rq->stop_ids;
	r->nstop_ids = rq->nstop_ids;
	r->kv = rq->set & FI_REQ_KV ? &rq->kv : NULL;
	r->stream = rq->stream;
	r->flags = dflt_flags & FI_SCHED_IGNORE_EOS;
	if (rq->set & FI_REQ_IGNORE_EOS)
		r->flags = rq->ignore_eos ? FI_SCHED_IGNORE_EOS : 0;
	r->logprobs = rq->logprobs;
	r->top_logprobs = (int)rq->top_logprobs;
}

int fi_sched_event_frame(const struct fi_sched_event *ev, struct fi_frame *f,
			 struct fi_token_top *top)
{
	switch (ev->type) {
	case FI_SCHED_EV_TOKEN:
		if (!ev->stream)
			return 0;
		fi_frame_init(f, FI_FRAME_TOKEN);
		f->id = (char *)ev->id;
		f->tok.token = ev->token;
		f->tok.index = ev->index;
		if (ev->text_len) {
			f->tok.text = (char *)ev->text;
			f->tok.text_len = ev->text_len;
		}
		if (ev->has_logprob) {
			f->tok.has_logprob = 1;
			f->tok.logprob = ev->logprob;
			for (int i = 0; i < ev->n_top && i < FI_SCHED_MAX_TOP; i++) {
				top[i].token = ev->top_ids[i];
				top[i].logprob = ev->top_logprobs[i];
			}
			f->tok.top = ev->n_top ? top : NULL;
			f->tok.ntop = (uint32_t)(ev->n_top < FI_SCHED_MAX_TOP ? ev->n_top : FI_SCHED_MAX_TOP);
		}
		return 1;
	case FI_SCHED_EV_DONE:
		fi_frame_init(f, FI_FRAME_DONE);
		f->id = (char *)ev->id;
		f->done.finish = ev->finish;
		f->done.prompt_tokens = ev->prompt_tokens;
		f->done.gen_tokens = ev->gen_tokens;
		f->done.cached_tokens = ev->cached_tokens;
		f->done.queue_ms = ev->queue_ms;
		f->done.ttft_ms = ev->ttft_ms;
		f->done.tpot_ms = ev->tpot_ms;
		f->done.total_ms = ev->total_ms;
		if (!ev->stream) {
			f->done.tokens = (uint32_t *)ev->tokens;
			f->done.ntokens = ev->gen_tokens;
			if (ev->text_len) {
				f->done.text = (char *)ev->text;
				f->done.text_len = ev->text_len;
			}
		} else if (ev->text_len > ev->text_sent) {
			f->done.text = (char *)ev->text + ev->text_sent;
			f->done.text_len = ev->text_len - ev->text_sent;
		}
		return 1;
	default:
		return 0;
	}
}
