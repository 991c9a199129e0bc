/* fi-tokenize: text -> request frames (or plain ids / counts), and -d: token frames -> text.
 * See fi-tokenize(1). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "text/chat.h"
#include "frame/frame.h"
#include "model/image.h"
#include "base/log.h"
#include "model/store.h"
#include "frame/stream.h"
#include "text/tokenizer.h"

#include "opt.h"

struct opts {
	struct cmd_args a; /* -m, -i, -o */
	int whole, jsonl, chat, render, ids, count, special, no_add, decode, interleave,
	    skip_special;
};

struct model {
	struct fi_tok *tok;
	struct fi_image *im;
	char *cfg_json, *tmpl; /* tokenizer_config.json, chat_template.jinja (for --chat) */
	struct fi_chat *chat;
};

static char *slurp_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	size_t n = 0, cap = 0, got;
	if (!f)
		return NULL;
	do {
		if (n + 65536 + 1 > cap) {
			char *nb = realloc(b, cap = (n + 65536 + 1) * 2);
			if (!nb) {
				free(b);
				fclose(f);
				return NULL;
			}
			b = nb;
		}
		got = fread(b + n, 1, cap - n - 1, f);
		n += got;
	} while (got);
	fclose(f);
	b[n] = 0;
	if (len)
		*len = n;
	return b;
}

/* -m: a model image (a store name or a file), a directory with tokenizer.json, or a
 * tokenizer file. Weights are never read. */
static fi_err open_model(const char *arg, struct model *m)
{
	char path[4096];
	const struct fi_image_blob *b;
	fi_err e;
	switch (fi_store_resolve(arg, path, sizeof path)) {
	case FI_STORE_NONE:
		return fi_fail(FI_ENOTFOUND, "model '%s' not found (a store name, image, directory "
			       "or tokenizer.json)", arg);
	case FI_STORE_DIR:
		snprintf(path, sizeof path, "%s/tokenizer_config.json", arg);
		m->cfg_json = slurp_file(path, NULL);
		snprintf(path, sizeof path, "%s/chat_template.jinja", arg);
		m->tmpl = slurp_file(path, NULL);
		return fi_tok_load_path(arg, &m->tok);
	case FI_STORE_FILE: {
		FILE *f = fopen(arg, "rb");
		char magic[4] = {0};
		if (!f)
			return fi_fail(FI_EIO, "cannot open '%s': %s", arg, strerror(errno));
		if (fread(magic, 1, 4, f) != 4)
			magic[0] = 0;
		fclose(f);
		if (memcmp(magic, FI_IMAGE_MAGIC, 4))
			return fi_tok_load_path(arg, &m->tok);
		break;
	}
	case FI_STORE_NAME:
		break;
	}
	if ((e = fi_image_open(path, &m->im)) || (e = fi_image_tokenizer(m->im, &m->tok)))
		return e;
	if ((b = fi_image_blob(m->im, "tokenizer_config.json")))
		m->cfg_json = strdup(b->data);
	if ((b = fi_image_blob(m->im, "chat_template.jinja")))
		m->tmpl = strdup(b->data);
	return FI_OK;
}

/* ---- encoding ---- */

struct enc {
	const struct opts *o;
	struct model *m;
	struct fi_stream *out;
	unsigned long n;
	int failed;
};

/* The request keys a JSONL line may carry into its frame (fi-tokenize(1), --jsonl). */
static const char *const request_keys[] = {
	"temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "max_tokens", "stream",
	"stop", "stop_ids",
};

static int buf_write(void *data, const char *p, size_t n)
{
	return fi_buf_append(data, p, n) ? -1 : 0;
}

/* A JSON value as the msgpack value it stands for. */
static void pack_json(msgpack_packer *pk, json_t *v)
{
	const char *k;
	size_t i;
	json_t *x;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		msgpack_pack_map(pk, json_object_size(v));
		json_object_foreach(v, k, x) {
			msgpack_pack_str_with_body(pk, k, strlen(k));
			pack_json(pk, x);
		}
		break;
	case JSON_ARRAY:
		msgpack_pack_array(pk, json_array_size(v));
		json_array_foreach(v, i, x)
			pack_json(pk, x);
		break;
	case JSON_STRING:
		msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		if (json_integer_value(v) < 0)
			msgpack_pack_int64(pk, json_integer_value(v));
		else
			msgpack_pack_uint64(pk, (uint64_t)json_integer_value(v));
		break;
	case JSON_REAL: msgpack_pack_double(pk, json_real_value(v)); break;
	case JSON_TRUE: msgpack_pack_true(pk); break;
	case JSON_FALSE: msgpack_pack_false(pk); break;
	case JSON_NULL: msgpack_pack_nil(pk); break;
	}
}

