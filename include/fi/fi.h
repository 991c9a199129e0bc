/* fi: the library of the fi inference toolchain (libfi(3)).
 *
 *   #include <fi/fi.h>
 *   cc prog.c $(pkg-config --cflags --libs fi)
 *
 * Open a model from the store or an image (fi_model.h), turn text into token ids and back
 * and render chats (fi_text.h), read and write frames and streams (fi_frame.h), generate
 * with a continuously batching scheduler (fi_sched.h). Every call that can fail returns
 * an fi_err with a message for the thread (fi_err.h). */
#ifndef FI_FI_H
#define FI_FI_H

#define FI_VERSION_MAJOR 0
#define FI_VERSION_MINOR 1
#define FI_VERSION_PATCH 0

#include "fi_err.h"
#include "fi_frame.h"
#include "fi_model.h"
#include "fi_sched.h"
#include "fi_text.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, "0.1.0" (it may be newer than the headers'). */
const char *fi_version(void);

#ifdef __cplusplus
}
#endif

#endif
