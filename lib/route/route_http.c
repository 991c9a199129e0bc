/* route_http: the OpenAI-compatible HTTP front over libmicrohttpd, one thread per
 * connection: POST /v1/completions and /v1/chat/completions (JSON, or server-sent events with
 * "stream": true), GET /v1/models, /health and /metrics (fi-route(1)).
 *
 * A request is parsed (route_openai.c), its prompt rendered and tokenized here, then handed to
 * the core; its thread waits on the request's events, in slices of 100 ms between which it
 * checks whether the client hung up (then the request is cancelled on its worker). Stop
 * strings are applied here too, on the decoded text, so they hold whatever the worker does. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "openai.h"
#include "route_int.h"
#include "serve/serve.h"

#define MAX_BODY (8u << 20)
#define MAX_KEYS 64

struct route_http {
	struct MHD_Daemon *d;
	struct fi_route *r;
	struct fi_route_model *m;
	char keys[MAX_KEYS][128];
	int nkeys;
	uint64_t next;
	pthread_mutex_t mu;
};

struct body {
	char *data;
	size_t len;
	int too_big;
};

/* ---- responses ---- */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status, const char *type, char *text)
{
	struct MHD_Response *res;
	enum MHD_Result ret;
	if (!text)
		text = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\"}}");
	res = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (!res)
		return MHD_NO;
	MHD_add_response_header(res, "Content-Type", type);
	if (status == 429)
		MHD_add_response_header(res, "Retry-After", "1");
	if (status == 401)
		MHD_add_response_header(res, "WWW-Authenticate", "Bearer");
	ret = MHD_queue_response(c, status, res);
	MHD_destroy_response(res);
	return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return send_text(c, status, "application/json", s);
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *code,
				  const char *param, const char *msg)
{
	struct oai_err e = {.status = status, .code = code, .param = param};
	snprintf(e.message, sizeof e.message, "%s", msg);
	return send_text(c, (unsigned)status, "application/json", oai_error_json(&e));
}

/* ---- a request's generation: text, stop strings, logprobs, the end ---- */

struct gen {
	struct route_http *H;
	struct hreq *h;
	struct MHD_Connection *conn;
	int fd;
	struct oai_req o;
	char id[64];
	long long created;
	struct fi_text_out *tx;
	size_t emitted;       /* bytes of text sent (or collected) */
	uint32_t ntok, prompt_tokens, cached;
	int ended, stop_cut;
	enum fi_finish finish;
	char *err;            /* an error frame's message */
	fi_err code;
	json_t *lp;           /* logprobs of the tokens not yet sent */
	/* streaming */
	char *out;
	size_t out_len, out_off;
	int role_sent, done_sent;
};

static int client_gone(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLRDHUP};
	return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static json_t *token_lp(struct gen *g, uint32_t tok, float lp)
{
	char *s = NULL;
	size_t n = 0;
	json_t *bytes = json_array();
	pthread_mutex_lock(&g->H->m->mu);
	fi_tok_decode(g->H->m->tok, &tok, 1, 0, &s, &n);
	pthread_mutex_unlock(&g->H->m->mu);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(bytes, json_integer((unsigned char)s[i]));
	json_t *o = json_pack("{s:s%,s:f,s:o}", "token", s ? s : "", n, "logprob", (double)lp, "bytes", bytes);
	free(s);
	return o;
}

/* Logprobs of one token, in the chat shape ({token, logprob, bytes, top_logprobs}). */
static void add_logprob(struct gen *g, const struct hevent *e)
{
	json_t *o, *top;
	if (!g->o.logprobs || !e->has_logprob)
		return;
	if (!g->lp)
		g->lp = json_array();
	o = token_lp(g, e->token, e->logprob);
	top = json_array();
	for (uint32_t i = 0; i < e->ntop && i < g->o.top_logprobs; i++)
		json_array_append_new(top, token_lp(g, e->top[i].token, e->top[i].logprob));
	json_object_set_new(o, "top_logprobs", top);
	json_array_append_new(g->lp, o);
}

/* The logprobs JSON of a choice, from the pending list (taken): chat {"content": [...]},
 * completions {"tokens", "token_logprobs", "top_logprobs", "text_offset"}. */
