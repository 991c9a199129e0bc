/* generate: libfi from a program (libfi(3)). Opens a model, generates greedily for a
 * prompt with the scheduler, prints the text as it comes, and writes the events as frames
 * to a file that it then reads back, as fi-tokenize -d would.
 *
 *   cc generate.c $(pkg-config --cflags --libs fi) -o generate
 *   ./generate llama3 'Once upon a time' 32 out.msgpack
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fi/fi.h>

static int fail(const char *what)
{
	fprintf(stderr, "generate: %s: %s\n", what, fi_errmsg());
	return 1;
}

int main(int argc, char **argv)
{
	struct fi_llm_opts o;
	struct fi_llm *m;
	struct fi_scheduler *s;
	struct fi_gen_request r;
	struct fi_gen_event ev;
	struct fi_stream *out, *in;
	struct fi_frame *f;
	int tokens = 0, read_back = 0;
	if (argc != 5) {
		fprintf(stderr, "usage: generate MODEL PROMPT N FRAMES\n");
		return 2;
	}
	fi_llm_opts_default(&o);
	if (getenv("GENERATE_BACKEND"))
		o.backend = getenv("GENERATE_BACKEND");
	if (fi_llm_open(argv[1], &o, &m))
		return fail(argv[1]);
	if (fi_scheduler_new(m, NULL, &s) || fi_stream_writer(argv[4], &out))
		return fail("scheduler");
	fi_gen_request_init(&r);
	r.id = "1";
	r.prompt = argv[2];
	r.temperature = 0;
	r.max_tokens = (uint32_t)atoi(argv[3]);
	if (fi_scheduler_add(s, &r))
		return fail("request");
	while (fi_scheduler_pending(s)) {
		if (fi_scheduler_step(s))
			return fail("step");
		while (fi_scheduler_event(s, &ev)) {
			fwrite(ev.text, 1, ev.text_len, stdout);
			tokens += !strcmp(ev.kind, "token");
			if (!strcmp(ev.kind, "warning"))
				continue;
			if (fi_gen_event_frame(&ev, &f) || fi_stream_write(out, f))
				return fail("frame");
			fi_frame_destroy(f);
		}
	}
	putchar('\n');
	if (fi_stream_close(out) || fi_stream_reader(argv[4], &in))
		return fail(argv[4]);
	while (!fi_stream_next(in, &f) && f) {
		read_back += !strcmp(fi_frame_kind(f), "token");
		fi_frame_destroy(f);
	}
	fi_stream_close(in);
	fprintf(stderr, "generate: %d tokens on %s (fi %s); %d token frames read back\n", tokens,
		fi_llm_device(m), fi_version(), read_back);
	fi_scheduler_free(s);
	fi_llm_close(m);
	return read_back == tokens ? 0 : 1;
}
