/* fi_err: error codes of libfi, and the detail of the last failure (libfi(3)).
 *
 * Every function that can fail returns an fi_err: FI_OK (0) or a code, with a message for
 * the calling thread that names what failed ("model 'x' not found in /dev/shm/fi/models").
 * The library never exits and never writes to standard output. */
#ifndef FI_FI_ERR_H
#define FI_FI_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

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
/* The detail of the last failure on this thread, or fi_strerror of its code if none. */
const char *fi_errmsg(void);
fi_err fi_errcode(void);
void fi_clear_error(void);

#ifdef __cplusplus
}
#endif

#endif
