/* Fuzzes the JSON -> frame path of fi-frame -e (lib/frame/frame_json.c): any bytes as one JSON
 * line. A line that makes a frame must print as JSON that makes the same frame again (same
 * encoding), and the dropped-key walk must terminate; nothing may crash or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "frame/frame_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fi_frame_limits lim;
	struct fi_frame f, g;
	struct fi_buf a = { 0 }, b = { 0 };
	json_t *in = NULL, *out = NULL;
	char *s = NULL, path[128];

	fi_frame_limits_default(&lim);
	lim.max_frame = 1u << 20;
	lim.max_objects = 1u << 16;
	if (fi_frame_from_json((const char *)data, size, &lim, &f, &in) == FI_OK) {
		if (fi_frame_to_json(&f, &out) || !(s = fi_json_dumps(out)))
			abort();
		fi_json_dropped(in, out, path, sizeof path);
		if (fi_frame_from_json(s, strlen(s), &lim, &g, NULL) != FI_OK)
			abort();
		if (fi_frame_encode(&f, &a) != fi_frame_encode(&g, &b) || a.len != b.len ||
		    (a.len && memcmp(a.data, b.data, a.len)))
			abort();
		fi_frame_free(&g);
	}
	fi_frame_free(&f);
	free(s);
	json_decref(in);
	json_decref(out);
	fi_buf_free(&a);
	fi_buf_free(&b);
	return 0;
}
