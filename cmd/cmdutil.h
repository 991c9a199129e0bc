/* cmdutil: what several commands do the same way: parse numeric and size options, and open
 * `-m MODEL` for a backend. Returns codes; never prints. */
#ifndef FI_CMDUTIL_H
#define FI_CMDUTIL_H

#include <stdint.h>

#include "backend/backend.h"
#include "base/err.h"
#include "model/model.h"
#include "model/store.h"

/* A finite number in [lo, hi]; 0 on success, nonzero when s is not one. */
int fi_parse_num(const char *s, double lo, double hi, double *out);
/* A whole number in [lo, hi] (decimal); 0 on success, nonzero otherwise. */
int fi_parse_int(const char *s, long long lo, long long hi, long long *out);
/* A decimal unsigned 64-bit number (a seed); 0 on success, nonzero otherwise. */
int fi_parse_u64(const char *s, uint64_t *out);
/* A byte size: "1048576", "64M", "2GiB", "1.5G" (K, M, G, T are powers of 1024), at least
 * 1 MiB; 0 on success, -1 otherwise. */
int fi_parse_size(const char *s, uint64_t *out);
/* --kv-size: tokens with a t (or T) suffix ("65536t"), else bytes as fi_parse_size reads
 * them; the other is 0. 0 on success, -1 otherwise. */
int fi_parse_kv_size(const char *s, uint64_t *bytes, uint64_t *tokens);
/* fi_backend_create in a thread of its own (CUDA's driver and context start take ~0.2 s), so
 * the caller can open the image meanwhile; fi_backend_join waits for it, gives the backend (or
 * records the thread's error), the seconds its creation took (secs may be NULL), and frees s.
 * Without a thread, fi_backend_start creates the backend before returning. */
struct fi_backend_start;
fi_err fi_backend_start(const char *name, int threads, struct fi_backend_start **s);
fi_err fi_backend_join(struct fi_backend_start *s, struct fi_backend **be, double *secs);
/* fi_backend_create(backend, threads), then opens -m (a store name, an image file or a Hugging
 * Face directory) and loads its weights on it. A directory is converted on the fly in the
 * backend's precision: f32 for the CPU (exact), bf16 for CUDA; an image is used in the dtype
 * it was written in. The backend starts (CUDA's driver and context: ~0.2 s) in a thread while
 * an image is opened: the commands' path to the first token. On failure *be_failed says which part failed (1: the backend, whose
 * name may be a usage error), the detail is recorded, and nothing is left open. */
fi_err fi_open_backend_model(const char *backend, int threads, const char *arg,
			     struct fi_backend **be, struct fi_image **im, struct fi_model **m,
			     int *be_failed);

#endif
