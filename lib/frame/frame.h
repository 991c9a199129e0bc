/* frame: the msgpack frame schema v1 that every fi command reads and writes (fi-frame(5)).
 *
 * A frame is one msgpack map with "v": 1 and "type". In memory it is a struct fi_frame: the
 * type, the request id (common to every type but eos) and one body per type. Strings and
 * arrays in a decoded frame are owned by it (fi_frame_free releases them); a frame that is
 * only encoded may point at the caller's memory (encoding only reads).
 *
 * Decoding never trusts a declared size: a bounded pre-scan checks every length and count
 * against the bytes present and against struct fi_frame_limits before msgpack-c builds any
 * object, so a 5-byte map32 claiming 4G entries costs nothing.
 *
 * Typical producer:
 *   struct fi_frame f;
 *   fi_frame_init(&f, FI_FRAME_TOKEN);
 *   f.id = (char *)req_id; f.tok.token = t; f.tok.index = i;
 *   fi_stream_write(out, &f);          (or fi_frame_encode(&f, &buf))
 * Typical consumer: see stream.h. */
#ifndef FI_FRAME_H
#define FI_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "kv/kvref.h" /* struct fi_kv_ref, the request's "kv" */

#define FI_FRAME_VERSION 1

enum fi_frame_type {
	FI_FRAME_NONE = 0, /* no frame (nothing arrived before a timeout; a failed decode) */
	FI_FRAME_REQUEST,
	FI_FRAME_TOKEN,
	FI_FRAME_DONE,
	FI_FRAME_ERROR,
	FI_FRAME_CANCEL, /* stop the request with this id */
	FI_FRAME_EOS,    /* end of stream: EOF on a pipe, or an "eos" frame */
	/* A worker registered with fi-route (fi-frame(5), WORKERS AND ROUTERS); the id is the
	 * worker's name. */
	FI_FRAME_HELLO,  /* the worker joins: what it serves */
	FI_FRAME_LOAD,   /* its load, every 100 ms (a heartbeat) */
	FI_FRAME_BYE,    /* it leaves */
	FI_FRAME_TYPE_COUNT
};

/* Why generation ended (done frame "finish"). */
enum fi_finish {
	FI_FINISH_STOP = 0, /* end-of-generation token, stop string or stop id */
	FI_FINISH_LENGTH,   /* max_tokens or context length reached */
	FI_FINISH_ERROR,    /* failed after it started; an error frame precedes the done */
	FI_FINISH_CANCEL,   /* a cancel frame or shutdown */
	FI_FINISH_COUNT
};

/* Bits of struct fi_request.set: which optional keys were present. A consumer fills the
 * unset ones from its own defaults (fi-decode's options) before using the request. */
enum {
	FI_REQ_TEMPERATURE = 1u << 0,
	FI_REQ_TOP_K = 1u << 1,
	FI_REQ_TOP_P = 1u << 2,
	FI_REQ_MIN_P = 1u << 3,
	FI_REQ_REPEAT_PENALTY = 1u << 4,
	FI_REQ_SEED = 1u << 5,
	FI_REQ_MAX_TOKENS = 1u << 6,
	FI_REQ_STREAM = 1u << 7,
	FI_REQ_KV = 1u << 8,
	FI_REQ_TOKENIZER = 1u << 9,
	FI_REQ_IGNORE_EOS = 1u << 10,
	FI_REQ_LOGPROBS = 1u << 11,
	FI_REQ_TOP_LOGPROBS = 1u << 12,
};
/* The sampling keys among them (what fi-frame(5) calls the request's sampling). */
#define FI_REQ_SAMPLING (FI_REQ_TEMPERATURE | FI_REQ_TOP_K | FI_REQ_TOP_P | FI_REQ_MIN_P | \
			 FI_REQ_REPEAT_PENALTY | FI_REQ_SEED)

#define FI_FRAME_MAX_TOP 20 /* top_logprobs: alternatives per token at most */

struct fi_request {
	char *text;        /* prompt as UTF-8 (NUL-terminated, text_len bytes), or NULL */
	size_t text_len;
	uint32_t *tokens;  /* prompt as token ids, or NULL; the prompt when both are given */
	uint32_t ntokens;
	/* Sampling; defaults (fi_frame_init) are the documented ones, set says which came in. */
	float temperature;    /* default 1.0; 0 = greedy */
	int32_t top_k;        /* default 0 = off */
	float top_p;          /* default 1.0 = off */
	float min_p;          /* default 0.0 = off */
	float repeat_penalty; /* default 1.0 = off */
	uint64_t seed;        /* default 0; meaningful only with FI_REQ_SEED */
	uint32_t max_tokens;  /* default 0 = the consumer's default */
	int stream;           /* default 1: token frames then done; 0: done carries the output */
	char **stop;          /* nstop NUL-terminated stop strings */
	uint32_t nstop;
	uint32_t *stop_ids;   /* nstop_ids token ids that end generation */
	uint32_t nstop_ids;
	struct fi_kv_ref kv;  /* valid when set & FI_REQ_KV */
	/* The tokenizer that made the tokens (valid when set & FI_REQ_TOKENIZER): the SHA-256
	 * of its vocabulary (tok_fingerprint.h) and a name for messages (or NULL). */
	uint8_t tok_sha256[32];
	char *tok_name;
	int ignore_eos;       /* default 0; 1: the model's end-of-generation ids do not end it */
	int logprobs;         /* default false: token frames carry "logprob" */
	uint32_t top_logprobs; /* default 0: alternatives in token frames, at most FI_FRAME_MAX_TOP */
	uint32_t set;         /* FI_REQ_* */
};

