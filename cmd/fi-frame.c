/* fi-frame: look at and write frames: frames to JSON lines (default) and JSON lines to frames
 * (-e), keeping only some types (-t) or ids (--id). The mapping is in lib/frame/frame_json.h
 * and fi-frame(1). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "frame/frame_json.h"
#include "base/log.h"
#include "frame/stream.h"

#include "opt.h"

#define MAX_TOLD 16 /* dropped keys reported, each once */

struct opts {
	struct cmd_args a; /* -i, -o, -f */
	int encode;
	const char *connect; /* -c ENDPOINT */
	double timeout;      /* --timeout SEC */
	unsigned types; /* 1 << enum fi_frame_type kept; 0: all */
	struct opt_list ids;
};

static int keep(const struct opts *o, const struct fi_frame *f)
{
	if (o->types && !(o->types & 1u << f->type))
		return 0;
	if (!o->ids.n)
		return 1;
	for (int i = 0; i < o->ids.n; i++)
		if (f->id && !strcmp(f->id, o->ids.v[i]))
			return 1;
	return 0;
}

static int parse_types(const char *s, unsigned *types)
{
	while (*s) {
		size_t n = strcspn(s, ",");
		int t;
		for (t = 1; t < FI_FRAME_TYPE_COUNT; t++)
			if (strlen(fi_frame_type_name(t)) == n && !strncmp(fi_frame_type_name(t), s, n))
				break;
		if (t == FI_FRAME_TYPE_COUNT)
			return -1;
		*types |= 1u << t;
		s += n + (s[n] == ',');
	}
	return 0;
}

/* Frames in, one JSON object per line out. */
static int to_json(const struct opts *o)
{
	struct fi_stream *in = NULL;
	FILE *out = strcmp(o->a.out, "-") ? fopen(o->a.out, "w") : stdout;
	unsigned long n = 0;
	int rc = 0;
	if (!out)
		return cmd_error("cannot open '%s': %s", o->a.out, strerror(errno));
	if (fi_stream_open(&in, o->a.in, FI_STREAM_IN, NULL)) {
		cmd_error(NULL);
		if (out != stdout)
			fclose(out);
		return 1;
	}
	for (;;) {
		struct fi_frame f;
		json_t *j;
		char *s;
		fi_err e = fi_stream_read(in, &f);
		n++;
		if (e) {
			/* A bad frame is reported and skipped; a stream that cannot go on ends. */
			if (fi_stream_broken(in) && strstr(fi_errmsg(), "not fi frames"))
				cmd_error("%s (JSON lines are read with fi-frame -e)", fi_errmsg());
			else
				cmd_error("frame %lu%s%s%s: %s", n, f.id ? " ('" : "",
					  f.id ? f.id : "", f.id ? "')" : "", fi_errmsg());
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
		if (keep(o, &f)) {
			if (fi_frame_to_json(&f, &j) || !(s = fi_json_dumps(j))) {
				cmd_error("frame %lu: %s", n, j ? "out of memory" : fi_errmsg());
				rc = 1;
			} else {
				fputs(s, out);
				putc('\n', out);
				free(s);
			}
			json_decref(j);
		}
		fi_frame_free(&f);
	}
	fi_stream_close(in);
	if (fflush(out) || (out != stdout && fclose(out))) {
		cmd_error("%s: %s", o->a.out, strerror(errno));
		rc = 1;
	}
	return rc;
}

/* One line of at most max bytes (without its newline) into b: 1 a line, 0 end of input,
 * -1 a longer line (read up to its end and dropped). */
static int read_line(FILE *in, struct fi_buf *b, size_t max)
{
	int c, over = 0;
	b->len = 0;
	while ((c = getc_unlocked(in)) != EOF && c != '\n') {
		char ch = (char)c;
		if (b->len >= max)
			over = 1;
		else if (fi_buf_append(b, &ch, 1))
			over = 1;
	}
	if (c == EOF && !b->len && !over)
		return 0;
	return over ? -1 : 1;
}

/* JSON lines in, frames out. */
static int to_frames(const struct opts *o)
{
	struct fi_frame_limits lim;
	struct fi_stream_opts so;
	struct fi_stream *out = NULL;
	struct fi_buf line = {0};
	FILE *in = strcmp(o->a.in, "-") ? fopen(o->a.in, "r") : stdin;
	char told[MAX_TOLD][128];
	int ntold = 0, rc = 0, r;
	unsigned long n = 0;
	if (!in)
		return cmd_error("cannot open '%s': %s", o->a.in, strerror(errno));
	fi_stream_opts_default(&so);
	so.tty_ok = o->a.force;
	lim = so.lim;
	if (fi_stream_open(&out, o->a.out, FI_STREAM_OUT, &so)) {
		cmd_error(NULL);
		if (in != stdin)
			fclose(in);
		return 1;
	}
	while ((r = read_line(in, &line, 4 * lim.max_frame))) {
		struct fi_frame f;
		json_t *j = NULL, *back = NULL;
		char path[128];
		size_t i = 0;
		n++;
		if (r < 0) {
			cmd_error("line %lu: longer than %zu bytes", n, 4 * lim.max_frame);
			rc = 1;
			continue;
		}
		while (i < line.len && strchr(" \t\r", line.data[i]))
			i++;
		if (i == line.len)
			continue; /* blank lines are not frames */
		if (fi_frame_from_json((const char *)line.data, line.len, &lim, &f, &j)) {
			cmd_error("line %lu: %s", n, fi_errmsg());
			rc = 1;
		} else if (keep(o, &f)) {
			/* Keys outside the schema are dropped, as any reader would ignore them: say
			 * so once per key, a misspelt "temprature" should not pass unseen. */
			if (!fi_frame_to_json(&f, &back) && fi_json_dropped(j, back, path, sizeof path)) {
				int k;
				for (k = 0; k < ntold && strcmp(told[k], path); k++)
					;
				if (k == ntold && ntold < MAX_TOLD) {
					snprintf(told[ntold++], sizeof told[0], "%s", path);
					fi_warn("line %lu: key '%s' is not in the frame schema: dropped", n, path);
				}
			}
			fi_err we = fi_stream_write(out, &f);
			if (we) {
				/* A frame the encoder refuses is this line's fault; others end output. */
				cmd_error("line %lu: %s", n, fi_errmsg());
				rc = 1;
				if (we != FI_EINVAL) {
					json_decref(back);
					json_decref(j);
					fi_frame_free(&f);
					break;
				}
			}
		}
		json_decref(back);
		json_decref(j);
		fi_frame_free(&f);
	}
	if (ferror(in)) {
		cmd_error("%s: %s", o->a.in, strerror(errno));
		rc = 1;
	}
	if (fi_stream_close(out)) {
		cmd_error(NULL);
		rc = 1;
	}
	fi_buf_free(&line);
	if (in != stdin)
		fclose(in);
	return rc;
}

/* ---- -c: a client of a worker or of fi-route (fi-frame(5), SOCKETS) ---- */

/* The ids of the requests sent and not yet answered (done or error). */
struct pending {
	char **v;
	size_t n, cap;
};

static int pending_add(struct pending *p, const char *id)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		char **v = realloc(p->v, cap * sizeof *v);
		if (!v)
			return -1;
		p->v = v;
		p->cap = cap;
	}
	if (!(p->v[p->n] = strdup(id)))
		return -1;
	p->n++;
	return 0;
}

