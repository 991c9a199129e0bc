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

static const char usage_text[] =
	"usage: fi-frame [-i IN] [-o OUT] [-t TYPE,...] [--id ID]...\n"
	"       fi-frame -e [-i IN] [-o OUT] [-t TYPE,...] [--id ID]... [-f]\n"
	"       fi-frame -h\n";

#define MAX_IDS 64
#define MAX_TOLD 16 /* dropped keys reported, each once */

struct opts {
	const char *in, *out;
	int encode, force;
	unsigned types; /* 1 << enum fi_frame_type kept; 0: all */
	const char *ids[MAX_IDS];
	int nids;
};

static int usage(int rc)
{
	fputs(usage_text, rc ? stderr : stdout);
	return rc;
}

static int keep(const struct opts *o, const struct fi_frame *f)
{
	if (o->types && !(o->types & 1u << f->type))
		return 0;
	if (!o->nids)
		return 1;
	for (int i = 0; i < o->nids; i++)
		if (f->id && !strcmp(f->id, o->ids[i]))
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
	FILE *out = strcmp(o->out, "-") ? fopen(o->out, "w") : stdout;
	unsigned long n = 0;
	int rc = 0;
	if (!out) {
		fi_log(FI_LOG_ERROR, "cannot open '%s': %s", o->out, strerror(errno));
		return 1;
	}
	if (fi_stream_open(&in, o->in, FI_STREAM_IN, NULL)) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
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
				fi_log(FI_LOG_ERROR, "%s (JSON lines are read with fi-frame -e)", fi_errmsg());
			else
				fi_log(FI_LOG_ERROR, "frame %lu%s%s%s: %s", n, f.id ? " ('" : "",
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
				fi_log(FI_LOG_ERROR, "frame %lu: %s", n, j ? "out of memory" : fi_errmsg());
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
		fi_log(FI_LOG_ERROR, "%s: %s", o->out, strerror(errno));
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
	FILE *in = strcmp(o->in, "-") ? fopen(o->in, "r") : stdin;
	char told[MAX_TOLD][128];
	int ntold = 0, rc = 0, r;
	unsigned long n = 0;
	if (!in) {
		fi_log(FI_LOG_ERROR, "cannot open '%s': %s", o->in, strerror(errno));
		return 1;
	}
	fi_stream_opts_default(&so);
	so.tty_ok = o->force;
	lim = so.lim;
	if (fi_stream_open(&out, o->out, FI_STREAM_OUT, &so)) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
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
			fi_log(FI_LOG_ERROR, "line %lu: longer than %zu bytes", n, 4 * lim.max_frame);
			rc = 1;
			continue;
		}
		while (i < line.len && strchr(" \t\r", line.data[i]))
			i++;
		if (i == line.len)
			continue; /* blank lines are not frames */
		if (fi_frame_from_json((const char *)line.data, line.len, &lim, &f, &j)) {
			fi_log(FI_LOG_ERROR, "line %lu: %s", n, fi_errmsg());
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
				fi_log(FI_LOG_ERROR, "line %lu: %s", n, fi_errmsg());
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
		fi_log(FI_LOG_ERROR, "%s: %s", o->in, strerror(errno));
		rc = 1;
	}
	if (fi_stream_close(out)) {
		fi_log(FI_LOG_ERROR, "%s", fi_errmsg());
		rc = 1;
	}
	fi_buf_free(&line);
	if (in != stdin)
		fclose(in);
	return rc;
}

int main(int argc, char **argv)
{
	enum { O_ID = 256 };
	static const struct option lo[] = {
		{"encode", no_argument, NULL, 'e'},
		{"type", required_argument, NULL, 't'},
		{"id", required_argument, NULL, O_ID},
		{"force", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct opts o = {.in = "-", .out = "-"};
	int c;
	fi_log_set_prog("fi-frame");
	while ((c = getopt_long(argc, argv, "i:o:t:efh", lo, NULL)) != -1) {
		switch (c) {
		case 'i': o.in = optarg; break;
		case 'o': o.out = optarg; break;
		case 'e': o.encode = 1; break;
		case 'f': o.force = 1; break;
		case 't':
			if (parse_types(optarg, &o.types)) {
				fprintf(stderr, "fi-frame: invalid value '%s' for -t (request, token, done, "
					"error, cancel, eos)\n", optarg);
				return 2;
			}
			break;
		case O_ID:
			if (o.nids == MAX_IDS) {
				fprintf(stderr, "fi-frame: at most %d --id options\n", MAX_IDS);
				return 2;
			}
			o.ids[o.nids++] = optarg;
			break;
		case 'h': return usage(0);
		default: return usage(2);
		}
	}
	if (optind != argc || (o.force && !o.encode))
		return usage(2);
	return o.encode ? to_frames(&o) : to_json(&o);
}
