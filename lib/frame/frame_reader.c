/* frame: a reader that cuts a byte stream (pipe, file, socket) into frames.
 *
 * msgpack is self-delimiting, so the scan of frame_decode.c finds each frame's extent from
 * its headers. A frame whose extent is known but whose content is wrong is skipped and
 * reported; a stream whose structure cannot be delimited (reserved byte, a frame larger than
 * max_frame, EOF inside a frame) is reported once and then ends. The buffer holds at most one
 * frame plus one read's worth of the next (max_frame + 64 KiB). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame_int.h"
#include "base/log.h"
#include "stream.h"

#define CHUNK (64u << 10)

struct fi_reader {
	int fd; /* -1: memory */
	uint8_t *buf;
	size_t cap, start, end;
	size_t need; /* bytes from start needed before a rescan can progress */
	struct fi_frame_limits lim;
	msgpack_zone zone;
	int own_buf, eof, broken, done;
	int started; /* the first byte was seen (and was a map header) */
};

/* A stream whose first object is not a map is not frames: text piped in by mistake (ASCII
 * bytes are valid msgpack integers, so it would otherwise read as one bad frame per byte). */
static int map_head(uint8_t b)
{
	return (b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf;
}

static fi_err reader_new(struct fi_reader **rp, const struct fi_frame_limits *lim)
{
	struct fi_reader *r = calloc(1, sizeof *r);
	if (!r)
		return fi_fail(FI_ENOMEM, "frame reader");
	if (lim)
		r->lim = *lim;
	else
		fi_frame_limits_default(&r->lim);
	if (!msgpack_zone_init(&r->zone, 4096)) {
		free(r);
		return fi_fail(FI_ENOMEM, "frame reader: msgpack zone");
	}
	r->fd = -1;
	*rp = r;
	return FI_OK;
}

fi_err fi_reader_open_fd(struct fi_reader **rp, int fd, const struct fi_frame_limits *lim)
{
	fi_err e = reader_new(rp, lim);
	if (!e) {
		(*rp)->fd = fd;
		(*rp)->own_buf = 1;
	}
	return e;
}

fi_err fi_reader_open_mem(struct fi_reader **rp, const void *buf, size_t len,
			  const struct fi_frame_limits *lim)
{
	fi_err e = reader_new(rp, lim);
	if (!e) {
		(*rp)->buf = (uint8_t *)buf; /* only read */
		(*rp)->cap = (*rp)->end = len;
		(*rp)->eof = 1;
	}
	return e;
}

void fi_reader_close(struct fi_reader *r)
{
	if (!r)
		return;
	if (r->own_buf)
		free(r->buf);
	msgpack_zone_destroy(&r->zone);
	free(r);
}

int fi_reader_broken(const struct fi_reader *r)
{
	return r->broken;
}

/* Reads more bytes. FI_OK with nothing new and !eof means the timeout passed. */
static fi_err reader_fill(struct fi_reader *r, int timeout_ms, int *got)
{
	size_t avail = r->end - r->start;
	size_t want = (r->need > avail ? r->need : avail) + CHUNK;
	double t0 = fi_now();

	*got = 0;
	/* Here avail < need <= max_frame, so want > avail: there is room to read into. */
	if (want > r->lim.max_frame + CHUNK)
		want = r->lim.max_frame + CHUNK;
	if (r->start && (r->cap - r->start < want || r->start > r->cap / 2)) {
		memmove(r->buf, r->buf + r->start, avail);
		r->start = 0;
		r->end = avail;
	}
	if (r->cap - r->start < want) {
		size_t cap = r->cap ? r->cap : CHUNK;
		uint8_t *b;
		while (cap < want)
			cap *= 2;
		if (cap > r->lim.max_frame + CHUNK)
			cap = r->lim.max_frame + CHUNK;
		if (!(b = realloc(r->buf, cap)))
			return fi_fail(FI_ENOMEM, "frame reader: buffer of %zu bytes", cap);
		r->buf = b;
		r->cap = cap;
	}
	for (;;) {
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		int slice = 250, pr;
		ssize_t n;
		if (fi_stream_interrupted())
			return fi_fail(FI_EINTERRUPT, "interrupted");
		if (timeout_ms >= 0) {
			int left = timeout_ms - (int)((fi_now() - t0) * 1000);
			if (left <= 0 && timeout_ms > 0)
				return FI_OK;
			if (left < slice)
				slice = left < 0 ? 0 : left;
		}
		pr = poll(&p, 1, slice);
		if (pr < 0 && errno != EINTR)
			return fi_fail(FI_EIO, "frame reader: poll: %s", strerror(errno));
		if (pr <= 0) {
			if (timeout_ms == 0)
				return FI_OK;
			continue;
		}
		n = read(r->fd, r->buf + r->end, r->cap - r->end);
		if (n > 0) {
			r->end += (size_t)n;
			*got = 1;
			return FI_OK;
		}
		if (n == 0) {
			r->eof = 1;
			return FI_OK;
		}
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return fi_fail(FI_EIO, "frame reader: read: %s", strerror(errno));
	}
}

fi_err fi_reader_next_timeout(struct fi_reader *r, struct fi_frame *f, int timeout_ms)
{
	memset(f, 0, sizeof *f);
	for (;;) {
		size_t avail = r->end - r->start, ext, need;
		uint32_t depth;
		fi_err e;
		int got;

		if (r->done) {
			f->type = FI_FRAME_EOS;
			return FI_OK;
		}
		if (avail && !r->started) {
			if (!map_head(r->buf[r->start])) {
				r->broken = r->done = 1;
				return fi_fail(FI_EFORMAT, "input is not fi frames: pipe text through fi-tokenize");
			}
			r->started = 1;
		}
		if (avail && avail >= r->need) {
			e = fi_frame_scan_need(r->buf + r->start, avail, &r->lim, &ext, &need, &depth);
			if (e) {
				r->broken = r->done = 1;
				return fi_fail_ctx(e, "input cannot be resynchronised");
			}
			if (ext) {
				msgpack_zone_clear(&r->zone);
				e = fi_frame_decode_scanned(r->buf + r->start, ext, depth, &r->lim, &r->zone, f);
				r->start += ext;
				r->need = 0;
				if (!e && f->type == FI_FRAME_EOS)
					r->done = 1;
				return e;
			}
			r->need = need;
		}
		if (r->eof) {
			r->done = 1;
			if (!avail) {
				f->type = FI_FRAME_EOS;
				return FI_OK;
			}
			r->broken = 1;
			return fi_fail(FI_EFORMAT, "frame: input ends inside a frame (%zu bytes left)", avail);
		}
		if ((e = reader_fill(r, timeout_ms, &got)))
			return e;
		if (!got && !r->eof)
			return FI_OK; /* timed out: FI_FRAME_NONE */
	}
}

fi_err fi_reader_next(struct fi_reader *r, struct fi_frame *f)
{
	return fi_reader_next_timeout(r, f, -1);
}
