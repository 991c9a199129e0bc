/* fi-tokenize: text -> request frames (or plain ids / counts), and -d: token frames -> text.
 * See fi-tokenize(1). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "text/chat.h"
#include "frame/frame.h"
#include "model/gguf.h"
#include "model/image.h"
#include "base/log.h"
#include "model/store.h"
#include "frame/stream.h"
#include "text/tokenizer.h"
#include "base/utf8.h"
#include "frame/frame_json.h"
#include "serve/results.h"
#include "text/tok_ident.h"

#include "opt.h"

/* --ordered holds at most this many results while one is missing. */
#define ORDER_WINDOW 4096

struct opts {
	struct cmd_args a; /* -m, -i, -o, sampling options for the frames (a.given), -f */
	int whole, jsonl, chat, render, ids, count, special, no_add, decode, interleave,
	    skip_special;
	int ordered, echo, nul, sep_given;
	char sep[256]; /* -d: written after each request's text */
	size_t sep_len;
};

struct model {
	struct fi_tok *tok;
	struct fi_image *im;
	char *cfg_json, *tmpl; /* tokenizer_config.json, chat_template.jinja (for --chat) */
	struct fi_chat *chat;
};

/* A whole regular file, NUL-terminated; NULL when absent, unreadable or not a regular file
 * (a FIFO would block the open or the read forever). */
static char *slurp_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	FILE *f;
	char *b = NULL;
	size_t n = 0, cap = 0, got;
	if (fd < 0)
		return NULL;
	errno = 0;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || !(f = fdopen(fd, "rb"))) {
		int er = errno ? errno : EINVAL; /* EINVAL: not a regular file */
		close(fd);
		errno = er;
		return NULL;
	}
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
		/* a store name whose FI_HOME cannot be trusted says so */
		if (fi_store_name_valid(arg) && (e = fi_store_path(arg, path, sizeof path)))
			return e;
		return fi_fail(FI_ENOTFOUND, "model '%s' not found (a store name, image, directory "
			       "or tokenizer.json)", arg);
	case FI_STORE_DIR:
		snprintf(path, sizeof path, "%s/tokenizer_config.json", arg);
		m->cfg_json = slurp_file(path, NULL);
		snprintf(path, sizeof path, "%s/chat_template.jinja", arg);
		m->tmpl = slurp_file(path, NULL);
		return fi_tok_load_path(arg, &m->tok);
	case FI_STORE_FILE: {
		struct stat st;
		FILE *f = NULL;
		char magic[4] = {0};
		/* not a FIFO or a device: opening one could block forever */
		if (stat(path, &st) || !S_ISREG(st.st_mode))
			return fi_fail(FI_EIO, "cannot open '%s': not a regular file", arg);
		if (!(f = fopen(path, "rb")))
			return fi_fail(FI_EIO, "cannot open '%s': %s", arg, strerror(errno));
		if (fread(magic, 1, 4, f) != 4)
			magic[0] = 0;
		fclose(f);
		if (!memcmp(magic, "GGUF", 4)) { /* the tokenizer a GGUF file carries */
			struct fi_gguf *g;
			char *tj = NULL;
			if ((e = fi_gguf_open(arg, &g)))
				return e;
			e = fi_gguf_tokenizer(g, &tj, &m->cfg_json);
			fi_gguf_close(g);
			if (!e)
				e = fi_tok_load_json(tj, strlen(tj), &m->tok);
			free(tj);
			return e;
		}
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
	struct fi_buf buf; /* one encoded frame */
	unsigned long n;   /* input units read: the line number, or the request's ordinal */
	uint64_t seq;      /* requests (and error frames for them) written, numbered from 1 */
	struct fi_tok_ident ident;
	int ctx;           /* the model's context (0: unknown, a tokenizer without a model) */
	unsigned long failed;
};

/* The request keys a JSONL line may carry into its frame (fi-tokenize(1), --jsonl). */
static const char *const request_keys[] = {
	"temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "max_tokens", "stream",
	"stop", "stop_ids",
};

/* The request keys of a JSONL object, read as a consumer reads them: a frame made of them
 * through the frame decoder (frame_json.h), so that fi-tokenize refuses what fi-decode
 * refuses, with its message ("frame: key 'temperature': -1 is out of range ..."). */