/* One alternative of a token frame's top_logprobs. */
struct fi_token_top {
	uint32_t token;
	float logprob;
};

struct fi_token {
	uint32_t token;  /* token id */
	uint32_t index;  /* 0-based position among the generated tokens of this request */
	char *text;      /* decoded piece (UTF-8, may be a partial character), or NULL */
	size_t text_len;
	float logprob;   /* valid when has_logprob */
	int has_logprob;
	struct fi_token_top *top; /* the most likely tokens [ntop], most likely first, or NULL */
	uint32_t ntop;
};

struct fi_done {
	enum fi_finish finish;
	uint32_t prompt_tokens, gen_tokens, cached_tokens; /* "counts" */
	double queue_ms, ttft_ms, tpot_ms, total_ms;      /* "timings"; negative = not measured */
	/* Non-streaming requests (stream false) get the whole output here; else NULL. */
	uint32_t *tokens;
	uint32_t ntokens;
	char *text;
	size_t text_len;
};

struct fi_error_frame {
	fi_err code;   /* "code" (name) and "code_num" (number) on the wire */
	char *message; /* NUL-terminated */
};

/* hello: what a worker serves. */
struct fi_hello {
	char *role;             /* "decode" or "prefill" */
	char *model;            /* the model's name as given to the worker */
	uint8_t fingerprint[32]; /* the model image's fingerprint */
	uint8_t kv_root[32];    /* the root of its KV block keys (fi-kv-events(5)); has_kv_root */
	int has_kv_root;
	uint32_t block_tokens, max_batch;
	uint64_t kv_blocks;     /* its KV pool, in blocks */
	char *kv_events;        /* its --kv-events endpoint, or NULL */
	char *kv_replay;        /* its --kv-events-replay endpoint ("kv_events_replay"), or NULL */
};

/* load: a worker's state now; prefix counters are cumulative, in blocks. */
struct fi_load {
	uint64_t queued, queued_tokens, running, running_tokens, kv_used, kv_total,
		prefix_hits, prefix_lookups;
};

struct fi_frame {
	enum fi_frame_type type;
	/* Request id, NUL-terminated, at most limits.max_id bytes. Every type but eos has one;
	 * an error frame's id is "" when the bad frame's id could not be read. After a failed
	 * decode (type FI_FRAME_NONE) it holds the bad frame's id if that was readable. */
	char *id;
	/* "seq": the producer's number of the request (fi-tokenize numbers the requests it
	 * makes from 1), echoed on its done and error frames, so results can be put back in
	 * input order. Any frame may carry it; has_seq says it is there. */
	uint64_t seq;
	int has_seq;
	/* "prompt" of done and error frames: the request's text, echoed by the stage that
	 * answers it, so results can be read without the requests (NULL: none). */
	char *prompt;
	size_t prompt_len;
	union {
		struct fi_request req;
		struct fi_token tok;
		struct fi_done done;
		struct fi_error_frame err;
		struct fi_hello hello;
		struct fi_load load;
	};
};

/* Bounds applied before anything is allocated. */
struct fi_frame_limits {
	size_t max_frame;     /* bytes of one encoded frame (default 64 MiB) */
	uint32_t max_id;      /* bytes of an id (default 256) */
	uint32_t max_text;    /* bytes of a text (prompt, piece, message) (default 16 MiB) */
	uint32_t max_tokens;  /* token ids in "tokens" (default 1M) */
	uint32_t max_stop;    /* entries of "stop" and of "stop_ids" (default 64) */
	uint32_t max_stop_len;/* bytes of one stop string (default 1024) */
	uint32_t max_blocks;  /* KV block keys (default 65536) */
	uint32_t max_depth;   /* nesting of maps and arrays, the frame itself is depth 1 (default 8) */
	uint32_t max_objects; /* msgpack objects in one frame (default 1M) */
};

void fi_frame_limits_default(struct fi_frame_limits *lim);