static json_t *take_logprobs(struct gen *g, size_t text_base)
{
	json_t *l = g->lp, *r;
	size_t i;
	json_t *v;
	g->lp = NULL;
	if (!g->o.logprobs)
		return json_null();
	if (!l)
		l = json_array();
	if (g->o.chat)
		return json_pack("{s:o}", "content", l);
	r = json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
	json_array_foreach(l, i, v) {
		json_t *top = json_object(), *t;
		size_t j;
		json_array_append(json_object_get(r, "tokens"), json_object_get(v, "token"));
		json_array_append(json_object_get(r, "token_logprobs"), json_object_get(v, "logprob"));
		json_array_foreach(json_object_get(v, "top_logprobs"), j, t)
			json_object_set(top, json_string_value(json_object_get(t, "token")), json_object_get(t, "logprob"));
		json_array_append_new(json_object_get(r, "top_logprobs"), top);
		json_array_append_new(json_object_get(r, "text_offset"), json_integer((json_int_t)text_base));
		text_base += strlen(json_string_value(json_object_get(v, "token")));
	}
	json_decref(l);
	return r;
}

/* Takes one event: text released so far is fi_text_out_text()[emitted..]. */
static void gen_event(struct gen *g, struct hevent *e)
{
	if (e->type == FI_FRAME_TOKEN && !g->stop_cut) {
		const char *piece;
		size_t n;
		int stopped = 0;
		g->ntok++;
		add_logprob(g, e);
		pthread_mutex_lock(&g->H->m->mu);
		fi_text_out_push(g->tx, e->token, 0, &piece, &n, &stopped);
		pthread_mutex_unlock(&g->H->m->mu);
		if (stopped) { /* a stop string: the worker need not go on */
			g->stop_cut = 1;
			g->finish = FI_FINISH_STOP;
			route_cancel(g->H->r, g->h);
		}
	} else if (e->type == FI_FRAME_DONE) {
		g->ended = 1;
		if (!g->stop_cut)
			g->finish = e->finish;
		g->prompt_tokens = e->prompt_tokens ? e->prompt_tokens : g->h->f.req.ntokens;
		g->cached = e->cached_tokens;
		if (e->gen_tokens && e->gen_tokens < g->ntok && !g->stop_cut)
			g->ntok = e->gen_tokens;
		pthread_mutex_lock(&g->H->m->mu);
		fi_text_out_end(g->tx);
		pthread_mutex_unlock(&g->H->m->mu);
	} else if (e->type == FI_FRAME_ERROR) {
		g->ended = 1;
		g->code = e->code;
		g->err = strdup(e->message ? e->message : "failed");
	}
}

static const char *finish_str(enum fi_finish f)
{
	return f == FI_FINISH_LENGTH ? "length" : "stop";
}

static json_t *usage(struct gen *g)
{
	return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", (json_int_t)g->prompt_tokens,
			 "completion_tokens", (json_int_t)g->ntok, "total_tokens",
			 (json_int_t)(g->prompt_tokens + g->ntok), "prompt_tokens_details",
			 "cached_tokens", (json_int_t)g->cached);
}

/* Waits for the next event: 0 got one, -1 the client is gone (the request is cancelled). */
static int gen_next(struct gen *g)
{
	for (;;) {
		struct hevent *e = hreq_wait(g->h, 100);
		if (e) {
			gen_event(g, e);
			hevent_free(e);
			return 0;
		}
		if (client_gone(g->fd)) {
			route_cancel(g->H->r, g->h);
			return -1;
		}
	}
}

static const char *new_text(struct gen *g, size_t *n)
{
	size_t len, sent;
	const char *t = fi_text_out_text(g->tx, &len, &sent);
	const char *p = t + g->emitted;
	*n = sent > g->emitted ? sent - g->emitted : 0;
	if (g->ended || g->stop_cut) /* all of it: the end released what was held back */
		*n = len > g->emitted ? len - g->emitted : 0;
	g->emitted += *n;
	return p;
}

static int err_status(fi_err code)
{
	return code == FI_EINVAL || code == FI_ERANGE || code == FI_EFORMAT || code == FI_EMISMATCH ? 400 : 500;
}