static fi_err request_keys_frame(const char *id, json_t *params, struct fi_frame *keys)
{
	json_t *o = json_pack("{s:i,s:s,s:s,s:[i]}", "v", FI_FRAME_VERSION, "type", "request",
			      "id", id, "tokens", 0);
	char *text = NULL;
	fi_err e;
	fi_frame_init(keys, FI_FRAME_NONE);
	for (size_t i = 0; o && i < sizeof request_keys / sizeof *request_keys; i++) {
		json_t *v = json_object_get(params, request_keys[i]);
		if (v && json_object_set(o, request_keys[i], v))
			break;
	}
	if (!o || !(text = json_dumps(o, JSON_COMPACT)))
		e = fi_fail(FI_ENOMEM, "request '%s': out of memory", id);
	else if ((e = fi_frame_from_json(text, strlen(text), NULL, keys, NULL)))
		fi_frame_free(keys); /* the caller names the line and the request */
	free(text);
	json_decref(o);
	return e;
}

/* An error frame about input unit id: numbered like requests, with the prompt when known. */
static int emit_error(struct enc *E, const char *id, fi_err code, const char *msg,
		      const char *text, size_t tlen)
{
	struct fi_frame f;
	char idbuf[257], *p = NULL;
	fi_err e;
	fi_frame_init(&f, FI_FRAME_ERROR);
	snprintf(idbuf, sizeof idbuf, "%s", id);
	f.id = idbuf;
	f.seq = ++E->seq;
	f.has_seq = 1;
	f.err.code = code;
	f.err.message = (char *)msg;
	if (text && !fi_utf8_lossy(text, tlen, &p, &f.prompt_len))
		f.prompt = p;
	e = fi_stream_write(E->out, &f);
	free(p);
	return e ? -1 : 0;
}

/* Emits one request: plain ids, a count, or a request frame carrying its text (for the
 * results), its number, the tokenizer's fingerprint and the sampling options. A request
 * that cannot be made (no tokens, over the model's context, an id or stop list the frame
 * schema refuses) is returned as its error, for the caller to answer and go on; an output
 * that fails sets *fatal. */