/* Zeroes f and sets the documented defaults for type. */
void fi_frame_init(struct fi_frame *f, enum fi_frame_type type);
/* Frees what a decoded (or fi_frame_set_*-filled) frame owns and zeroes it; safe twice. */
void fi_frame_free(struct fi_frame *f);
/* Moves the frame out: *dst = *src and src is zeroed (no copy of the buffers). */
void fi_frame_move(struct fi_frame *dst, struct fi_frame *src);

/* Wire names: "request", "stop", "format" ... NULL/-1 for unknown. */
const char *fi_frame_type_name(enum fi_frame_type t);
const char *fi_finish_name(enum fi_finish f);
const char *fi_err_code_name(fi_err e);
int fi_err_code_parse(const char *name, size_t len); /* fi_err, or -1 */

/* A growable byte buffer. */
struct fi_buf {
	uint8_t *data;
	size_t len, cap;
};
fi_err fi_buf_append(struct fi_buf *b, const void *p, size_t n);
void fi_buf_free(struct fi_buf *b);

/* The id an error frame can carry for id: at most FI_FRAME_ERROR_ID_MAX bytes, cut at a
 * character boundary (an over-long id is echoed by its head); "" when id is NULL or not
 * valid UTF-8 (such an id cannot be sent back as a msgpack str). Returns buf. */
#define FI_FRAME_ERROR_ID_MAX 256
const char *fi_frame_error_id(const char *id, char buf[FI_FRAME_ERROR_ID_MAX + 1]);

/* Appends the encoding of f to out (one msgpack map). FI_EINVAL for a frame that would not
 * decode (no id, an id that is not UTF-8, no prompt, sizes beyond the default limits). An
 * error frame's message that is not valid UTF-8 (a detail quoting bad input) is sent with
 * each invalid byte replaced by U+FFFD. */
fi_err fi_frame_encode(const struct fi_frame *f, struct fi_buf *out);
/* Shorthand for the common error reply: appends an error frame. */
fi_err fi_frame_encode_error(struct fi_buf *out, const char *id, fi_err code, const char *msg);

/* The extent of the msgpack object at the start of buf, checked against lim (declared
 * counts against bytes present, max_frame, max_objects; no allocation):
 *   FI_OK, *extent > 0 : one complete object of *extent bytes (its content is not checked);
 *   FI_OK, *extent == 0: incomplete so far; read more and call again;
 *   FI_EFORMAT / FI_ERANGE: the structure cannot be delimited (reserved byte 0xc1, or it
 *     declares more than max_frame / max_objects); the stream cannot be resynchronised. */
fi_err fi_frame_scan(const void *buf, size_t len, const struct fi_frame_limits *lim, size_t *extent);

/* Decodes exactly one frame that fills buf[0..len). lim NULL = defaults. On success f holds
 * the frame (fi_frame_free it). On failure returns FI_EFORMAT (not msgpack, not a map, a key
 * of the wrong type, trailing bytes, too deep), FI_ERANGE (a size or value beyond limits) or
 * FI_EUNSUPPORTED (unknown type, v > 1 with a "must" key not understood), records a detail,
 * and leaves f->type = FI_FRAME_NONE with f->id set when the id was readable: the caller
 * answers with an error frame for that id and fi_frame_free()s f. */
fi_err fi_frame_decode(const void *buf, size_t len, const struct fi_frame_limits *lim,
		       struct fi_frame *f);

/* Reads frames one at a time from a file descriptor (a pipe, a file, a socket) with a buffer
 * that grows only to the largest frame seen (bounded by max_frame).
 * fi_reader_next:
 *   FI_OK: *f is the next frame; at end of input (EOF or an "eos" frame) f->type is
 *     FI_FRAME_EOS, and it stays so on later calls;
 *   FI_EFORMAT/FI_ERANGE/FI_EUNSUPPORTED with f->type FI_FRAME_NONE: that one frame was bad
 *     (its bytes are skipped; answer with an error frame and call again), or, when
 *     fi_reader_broken() is now true, the byte stream itself is corrupt: nothing more is read
 *     and the next call gives FI_FRAME_EOS (exit with status 1). A stream whose first byte
 *     does not begin a map is not frames at all and is refused whole that way, with the
 *     message "input is not fi frames: pipe text through fi-tokenize";
 *   FI_EIO: read failed; FI_EINTERRUPT: fi_stream_interrupted() became true while waiting.
 * A truncated last frame (EOF inside it) is FI_EFORMAT and breaks the reader. */
struct fi_reader;
fi_err fi_reader_open_fd(struct fi_reader **r, int fd, const struct fi_frame_limits *lim);
/* Over a memory buffer (borrowed, must outlive the reader): tests and fuzzing. */
fi_err fi_reader_open_mem(struct fi_reader **r, const void *buf, size_t len,
			  const struct fi_frame_limits *lim);
fi_err fi_reader_next(struct fi_reader *r, struct fi_frame *f);
int fi_reader_broken(const struct fi_reader *r);
void fi_reader_close(struct fi_reader *r); /* does not close the fd */

#endif