/* ---- streaming (server-sent events) ---- */

static void sse_add(struct gen *g, json_t *chunk)
{
	char *s = json_dumps(chunk, JSON_COMPACT);
	size_t n = s ? strlen(s) : 0;
	char *o = realloc(g->out, g->out_len + n + 8);
	json_decref(chunk);
	if (o) {
		g->out = o;
		g->out_len += (size_t)sprintf(o + g->out_len, "data: %s\n\n", s ? s : "{}");
	}
	free(s);
}

static json_t *chunk(struct gen *g, json_t *choice)
{
	return json_pack("{s:s,s:s,s:I,s:s,s:[o]}", "id", g->id, "object",
			 g->o.chat ? "chat.completion.chunk" : "text_completion", "created",
			 (json_int_t)g->created, "model", g->H->m->name, "choices", choice);
}

static json_t *choice(struct gen *g, const char *text, size_t n, const char *finish, int role)
{
	json_t *fin = finish ? json_string(finish) : json_null();
	json_t *lp = take_logprobs(g, g->emitted - n);
	if (g->o.chat) {
		json_t *delta = role ? json_pack("{s:s,s:s%}", "role", "assistant", "content", text, n)
				     : finish && !n ? json_object() : json_pack("{s:s%}", "content", text, n);
		return json_pack("{s:i,s:o,s:o,s:o}", "index", 0, "delta", delta, "logprobs", lp,
				 "finish_reason", fin);
	}
	return json_pack("{s:i,s:s%,s:o,s:o}", "index", 0, "text", text, n, "logprobs", lp,
			 "finish_reason", fin);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct gen *g = cls;
	(void)pos;
	while (g->out_off == g->out_len) {
		const char *t;
		size_t n;
		g->out_len = g->out_off = 0;
		if (g->done_sent)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (!g->role_sent && g->o.chat) {
			g->role_sent = 1;
			sse_add(g, chunk(g, choice(g, "", 0, NULL, 1)));
			continue;
		}
		if (g->ended || g->stop_cut) {
			if (g->err) {
				struct oai_err e = {.status = err_status(g->code), .code = fi_err_code_name(g->code)};
				char *s;
				snprintf(e.message, sizeof e.message, "%s", g->err);
				s = oai_error_json(&e);
				g->out = realloc(g->out, strlen(s ? s : "") + 32);
				g->out_len = (size_t)sprintf(g->out, "data: %s\n\n", s ? s : "");
				free(s);
			} else {
				t = new_text(g, &n);
				sse_add(g, chunk(g, choice(g, t, n, finish_str(g->finish), 0)));
				if (g->o.include_usage) {
					json_t *u = json_pack("{s:s,s:s,s:I,s:s,s:[],s:o}", "id", g->id, "object",
							      g->o.chat ? "chat.completion.chunk" : "text_completion",
							      "created", (json_int_t)g->created, "model",
							      g->H->m->name, "choices", "usage", usage(g));
					sse_add(g, u);
				}
			}
			g->out = realloc(g->out, g->out_len + 16);
			g->out_len += (size_t)sprintf(g->out + g->out_len, "data: [DONE]\n\n");
			g->done_sent = 1;
			continue;
		}
		if (gen_next(g))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (g->ended || g->stop_cut)
			continue;
		t = new_text(g, &n);
		if (n || g->lp)
			sse_add(g, chunk(g, choice(g, t, n, NULL, 0)));
	}
	size_t n = g->out_len - g->out_off < max ? g->out_len - g->out_off : max;
	memcpy(buf, g->out + g->out_off, n);
	g->out_off += n;
	return (ssize_t)n;
}

static void gen_free(void *cls)
{
	struct gen *g = cls;
	if (!g->ended)
		route_cancel(g->H->r, g->h);
	hreq_put(g->h);
	fi_text_out_free(g->tx);
	oai_req_free(&g->o);
	json_decref(g->lp);
	free(g->err);
	free(g->out);
	free(g);
}

/* ---- /v1/completions, /v1/chat/completions ---- */