static fi_err emit(struct enc *E, const char *id, const uint32_t *ids, size_t n, json_t *params,
		   const char *text, size_t tlen, int *fatal)
{
	fi_err e;
	if (E->o->count) {
		printf("%zu\n", n);
		return FI_OK;
	}
	if (E->o->ids) {
		for (size_t i = 0; i < n; i++)
			printf(i ? " %u" : "%u", ids[i]);
		putchar('\n');
		return FI_OK;
	}
	if (!n)
		return fi_fail(FI_EINVAL, "empty prompt");
	/* fi-decode refuses it too; said here, the message names the input line */
	if (E->ctx > 0 && n >= (size_t)E->ctx)
		return fi_fail(FI_ERANGE, "prompt of %zu tokens does not fit the context of %d", n,
			       E->ctx);
	{
		const struct cmd_args *o = &E->o->a;
		struct fi_frame f, keys;
		char *valid = NULL;
		fi_frame_init(&keys, FI_FRAME_NONE);
		if (params && request_keys_frame(id, params, &keys))
			return fi_errcode();
		fi_frame_init(&f, FI_FRAME_REQUEST);
		f.id = (char *)id;
		f.seq = E->seq + 1; /* taken when the frame is written */
		f.has_seq = 1;
		f.req.tokens = (uint32_t *)ids;
		f.req.ntokens = (uint32_t)n;
		/* The prompt as valid UTF-8 (what the tokenizer read, invalid bytes as U+FFFD). */
		if (fi_utf8_lossy(text, tlen, &valid, &f.req.text_len))
			return fi_fail(FI_ENOMEM, "out of memory");
		f.req.text = valid;
		memcpy(f.req.tok_sha256, E->ident.sha256, 32);
		f.req.tok_name = E->ident.name;
		f.req.set |= FI_REQ_TOKENIZER;
		f.req.temperature = o->sp.temperature;
		f.req.top_k = o->sp.top_k;
		f.req.top_p = o->sp.top_p;
		f.req.min_p = o->sp.min_p;
		f.req.repeat_penalty = o->sp.repeat_penalty;
		f.req.seed = o->sp.seed;
		f.req.set |= o->given & FI_REQ_SAMPLING;
		if (params) { /* the line's keys, as the decoder read them (borrowed from keys) */
			const struct fi_request *k = &keys.req;
			unsigned set = k->set & (FI_REQ_SAMPLING | FI_REQ_MAX_TOKENS | FI_REQ_STREAM);
			if (set & FI_REQ_TEMPERATURE)
				f.req.temperature = k->temperature;
			if (set & FI_REQ_TOP_K)
				f.req.top_k = k->top_k;
			if (set & FI_REQ_TOP_P)
				f.req.top_p = k->top_p;
			if (set & FI_REQ_MIN_P)
				f.req.min_p = k->min_p;
			if (set & FI_REQ_REPEAT_PENALTY)
				f.req.repeat_penalty = k->repeat_penalty;
			if (set & FI_REQ_SEED)
				f.req.seed = k->seed;
			f.req.max_tokens = k->max_tokens;
			f.req.stream = k->stream;
			f.req.set |= set;
			f.req.stop = k->stop;
			f.req.nstop = k->nstop;
			f.req.stop_ids = k->stop_ids;
			f.req.nstop_ids = k->nstop_ids;
		}
		/* Encoded first: a frame the schema refuses is this request's failure, not the
		 * output's. */
		E->buf.len = 0;
		e = fi_frame_encode(&f, &E->buf);
		fi_frame_free(&keys);
		free(valid);
		if (!e && (e = fi_stream_write_raw(E->out, E->buf.data, E->buf.len)))
			*fatal = 1;
		if (!e)
			E->seq++;
		return e;
	}
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
	int r = 0, fatal = 0;
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
	if (!(e = emit(E, id, ids.v, ids.n, json_is_object(obj) ? obj : NULL, text, tlen, &fatal)))
		goto out;
	if (fatal) {
		cmd_error(NULL);
		r = -1;
		goto out;
	}
	/* the unit's failure, named by its line (or ordinal) and id */
	fi_fail_ctx(e, "line %lu: request '%.64s%s'", E->n, id, strlen(id) > 64 ? "..." : "");
bad:
	cmd_error(NULL);
	E->failed++;
	if (!E->o->ids && !E->o->count && E->out)
		/* The prompt when one was read (not a JSONL line that could not be used). */
		r = emit_error(E, id, e, fi_errmsg(), (E->o->jsonl || E->o->chat) && text == s ? NULL : text, tlen);
out:
	fi_tok_ids_free(&ids);
	free(chat_text);
	json_decref(obj);
	return r;
}

static int run_encode(const struct opts *o, struct model *m)
{
	struct enc E = {.o = o, .m = m};
	FILE *in = !strcmp(o->a.in, "-") ? stdin : fopen(o->a.in, "rb");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;
	if (!in)
		return cmd_error("cannot open '%s': %s", o->a.in, strerror(errno));
	if (!o->ids && !o->count && !o->render) {
		struct fi_stream_opts so;
		fi_stream_opts_default(&so);
		so.tty_ok = o->a.force;
		if (fi_tok_ident(m->tok, o->a.model, &E.ident) ||
		    fi_stream_open(&E.out, o->a.out, FI_STREAM_OUT, &so)) {
			cmd_error(NULL);
			if (in != stdin)
				fclose(in);
			return 1;
		}
	}
	E.ctx = m->im ? m->im->config.max_pos : 0;
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
	if (E.out && fi_stream_close(E.out) && !rc)
		rc = cmd_error(NULL);
	if (fflush(stdout) && !rc)
		rc = cmd_error("write: %s", strerror(errno));
	fi_buf_free(&E.buf);
	if (!rc && E.failed)
		cmd_error("%lu of %lu requests failed", E.failed, E.n);
	return rc ? EXIT_RUNTIME : E.failed ? EXIT_FAILED : EXIT_OK;
}

/* ---- decoding ---- */

struct dec {
	const struct opts *o;
	struct fi_results *R;
	unsigned long failed[FI_ENCODE_COUNT]; /* requests answered with an error frame, by code */
	uint64_t gaps_told;
	int rc;
};

/* An error frame, on stderr: the first of each code, the others only counted (a mismatched
 * tokenizer fails every request, and its consumer already said why once). */
