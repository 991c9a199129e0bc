/* gguf_int: what gguf_convert.c and gguf_tok.c share. */
#ifndef FI_GGUF_INT_H
#define FI_GGUF_INT_H

#include "base/utf8.h"
#include "gguf.h"


#endif