static enum MHD_Result completion(struct route_http *H, struct MHD_Connection *c, int chat,
				  const struct body *b)
{
	struct gen *g = calloc(1, sizeof *g);
	struct oai_err err;
	const union MHD_ConnectionInfo *ci;
	fi_err e = FI_OK;
	char *text = NULL;
	size_t tlen = 0;
	struct fi_tok_ids ids = {0};
	if (!g)
		return send_error(c, 500, "server_error", NULL, "out of memory");
	g->H = H;
	g->conn = c;
	g->created = (long long)time(NULL);
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	g->fd = ci ? ci->connect_fd : -1;
	if (oai_parse(b->data ? b->data : "", b->len, chat, &g->o, &err)) {
		oai_req_free(&g->o);
		free(g);
		return send_text(c, (unsigned)err.status, "application/json", oai_error_json(&err));
	}
	if (strcmp(g->o.model, H->m->name)) {
		char msg[256];
		snprintf(msg, sizeof msg, "the model '%s' does not exist (this server has '%s')", g->o.model, H->m->name);
		oai_req_free(&g->o);
		free(g);
		return send_error(c, 404, "model_not_found", "model", msg);
	}
	pthread_mutex_lock(&H->m->mu);
	if (chat) {
		struct fi_chat_opts co = {.add_generation_prompt = 1};
		e = H->m->chat ? fi_chat_render_json(H->m->chat, g->o.messages, &co, &text, &tlen)
			       : fi_fail(FI_EUNSUPPORTED, "the model has no chat template");
		if (!e)
			e = fi_tok_encode(H->m->tok, text, tlen, FI_TOK_PARSE_SPECIAL | FI_TOK_REPLACE_INVALID, &ids);
	} else if (g->o.f.req.text) {
		e = fi_tok_encode(H->m->tok, g->o.f.req.text, g->o.f.req.text_len,
				  FI_TOK_HF_DEFAULT | FI_TOK_REPLACE_INVALID, &ids);
	}
	if (!e)
		e = fi_text_out_new(H->m->tok, FI_TOK_SKIP_SPECIAL, g->o.f.req.stop, g->o.f.req.nstop, &g->tx);
	pthread_mutex_unlock(&H->m->mu);
	free(text);
	if (!e && ids.v) {
		free(g->o.f.req.tokens);
		g->o.f.req.tokens = ids.v;
		g->o.f.req.ntokens = (uint32_t)ids.n;
		ids.v = NULL;
	}
	if (!e && !g->o.f.req.ntokens)
		e = fi_fail(FI_EINVAL, "the prompt is empty");
	if (e) {
		char msg[256];
		int st = err_status(e);
		snprintf(msg, sizeof msg, "%s", fi_errmsg());
		fi_tok_ids_free(&ids);
		fi_text_out_free(g->tx);
		oai_req_free(&g->o);
		free(g);
		return send_error(c, st, fi_err_code_name(e), chat ? "messages" : "prompt", msg);
	}
	pthread_mutex_lock(&H->mu);
	snprintf(g->id, sizeof g->id, "%s-%" PRIu64, chat ? "chatcmpl" : "cmpl", ++H->next);
	pthread_mutex_unlock(&H->mu);
	if (!(g->h = hreq_new())) {
		fi_text_out_free(g->tx);
		oai_req_free(&g->o);
		free(g);
		return send_error(c, 500, "server_error", NULL, "out of memory");
	}
	fi_frame_move(&g->h->f, &g->o.f);
	g->h->f.id = strdup(g->id);
	memcpy(g->h->f.req.tok_sha256, H->m->ident.sha256, 32);
	g->h->f.req.set |= FI_REQ_TOKENIZER;
	snprintf(g->h->session, sizeof g->h->session, "%s", g->o.user);
	/* the stop strings stay with the request frame too, so the worker stops at them */
	if (route_submit(H->r, g->h)) {
		g->ended = 1;
		gen_free(g);
		return send_error(c, 429, "overloaded", NULL,
				  "the server is overloaded: too many requests are waiting; retry later");
	}
	if (g->o.stream) {
		struct MHD_Response *res = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
									     sse_read, g, gen_free);
		enum MHD_Result ret;
		if (!res) {
			gen_free(g);
			return MHD_NO;
		}
		MHD_add_response_header(res, "Content-Type", "text/event-stream");
		MHD_add_response_header(res, "Cache-Control", "no-cache");
		ret = MHD_queue_response(c, 200, res);
		MHD_destroy_response(res);
		return ret;
	}
	while (!g->ended && !g->stop_cut)
		if (gen_next(g)) {
			gen_free(g);
			return MHD_NO; /* nobody to answer */
		}
	/* after a stop string, the done frame still brings the counts: wait a little for it */
	for (int i = 0; g->stop_cut && !g->ended && i < 20; i++) {
		struct hevent *ev = hreq_wait(g->h, 100);
		if (ev) {
			gen_event(g, ev);
			hevent_free(ev);
		}
	}
	if (g->err) {
		char msg[256];
		int st = err_status(g->code);
		const char *code = fi_err_code_name(g->code);
		snprintf(msg, sizeof msg, "%s", g->err);
		gen_free(g);
		return send_error(c, st, code, NULL, msg);
	}
	{
		size_t n;
		const char *t;
		json_t *ch, *res;
		g->emitted = 0;
		g->ended = 1;
		t = new_text(g, &n);
		if (g->o.chat)
			ch = json_pack("{s:i,s:{s:s,s:s%},s:o,s:s}", "index", 0, "message", "role", "assistant",
				       "content", t, n, "logprobs", take_logprobs(g, 0), "finish_reason",
				       finish_str(g->finish));
		else
			ch = json_pack("{s:i,s:s%,s:o,s:s}", "index", 0, "text", t, n, "logprobs",
				       take_logprobs(g, 0), "finish_reason", finish_str(g->finish));
		res = json_pack("{s:s,s:s,s:I,s:s,s:[o],s:o}", "id", g->id, "object",
				g->o.chat ? "chat.completion" : "text_completion", "created",
				(json_int_t)g->created, "model", H->m->name, "choices", ch, "usage", usage(g));
		gen_free(g);
		return send_json(c, 200, res);
	}
}

