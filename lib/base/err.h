/* err: error codes and the detail message of the last failure (per thread).
 *
 * Library functions return an fi_err and, on failure, record a detail through fi_fail():
 *   return fi_fail(FI_EFORMAT, "safetensors '%s': header length %llu exceeds file", p, n);
 * Commands print "fi-cmd: <detail>" (fi_errmsg()) and map codes to exit statuses.
 * The library never exits and never writes to stdout. */
#ifndef FI_ERR_H
#define FI_ERR_H

#include <stdarg.h>

#include "fi/fi_err.h" /* fi_err, fi_strerror, fi_errmsg, fi_errcode (public) */

/* Records a printf-style detail for the calling thread and returns e. */
fi_err fi_fail(fi_err e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
fi_err fi_vfail(fi_err e, const char *fmt, va_list ap);
/* Prefixes the current detail with more context: "loading 'x': <old detail>". */
fi_err fi_fail_ctx(fi_err e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
