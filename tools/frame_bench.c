/* Frame throughput through a pipe, as two pipeline stages would see it:
 *   frame_bench w N   writes N token frames to standard output
 *   frame_bench r     reads frames from standard input, prints the count and frames/s
 *   time sh -c 'frame_bench w 2000000 | frame_bench r'
 * Build: cc -std=gnu11 -O2 -Ilib -Iinclude tools/frame_bench.c build-frame/libfi.a \
 *          $(pkg-config --libs msgpack libzmq) -lm -pthread -o build-frame/frame_bench */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "frame/stream.h"

int main(int argc, char **argv)
{
	struct fi_stream *s;
	struct fi_frame f;
	double t0 = fi_now();
	long n = 0;

	if (argc == 3 && !strcmp(argv[1], "w")) {
		long want = atol(argv[2]);
		if (fi_stream_open(&s, "-", FI_STREAM_OUT, NULL))
			return 1;
		fi_frame_init(&f, FI_FRAME_TOKEN);
		f.id = "req-000001";
		f.tok.text = " the";
		f.tok.text_len = 4;
		for (n = 0; n < want; n++) {
			f.tok.token = (uint32_t)(n * 7919 % 128256);
			f.tok.index = (uint32_t)n;
			if (fi_stream_write(s, &f))
				return 1;
		}
		return fi_stream_close(s) ? 1 : 0;
	}
	if (argc == 2 && !strcmp(argv[1], "r")) {
		if (fi_stream_open(&s, "-", FI_STREAM_IN, NULL))
			return 1;
		for (;;) {
			fi_err e = fi_stream_read(s, &f);
			if (e) {
				fprintf(stderr, "frame_bench: %s\n", fi_errmsg());
				return 1;
			}
			if (f.type == FI_FRAME_EOS)
				break;
			n++;
			fi_frame_free(&f);
		}
		fi_stream_close(s);
		printf("%ld frames in %.3f s: %.0f frames/s\n", n, fi_now() - t0, n / (fi_now() - t0));
		return 0;
	}
	fprintf(stderr, "usage: frame_bench w N | frame_bench r\n");
	return 2;
}