/* ---- the rest ---- */

static int authorized(struct route_http *H, struct MHD_Connection *c)
{
	const char *a;
	if (!H->nkeys)
		return 1;
	a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	if (!a || strncmp(a, "Bearer ", 7))
		return 0;
	a += 7;
	for (int i = 0; i < H->nkeys; i++) {
		size_t n = strlen(H->keys[i]);
		unsigned diff = (unsigned)(strlen(a) ^ n);
		for (size_t j = 0; j < n; j++) /* in constant time over the key */
			diff |= (unsigned)(unsigned char)(a[j < strlen(a) ? j : 0] ^ H->keys[i][j]);
		if (!diff)
			return 1;
	}
	return 0;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			       const char *version, const char *data, size_t *size, void **ctx)
{
	struct route_http *H = cls;
	struct body *b = *ctx;
	int post = !strcmp(method, "POST");
	(void)version;
	if (!b) {
		if (!(b = calloc(1, sizeof *b)))
			return MHD_NO;
		*ctx = b;
		return MHD_YES;
	}
	if (*size) {
		if (b->len + *size > MAX_BODY) {
			b->too_big = 1;
		} else if (!b->too_big) {
			char *d = realloc(b->data, b->len + *size + 1);
			if (!d)
				return MHD_NO;
			memcpy(d + b->len, data, *size);
			b->data = d;
			b->len += *size;
			d[b->len] = 0;
		}
		*size = 0;
		return MHD_YES;
	}
	if (!strcmp(url, "/health")) {
		int n = route_workers_alive(H->r);
		return send_json(c, n ? 200 : 503, json_pack("{s:s,s:i}", "status", n ? "ok" : "no workers",
							     "workers", n));
	}
	if (!authorized(H, c))
		return send_error(c, 401, "invalid_api_key", NULL, "a valid API key is required (Authorization: Bearer KEY)");
	if (!strcmp(url, "/metrics") && !post)
		return send_text(c, 200, "text/plain; version=0.0.4", route_metrics(H->r));
	if (!strcmp(url, "/v1/models") && !post)
		return send_json(c, 200, json_pack("{s:s,s:[{s:s,s:s,s:I,s:s}]}", "object", "list", "data",
						   "id", H->m->name, "object", "model", "created",
						   (json_int_t)0, "owned_by", "fi"));
	if (!strcmp(url, "/v1/completions") || !strcmp(url, "/v1/chat/completions")) {
		if (!post)
			return send_error(c, 405, "method_not_allowed", NULL, "use POST");
		if (b->too_big)
			return send_error(c, 413, "body_too_large", NULL, "the body is larger than 8 MiB");
		return completion(H, c, url[4] == 'c' && url[5] == 'h', b);
	}
	return send_error(c, 404, "not_found", NULL, "no such endpoint");
}

