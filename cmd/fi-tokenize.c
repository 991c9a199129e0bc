/* fi-tokenize: text -> request frames (or plain ids / counts), and -d: token frames -> text.
 * See fi-tokenize(1). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
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
#include "base/utf8.h"
#include "cmdutil.h"
#include "frame/frame_json.h"
#include "serve/results.h"
#include "text/tok_ident.h"

static const char USAGE[] =
	"usage: fi-tokenize -m MODEL [-i IN] [-o OUT] [--whole | --jsonl | --chat] [--ids | --count]\n"
	"                   [--special] [--no-add-special] [--temp T] [--top-k K] [--top-p P]\n"
	"                   [--min-p P] [--repeat-penalty R] [--seed S] [-f]\n"
	"       fi-tokenize -m MODEL -d [-i IN] [--jsonl] [--ordered | --interleave] [--echo]\n"
	"                   [-0 | --sep STR] [--skip-special]\n"
	"       fi-tokenize -h\n";

/* --ordered holds at most this many results while one is missing. */
#define ORDER_WINDOW 4096

struct opts {
	const char *model, *in, *out;
	int whole, jsonl, chat, ids, count, special, no_add, decode, interleave, skip_special;
	int ordered, echo, force;
	const char *bench;
	char sep[256]; /* -d: written after each request's text */
	size_t sep_len;
	struct fi_request sp; /* sampling options for the frames: values, and set bits */
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
		FILE *f = fopen(arg, "rb");
		char magic[4] = {0};
		if (!f)
			return fi_fail(FI_EIO, "cannot open '%s': %s", arg, strerror(errno));
		if (fread(magic, 1, 4, f) != 4)
			magic[0] = 0;
		fclose(f);
		if (memcmp(magic, FI_IMAGE_MAGIC, 4))
			return fi_tok_load_path(arg, &m->tok);
		snprintf(path, sizeof path, "%s", arg);
	} else if ((e = fi_store_path(arg, path, sizeof path)) || stat(path, &st)) {
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
	unsigned long n;
	uint64_t seq; /* requests (and error frames for them) written, numbered from 1 */
	struct fi_tok_ident ident;
	int failed;
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
 * results), its number, the tokenizer's fingerprint and the sampling options. */