/* The request frame of a prompt (ids[n]) with the request keys of params (NULL: none),
 * encoded into out and read back through the frame decoder, so that fi-tokenize refuses
 * what fi-decode would refuse, with the same message. */
static fi_err request_frame(const char *id, const uint32_t *ids, size_t n, json_t *params,
			    struct fi_buf *out)
{
	struct fi_frame_limits lim;
	struct fi_frame f;
	msgpack_packer pk;
	size_t nk = 0;
	fi_err e;
	for (size_t i = 0; params && i < sizeof request_keys / sizeof *request_keys; i++)
		nk += json_object_get(params, request_keys[i]) != NULL;
	msgpack_packer_init(&pk, out, buf_write);
	msgpack_pack_map(&pk, 4 + nk);
	msgpack_pack_str_with_body(&pk, "v", 1);
	msgpack_pack_uint32(&pk, FI_FRAME_VERSION);
	msgpack_pack_str_with_body(&pk, "type", 4);
	msgpack_pack_str_with_body(&pk, "request", 7);
	msgpack_pack_str_with_body(&pk, "id", 2);
	msgpack_pack_str_with_body(&pk, id, strlen(id));
	msgpack_pack_str_with_body(&pk, "tokens", 6);
	msgpack_pack_bin(&pk, n * 4);
	for (size_t i = 0; i < n; i++) {
		uint8_t le[4] = {(uint8_t)ids[i], (uint8_t)(ids[i] >> 8), (uint8_t)(ids[i] >> 16),
				 (uint8_t)(ids[i] >> 24)};
		msgpack_pack_bin_body(&pk, le, 4);
	}
	for (size_t i = 0; params && i < sizeof request_keys / sizeof *request_keys; i++) {
		json_t *v = json_object_get(params, request_keys[i]);
		if (!v)
			continue;
		msgpack_pack_str_with_body(&pk, request_keys[i], strlen(request_keys[i]));
		pack_json(&pk, v);
	}
	fi_frame_limits_default(&lim);
	fi_frame_init(&f, FI_FRAME_NONE);
	e = fi_frame_decode(out->data, out->len, &lim, &f);
	fi_frame_free(&f);
	return e ? fi_fail_ctx(e, "request '%s'", id) : FI_OK;
}

/* Emits one request: plain ids, a count, or a request frame. Returns -1 when the output
 * failed, 1 for a request that cannot be made (the detail recorded), 0 otherwise. */
static int emit(struct enc *E, const char *id, const uint32_t *ids, size_t n, json_t *params)
{
	struct fi_buf b = {0};
	int r;
	if (E->o->count) {
		printf("%zu\n", n);
		return 0;
	}
	if (E->o->ids) {
		for (size_t i = 0; i < n; i++)
			printf(i ? " %u" : "%u", ids[i]);
		putchar('\n');
		return 0;
	}
	if (!n)
		return fi_stream_write_error(E->out, id, FI_EINVAL, "empty prompt") ? -1 : 0;
	if (request_frame(id, ids, n, params, &b))
		r = 1;
	else
		r = fi_stream_write_raw(E->out, b.data, b.len) ? -1 : 0;
	fi_buf_free(&b);
	return r;
}

static fi_err load_chat(struct enc *E)
{
	if (E->m->chat)
		return FI_OK;
	if (!E->m->cfg_json && !E->m->tmpl)
		return fi_fail(FI_ENOTFOUND, "'%s': no chat template (tokenizer_config.json or chat_template.jinja)", E->o->a.model);
	return fi_chat_load(&E->m->chat, E->m->cfg_json, E->m->tmpl, NULL);
}

/* One input unit: a text line, the whole input, or a JSONL line. Returns -1 when output
 * failed (stop), 0 otherwise; a bad request only sets E->failed. */
