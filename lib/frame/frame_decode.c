/* frame: bounded pre-scan of msgpack bytes and decoding of frames.
 *
 * msgpack-c trusts declared sizes (a map32 header makes it allocate count * 32 bytes before
 * looking for the entries), so nothing reaches msgpack_unpack until a scan has walked the
 * object's headers: every declared length must fit in the bytes present, every pending
 * element needs at least one more byte, and the object count and depth are capped. After
 * that msgpack-c's allocation is at most max_objects objects and str/bin point into the
 * caller's buffer. */
#include "frame.h"
#include "frame_int.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The header at p (avail bytes): its size, its payload bytes and how many child objects
 * follow it. 1: done; 0: header incomplete; -1: reserved byte 0xc1. */
static int mp_head(const uint8_t *p, size_t avail, size_t *hdr, uint64_t *payload,
		   uint64_t *children)
{
	uint8_t b = p[0];
	size_t lb = 0, extra = 0; /* bytes of the length field; fixed bytes after it */
	uint64_t n = 0;
	int kind = 0; /* 0: raw payload of n bytes, 1: array of n, 2: map of n */

	*children = 0;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
		*hdr = 1;
		*payload = 0;
		return 1;
	}
	if (b <= 0x8f) {
		*hdr = 1;
		*payload = 0;
		*children = 2u * (b & 15);
		return 1;
	}
	if (b <= 0x9f) {
		*hdr = 1;
		*payload = 0;
		*children = b & 15;
		return 1;
	}
	if (b <= 0xbf) {
		*hdr = 1;
		*payload = b & 31;
		return 1;
	}
	switch (b) {
	case 0xc1:
		return -1;
	case 0xc4: case 0xd9: lb = 1; break;              /* bin8, str8 */
	case 0xc5: case 0xda: lb = 2; break;              /* bin16, str16 */
	case 0xc6: case 0xdb: lb = 4; break;              /* bin32, str32 */
	case 0xc7: lb = 1; extra = 1; break;              /* ext8: len, type */
	case 0xc8: lb = 2; extra = 1; break;
	case 0xc9: lb = 4; extra = 1; break;
	case 0xca: extra = 4; break;                      /* float32 */
	case 0xcb: extra = 8; break;                      /* float64 */
	case 0xcc: case 0xd0: extra = 1; break;
	case 0xcd: case 0xd1: extra = 2; break;
	case 0xce: case 0xd2: extra = 4; break;
	case 0xcf: case 0xd3: extra = 8; break;
	case 0xd4: extra = 2; break;                      /* fixext: type + data */
	case 0xd5: extra = 3; break;
	case 0xd6: extra = 5; break;
	case 0xd7: extra = 9; break;
	case 0xd8: extra = 17; break;
	case 0xdc: lb = 2; kind = 1; break;
	case 0xdd: lb = 4; kind = 1; break;
	case 0xde: lb = 2; kind = 2; break;
	case 0xdf: lb = 4; kind = 2; break;
	}
	if (avail < 1 + lb)
		return 0;
	for (size_t i = 0; i < lb; i++)
		n = n << 8 | p[1 + i];
	*hdr = 1 + lb + (kind ? 0 : extra);
	*payload = kind ? 0 : n;
	*children = kind == 1 ? n : kind == 2 ? 2 * n : 0;
	return 1;
}

