/* frame_json: frames as JSON objects and back (fi-frame(1), fi-frame(5) "JSON").
 *
 * The mapping follows the schema, key for key, in the order the encoder writes them:
 *   - str values are JSON strings; one that is not valid UTF-8 (a token piece holding part
 *     of a character) is the object {"hex": "<its bytes in hex>"}, so nothing is lost;
 *   - token ids ("tokens", a bin of little-endian uint32 on the wire) are arrays of numbers;
 *   - 32-byte keys ("kv" fingerprint and blocks, "tokenizer" sha256) are 64 hex digits;
 *   - floats are written with the fewest digits that read back to the same value;
 *   - a uint64 above 2^63 - 1 ("seed", "seq") is a string of decimal digits.
 * JSON to frame goes through msgpack and the frame decoder, so a JSON line is checked as
 * every reader checks a frame, with the same messages; the frame is then what a reader
 * understood of it, and keys outside the schema are dropped (fi_json_dropped finds them).
 *
 * Shapes: fi_frame_to_json(f) gives one JSON object per frame, e.g.
 *   {"v":1,"type":"token","id":"1","token":11,"index":0,"text":","} */
#ifndef FI_FRAME_JSON_H
#define FI_FRAME_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"
#include "frame.h"

/* The JSON object of f (a new reference in *out). */
fi_err fi_frame_to_json(const struct fi_frame *f, json_t **out);

/* One JSON object (text[0..len), no need for a NUL) to a frame, checked against lim (NULL:
 * the defaults). On failure *f is FI_FRAME_NONE with the id set when it was readable, and
 * the detail names the key, as fi_frame_decode does. *json, when not NULL, gets the parsed
 * object (or NULL) for fi_json_dropped. */
fi_err fi_frame_from_json(const char *text, size_t len, const struct fi_frame_limits *lim,
			  struct fi_frame *f, json_t **json);

/* The first key of in (a path like "kv.arena" or "temprature", at most n bytes) that out
 * lacks: a key the schema does not know, dropped on the way to a frame. 0 when none. */
int fi_json_dropped(json_t *in, json_t *out, char *path, size_t n);

/* A JSON string of s[0..n) when it is valid UTF-8, else {"hex": "..."} (lossless). */
json_t *fi_json_bytes(const char *s, size_t n);
/* A JSON string of s[0..n) with invalid UTF-8 replaced by U+FFFD (for people). NULL when
 * out of memory. */
json_t *fi_json_text(const char *s, size_t n);
/* A float32 value with the fewest digits that read back to it (0.7f is 0.7, not
 * 0.699999988). */
json_t *fi_json_f32(float v);
/* One line of JSON text for j (malloc'd, no newline; NULL when out of memory): compact,
 * keys in their order, and every real with the fewest digits that read back to the same
 * double (json_dumps has one precision for all, too few or too many). */
char *fi_json_dumps(const json_t *j);

#endif
