/* llm: opening a model on a backend (llm.h, and fi_llm of the public fi_model.h). */
#include "llm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/log.h"
#include "model/store.h"
#include "model/tp.h"
#include "text/chat.h"
#include "text/tokenizer.h"

struct fi_backend_start {
	const char *name;
	int threads;
	struct fi_backend *be;
	fi_err err;
	char msg[1024];
	double secs;
	pthread_t t;
	int threaded;
};

static void *backend_start(void *arg)
{
	struct fi_backend_start *b = arg;
	double t = fi_now();
	if ((b->err = fi_backend_create(b->name, b->threads, &b->be)))
		snprintf(b->msg, sizeof b->msg, "%s", fi_errmsg()); /* details are per thread */
	b->secs = fi_now() - t;
	return NULL;
}

fi_err fi_backend_start(const char *name, int threads, struct fi_backend_start **out)
{
	struct fi_backend_start *b = calloc(1, sizeof *b);
	*out = NULL;
	if (!b)
		return fi_fail(FI_ENOMEM, "backend: out of memory");
	b->name = name;
	b->threads = threads;
	b->threaded = !pthread_create(&b->t, NULL, backend_start, b);
	if (!b->threaded)
		backend_start(b);
	*out = b;
	return FI_OK;
}

fi_err fi_backend_join(struct fi_backend_start *b, struct fi_backend **be, double *secs)
{
	fi_err e;
	if (b->threaded)
		pthread_join(b->t, NULL);
	*be = b->be;
	if (secs)
		*secs = b->secs;
	e = b->err ? fi_fail(b->err, "%s", b->msg) : FI_OK;
	free(b);
	return e;
}

int fi_random_weights;
int fi_tp_size;

void fi_random_weights_notice(const char *prog, const char *model)
{
	fprintf(stderr, "%s: %s: RANDOM WEIGHTS (--load-format dummy): for speed only, the "
		"output means nothing\n", prog, model);
}

fi_err fi_open_backend_model(const char *backend, int threads, const char *arg,
			     struct fi_backend **be, struct fi_image **im, struct fi_model **m)
{
	struct fi_backend_start *bs = NULL;
	fi_err e = FI_OK, be_e;
	*be = NULL;
	*im = NULL;
	*m = NULL;
	/* A Hugging Face directory is converted in the backend's precision: no overlap. The
	 * image is not prefaulted meanwhile: mapping its pages in while CUDA starts slows the
	 * context creation several times over (tests/gpu/NOTES.md). */
	char path[4096];
	int dir = fi_store_resolve(arg, path, sizeof path) == FI_STORE_DIR;
	if ((be_e = fi_backend_start(backend, threads, &bs)))
		return be_e;
	if (fi_random_weights)
		e = fi_image_random(arg, 0, im);
	else if (!dir)
		e = fi_store_open(arg, im);
	if ((be_e = fi_backend_join(bs, be, NULL))) {
		if (*im)
			fi_image_close(*im);
		*im = NULL;
		return be_e;
	}
	if (dir && !fi_random_weights)
		e = fi_store_open_dtype(arg, (*be)->act == FI_DT_F32 ? FI_DT_F32 : FI_DT_BF16, im);
	if (!e && *im && (*im)->random) { /* drawn by the backend where the weights live */
		(*be)->random_weights = 1;
		(*be)->random_seed = (*im)->random_seed;
	}
	if (!e)
		e = fi_tp_size ? fi_model_load_tp(&(*im)->config, &(*im)->set, *be, fi_tp_size, m)
			       : fi_model_load(&(*im)->config, &(*im)->set, *be, m);
	if (e) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", fi_errmsg());
		if (*im)
			fi_image_close(*im);
		fi_backend_destroy(*be);
		*im = NULL;
		*be = NULL;
		return fi_fail(e, "%s", msg);
	}
	return FI_OK;
}

void fi_llm_opts_default(struct fi_llm_opts *o)
{
	o->backend = "auto";
	o->threads = 0;
}

fi_err fi_llm_open(const char *model, const struct fi_llm_opts *o, struct fi_llm **out)
{
	struct fi_llm_opts d;
	struct fi_llm *l;
	fi_err e;
	*out = NULL;
	if (!o) {
		fi_llm_opts_default(&d);
		o = &d;
	}
	if (!model || !*model)
		return fi_fail(FI_EINVAL, "no model named");
	if (!(l = calloc(1, sizeof *l)))
		return fi_fail(FI_ENOMEM, "model: out of memory");
	if ((e = fi_open_backend_model(o->backend ? o->backend : "auto", o->threads, model, &l->be,
				       &l->im, &l->m))) {
		free(l);
		return e;
	}
	*out = l;
	return FI_OK;
}

void fi_llm_close(struct fi_llm *l)
{
	if (!l)
		return;
	fi_chat_free(l->chat);
	fi_tok_free(l->tok);
	fi_model_close(l->m);
	fi_image_close(l->im);
	fi_backend_destroy(l->be);
	free(l);
}

int fi_llm_vocab(const struct fi_llm *l)
{
	return fi_model_config(l->m)->vocab;
}

int fi_llm_context(const struct fi_llm *l)
{
	int n = fi_model_config(l->m)->max_pos;
	return n > 0 ? n : 4096;
}

const char *fi_llm_device(const struct fi_llm *l)
{
	return l->be->device;
}

const char *fi_llm_fingerprint(const struct fi_llm *l)
{
	return l->im->fingerprint_hex;
}

fi_err fi_llm_tokenizer(struct fi_llm *l, const struct fi_tok **out)
{
	fi_err e;
	*out = NULL;
	if (!l->tok && (e = fi_image_tokenizer(l->im, &l->tok)))
		return e;
	*out = l->tok;
	return FI_OK;
}

fi_err fi_llm_chat(struct fi_llm *l, const struct fi_chat **out)
{
	const struct fi_image_blob *cfg = fi_image_blob(l->im, "tokenizer_config.json");
	const struct fi_image_blob *tmpl = fi_image_blob(l->im, "chat_template.jinja");
	fi_err e;
	*out = NULL;
	if (!l->chat) {
		if (!cfg && !tmpl)
			return fi_fail(FI_ENOTFOUND, "'%s': the model image holds no chat template",
				       l->im->path);
		if ((e = fi_chat_load(&l->chat, cfg ? (const char *)cfg->data : NULL,
				      tmpl ? (const char *)tmpl->data : NULL,
				      NULL)))
			return fi_fail_ctx(e, "'%s'", l->im->path);
	}
	*out = l->chat;
	return FI_OK;
}
