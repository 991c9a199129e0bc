/* frame: internals shared by frame_decode.c, frame_schema.c and frame_reader.c. */
#ifndef FI_FRAME_INT_H
#define FI_FRAME_INT_H

#include <msgpack.h>
#include <stdint.h>

#include "frame.h"

/* msgpack-c's parser stack holds 32 levels; deeper limits are clamped to it. */
#define FI_FRAME_MAX_DEPTH 32

/* fi_frame_scan that also says how many bytes are needed at least before a rescan can make
 * progress (*need, when the object is incomplete), so a reader does not rescan per chunk,
 * and how deep the object nests (*depth; past the limit it only says "deeper"). */
fi_err fi_frame_scan_need(const uint8_t *buf, size_t len, const struct fi_frame_limits *lim,
			  size_t *extent, size_t *need, uint32_t *depth);
/* Decodes one frame that a scan delimited (len = its extent, depth from the scan). */
fi_err fi_frame_decode_scanned(const uint8_t *buf, size_t len, uint32_t depth,
			       const struct fi_frame_limits *lim, msgpack_zone *zone, struct fi_frame *f);
/* fi_frame_decode with a caller's zone (cleared by the caller between frames). */
fi_err fi_frame_decode_zone(const uint8_t *buf, size_t len, const struct fi_frame_limits *lim,
			    msgpack_zone *zone, struct fi_frame *f);
/* Schema check and copy out of a scanned, unpacked msgpack object. */
fi_err fi_frame_decode_obj(const msgpack_object *o, const struct fi_frame_limits *lim,
			   struct fi_frame *f);
/* fi_reader_next waiting at most timeout_ms (-1 forever): FI_OK with FI_FRAME_NONE when
 * nothing complete arrived in time. */
fi_err fi_reader_next_timeout(struct fi_reader *r, struct fi_frame *f, int timeout_ms);
/* on: reads go on after a signal (fi_stream_drain) instead of returning FI_EINTERRUPT. */
void fi_reader_set_drain(struct fi_reader *r, int on);

#endif
