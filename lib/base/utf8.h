/* utf8: checking UTF-8, and making text valid for people and for JSON.
 *
 * Text pieces in frames may hold part of a character, and prompts read from files may hold
 * invalid bytes; JSON strings must be valid UTF-8. fi_utf8_lossy replaces each maximal
 * invalid subpart by U+FFFD, as Python's bytes.decode('utf-8', errors='replace') and Rust's
 * String::from_utf8_lossy do (the "maximal subpart" practice of Unicode, chapter 3). */
#ifndef FI_UTF8_H
#define FI_UTF8_H

#include <stddef.h>

#include "err.h"

/* Length of the valid UTF-8 prefix of s[0..n): n when s is valid (utf8proc's check). */
size_t fi_utf8_valid(const char *s, size_t n);

/* s[0..n) with invalid subparts replaced by U+FFFD, NUL-terminated, malloc'd (*out; its
 * length in *outlen). */
fi_err fi_utf8_lossy(const char *s, size_t n, char **out, size_t *outlen);

#endif