static int emit(struct enc *E, const char *id, const uint32_t *ids, size_t n, json_t *params,
		const char *text, size_t tlen)
{
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
		return emit_error(E, id, FI_EINVAL, "empty prompt", text, tlen);
	{
		const struct fi_request *o = &E->o->sp;
		struct fi_frame f;
		char **stop = NULL, *valid = NULL;
		uint32_t *stop_ids = NULL;
		json_t *v, *x;
		size_t k;
		fi_err e;
		fi_frame_init(&f, FI_FRAME_REQUEST);
		f.id = (char *)id;
		f.seq = ++E->seq;
		f.has_seq = 1;
		f.req.tokens = (uint32_t *)ids;
		f.req.ntokens = (uint32_t)n;
		/* The prompt as valid UTF-8 (what the tokenizer read, invalid bytes as U+FFFD). */
		if (fi_utf8_lossy(text, tlen, &valid, &f.req.text_len))
			return -1;
		f.req.text = valid;
		memcpy(f.req.tok_sha256, E->ident.sha256, 32);
		f.req.tok_name = E->ident.name;
		f.req.set |= FI_REQ_TOKENIZER;
		f.req.temperature = o->temperature;
		f.req.top_k = o->top_k;
		f.req.top_p = o->top_p;
		f.req.min_p = o->min_p;
		f.req.repeat_penalty = o->repeat_penalty;
		f.req.seed = o->seed;
		f.req.set |= o->set & FI_REQ_SAMPLING;
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
		e = fi_stream_write(E->out, &f);
		free(stop);
		free(stop_ids);
		free(valid);
		return e ? -1 : 0;
	}
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
	if ((e = fi_tok_encode(E->m->tok, text, tlen, flags, &ids)))
		goto bad;
	r = emit(E, id, ids.v, ids.n, json_is_object(obj) ? obj : NULL, text, tlen);
	goto out;
bad:
	fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
	E->failed = 1;
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
	FILE *in = !strcmp(o->in, "-") ? stdin : fopen(o->in, "rb");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;
	if (!in) {
		fi_log(FI_LOG_ERROR, "cannot open '%s': %s", o->in, strerror(errno));
		return 1;
	}
	if (!o->ids && !o->count) {
		struct fi_stream_opts so;
		fi_stream_opts_default(&so);
		so.tty_ok = o->force;
		if (fi_tok_ident(m->tok, o->model, &E.ident) ||
		    fi_stream_open(&E.out, o->out, FI_STREAM_OUT, &so)) {
			fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
			if (in != stdin)
				fclose(in);
			return 1;
		}
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
	D->rc = 1;
	if (D->failed[c]++)
		return;
	/* Generators usually name the request already. */
	snprintf(pre, sizeof pre, "request '%s': ", id);
	if (!strncmp(m, pre, strlen(pre)))
		fi_log(FI_LOG_ERROR, "%s", m);
	else
		fi_log(FI_LOG_ERROR, "%s%s", pre, m);
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
				fi_log(FI_LOG_ERROR, "request '%s': %s", r.id, s ? fi_errmsg() : "out of memory");
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
	    fi_stream_open(&in, o->in, FI_STREAM_IN, NULL)) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		fi_results_free(D.R);
		return 1;
	}
	for (;;) {
		fi_frame_init(&f, FI_FRAME_NONE);
		e = fi_stream_read(in, &f);
		if (e) {
			fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
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
			fi_log(FI_LOG_ERROR, "request '%s': %s", f.id ? f.id : "", fi_errmsg());
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
			fi_log(FI_LOG_ERROR, "%lu more requests failed (code %s)", D.failed[c] - 1,
			       fi_err_code_name(c));
	if ((gaps = fi_results_gaps(D.R, NULL)) > 1)
		fi_warn("--ordered: %llu request numbers never came", (unsigned long long)gaps);
	fi_results_free(D.R);
	fi_stream_close(in);
	return fflush(stdout) ? 1 : D.rc;
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

int main(int argc, char **argv)
{
	enum { O_TEMP = 256, O_TOPK, O_TOPP, O_MINP, O_REP, O_SEED, O_ORDERED, O_ECHO, O_SEP };
	static const struct option lo[] = {
		{"whole", no_argument, 0, 'W'}, {"jsonl", no_argument, 0, 'J'}, {"chat", no_argument, 0, 'C'},
		{"ids", no_argument, 0, 'I'}, {"count", no_argument, 0, 'N'}, {"special", no_argument, 0, 'S'},
		{"no-add-special", no_argument, 0, 'A'}, {"interleave", no_argument, 0, 'L'},
		{"skip-special", no_argument, 0, 'K'}, {"bench", required_argument, 0, 'B'},
		{"temp", required_argument, 0, O_TEMP}, {"top-k", required_argument, 0, O_TOPK},
		{"top-p", required_argument, 0, O_TOPP}, {"min-p", required_argument, 0, O_MINP},
		{"repeat-penalty", required_argument, 0, O_REP}, {"seed", required_argument, 0, O_SEED},
		{"ordered", no_argument, 0, O_ORDERED}, {"echo", no_argument, 0, O_ECHO},
		{"sep", required_argument, 0, O_SEP}, {"force", no_argument, 0, 'f'},
		{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	struct opts o = {.in = "-", .out = "-", .sep = "\n", .sep_len = 1};
	struct model m = {0};
	int c, rc, nul = 0, sep = 0;
	double t0, v;
	fi_log_set_prog("fi-tokenize");
	o.sp.temperature = 1.0f;
	o.sp.top_p = 1.0f;
	o.sp.repeat_penalty = 1.0f;
	while ((c = getopt_long(argc, argv, "m:i:o:d0fh", lo, NULL)) != -1) {
		switch (c) {
		case 'm': o.model = optarg; break;
		case 'i': o.in = optarg; break;
		case 'o': o.out = optarg; break;
		case 'd': o.decode = 1; break;
		case 'f': o.force = 1; break;
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
		case O_ORDERED: o.ordered = 1; break;
		case O_ECHO: o.echo = 1; break;
		case '0':
			nul = 1;
			o.sep[0] = 0;
			o.sep_len = 1;
			break;
		case O_SEP:
			sep = 1;
			if (parse_sep(optarg, &o))
				goto bad;
			break;
		/* The ranges are the frame's (fi-frame(5)), so every frame written reads back. */
		case O_TEMP:
			if (fi_parse_num(optarg, 0, 1e4, &v))
				goto bad;
			o.sp.temperature = (float)v, o.sp.set |= FI_REQ_TEMPERATURE;
			break;
		case O_TOPK:
			if (fi_parse_num(optarg, 0, INT32_MAX, &v) || v != (int32_t)v)
				goto bad;
			o.sp.top_k = (int32_t)v, o.sp.set |= FI_REQ_TOP_K;
			break;
		case O_TOPP:
			if (fi_parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.top_p = (float)v, o.sp.set |= FI_REQ_TOP_P;
			break;
		case O_MINP:
			if (fi_parse_num(optarg, 0, 1, &v))
				goto bad;
			o.sp.min_p = (float)v, o.sp.set |= FI_REQ_MIN_P;
			break;
		case O_REP:
			if (fi_parse_num(optarg, 1e-3, 1e3, &v))
				goto bad;
			o.sp.repeat_penalty = (float)v, o.sp.set |= FI_REQ_REPEAT_PENALTY;
			break;
		case O_SEED:
			if (fi_parse_u64(optarg, &o.sp.seed))
				goto bad;
			o.sp.set |= FI_REQ_SEED;
			break;
		case 'h': fputs(USAGE, stdout); return 0;
		default: fputs(USAGE, stderr); return 2;
		}
		continue;
bad:
		fprintf(stderr, "fi-tokenize: invalid value '%s' for %s\n", optarg,
			optarg == argv[optind - 1] && optind > 1 ? argv[optind - 2] : argv[optind - 1]);
		return 2;
	}
	if (optind < argc || !o.model || o.whole + o.jsonl + o.chat > 1 || o.ids + o.count > 1 ||
	    (o.decode && (o.whole || o.chat || o.ids || o.count || o.special || o.no_add ||
			  o.sp.set)) ||
	    (!o.decode && (o.interleave || o.skip_special || o.ordered || o.echo || nul || sep)) ||
	    ((o.ids || o.count) && o.sp.set) || nul + sep > 1 || o.ordered + o.interleave > 1 ||
	    (o.decode && o.jsonl && (o.echo || nul || sep))) {
		fputs(USAGE, stderr);
		return 2;
	}
	/* Frames are binary: refused on a terminal before the tokenizer is loaded. */
	if (!o.decode && !o.ids && !o.count && !o.bench && !o.force && fi_stream_refuse_tty(o.out)) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		return 1;
	}
	t0 = fi_now();
	if (open_model(o.model, &m)) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		return 1;
	}
	if (o.bench)
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
