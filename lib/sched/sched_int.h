/* sched internals shared by sched.c (admission, steps) and sched_text.c (text pieces, stop
 * strings). */
#ifndef FI_SCHED_INT_H
#define FI_SCHED_INT_H

#include "scheduler.h"

#define SCHED_MAX_PENDING 256 /* first tokens waiting for their request */

/* The output text of a request: what the decode stream released, cut before a stop string. */
struct sched_text {
	struct fi_tok_stream *st;
	char *buf;
	size_t len, cap;
	size_t sent;     /* bytes given in token events */
	char **stop;     /* stop strings [nstop] */
	size_t *stop_len;
	uint32_t nstop;
	int ended;       /* cut at a stop string or flushed: nothing more comes */
};

struct sreq {
	char *id;
	void *user;
	int stream, seq, admitted, decoding, dead;
	unsigned flags;
	uint32_t n_prompt, max_new, n_gen;
	uint32_t pos;   /* prompt tokens in the cache (fetched or computed) */
	int32_t *hist;  /* prompt then generated tokens [n_prompt + max_new + 1] */
	int32_t next;   /* the token to feed next step */
	int32_t *stop;  /* stop ids [n_stop] */
	int n_stop;
	int blocks;     /* KV blocks reserved for it at admission */
	int arena;      /* fetch the prompt's cached prefix from the arena */
	int store;      /* publish the prompt's blocks after its prefill */
	int max_blocks; /* at most this many blocks fetched */
	int cached;     /* prompt tokens fetched from the arena */
	size_t stored;  /* blocks published */
	int has_first;
	int32_t first;
	struct fi_sampler smp;
	double t_arrive, t_admit, t_first, t_last;
	struct sched_text txt;
};

struct pending {
	char *id;
	int32_t token;
};

struct fi_sched {
	struct fi_sched_opts o;
	struct fi_model *m;
	const struct fi_config *c;
	struct fi_kvx *x;
	int x_tried;
	struct sreq **r; /* admitted first, then waiting, each in arrival order */
	int n;
	struct pending pend[SCHED_MAX_PENDING]; /* oldest first */
	int npend;
	int blocks_free, block_size, ctx;
	float *logits;  /* [max_batch, vocab] */
	int32_t *greedy; /* [max_batch] device argmax of each row, when every row is greedy */
	/* [max_batch] rows drawn on the device (no row with a repetition penalty): parameters
	 * and u of each, survivor counts */
	struct fi_sample_row *srow;
	int32_t *skept;
	int32_t *btok, *bseq; /* batch scratch [cap_tok] */
	int8_t *bwant;
	int cap_tok;
	char msg[1024]; /* warn and error event text */
};

/* sched_text.c */
fi_err stext_init(struct fi_sched *s, struct sreq *q, char *const *stop, uint32_t nstop);
void stext_free(struct sched_text *t);
/* Feeds generated token tok. last: the request ends after it whatever comes (its text is
 * flushed). Sets piece, n to the text released now and *stopped when the text now contains
 * a stop string (cut before it). */
fi_err stext_push(struct fi_sched *s, struct sreq *q, uint32_t tok, int last,
		  const char **piece, size_t *n, int *stopped);
/* The request ends without a last token (stop id, cancel): releases what the decoder holds. */
fi_err stext_end(struct fi_sched *s, struct sreq *q);

#endif
