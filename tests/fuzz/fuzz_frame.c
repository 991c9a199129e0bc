/* Fuzzes the frame decoder: the input as one frame, and as a byte stream through a reader.
 * Every frame that decodes must encode again and decode to the same type (round trip), and
 * nothing may crash, leak or allocate beyond the limits (ASan/libFuzzer -rss_limit_mb). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"

static void check_roundtrip(const struct fi_frame *f, const struct fi_frame_limits *lim)
{
	struct fi_buf b = { 0 };
	struct fi_frame g;
	/* A decoded frame may exceed the default encode limits only if lim is larger; ours is not. */
	if (fi_frame_encode(f, &b) == FI_OK) {
		if (fi_frame_decode(b.data, b.len, lim, &g) != FI_OK || g.type != f->type)
			abort();
		if (f->id && (!g.id || strcmp(f->id, g.id)))
			abort();
		if (f->type == FI_FRAME_REQUEST && (g.req.ntokens != f->req.ntokens ||
						    g.req.nstop != f->req.nstop || g.req.set != f->req.set))
			abort();
		fi_frame_free(&g);
	}
	fi_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fi_frame_limits lim;
	struct fi_reader *r;
	struct fi_frame f;

	fi_frame_limits_default(&lim);
	lim.max_frame = 1u << 20;
	lim.max_objects = 1u << 16;
	if (fi_frame_decode(data, size, &lim, &f) == FI_OK)
		check_roundtrip(&f, &lim);
	fi_frame_free(&f);

	if (fi_reader_open_mem(&r, data, size, &lim) != FI_OK)
		return 0;
	for (int i = 0; i < 10000; i++) {
		fi_err e = fi_reader_next(r, &f);
		if (!e && f.type == FI_FRAME_EOS)
			break;
		if (!e)
			check_roundtrip(&f, &lim);
		fi_frame_free(&f);
	}
	fi_reader_close(r);
	return 0;
}
