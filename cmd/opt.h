/* opt: the commands' options, usage, messages and exit statuses, defined once.
 *
 * Every command describes itself with a struct cmd: its name, the shared option groups it
 * takes (the model, frame streams, the backend, sampling, the KV arena, -f, -v), a table of its
 * own options, and its usage as a template. cmd_parse() parses argv with getopt_long from
 * those tables, checks every value against its kind and range, and handles -h/--help and
 * --version itself. The usage text (-h, and after a usage error) is generated from the
 * template and the tables, and tests/cli/test_synopsis.sh holds it against each man page's
 * SYNOPSIS as mandoc renders it.
 *
 * A usage template is one string per usage line, words separated by spaces:
 *   -m, --temp            an option: written with its value's name ("-m MODEL")
 *   [-n]  [--whole | --jsonl]   optional, alternatives: brackets and bars are kept
 *   @sampling             the sampling group: [--temp T] [--top-k K] ... [--seed S]
 *   DIR, [TEST ...]       anything else is written as it is (operands)
 * Every option of the command must appear in some line: cmd_parse refuses a table it cannot
 * describe (an internal error, exit 1), so the usage never omits an option.
 *
 * Messages: "fi-decode: cannot open 'x': reason" on standard error, one line, no "error:"
 * prefix: die() and cmd_error() write them, fi_log (library warnings) uses the same prefix.
 *
 * Exit statuses, the same for every command (and in every man page's EXIT STATUS). */
#ifndef FI_CMD_OPT_H
#define FI_CMD_OPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/sample.h"

enum {
	EXIT_OK = 0,      /* everything succeeded */
	EXIT_RUNTIME = 1, /* a runtime failure: a file, the model, the device, the stream */
	EXIT_USAGE = 2,   /* a usage error: an unknown option, a bad value, a missing operand */
	EXIT_FAILED = 3,  /* the run completed, but some requests failed (got error frames) */
};

/* What an option's value is, and how it is checked. */
enum opt_kind {
	OPT_FLAG,   /* no value: *(int *)dst = 1 */
	OPT_STR,    /* *(const char **)dst = the value */
	OPT_INT,    /* *(int *)dst: a whole number in [lo, hi] */
	OPT_FLOAT,  /* *(float *)dst: a finite number in [lo, hi] */
	OPT_DOUBLE, /* *(double *)dst: a finite number in [lo, hi] */
	OPT_SIZE,   /* *(uint64_t *)dst: a byte size, "64M", "2GiB" (at least 1 MiB) */
	OPT_KVSIZE, /* struct opt_kv_size *dst: a byte size as OPT_SIZE, or tokens ("65536t") */
	OPT_SEED,   /* *(uint64_t *)dst: a whole number in [0, 2^64) */
	OPT_CHOICE, /* *(const char **)dst: one of the '|'-separated words of arg */
	OPT_LIST,   /* appended to a struct opt_list (at most hi values, none empty) */
	OPT_CALL,   /* passed to the command's own check: cmd.take(user, key, value) */
};

struct opt {
	int key;          /* the short option's letter, or OPT_LONG + n for a long-only one */
	const char *name; /* the long name without "--", or NULL */
	const char *arg;  /* the value's name in the usage ("N", "auto|cuda|cpu"); NULL: none */
	enum opt_kind kind;
	double lo, hi;    /* OPT_INT, OPT_FLOAT, OPT_DOUBLE: accepted range; OPT_LIST: most values */
	void *dst;        /* where the value goes (see the kinds); NULL for OPT_CALL */
};

/* Another long name of an option, which the usage does not show (--num-prompts, vLLM's
 * name for --requests). */
struct opt_alias {
	const char *name;
	int key;
};
#define OPT_LONG 256

/* A KV pool size (--kv-size): bytes, or tokens with a "t" suffix; the other is 0. */
struct opt_kv_size {
	uint64_t bytes, tokens;
};

/* Values of a repeatable option (--stop STR ..., at most the option's hi of them). */
#define OPT_LIST_MAX 64
struct opt_list {
	char *v[OPT_LIST_MAX];
	int n;
};

/* The shared option groups; a command names those it takes. */
enum {
	CMD_MODEL = 1 << 0,    /* -m MODEL (required) */
	CMD_STREAMS = 1 << 1,  /* -i IN, -o OUT: "-", a file or ZeroMQ endpoints */
	CMD_EOS = 1 << 2,      /* -e N: ZeroMQ inputs end after N eos frames */
	CMD_BACKEND = 1 << 3,  /* --backend auto|cuda|cpu, -t THREADS, --tp N */
	CMD_SAMPLING = 1 << 4, /* --temp, --top-k, --top-p, --min-p, --repeat-penalty, --seed */
	CMD_ARENA = 1 << 5,    /* --arena-size SIZE */
	CMD_FORCE = 1 << 6,    /* -f, --force: write frames to a terminal */
	CMD_VERBOSE = 1 << 7,  /* -v */
};

/* The values of the shared options, with their defaults (cmd_parse sets them first). */
struct cmd_args {
	const char *model;          /* -m */
	const char *in, *out;       /* -i, -o: "-" */
	int eos_count;              /* -e: 1 */
	const char *backend;        /* --backend: "auto" */
	int threads;                /* -t: 0, the backend's choice */
	int tp;                     /* --tp: 0, the model whole (no tensor parallelism) */
	struct fi_sample_params sp; /* sampling: fi_sample_defaults */
	unsigned given;             /* FI_REQ_* bits (frame.h) of the sampling options given */
	uint64_t arena_size;        /* --arena-size: 0, the arena's default */
	int force;                  /* -f */
	int verbose;                /* -v */
};

struct cmd {
	const char *name;            /* "fi-decode" */
	unsigned groups;             /* CMD_* */
	const struct opt *opts;      /* the command's own options, ending with {0} */
	const char *const *usage;    /* usage lines (the template above), ending with NULL */
	const struct opt_alias *aliases; /* ending with {0}, or NULL */
	const char *notes;           /* printed after the usage by -h, or NULL */
	/* OPT_CALL options: 0 accepted; -1 an invalid value (the standard message, exit 2);
	 * EXIT_USAGE after printing its own message. */
	int (*take)(void *user, int key, const char *value);
	void *user;
};

/* Parses argv: sets a's defaults, then every option. -h/--help prints the usage on
 * standard output and exits 0; --version prints the version and exits 0; a usage error
 * exits 2 with a message (and the usage for an unknown option or a missing value); a
 * missing -m too. Returns the index of the first operand. Also names the program for
 * messages (fi_log_set_prog). */
int cmd_parse(const struct cmd *c, struct cmd_args *a, int argc, char **argv);

/* 1 when the option of that key was given (after cmd_parse). */
int cmd_given(int key);

/* The usage text, as -h prints it (no notes). */
void cmd_usage(const struct cmd *c, FILE *f);

/* A usage error: "prog: <message>" and the usage on standard error, exit 2. */
_Noreturn void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "prog: <message>\n" on standard error (fmt NULL: the library's last error, fi_errmsg()),
 * then exit(status). */
_Noreturn void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same message without exiting; returns EXIT_RUNTIME, so "return cmd_error(NULL);". */
int cmd_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The command's name, as given to cmd_parse ("fi" before). */
const char *cmd_name(void);

#endif
