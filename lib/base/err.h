/* err: error codes and the detail message of the last failure (per thread).
 *
 * Library functions return an fi_err and, on failure, record a detail through fi_fail():
 *   return fi_fail(FI_EFORMAT, "safetensors '%s': header length %llu exceeds file", p, n);
 * Commands print "fi-cmd: <detail>" (fi_errmsg()) and map codes to exit statuses.
 * The library never exits and never writes to stdout. */
#ifndef FI_ERR_H
#define FI_ERR_H

#include <stdarg.h>

typedef enum fi_err {
	FI_OK = 0,
	FI_ENOMEM,       /* allocation failed */
	FI_EIO,          /* read/write/open/mmap failed (errno detail in message) */
	FI_EINVAL,       /* bad argument or option value */
	FI_EFORMAT,      /* malformed input file or frame */
	FI_ERANGE,       /* a size, count or index out of bounds */
	FI_ENOTFOUND,    /* a named thing (model, tensor, key, file) does not exist */
	FI_EUNSUPPORTED, /* valid but not supported (architecture, dtype, feature) */
	FI_EMISMATCH,    /* two sources disagree (config vs tensors, fingerprint, version) */
	FI_EEXIST,       /* already exists */
	FI_EFULL,        /* no space (arena full, all blocks pinned, KV cache exhausted) */
	FI_EBUSY,        /* resource held by another process */
	FI_EDEVICE,      /* GPU, CUDA, cuBLAS or NCCL failure, or no GPU */
	FI_ESTATE,       /* call not valid in the object's current state */
	FI_EINTERRUPT,   /* interrupted by a signal */
	FI_ENCODE_COUNT
} fi_err;

/* Short generic text for a code ("malformed input"). */
const char *fi_strerror(fi_err e);
/* Records a printf-style detail for the calling thread and returns e. */
fi_err fi_fail(fi_err e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
fi_err fi_vfail(fi_err e, const char *fmt, va_list ap);
/* Prefixes the current detail with more context: "loading 'x': <old detail>". */
fi_err fi_fail_ctx(fi_err e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The detail of the last failure on this thread, or fi_strerror of the code if none. */
const char *fi_errmsg(void);
fi_err fi_errcode(void);
void fi_clear_error(void);

#endif