static void report_error(struct dec *D, const struct fi_frame *f)
{
	const char *m = f->err.message ? f->err.message : fi_strerror(f->err.code);
	const char *id = f->id ? f->id : "";
	unsigned c = (unsigned)f->err.code < FI_ENCODE_COUNT ? f->err.code : FI_EINVAL;
	char pre[300];
	if (D->failed[c]++)
		return;
	/* Generators usually name the request already. */
	snprintf(pre, sizeof pre, "request '%s': ", id);
	if (!strncmp(m, pre, strlen(pre)))
		cmd_error("%s", m);
	else
		cmd_error("%s%s", pre, m);
}

/* Writes what is ready: finished requests, then the new text of the first unfinished one
 * (streaming; it comes after them in the order). */
static void write_ready(struct dec *D)
{
	const struct opts *o = D->o;
	struct fi_result r;
	const char *p;
	size_t n;
	uint64_t gaps, first;
	while (fi_results_next(D->R, &r)) {
		if (o->jsonl) {
			json_t *j;
			char *s = NULL;
			if (fi_result_to_json(&r, &j) || !(s = fi_json_dumps(j))) {
				cmd_error("request '%s': %s", r.id, s ? fi_errmsg() : "out of memory");
				D->rc = 1;
			} else {
				fputs(s, stdout);
				putchar('\n');
			}
			free(s);
			json_decref(j);
			continue;
		}
		if (o->echo) {
			if (r.prompt)
				fwrite(r.prompt, 1, r.prompt_len, stdout);
			fwrite(r.text, 1, r.text_len, stdout);
		} else {
			fwrite(r.text + r.streamed, 1, r.text_len - r.streamed, stdout);
		}
		fwrite(o->sep, 1, o->sep_len, stdout);
	}
	if (!o->jsonl && !o->echo && (n = fi_results_stream(D->R, &p)))
		fwrite(p, 1, n, stdout);
	if ((gaps = fi_results_gaps(D->R, &first)) && !D->gaps_told++)
		fi_warn("--ordered: %d results are waiting for request number %llu, which has not "
			"come; writing them out of order from there", ORDER_WINDOW,
			(unsigned long long)first);
	fflush(stdout);
}

static int run_decode(const struct opts *o, struct model *m)
{
	struct dec D = {.o = o};
	enum fi_results_order order = o->ordered ? FI_RESULTS_SEQ :
				      o->jsonl || o->interleave ? FI_RESULTS_FINISH : FI_RESULTS_FIRST;
	struct fi_stream *in = NULL;
	struct fi_frame f;
	uint64_t gaps;
	fi_err e;
	if (fi_results_new(m->tok, o->skip_special ? FI_TOK_SKIP_SPECIAL : 0, order, ORDER_WINDOW,
			   &D.R) ||
	    fi_stream_open(&in, o->a.in, FI_STREAM_IN, NULL)) {
		cmd_error(NULL);
		fi_results_free(D.R);
		return 1;
	}
	for (;;) {
		fi_frame_init(&f, FI_FRAME_NONE);
		e = fi_stream_read(in, &f);
		if (e) {
			cmd_error(NULL);
			D.rc = 1;
			fi_frame_free(&f);
			if (fi_stream_broken(in) || e == FI_EIO || e == FI_EINTERRUPT)
				break;
			continue;
		}
		if (f.type == FI_FRAME_EOS) {
			fi_frame_free(&f);
			break;
		}
		if (f.type == FI_FRAME_ERROR)
			report_error(&D, &f);
		if (fi_results_add(D.R, &f)) {
			cmd_error("request '%s': %s", f.id ? f.id : "", fi_errmsg());
			D.rc = 1;
		}
		fi_frame_free(&f);
		write_ready(&D);
	}
	/* Requests that never finished still get their text, in order. */
	fi_results_end(D.R);
	write_ready(&D);
	for (int c = 0; c < FI_ENCODE_COUNT; c++)
		if (D.failed[c] > 1)
			cmd_error("%lu more requests failed (code %s)", D.failed[c] - 1,
				  fi_err_code_name(c));
	if ((gaps = fi_results_gaps(D.R, NULL)) > 1)
		fi_warn("--ordered: %llu request numbers never came", (unsigned long long)gaps);
	fi_results_free(D.R);
	fi_stream_close(in);
	if (fflush(stdout) || D.rc)
		return EXIT_RUNTIME;
	for (int c = 0; c < FI_ENCODE_COUNT; c++)
		if (D.failed[c])
			return EXIT_FAILED;
	return EXIT_OK;
}