/* Newest first: answers come roughly in order, and a short search is the common case. */
static void pending_del(struct pending *p, const char *id)
{
	for (size_t i = p->n; i-- > 0;)
		if (!strcmp(p->v[i], id)) {
			free(p->v[i]);
			memmove(p->v + i, p->v + i + 1, (p->n - i - 1) * sizeof *p->v);
			p->n--;
			return;
		}
}

/* Sends the frames of -i to ENDPOINT over a DEALER socket and writes every reply to -o,
 * until each request sent has its done or error frame. Exit 3 when an error frame came. */
static int client(const struct opts *o)
{
	struct fi_stream_opts so;
	struct fi_stream *in = NULL, *sock = NULL, *tx = NULL, *out = NULL;
	struct pending p = {0};
	int in_eof = 0, rc = 0, errors = 0;
	fi_err e = FI_OK;

	fi_stream_opts_default(&so);
	so.tty_ok = o->a.force;
	if ((e = fi_stream_open(&out, o->a.out, FI_STREAM_OUT, &so)) ||
	    (e = fi_stream_open(&in, o->a.in, FI_STREAM_IN, NULL)))
		goto out;
	fi_stream_opts_default(&so);
	so.dealer = 1;
	so.connect_ms = (int)(o->timeout * 1000);
	so.eos_count = 0;
	if ((e = fi_stream_open(&sock, o->connect, FI_STREAM_IN, &so)) ||
	    (e = fi_stream_open_reply(&tx, sock)))
		goto out;
	fi_stream_catch_signals();
	while (!e && (!in_eof || p.n)) {
		struct fi_frame f;
		fi_err r;
		if (!in_eof) {
			fi_frame_init(&f, FI_FRAME_NONE);
			r = fi_stream_read_timeout(in, &f, p.n ? 0 : 100);
			if (r == FI_EINTERRUPT || r == FI_EIO) {
				e = r;
				fi_frame_free(&f);
				break;
			}
			if (r) {
				/* Not sent: answered here, as a worker would. */
				cmd_error("%s", fi_errmsg());
				errors++;
				if (fi_stream_broken(in))
					in_eof = 1;
				else
					e = fi_stream_write_error(out, f.id, r, fi_errmsg());
			} else if (f.type == FI_FRAME_EOS) {
				in_eof = 1;
			} else if (f.type != FI_FRAME_NONE) {
				if (f.type == FI_FRAME_REQUEST && pending_add(&p, f.id))
					e = fi_fail(FI_ENOMEM, "out of memory");
				if (!e)
					e = fi_stream_write(tx, &f);
			}
			fi_frame_free(&f);
		}
		/* Replies: all that have arrived, waiting a little once the input is sent. */
		for (int k = 0; !e; k++) {
			fi_frame_init(&f, FI_FRAME_NONE);
			r = fi_stream_read_timeout(sock, &f, in_eof && !k ? 100 : 0);
			if (r == FI_EINTERRUPT || r == FI_EIO) {
				e = r;
			} else if (r) {
				cmd_error("reply: %s", fi_errmsg());
				errors++;
			} else if (f.type != FI_FRAME_NONE && f.type != FI_FRAME_EOS) {
				if (f.type == FI_FRAME_ERROR)
					errors++;
				if ((f.type == FI_FRAME_DONE || f.type == FI_FRAME_ERROR) && f.id)
					pending_del(&p, f.id);
				e = fi_stream_write(out, &f);
			} else {
				fi_frame_free(&f);
				break;
			}
			fi_frame_free(&f);
		}
		if (!e)
			e = fi_stream_flush(out);
	}
out:
	if (e == FI_EINTERRUPT && p.n)
		cmd_error("interrupted: %zu requests without an answer", p.n);
	else if (e)
		cmd_error(NULL);
	rc = e ? EXIT_RUNTIME : errors ? EXIT_FAILED : EXIT_OK;
	fi_stream_close(tx);
	fi_stream_close(sock);
	fi_stream_close(in);
	if (fi_stream_close(out) && !rc)
		rc = cmd_error(NULL);
	for (size_t i = 0; i < p.n; i++)
		free(p.v[i]);
	free(p.v);
	return rc;
}

