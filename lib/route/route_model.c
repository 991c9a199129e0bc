/* route_model: the tokenizer and chat template fi-route works with (-m), and the HTTP
 * requests' shared state (hreq). Weights are never read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/image.h"
#include "model/store.h"
#include "route_int.h"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	char *b = NULL;
	if (!f)
		return NULL;
	if (!fstat(fileno(f), &st) && S_ISREG(st.st_mode) && st.st_size < (64 << 20) &&
	    (b = malloc((size_t)st.st_size + 1))) {
		size_t n = fread(b, 1, (size_t)st.st_size, f);
		b[n] = 0;
	}
	fclose(f);
	return b;
}

fi_err fi_route_model_open(const char *arg, struct fi_route_model **out)
{
	struct fi_route_model *m = calloc(1, sizeof *m);
	char path[4096];
	fi_err e = FI_OK;
	*out = NULL;
	if (!m)
		return fi_fail(FI_ENOMEM, "out of memory");
	pthread_mutex_init(&m->mu, NULL);
	fi_tok_ident_name(arg, m->name, sizeof m->name);
	switch (fi_store_resolve(arg, path, sizeof path)) {
	case FI_STORE_NONE:
		e = fi_fail(FI_ENOTFOUND, "model '%s' not found (a store name, image or directory)", arg);
		break;
	case FI_STORE_DIR:
		snprintf(path, sizeof path, "%s/tokenizer_config.json", arg);
		m->cfg_json = slurp(path);
		snprintf(path, sizeof path, "%s/chat_template.jinja", arg);
		m->tmpl = slurp(path);
		e = fi_tok_load_path(arg, &m->tok);
		break;
	default: {
		const struct fi_image_blob *b;
		if ((e = fi_image_open(path, &m->im)) || (e = fi_image_tokenizer(m->im, &m->tok)))
			break;
		if ((b = fi_image_blob(m->im, "tokenizer_config.json")))
			m->cfg_json = strdup(b->data);
		if ((b = fi_image_blob(m->im, "chat_template.jinja")))
			m->tmpl = strdup(b->data);
	}
	}
	if (!e)
		e = fi_tok_ident(m->tok, arg, &m->ident);
	if (!e && (m->cfg_json || m->tmpl) && fi_chat_load(&m->chat, m->cfg_json, m->tmpl, NULL))
		m->chat = NULL; /* no usable template: chat requests are refused */
	if (e) {
		fi_route_model_close(m);
		return e;
	}
	*out = m;
	return FI_OK;
}

void fi_route_model_close(struct fi_route_model *m)
{
	if (!m)
		return;
	fi_chat_free(m->chat);
	fi_tok_free(m->tok);
	if (m->im)
		fi_image_close(m->im);
	free(m->cfg_json);
	free(m->tmpl);
	pthread_mutex_destroy(&m->mu);
	free(m);
}

/* ---- hreq ---- */

struct hreq *hreq_new(void)
{
	struct hreq *h = calloc(1, sizeof *h);
	if (!h)
		return NULL;
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	fi_frame_init(&h->f, FI_FRAME_REQUEST);
	h->refs = 1;
	return h;
}

void hevent_free(struct hevent *e)
{
	if (e) {
		free(e->message);
		free(e);
	}
}

void hreq_put(struct hreq *h)
{
	int last;
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	last = --h->refs == 0;
	pthread_mutex_unlock(&h->mu);
	if (!last)
		return;
	while (h->head) {
		struct hevent *e = h->head;
		h->head = e->next;
		hevent_free(e);
	}
	fi_frame_free(&h->f);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	free(h);
}

struct hevent *hreq_wait(struct hreq *h, int ms)
{
	struct hevent *e;
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_nsec += (long)(ms % 1000) * 1000000L;
	t.tv_sec += ms / 1000 + t.tv_nsec / 1000000000L;
	t.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&h->mu);
	while (!h->head && pthread_cond_timedwait(&h->cv, &h->mu, &t) == 0)
		;
	if ((e = h->head)) {
		h->head = e->next;
		if (!h->head)
			h->tail = NULL;
	}
	pthread_mutex_unlock(&h->mu);
	return e;
}