/* --sep STR: backslash escapes \n, \t, \r, \0 and \\ read as the characters they name. */
static int parse_sep(const char *s, struct opts *o)
{
	size_t n = 0;
	for (; *s; s++) {
		char c = *s;
		if (c == '\\') {
			switch (*++s) {
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case '0': c = 0; break;
			case '\\': c = '\\'; break;
			default: return -1;
			}
		}
		if (n == sizeof o->sep)
			return -1;
		o->sep[n++] = c;
	}
	o->sep_len = n;
	return 0;
}

enum { O_WHOLE = OPT_LONG, O_JSONL, O_CHAT, O_RENDER, O_IDS, O_COUNT, O_SPECIAL, O_NO_ADD,
       O_INTERLEAVE, O_SKIP_SPECIAL, O_ORDERED, O_ECHO, O_SEP };

/* --sep's value: the standard message for one parse_sep refuses. */
static int take_opt(void *user, int key, const char *value)
{
	struct opts *o = user;
	o->sep_given = 1;
	return key == O_SEP && !parse_sep(value, o) ? 0 : -1;
}

int main(int argc, char **argv)
{
	struct opts o = {.sep = "\n", .sep_len = 1};
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
		{O_ORDERED, "ordered", NULL, OPT_FLAG, 0, 0, &o.ordered},
		{O_INTERLEAVE, "interleave", NULL, OPT_FLAG, 0, 0, &o.interleave},
		{O_ECHO, "echo", NULL, OPT_FLAG, 0, 0, &o.echo},
		{'0', NULL, NULL, OPT_FLAG, 0, 0, &o.nul},
		{O_SEP, "sep", "STR", OPT_CALL, 0, 0, NULL},
		{O_SKIP_SPECIAL, "skip-special", NULL, OPT_FLAG, 0, 0, &o.skip_special},
		{0},
	};
	static const char *const usage[] = {
		"-m [-i] [-o] [--whole | --jsonl | --chat] [--ids | --count] [--special]"
		" [--no-add-special] @sampling [-f]",
		"-m --chat --render [-i] [-o]",
		"-m -d [-i] [-o] [--jsonl] [--ordered | --interleave] [--echo] [-0 | --sep]"
		" [--skip-special]",
		NULL,
	};
	const struct cmd cmd = {.name = "fi-tokenize", .groups = CMD_MODEL | CMD_STREAMS |
				CMD_SAMPLING | CMD_FORCE, .opts = own, .usage = usage,
				.take = take_opt, .user = &o};
	struct model m = {0};
	int rc;
	if (cmd_parse(&cmd, &o.a, argc, argv) != argc)
		usage_error("unexpected operand '%s'", argv[optind]);
	if (o.nul) {
		o.sep[0] = 0;
		o.sep_len = 1;
	}
	if (o.whole + o.jsonl + o.chat > 1)
		usage_error("--whole, --jsonl and --chat exclude each other");
	if (o.ids + o.count + o.render > 1)
		usage_error("--ids, --count and --render exclude each other");
	if (o.render && !o.chat)
		usage_error("--render shows what --chat renders: give --chat");
	if (o.decode && (o.whole || o.chat || o.ids || o.count || o.special || o.no_add || o.a.given))
		usage_error("-d reads frames: --whole, --chat, --ids, --count, --special, "
			    "--no-add-special and sampling options do not apply");
	if (!o.decode && (o.interleave || o.skip_special || o.ordered || o.echo || o.nul ||
			  o.sep_given))
		usage_error("--ordered, --interleave, --echo, -0, --sep and --skip-special are for -d");
	if ((o.ids || o.count || o.render) && o.a.given)
		usage_error("sampling options go into request frames: not with --ids, --count or "
			    "--render");
	if (o.nul && o.sep_given)
		usage_error("-0 and --sep exclude each other");
	if (o.ordered && o.interleave)
		usage_error("--ordered and --interleave exclude each other");
	if (o.decode && o.jsonl && (o.echo || o.nul || o.sep_given))
		usage_error("-d --jsonl writes JSON lines: --echo, -0 and --sep do not apply");
	/* Frames are binary: refused on a terminal before the tokenizer is loaded. */
	if (!o.decode && !o.ids && !o.count && !o.render && !o.a.force &&
	    fi_stream_refuse_tty(o.a.out))
		return cmd_error(NULL);
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