enum { O_ID = OPT_LONG, O_TIMEOUT };

/* -t TYPE,...: its own message, with the types. */
static int take_opt(void *user, int key, const char *value)
{
	struct opts *o = user;
	if (!parse_types(value, &o->types))
		return 0;
	cmd_error("invalid value '%s' for -t (request, token, done, error, cancel, eos, hello, load, bye)", value);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	const struct opt own[] = {
		{'e', "encode", NULL, OPT_FLAG, 0, 0, &o.encode},
		{'t', "type", "TYPE,...", OPT_CALL, 0, 0, NULL},
		{O_ID, "id", "ID", OPT_LIST, 0, OPT_LIST_MAX, &o.ids},
		{'c', "connect", "ENDPOINT", OPT_STR, 0, 0, &o.connect},
		{O_TIMEOUT, "timeout", "SEC", OPT_DOUBLE, 0.001, 86400, &o.timeout},
		{0},
	};
	static const char *const usage[] = {
		"[-i] [-o] [-t] [--id]...",
		"-e [-i] [-o] [-t] [--id]... [-f]",
		"-c [--timeout] [-i] [-o] [-f]",
		NULL,
	};
	const struct cmd cmd = {.name = "fi-frame", .groups = CMD_STREAMS | CMD_FORCE, .opts = own,
				.usage = usage, .take = take_opt, .user = &o};
	o.timeout = 10;
	if (cmd_parse(&cmd, &o.a, argc, argv) != argc)
		usage_error("unexpected operand '%s'", argv[optind]);
	if (o.connect) {
		if (o.encode || o.types || o.ids.n)
			usage_error("-c sends frames as they are: no -e, -t or --id");
		return client(&o);
	}
	if (cmd_given(O_TIMEOUT))
		usage_error("--timeout is for -c");
	if (o.a.force && !o.encode)
		usage_error("-f is for -e, which writes frames");
	return o.encode ? to_frames(&o) : to_json(&o);
}
