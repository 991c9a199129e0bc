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

#include "chat.h"
#include "frame.h"
#include "image.h"
#include "log.h"
#include "store.h"
#include "stream.h"
#include "tokenizer.h"

static const char USAGE[] =
	"usage: fi-tokenize -m MODEL [-i IN] [-o OUT] [--whole | --jsonl | --chat] [--ids | --count]\n"
	"                   [--special] [--no-add-special]\n"
	"       fi-tokenize -m MODEL -d [-i IN] [--interleave] [--skip-special]\n"
	"       fi-tokenize -h\n";

struct opts {
	const char *model, *in, *out;
	int whole, jsonl, chat, ids, count, special, no_add, decode, interleave, skip_special;
	const char *bench;
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

/* -m: a model image (file or store name), a directory with tokenizer.json, or a tokenizer
 * file. Weights are never read. */
static fi_err open_model(const char *arg, struct model *m)
{
	struct stat st;
	char path[4096];
	fi_err e;
	if (!stat(arg, &st) && S_ISDIR(st.st_mode)) {
		snprintf(path, sizeof path, "%s/tokenizer_config.json", arg);
		m->cfg_json = slurp_file(path, NULL);
		snprintf(path, sizeof path, "%s/chat_template.jinja", arg);
		m->tmpl = slurp_file(path, NULL);
		return fi_tok_load_path(arg, &m->tok);
	}
	if (!stat(arg, &st)) {
		FILE *f = S_ISREG(st.st_mode) ? fopen(arg, "rb") : NULL;
		char magic[4] = {0};
		if (!S_ISREG(st.st_mode))
			return fi_fail(FI_EIO, "cannot open '%s': not a regular file", arg);
		if (!f)
			return fi_fail(FI_EIO, "cannot open '%s': %s", arg, strerror(errno));
		if (fread(magic, 1, 4, f) != 4)
			magic[0] = 0;
		fclose(f);
		if (memcmp(magic, FI_IMAGE_MAGIC, 4))
			return fi_tok_load_path(arg, &m->tok);
		snprintf(path, sizeof path, "%s", arg);
	} else if (fi_store_name_valid(arg) && (e = fi_store_path(arg, path, sizeof path))) {
		return e; /* FI_HOME cannot be trusted */
	} else if (!fi_store_name_valid(arg) || stat(path, &st)) {
		return fi_fail(FI_ENOTFOUND, "model '%s' not found (a store name, image, directory or tokenizer.json)", arg);
	}
	if ((e = fi_image_open(path, &m->im)))
		return e;
	{
		const struct fi_image_blob *b;
		if ((e = fi_image_tokenizer(m->im, &m->tok)))
			return e;
		if ((b = fi_image_blob(m->im, "tokenizer_config.json")))
			m->cfg_json = strdup(b->data);
		if ((b = fi_image_blob(m->im, "chat_template.jinja")))
			m->tmpl = strdup(b->data);
	}
	return FI_OK;
}

/* ---- encoding ---- */

struct enc {
	const struct opts *o;
	struct model *m;
	struct fi_stream *out;
	struct fi_buf buf; /* one encoded frame */
	unsigned long n;   /* input units read: the line number, or the request's ordinal */
	int ctx;           /* the model's context (0: unknown, a tokenizer without a model) */
	unsigned long failed;
};

static void set_param(struct fi_request *r, json_t *obj)
{
	json_t *v;
	if ((v = json_object_get(obj, "temperature")) && json_is_number(v))
		r->temperature = (float)json_number_value(v), r->set |= FI_REQ_TEMPERATURE;
	if ((v = json_object_get(obj, "top_k")) && json_is_integer(v))
		r->top_k = (int32_t)json_integer_value(v), r->set |= FI_REQ_TOP_K;
	if ((v = json_object_get(obj, "top_p")) && json_is_number(v))
		r->top_p = (float)json_number_value(v), r->set |= FI_REQ_TOP_P;
	if ((v = json_object_get(obj, "min_p")) && json_is_number(v))
		r->min_p = (float)json_number_value(v), r->set |= FI_REQ_MIN_P;
	if ((v = json_object_get(obj, "repeat_penalty")) && json_is_number(v))
		r->repeat_penalty = (float)json_number_value(v), r->set |= FI_REQ_REPEAT_PENALTY;
	if ((v = json_object_get(obj, "seed")) && json_is_integer(v))
		r->seed = (uint64_t)json_integer_value(v), r->set |= FI_REQ_SEED;
	if ((v = json_object_get(obj, "max_tokens")) && json_is_integer(v) && json_integer_value(v) >= 0)
		r->max_tokens = (uint32_t)json_integer_value(v), r->set |= FI_REQ_MAX_TOKENS;
	if ((v = json_object_get(obj, "stream")) && json_is_boolean(v))
		r->stream = json_is_true(v), r->set |= FI_REQ_STREAM;
}

/* Emits one request: plain ids, a count, or a request frame. A request that cannot be
 * made (no tokens, over the model's context, an id or stop list the frame schema refuses) is
 * returned as its error, for the caller to answer and go on; an output that fails sets
 * *fatal. */
static fi_err emit(struct enc *E, const char *id, const uint32_t *ids, size_t n, json_t *params,
		   int *fatal)
{
	struct fi_frame f;
	char **stop = NULL;
	uint32_t *stop_ids = NULL;
	json_t *v, *x;
	size_t k;
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
	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = (char *)id;
	f.req.tokens = (uint32_t *)ids;
	f.req.ntokens = (uint32_t)n;
	if (params) {
		set_param(&f.req, params);
		if (json_is_array(v = json_object_get(params, "stop")) && (stop = calloc(json_array_size(v) + 1, sizeof *stop))) {
			json_array_foreach(v, k, x) if (json_is_string(x)) stop[f.req.nstop++] = (char *)json_string_value(x);
			f.req.stop = stop;
		}
		if (json_is_array(v = json_object_get(params, "stop_ids")) &&
		    (stop_ids = calloc(json_array_size(v) + 1, sizeof *stop_ids))) {
			json_array_foreach(v, k, x) if (json_is_integer(x) && json_integer_value(x) >= 0)
				stop_ids[f.req.nstop_ids++] = (uint32_t)json_integer_value(x);
			f.req.stop_ids = stop_ids;
		}
	}
	/* Encoded first: a frame the schema refuses is this request's failure, not the
	 * output's. */
	E->buf.len = 0;
	e = fi_frame_encode(&f, &E->buf);
	free(stop);
	free(stop_ids);
	if (!e && (e = fi_stream_write_raw(E->out, E->buf.data, E->buf.len)))
		*fatal = 1;
	return e;
}

static fi_err load_chat(struct enc *E)
{
	if (E->m->chat)
		return FI_OK;
	if (!E->m->cfg_json && !E->m->tmpl)
		return fi_fail(FI_ENOTFOUND, "'%s': no chat template (tokenizer_config.json or chat_template.jinja)", E->o->model);
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
	if ((e = fi_tok_encode(E->m->tok, text, tlen, flags, &ids)))
		goto bad;
	if (!(e = emit(E, id, ids.v, ids.n, json_is_object(obj) ? obj : NULL, &fatal)))
		goto out;
	if (fatal) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		r = -1;
		goto out;
	}
	/* the unit's failure, named by its line (or ordinal) and id */
	fi_fail_ctx(e, "line %lu: request '%.64s%s'", E->n, id, strlen(id) > 64 ? "..." : "");
bad:
	fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
	E->failed++;
	if (!E->o->ids && !E->o->count && E->out)
		r = fi_stream_write_error(E->out, id, e, fi_errmsg()) ? -1 : 0;
out:
	fi_tok_ids_free(&ids);
	free(chat_text);
	json_decref(obj);
	return r;
}