static void completed(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_RequestTerminationCode t)
{
	struct body *b = *ctx;
	(void)cls, (void)c, (void)t;
	if (b) {
		free(b->data);
		free(b);
		*ctx = NULL;
	}
}

static fi_err load_keys(struct route_http *H, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[256];
	if (!f)
		return fi_fail(FI_EIO, "cannot open '%s': %m", path);
	while (fgets(line, sizeof line, f) && H->nkeys < MAX_KEYS) {
		size_t n = strcspn(line, "\r\n");
		line[n] = 0;
		if (n && line[0] != '#' && n < sizeof H->keys[0])
			snprintf(H->keys[H->nkeys++], sizeof H->keys[0], "%s", line);
	}
	fclose(f);
	return H->nkeys ? FI_OK : fi_fail(FI_EFORMAT, "'%s' holds no API key", path);
}

fi_err route_http_start(struct route_http **out, struct fi_route *r, const struct fi_route_opts *o)
{
	struct route_http *H;
	struct sockaddr_storage sa;
	int loop = 0;
	fi_err e;
	*out = NULL;
	if ((e = route_http_addr(o->http, &sa, &loop)))
		return e;
	if (!(H = calloc(1, sizeof *H)))
		return fi_fail(FI_ENOMEM, "out of memory");
	H->r = r;
	H->m = o->model;
	pthread_mutex_init(&H->mu, NULL);
	if (o->api_key_file && (e = load_keys(H, o->api_key_file))) {
		free(H);
		return e;
	}
	if (!loop && !H->nkeys) {
		free(H);
		return fi_fail(FI_EINVAL, "--http '%s': binding beyond loopback needs --api-key-file", o->http);
	}
	/* Connections beyond the limit are closed unanswered, so it sits far above the queue:
	 * every request past the queue is read and answered 429, never dropped. A connection
	 * is a thread here; small stacks keep a burst's memory bounded. */
	H->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
					MHD_USE_POLL | (sa.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0),
				0, NULL, NULL, handler, H, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
				MHD_OPTION_NOTIFY_COMPLETED, completed, H, MHD_OPTION_CONNECTION_LIMIT,
				(unsigned)(o->http_queue * 2 + 2048), MHD_OPTION_THREAD_STACK_SIZE,
				(size_t)(1 << 20), MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
				MHD_OPTION_END);
	if (!H->d) {
		free(H);
		return fi_fail(FI_EIO, "cannot listen on '%s' (in use?)", o->http);
	}
	*out = H;
	return FI_OK;
}

void route_http_stop(struct route_http *H)
{
	if (!H)
		return;
	MHD_stop_daemon(H->d);
	pthread_mutex_destroy(&H->mu);
	free(H);
}

/* ---- /metrics ---- */

static void hist(FILE *f, const char *name, const char *help, const struct rhist *h)
{
	uint64_t cum = 0;
	fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (int i = 0; i < ROUTE_NBUCKET; i++) {
		cum += h->b[i];
		fprintf(f, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, route_buckets[i], cum);
	}
	fprintf(f, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %g\n%s_count %" PRIu64 "\n", name,
		cum + h->b[ROUTE_NBUCKET], name, h->sum, name, h->n);
}

