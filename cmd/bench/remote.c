/* remote: the ZeroMQ target of the serving benchmark. Request frames go to -e ENDPOINT (a
 * PUSH socket that connects: a worker's `fi-decode -i ENDPOINT`, later fi-route); replies
 * (token, done and error frames) come from -i: standard input (the worker's standard output
 * piped in) or an endpoint bound here (the worker's -o). Nothing blocks: a request the
 * socket does not take now is sent again after replies were read, so a worker that reads
 * only while its queue has room and a benchmark that waits on it never hold each other. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "frame/stream.h"
#include "model/store.h"
#include "bench.h"
#include "text/tokenizer.h"

#define READ_BATCH 4096 /* frames read in one poll after the first */

struct remote {
	struct bench_target t;
	struct fi_image *im;
	struct fi_tok *tok;
	struct fi_stream *out, *in;
	const char *in_spec;
	float temp;
	uint64_t seed;
	int ignore_eos;
	char msg[1024];
};

static fi_err r_send(struct bench_target *t, int i, const struct bench_req *q)
{
	struct remote *R = (struct remote *)t;
	struct fi_frame f;
	char id[32];
	fi_err e;
	bench_req_id(i, id, sizeof id);
	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = id;
	f.req.tokens = q->tokens;
	f.req.ntokens = q->ntokens;
	f.req.max_tokens = q->max_tokens;
	f.req.temperature = R->temp;
	f.req.seed = R->seed + (uint64_t)(i < 0 ? -i : i);
	f.req.set = FI_REQ_TEMPERATURE | FI_REQ_SEED | FI_REQ_MAX_TOKENS;
	f.req.ignore_eos = R->ignore_eos;
	e = fi_stream_write_timeout(R->out, &f, 0);
	return e == FI_EFULL ? FI_EBUSY : e;
}

/* One reply frame as an event; frames of requests not ours are passed over. */
static void take(struct remote *R, struct fi_frame *f, double now)
{
	struct bench_ev b = {.t = now};
	int i;
	if (f->type == FI_FRAME_EOS) {
		R->t.ended = 1;
		return;
	}
	if (!f->id || (i = bench_req_index(f->id)) == INT32_MIN)
		return;
	b.req = i;
	switch (f->type) {
	case FI_FRAME_TOKEN:
		b.type = BENCH_EV_TOKEN;
		break;
	case FI_FRAME_DONE:
		b.type = BENCH_EV_DONE;
		b.finish = f->done.finish;
		b.prompt_tokens = f->done.prompt_tokens;
		b.gen_tokens = f->done.gen_tokens;
		b.cached_tokens = f->done.cached_tokens;
		break;
	case FI_FRAME_ERROR:
		b.type = BENCH_EV_ERROR;
		snprintf(R->msg, sizeof R->msg, "%s: %s", fi_err_code_name(f->err.code),
			 f->err.message ? f->err.message : "");
		b.message = R->msg;
		break;
	default:
		return;
	}
	R->t.cb(R->t.cb_user, &b);
}

static fi_err r_poll(struct bench_target *t, double wait)
{
	struct remote *R = (struct remote *)t;
	int ms = wait < 0 ? 250 : (int)ceil(wait * 1e3);
	for (int k = 0; k < READ_BATCH && !t->ended; k++) {
		struct fi_frame f;
		fi_err e = fi_stream_read_timeout(R->in, &f, k ? 0 : ms);
		if (e && fi_stream_broken(R->in)) {
			fi_frame_free(&f);
			return fi_fail_ctx(e, "replies from %s",
					   strcmp(R->in_spec, "-") ? R->in_spec : "standard input");
		}
		if (e == FI_EINTERRUPT || e == FI_EIO) {
			fi_frame_free(&f);
			return e;
		}
		if (e) { /* one unreadable frame: not ours to answer; go on */
			fi_warn("a reply that cannot be read: %s", fi_errmsg());
			fi_frame_free(&f);
			continue;
		}
		if (f.type == FI_FRAME_NONE) {
			fi_frame_free(&f);
			break;
		}
		take(R, &f, fi_now());
		fi_frame_free(&f);
	}
	return FI_OK;
}

static void r_cancel(struct bench_target *t, int i)
{
	struct remote *R = (struct remote *)t;
	struct fi_frame f;
	char id[32];
	bench_req_id(i, id, sizeof id);
	fi_frame_init(&f, FI_FRAME_CANCEL);
	f.id = id;
	fi_stream_write_timeout(R->out, &f, 0);
}

static void r_close(struct bench_target *t)
{
	struct remote *R = (struct remote *)t;
	if (!R)
		return;
	/* the eos frame tells the worker this producer is done (fi-frame(5)); a DEALER's
	 * reply stream sends none of itself */
	if (R->out && R->in && fi_stream_zmq_socket(R->in) == fi_stream_zmq_socket(R->out)) {
		struct fi_frame f;
		fi_frame_init(&f, FI_FRAME_EOS);
		fi_stream_write_timeout(R->out, &f, 1000);
	}
	if (R->out && fi_stream_close(R->out))
		fi_warn("%s: %s", R->t.device, fi_errmsg());
	fi_stream_close(R->in);
	fi_tok_free(R->tok);
	if (R->im)
		fi_image_close(R->im);
	free(R);
}

fi_err bench_remote_open(const struct bench_opts *o, struct bench_target **out)
{
	struct remote *R = calloc(1, sizeof *R);
	struct fi_stream_opts so;
	fi_err e;
	*out = NULL;
	if (!R)
		return fi_fail(FI_ENOMEM, "out of memory");
	R->temp = o->temp;
	R->seed = o->seed;
	R->ignore_eos = o->ignore_eos;
	R->in_spec = o->in;
	R->t.send = r_send;
	R->t.poll = r_poll;
	R->t.cancel = r_cancel;
	R->t.close = r_close;
	R->t.backend = "zeromq";
	R->t.device = o->endpoint;
	R->t.steps = -1;
	R->t.host_s = -1;
	/* The model names the vocabulary and the tokenizer of the prompts; it is not loaded. */
	if ((e = fi_store_open(o->model, &R->im))) {
		free(R);
		return e;
	}
	if (fi_image_tokenizer(R->im, &R->tok))
		R->tok = NULL;
	R->t.config = &R->im->config;
	R->t.tok = R->tok;
	fi_stream_opts_default(&so);
	so.linger_ms = 2000; /* at the end everything was answered: only the eos is left */
	if (o->dealer) {
		so.dealer = 1;
		so.eos_count = 0;
		if ((e = fi_stream_open(&R->in, o->endpoint, FI_STREAM_IN, &so)) ||
		    (e = fi_stream_open_reply(&R->out, R->in))) {
			r_close(&R->t);
			return e;
		}
	} else if ((e = fi_stream_open(&R->out, o->endpoint, FI_STREAM_OUT, &so)) ||
	    (e = fi_stream_open(&R->in, o->in, FI_STREAM_IN, NULL))) {
		e = fi_fail_ctx(e, "%s", R->out ? o->in : o->endpoint);
		r_close(&R->t);
		return e;
	}
	*out = &R->t;
	return FI_OK;
}