fi_err fi_frame_scan_need(const uint8_t *buf, size_t len, const struct fi_frame_limits *lim,
			  size_t *extent, size_t *need, uint32_t *depth)
{
	/* pending: elements still to come, which bounds the extent; left[]: elements still to
	 * come per open container, which gives the depth (not tracked past the limit). */
	uint64_t pending = 1, objects = 0, left[FI_FRAME_MAX_DEPTH + 2];
	uint32_t d = 0, maxd = lim->max_depth < FI_FRAME_MAX_DEPTH ? lim->max_depth : FI_FRAME_MAX_DEPTH;
	size_t pos = 0, max = lim->max_frame;

	*extent = 0;
	*need = 1;
	*depth = 0;
	left[0] = 1;
	while (pending) {
		size_t hdr;
		uint64_t payload, children, size;
		uint8_t b;
		int r;

		/* Every pending element takes at least one byte. */
		if (pending > max - pos)
			return fi_fail(FI_ERANGE, "frame declares %llu more elements than fit in %zu bytes",
				       (unsigned long long)pending, max);
		if (pos >= len) {
			*need = pos + pending;
			return FI_OK;
		}
		b = buf[pos];
		r = mp_head(buf + pos, len - pos, &hdr, &payload, &children);
		if (r < 0)
			return fi_fail(FI_EFORMAT, "frame: reserved byte 0xc1 at offset %zu", pos);
		if (r == 0) {
			*need = pos + 5;
			return FI_OK;
		}
		size = hdr + payload;
		if (size > max - pos)
			return fi_fail(FI_ERANGE, "frame: object at offset %zu declares %llu bytes, more than the frame limit of %zu",
				       pos, (unsigned long long)payload, max);
		if (++objects > lim->max_objects)
			return fi_fail(FI_ERANGE, "frame: more than %u msgpack objects", lim->max_objects);
		if (pos + size > len) {
			*need = pos + size + (pending - 1 + children);
			return FI_OK;
		}
		pos += size;
		pending += children;
		pending--;
		if (*depth > maxd)
			continue;
		left[d]--;
		if ((b >= 0x80 && b <= 0x9f) || (b >= 0xdc && b <= 0xdf)) {
			left[++d] = children;
			if (d > *depth)
				*depth = d;
			if (d > maxd)
				continue;
		}
		while (d > 0 && !left[d])
			d--;
	}
	*extent = pos;
	return FI_OK;
}

fi_err fi_frame_scan(const void *buf, size_t len, const struct fi_frame_limits *lim, size_t *extent)
{
	struct fi_frame_limits dl;
	size_t need;
	uint32_t depth;
	if (!lim) {
		fi_frame_limits_default(&dl);
		lim = &dl;
	}
	return fi_frame_scan_need(buf, len, lim, extent, &need, &depth);
}

fi_err fi_frame_decode_scanned(const uint8_t *buf, size_t len, uint32_t depth,
			       const struct fi_frame_limits *lim, msgpack_zone *zone, struct fi_frame *f)
{
	uint32_t maxd = lim->max_depth < FI_FRAME_MAX_DEPTH ? lim->max_depth : FI_FRAME_MAX_DEPTH;
	size_t off = 0;
	msgpack_object obj;

	memset(f, 0, sizeof *f);
	if (depth > maxd)
		return fi_fail(FI_EFORMAT, "frame: nested deeper than %u levels", maxd);
	if (msgpack_unpack((const char *)buf, len, &off, zone, &obj) != MSGPACK_UNPACK_SUCCESS ||
	    off != len)
		return fi_fail(FI_EFORMAT, "frame: not valid msgpack");
	return fi_frame_decode_obj(&obj, lim, f);
}

fi_err fi_frame_decode_zone(const uint8_t *buf, size_t len, const struct fi_frame_limits *lim,
			    msgpack_zone *zone, struct fi_frame *f)
{
	size_t ext, need;
	uint32_t depth;
	fi_err e;

	memset(f, 0, sizeof *f);
	if (!len)
		return fi_fail(FI_EFORMAT, "frame: empty");
	e = fi_frame_scan_need(buf, len, lim, &ext, &need, &depth);
	if (e)
		return e;
	if (!ext)
		return fi_fail(FI_EFORMAT, "frame: truncated (%zu bytes, at least %zu needed)", len, need);
	if (ext != len)
		return fi_fail(FI_EFORMAT, "frame: %zu trailing bytes after the frame", len - ext);
	return fi_frame_decode_scanned(buf, len, depth, lim, zone, f);
}

fi_err fi_frame_decode(const void *buf, size_t len, const struct fi_frame_limits *lim,
		       struct fi_frame *f)
{
	struct fi_frame_limits dl;
	msgpack_zone zone;
	fi_err e;

	if (!lim) {
		fi_frame_limits_default(&dl);
		lim = &dl;
	}
	if (!msgpack_zone_init(&zone, 4096)) {
		memset(f, 0, sizeof *f);
		return fi_fail(FI_ENOMEM, "frame: msgpack zone");
	}
	e = fi_frame_decode_zone(buf, len, lim, &zone, f);
	msgpack_zone_destroy(&zone);
	return e;
}