char *route_metrics(struct fi_route *r)
{
	char *s = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&s, &n);
	if (!f)
		return NULL;
	pthread_mutex_lock(&r->mu);
	fprintf(f, "# HELP fi_route_requests_total Requests taken, by outcome.\n"
		   "# TYPE fi_route_requests_total counter\n");
	fprintf(f, "fi_route_requests_total{outcome=\"received\"} %" PRIu64 "\n", r->n_req);
	fprintf(f, "fi_route_requests_total{outcome=\"done\"} %" PRIu64 "\n", r->n_done);
	fprintf(f, "fi_route_requests_total{outcome=\"error\"} %" PRIu64 "\n", r->n_err);
	fprintf(f, "fi_route_requests_total{outcome=\"retried\"} %" PRIu64 "\n", r->n_retry);
	fprintf(f, "fi_route_requests_total{outcome=\"cancelled\"} %" PRIu64 "\n", r->n_cancel);
	fprintf(f, "fi_route_requests_total{outcome=\"overloaded\"} %" PRIu64 "\n", r->n_429);
	fprintf(f, "# HELP fi_route_pending Requests waiting for a worker.\n# TYPE fi_route_pending gauge\n"
		   "fi_route_pending %d\n", r->npend);
	fprintf(f, "# HELP fi_route_workers Workers registered.\n# TYPE fi_route_workers gauge\n"
		   "fi_route_workers %d\n", r->nw);
	static const char *const g[][2] = {
		{"fi_worker_queued", "Requests queued on the worker (its load frame)."},
		{"fi_worker_running", "Requests running on the worker."},
		{"fi_worker_kv_used_ratio", "Share of the worker's KV pool in use."},
		{"fi_worker_prefix_hit_ratio", "Prefix blocks found cached over blocks looked up."},
		{"fi_worker_inflight", "Requests the router has sent it that have not ended."},
		{"fi_worker_kv_used_blocks", "KV blocks in use by its requests (cached prefixes not counted)."},
		{"fi_worker_prefix_hit_blocks", "Prefix blocks it found cached (cumulative, its load frame)."},
		{"fi_worker_prefix_lookup_blocks", "Prefix blocks it looked up (cumulative, its load frame)."},
		{"fi_worker_held_blocks", "Blocks the router believes it holds (its KV events)."},
		{"fi_worker_kv_event_batches", "KV event batches received from it, replayed ones included."},
		{"fi_worker_kv_event_replayed", "KV event batches recovered through its replay socket."},
	};
	for (size_t k = 0; k < sizeof g / sizeof *g; k++) {
		fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", g[k][0], g[k][1], g[k][0]);
		for (int i = 0; i < r->nw; i++) {
			const struct rworker *w = r->w[i];
			double v;
			switch (k) {
			case 0: v = (double)w->load.queued; break;
			case 1: v = (double)w->load.running; break;
			case 2: v = w->load.kv_total ? (double)w->load.kv_used / (double)w->load.kv_total : 0; break;
			case 3: v = w->load.prefix_lookups ? (double)w->load.prefix_hits / (double)w->load.prefix_lookups
				  : w->lookup_blocks ? (double)w->hit_blocks / (double)w->lookup_blocks : 0; break;
			case 4: v = w->inflight; break;
			case 5: v = (double)w->load.kv_used; break;
			case 6: v = (double)w->load.prefix_hits; break;
			case 7: v = (double)w->load.prefix_lookups; break;
			case 8: v = (double)w->held.map.n; break;
			case 9: v = (double)w->ev_batches; break;
			default: v = (double)w->ev_replayed;
			}
			fprintf(f, "%s{worker=\"%s\"} %g\n", g[k][0], w->name, v);
		}
	}
	fprintf(f, "# HELP fi_worker_requests_total Requests sent to the worker (retries included).\n"
		   "# TYPE fi_worker_requests_total counter\n");
	for (int i = 0; i < r->nw; i++)
		fprintf(f, "fi_worker_requests_total{worker=\"%s\"} %" PRIu64 "\n", r->w[i]->name,
			r->w[i]->n_sent);
	hist(f, "fi_route_ttft_seconds", "Time from a request's arrival to its first token.", &r->ttft);
	hist(f, "fi_route_itl_seconds", "Time between a request's tokens.", &r->itl);
	pthread_mutex_unlock(&r->mu);
	fclose(f);
	return s;
}