static int one(struct enc *E, const char *s, size_t len)
{
	struct fi_tok_ids ids = {0};
	char idbuf[32], *chat_text = NULL;
	const char *id = idbuf, *text = s;
	size_t tlen = len;
	json_t *obj = NULL, *v;
	unsigned flags = FI_TOK_REPLACE_INVALID | (E->o->no_add ? 0 : FI_TOK_ADD_SPECIAL) |
			 (E->o->special ? FI_TOK_PARSE_SPECIAL : 0);
	int r = 0;
	fi_err e = FI_OK;
	snprintf(idbuf, sizeof idbuf, "%lu", ++E->n);
	if (E->o->jsonl || E->o->chat) {
		json_error_t je;
		if (!len)
			return 0; /* blank JSONL lines are not requests */
		if (!(obj = json_loadb(s, len, JSON_ALLOW_NUL, &je)) || (!json_is_object(obj) && !json_is_array(obj))) {
			e = fi_fail(FI_EFORMAT, "line %lu: not a JSON object or array: %s", E->n, obj ? "" : je.text);
			goto bad;
		}
		if (json_is_string(v = json_object_get(obj, "id")))
			id = json_string_value(v);
		else if (json_is_integer(v))
			snprintf(idbuf, sizeof idbuf, "%lld", (long long)json_integer_value(v));
		if (json_is_array(obj) || json_object_get(obj, "messages")) {
			char *req;
			if ((e = load_chat(E)))
				goto bad;
			/* The rendered text holds the template's special tokens; it is encoded
			 * as transformers does: specials parsed, none added. */
			req = json_dumps(obj, 0);
			e = req ? fi_chat_render(E->m->chat, req, 1, &chat_text, &tlen) : fi_fail(FI_ENOMEM, "chat");
			free(req);
			if (e)
				goto bad;
			text = chat_text;
			flags = FI_TOK_REPLACE_INVALID | FI_TOK_PARSE_SPECIAL;
		} else if (json_is_string(v = json_object_get(obj, "prompt"))) {
			text = json_string_value(v);
			tlen = json_string_length(v);
		} else {
			e = fi_fail(FI_EFORMAT, "request '%s': no \"prompt\" or \"messages\"", id);
			goto bad;
		}
	}
	if (E->o->render) { /* --render: the text that would be encoded, as it is */
		r = fwrite(text, 1, tlen, stdout) == tlen ? 0 : -1;
		goto out;
	}
	if ((e = fi_tok_encode(E->m->tok, text, tlen, flags, &ids)))
		goto bad;
	r = emit(E, id, ids.v, ids.n, json_is_object(obj) ? obj : NULL);
	if (r == 1) {
		e = fi_errcode();
		goto bad;
	}
	goto out;
bad:
	cmd_error(NULL);
	E->failed = 1;
	if (E->out)
		r = fi_stream_write_error(E->out, id, e, fi_errmsg()) ? -1 : 0;
out:
	fi_tok_ids_free(&ids);
	free(chat_text);
	json_decref(obj);
	return r;
}

static int run_encode(const struct opts *o, struct model *m)
{
	struct enc E = {o, m, NULL, 0, 0};
	FILE *in = !strcmp(o->a.in, "-") ? stdin : fopen(o->a.in, "rb");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;
	if (!in) {
		return cmd_error("cannot open '%s': %s", o->a.in, strerror(errno));
	}
	if (!o->ids && !o->count && !o->render &&
	    fi_stream_open(&E.out, o->a.out, FI_STREAM_OUT, NULL)) {
		if (in != stdin)
			fclose(in);
		return cmd_error(NULL);
	}
	if (o->whole) {
		size_t len = 0;
		char *all;
		/* Read everything (stdin may be a pipe). */
		struct fi_buf b = {0};
		char chunk[65536];
		size_t got;
		while ((got = fread(chunk, 1, sizeof chunk, in)) > 0)
			if (fi_buf_append(&b, chunk, got)) {
				rc = 1;
				break;
			}
		all = (char *)b.data;
		len = b.len;
		if (!rc && one(&E, all ? all : "", len) < 0)
			rc = 1;
		fi_buf_free(&b);
	} else {
		while ((n = getline(&line, &cap, in)) >= 0) {
			if (n && line[n - 1] == '\n')
				line[--n] = 0;
			if (one(&E, line, (size_t)n) < 0) {
				rc = 1;
				break;
			}
		}
	}
	free(line);
	if (in != stdin)
		fclose(in);
	if (E.out && fi_stream_close(E.out))
		rc = 1;
	if (fflush(stdout))
		rc = 1;
	return rc || E.failed;
}

/* ---- decoding ---- */

struct dreq {
	char *id;
	struct fi_tok_stream *st;
	struct fi_buf text; /* held back: not the head (in-order) or not finished (--interleave) */
	int done;
	int mode; /* 0 undecided, 1 frames carry text pieces (used as is), 2 decode the ids */
};

struct dec {
	const struct opts *o;
	struct model *m;
	struct dreq *v;
	size_t n, cap, head; /* head: first request not yet fully written (in-order mode) */
	int failed;
};