static int run_encode(const struct opts *o, struct model *m)
{
	struct enc E = {.o = o, .m = m};
	FILE *in = !strcmp(o->in, "-") ? stdin : fopen(o->in, "rb");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;
	if (!in) {
		fi_log(FI_LOG_ERROR, "cannot open '%s': %s", o->in, strerror(errno));
		return 1;
	}
	if (!o->ids && !o->count && fi_stream_open(&E.out, o->out, FI_STREAM_OUT, NULL)) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		if (in != stdin)
			fclose(in);
		return 1;
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
	if (E.out && fi_stream_close(E.out) && !rc) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		rc = 1;
	}
	if (fflush(stdout) && !rc) {
		fi_log(FI_LOG_ERROR, "write: %s", strerror(errno));
		rc = 1;
	}
	fi_buf_free(&E.buf);
	if (!rc && E.failed)
		fi_log(FI_LOG_ERROR, "%lu of %lu requests failed", E.failed, E.n);
	return rc ? 1 : E.failed ? 3 : 0;
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
		fi_log(FI_LOG_ERROR, "%s", m);
	else
		fi_log(FI_LOG_ERROR, "%s%s", pre, m);
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
	if (fi_stream_open(&in, o->in, FI_STREAM_IN, NULL)) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		return 1;
	}
	for (;;) {
		struct dreq *q;
		const char *pc;
		size_t pn;
		fi_frame_init(&f, FI_FRAME_NONE);
		e = fi_stream_read(in, &f);
		if (e) {
			fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
			rc = 1;
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
			fi_log(FI_LOG_ERROR, "out of memory");
			rc = 1;
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
				fi_log(FI_LOG_ERROR, "request '%s': %s", q->id, fi_errmsg());
				rc = 1;
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

/* Hidden: --bench FILE encodes FILE (whole) a few times and prints load and encode speed. */
static int run_bench(const struct opts *o, struct model *m, double load_s)
{
	size_t len;
	char *buf = slurp_file(o->bench, &len);
	struct fi_tok_ids ids = {0};
	double best = 1e9;
	if (!buf) {
		fi_log(FI_LOG_ERROR, "cannot open '%s': %s", o->bench, strerror(errno));
		return 1;
	}
	for (int r = 0; r < 5; r++) {
		double t0 = fi_now();
		ids.n = 0;
		if (fi_tok_encode(m->tok, buf, len, FI_TOK_REPLACE_INVALID | FI_TOK_ADD_SPECIAL, &ids)) {
			fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
			return 1;
		}
		if (fi_now() - t0 < best)
			best = fi_now() - t0;
	}
	printf("load %.1f ms\nencode %zu bytes -> %zu tokens: %.1f ms, %.1f MB/s (best of 5)\n",
	       load_s * 1e3, len, ids.n, best * 1e3, len / best / 1e6);
	free(buf);
	fi_tok_ids_free(&ids);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"whole", no_argument, 0, 'W'}, {"jsonl", no_argument, 0, 'J'}, {"chat", no_argument, 0, 'C'},
		{"ids", no_argument, 0, 'I'}, {"count", no_argument, 0, 'N'}, {"special", no_argument, 0, 'S'},
		{"no-add-special", no_argument, 0, 'A'}, {"interleave", no_argument, 0, 'L'},
		{"skip-special", no_argument, 0, 'K'}, {"bench", required_argument, 0, 'B'},
		{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	struct opts o = {.in = "-", .out = "-"};
	struct model m = {0};
	double t0;
	int c, rc;
	fi_log_set_prog("fi-tokenize");
	while ((c = getopt_long(argc, argv, "m:i:o:dh", lo, NULL)) != -1) {
		switch (c) {
		case 'm': o.model = optarg; break;
		case 'i': o.in = optarg; break;
		case 'o': o.out = optarg; break;
		case 'd': o.decode = 1; break;
		case 'W': o.whole = 1; break;
		case 'J': o.jsonl = 1; break;
		case 'C': o.chat = 1; break;
		case 'I': o.ids = 1; break;
		case 'N': o.count = 1; break;
		case 'S': o.special = 1; break;
		case 'A': o.no_add = 1; break;
		case 'L': o.interleave = 1; break;
		case 'K': o.skip_special = 1; break;
		case 'B': o.bench = optarg; break;
		case 'h': fputs(USAGE, stdout); return 0;
		default: fputs(USAGE, stderr); return 2;
		}
	}
	if (optind < argc || !o.model || o.whole + o.jsonl + o.chat > 1 || o.ids + o.count > 1 ||
	    (o.decode && (o.whole || o.jsonl || o.chat || o.ids || o.count || o.special || o.no_add)) ||
	    (!o.decode && (o.interleave || o.skip_special))) {
		fputs(USAGE, stderr);
		return 2;
	}
	t0 = fi_now();
	if (open_model(o.model, &m)) {
		/* what open_model got before the failure is freed below */
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		rc = 1;
	} else if (o.bench)
		rc = run_bench(&o, &m, fi_now() - t0);
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