static struct dreq *find_req(struct dec *D, const char *id)
{
	for (size_t i = D->n; i-- > D->head;)
		if (!strcmp(D->v[i].id, id))
			return &D->v[i];
	if (D->n == D->cap) {
		size_t cap = D->cap ? 2 * D->cap : 16;
		struct dreq *nv = realloc(D->v, cap * sizeof *nv);
		if (!nv)
			return NULL;
		D->v = nv;
		D->cap = cap;
	}
	memset(&D->v[D->n], 0, sizeof D->v[D->n]);
	if (!(D->v[D->n].id = strdup(id)) ||
	    fi_tok_stream_new(D->m->tok, D->o->skip_special ? FI_TOK_SKIP_SPECIAL : 0, &D->v[D->n].st))
		return NULL;
	return &D->v[D->n++];
}

static void out_text(struct dec *D, struct dreq *q, const char *s, size_t n)
{
	int live = !D->o->interleave && q == &D->v[D->head];
	if (live)
		fwrite(s, 1, n, stdout);
	else
		fi_buf_append(&q->text, s, n);
}

/* Writes finished requests: in order from the head, or each as it finishes. */
/* An error frame for a request, on stderr; generators usually name the request already. */
static void report_error(const struct dreq *q, const struct fi_frame *f)
{
	const char *m = f->err.message ? f->err.message : fi_strerror(f->err.code);
	char pre[300];
	snprintf(pre, sizeof pre, "request '%s': ", q->id);
	if (!strncmp(m, pre, strlen(pre)))
		cmd_error("%s", m);
	else
		cmd_error("%s%s", pre, m);
}

static void drain(struct dec *D, struct dreq *q)
{
	if (D->o->interleave) {
		if (q && q->done) {
			fwrite(q->text.data, 1, q->text.len, stdout);
			putchar('\n');
		}
	} else
		while (D->head < D->n && D->v[D->head].done) {
			D->head++;
			putchar('\n');
			if (D->head < D->n) {
				struct dreq *h = &D->v[D->head];
				fwrite(h->text.data, 1, h->text.len, stdout);
				h->text.len = 0;
			}
		}
	fflush(stdout);
}

static int run_decode(const struct opts *o, struct model *m)
{
	struct dec D = {o, m, NULL, 0, 0, 0, 0};
	struct fi_stream *in;
	struct fi_frame f;
	fi_err e;
	int rc = 0;
	if (fi_stream_open(&in, o->a.in, FI_STREAM_IN, NULL))
		return cmd_error(NULL);
	for (;;) {
		struct dreq *q;
		const char *pc;
		size_t pn;
		fi_frame_init(&f, FI_FRAME_NONE);
		e = fi_stream_read(in, &f);
		if (e) {
			rc = cmd_error(NULL);
			fi_frame_free(&f);
			if (fi_stream_broken(in) || e == FI_EIO || e == FI_EINTERRUPT)
				break;
			continue;
		}
		if (f.type == FI_FRAME_EOS) {
			fi_frame_free(&f);
			break;
		}
		if (f.type != FI_FRAME_TOKEN && f.type != FI_FRAME_DONE && f.type != FI_FRAME_ERROR) {
			fi_frame_free(&f);
			continue;
		}
		if (!(q = find_req(&D, f.id ? f.id : ""))) {
			rc = cmd_error("out of memory");
			fi_frame_free(&f);
			break;
		}
		if (q->done) {
			fi_frame_free(&f);
			continue;
		}
		/* A generator that knows the tokenizer sends text pieces with stop strings already
		 * cut; use them rather than decoding the ids again. */
		if (!q->mode && f.type == FI_FRAME_TOKEN)
			q->mode = f.tok.text ? 1 : 2;
		if (!q->mode && f.type == FI_FRAME_DONE)
			q->mode = f.done.text ? 1 : 2;
		if (q->mode == 1) {
			if (f.type == FI_FRAME_TOKEN && f.tok.text)
				out_text(&D, q, f.tok.text, f.tok.text_len);
			else if (f.type == FI_FRAME_DONE && f.done.text)
				out_text(&D, q, f.done.text, f.done.text_len);
			if (f.type == FI_FRAME_ERROR)
				report_error(q, &f), rc = 1;
			if (f.type != FI_FRAME_TOKEN)
				q->done = 1, drain(&D, q);
		} else if (f.type == FI_FRAME_TOKEN) {
			if (fi_tok_stream_step(q->st, f.tok.token, &pc, &pn)) {
				rc = cmd_error("request '%s': %s", q->id, fi_errmsg());
			} else
				out_text(&D, q, pc, pn);
		} else {
			if (f.type == FI_FRAME_ERROR) {
				report_error(q, &f);
				rc = 1;
			}
			for (uint32_t i = 0; f.type == FI_FRAME_DONE && i < f.done.ntokens; i++)
				if (!fi_tok_stream_step(q->st, f.done.tokens[i], &pc, &pn))
					out_text(&D, q, pc, pn);
			if (!fi_tok_stream_flush(q->st, &pc, &pn))
				out_text(&D, q, pc, pn);
			q->done = 1;
			drain(&D, q);
		}
		if (!o->interleave)
			fflush(stdout);
		fi_frame_free(&f);
	}
	/* Requests that never finished still get their text, in order. */
	for (size_t i = o->interleave ? 0 : D.head; i < D.n; i++) {
		struct dreq *q = &D.v[i];
		const char *pc;
		size_t pn;
		if (q->done)
			continue;
		if (!fi_tok_stream_flush(q->st, &pc, &pn))
			out_text(&D, q, pc, pn);
		q->done = 1;
		drain(&D, q);
	}
	for (size_t i = 0; i < D.n; i++) {
		free(D.v[i].id);
		fi_tok_stream_free(D.v[i].st);
		fi_buf_free(&D.v[i].text);
	}
	free(D.v);
	fi_stream_close(in);
	return fflush(stdout) ? 1 : rc;
}

enum { O_WHOLE = OPT_LONG, O_JSONL, O_CHAT, O_RENDER, O_IDS, O_COUNT, O_SPECIAL, O_NO_ADD,
       O_INTERLEAVE, O_SKIP_SPECIAL };

int main(int argc, char **argv)
{
	struct opts o = {0};
	const struct opt own[] = {
		{'d', NULL, NULL, OPT_FLAG, 0, 0, &o.decode},
		{O_WHOLE, "whole", NULL, OPT_FLAG, 0, 0, &o.whole},
		{O_JSONL, "jsonl", NULL, OPT_FLAG, 0, 0, &o.jsonl},
		{O_CHAT, "chat", NULL, OPT_FLAG, 0, 0, &o.chat},
		{O_RENDER, "render", NULL, OPT_FLAG, 0, 0, &o.render},
		{O_IDS, "ids", NULL, OPT_FLAG, 0, 0, &o.ids},
		{O_COUNT, "count", NULL, OPT_FLAG, 0, 0, &o.count},
		{O_SPECIAL, "special", NULL, OPT_FLAG, 0, 0, &o.special},
		{O_NO_ADD, "no-add-special", NULL, OPT_FLAG, 0, 0, &o.no_add},
		{O_INTERLEAVE, "interleave", NULL, OPT_FLAG, 0, 0, &o.interleave},
		{O_SKIP_SPECIAL, "skip-special", NULL, OPT_FLAG, 0, 0, &o.skip_special},
		{0},
	};
	static const char *const usage[] = {
		"-m [-i] [-o] [--whole | --jsonl | --chat] [--ids | --count] [--special]"
		" [--no-add-special]",
		"-m --chat --render [-i] [-o]",
		"-m -d [-i] [-o] [--interleave] [--skip-special]",
		NULL,
	};
	const struct cmd cmd = {.name = "fi-tokenize", .groups = CMD_MODEL | CMD_STREAMS,
				.opts = own, .usage = usage};
	struct model m = {0};
	int rc;
	if (cmd_parse(&cmd, &o.a, argc, argv) != argc)
		usage_error("unexpected operand '%s'", argv[optind]);
	if (o.whole + o.jsonl + o.chat > 1)
		usage_error("--whole, --jsonl and --chat exclude each other");
	if (o.ids + o.count + o.render > 1)
		usage_error("--ids, --count and --render exclude each other");
	if (o.render && !o.chat)
		usage_error("--render shows what --chat renders: give --chat");
	if (o.decode && (o.whole || o.jsonl || o.chat || o.ids || o.count || o.special || o.no_add))
		usage_error("-d reads frames: --whole, --jsonl, --chat, --ids, --count, --special "
			    "and --no-add-special do not apply");
	if (!o.decode && (o.interleave || o.skip_special))
		usage_error("--interleave and --skip-special are for -d");
	/* Text goes to standard output, or to -o FILE; request frames to the -o stream. */
	if ((o.decode || o.ids || o.count || o.render) && strcmp(o.a.out, "-") &&
	    !freopen(o.a.out, "w", stdout))
		die(EXIT_RUNTIME, "cannot open '%s': %s", o.a.out, strerror(errno));
	if (open_model(o.a.model, &m))
		rc = cmd_error(NULL);
	else
		rc = o.decode ? run_decode(&o, &m) : run_encode(&o, &m);
	fi_chat_free(m.chat);
	fi_tok_free(m.tok);
	if (m.im)
		fi_image_close(m.im);
	free(m.cfg_json);
	free(m.tmpl);
	return rc;
}
