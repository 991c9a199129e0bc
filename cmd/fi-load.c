/* fi-load: convert a Hugging Face model into an fi model image in the store; list, inspect
 * and remove images; list and remove KV arenas. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "kv/arena.h"
#include "base/err.h"
#include "model/gguf.h"
#include "model/image.h"
#include "kv/kvxfer.h"
#include "base/log.h"
#include "model/store.h"

#include "opt.h"

/* The directory's last component, without trailing slashes (a file's without ".gguf"). */
static void base_name(const char *dir, char *out, size_t outsz)
{
	char tmp[PATH_MAX], *s;
	size_t n = (size_t)snprintf(tmp, sizeof tmp, "%s", dir);
	while (n > 1 && tmp[n - 1] == '/')
		tmp[--n] = 0;
	if (n > 5 && !strcmp(tmp + n - 5, ".gguf"))
		tmp[n -= 5] = 0;
	s = strrchr(tmp, '/');
	snprintf(out, outsz, "%s", s && s[1] ? s + 1 : tmp);
}

/* The weight dtypes of an image: its dtype, then its quantized dtypes ("bf16+q4_k+q6_k"). */
static void dtypes(const struct fi_image *im, char *out, size_t outsz)
{
	size_t n = (size_t)snprintf(out, outsz, "%s", fi_dtype_lname(im->dtype));
	for (int d = FI_DT_Q8_0; d < FI_DT_Q_END && n < outsz; d++)
		for (int i = 0; i < im->set.n; i++)
			if (im->set.t[i].dtype == (enum fi_dtype)d) {
				n += (size_t)snprintf(out + n, outsz - n, "+%s",
						      fi_dtype_lname((enum fi_dtype)d));
				break;
			}
}

static int do_load(const char *dir, const char *name, enum fi_dtype dt, int force, unsigned qflags)
{
	char nm[FI_STORE_NAME_MAX], path[PATH_MAX], mdir[PATH_MAX], params[32], size[32], dts[64];
	struct fi_image *im;
	struct stat st;
	double t0 = fi_now(), dt_s;
	if (stat(dir, &st))
		return cmd_error("cannot open '%s': %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode) && !(S_ISREG(st.st_mode) && fi_gguf_is(dir)))
		return cmd_error("'%s' is neither a directory nor a GGUF file (expected a Hugging "
				 "Face model directory or a .gguf file)", dir);
	if (name)
		snprintf(nm, sizeof nm, "%s", name);
	else
		base_name(dir, nm, sizeof nm);
	if (!fi_store_name_valid(nm)) {
		cmd_error("invalid model name '%s' (use letters, digits, '.', '_' and '-'; choose "
			  "one with --name)", nm);
		return EXIT_USAGE;
	}
	if (fi_store_models_dir(mdir, sizeof mdir, 1) || fi_store_path(nm, path, sizeof path))
		return cmd_error(NULL);
	if (!force && !access(path, F_OK))
		return cmd_error("model '%s' already exists in %s (use -f to replace it)", nm, mdir);
	fi_image_cleanup_on_signal();
	if (fi_image_convert(dir, path, dt,
			     FI_IMAGE_PROGRESS | qflags | (force ? FI_IMAGE_OVERWRITE : 0)))
		return cmd_error(NULL);
	dt_s = fi_now() - t0;
	if (fi_image_open(path, &im))
		return cmd_error(NULL);
	if (!fi_image_blob(im, "tokenizer.json"))
		fi_warn("'%s' has no tokenizer.json: '%s' takes token ids only (fi-tokenize and "
			"text prompts need a tokenizer)", dir, nm);
	fi_format_count(fi_image_params(im), params, sizeof params);
	fi_format_bytes(im->size, size, sizeof size);
	dtypes(im, dts, sizeof dts);
	printf("%s: %s, %s params, %d tensors, %s, %s, fingerprint %.16s, %.2fs -> %s\n", nm,
	       fi_family_name(im->config.family), params, im->set.n, dts, size,
	       im->fingerprint_hex, dt_s, path);
	fi_image_close(im);
	return 0;
}

static int do_list(void)
{
	struct fi_store_entry *e;
	int n, bad = 0;
	if (fi_store_list(&e, &n))
		return cmd_error(NULL);
	printf("%-24s %-11s %8s %-5s %9s\n", "NAME", "FAMILY", "PARAMS", "DTYPE", "SIZE");
	for (int i = 0; i < n; i++) {
		char params[32], size[32], dts[64];
		if (!e[i].im) {
			printf("%-24s %-11s %8s %-5s %9s\n", e[i].name, "-", "-", "-", "-");
			cmd_error("%s", e[i].err ? e[i].err : "invalid image");
			bad = 1;
			continue;
		}
		fi_format_count(fi_image_params(e[i].im), params, sizeof params);
		fi_format_bytes(e[i].im->size, size, sizeof size);
		dtypes(e[i].im, dts, sizeof dts);
		printf("%-24s %-11s %8s %-5s %9s\n", e[i].name, fi_family_name(e[i].im->config.family),
		       params, dts, size);
	}
	fi_store_list_free(e, n);
	return bad;
}

/* KV ids of the store's models, for naming arenas: one per KV dtype a backend computes in
 * (f32 on the CPU, bf16 on CUDA) at the block size fi-prefill and fi-decode use. */
#define ARENA_BLOCK_TOKENS 16
struct known {
	char name[FI_STORE_NAME_MAX];
	char id[65];
	const char *kv; /* "f32/16" */
};

static int known_ids(struct known **out, int *n)
{
	static const enum fi_dtype dts[] = {FI_DT_F32, FI_DT_BF16};
	static const char *const kvn[] = {"f32/16", "bf16/16"};
	struct fi_store_entry *e;
	int ne;
	*n = 0;
	*out = NULL;
	if (fi_store_list(&e, &ne))
		return -1;
	if (ne && !(*out = calloc((size_t)ne * 2, sizeof **out))) {
		fi_store_list_free(e, ne);
		return -1;
	}
	for (int i = 0; i < ne; i++) {
		struct fi_kv_cache kv = {0};
		if (!e[i].im)
			continue;
		kv.n_layers = e[i].im->config.n_layers;
		kv.n_kv_heads = e[i].im->config.n_kv_heads;
		kv.head_dim = e[i].im->config.head_dim;
		kv.block_size = ARENA_BLOCK_TOKENS;
		for (int d = 0; d < 2; d++) {
			struct known *k = &(*out)[*n];
			if (fi_kvx_id(e[i].im->fingerprint, &kv, dts[d], k->id))
				continue;
			snprintf(k->name, sizeof k->name, "%s", e[i].name);
			k->kv = kvn[d];
			(*n)++;
		}
	}
	fi_store_list_free(e, ne);
	return 0;
}

static const struct known *find_known(const struct known *k, int n, const char *id)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(k[i].id, id))
			return &k[i];
	return NULL;
}

struct arena_ls {
	const struct known *k;
	int nk, bad;
};

static int list_one(const char *path, const struct fi_arena_stats *st, fi_err err, void *ctx)
{
	struct arena_ls *ls = ctx;
	const struct known *k;
	char size[32], max[32], blocks[48], kv[32];
	if (!st) {
		cmd_error(NULL);
		ls->bad = 1;
		return 0;
	}
	k = find_known(ls->k, ls->nk, st->fingerprint);
	fi_format_bytes(st->alloc_bytes, size, sizeof size);
	fi_format_bytes(st->file_bytes, max, sizeof max);
	snprintf(blocks, sizeof blocks, "%u/%u", st->ready + st->writing, st->n_blocks);
	if (k)
		snprintf(kv, sizeof kv, "%s", k->kv);
	else
		snprintf(kv, sizeof kv, "%lluB/%u", (unsigned long long)st->token_bytes,
			 st->block_tokens);
	printf("%-16.16s %-20s %-10s %13s %10llu %10llu %9s %9s\n", st->fingerprint,
	       k ? k->name : "-", kv, blocks, (unsigned long long)st->hits,
	       (unsigned long long)st->misses, size, max);
	return 0;
}

static int do_arena_list(void)
{
	struct arena_ls ls = {0};
	struct known *k;
	fi_err e;
	if (known_ids(&k, &ls.nk))
		return cmd_error(NULL);
	ls.k = k;
	printf("%-16s %-20s %-10s %13s %10s %10s %9s %9s\n", "ARENA", "MODEL", "KV", "BLOCKS",
	       "HITS", "MISSES", "SIZE", "MAX");
	e = fi_arena_list(NULL, list_one, &ls);
	free(k);
	if (e && e != FI_ENOTFOUND)
		return cmd_error(NULL);
	return ls.bad;
}

struct arena_match {
	const char *arg;
	char id[65];
	int n;
};

static int match_one(const char *path, const struct fi_arena_stats *st, fi_err err, void *ctx)
{
	struct arena_match *m = ctx;
	const char *b = strrchr(path, '/');
	char id[65];
	snprintf(id, sizeof id, "%s", b ? b + 1 : path);
	id[strcspn(id, ".")] = 0;
	if (!strncmp(id, m->arg, strlen(m->arg))) {
		snprintf(m->id, sizeof m->id, "%s", id);
		m->n++;
	}
	return 0;
}

/* --arena-rm: an arena id (or a prefix of 8+ hex digits naming one), or a store model's name
 * (all of its arenas; none is not an error). */
static int do_arena_rm(const char *arg)
{
	struct known *k;
	int nk, removed = 0, named = 0;
	if (strlen(arg) >= 8 && strspn(arg, "0123456789abcdef") == strlen(arg)) {
		struct arena_match m = {.arg = arg};
		if (fi_arena_list(NULL, match_one, &m) && fi_errcode() != FI_ENOTFOUND)
			return cmd_error(NULL);
		if (m.n > 1)
			return cmd_error("'%s' names %d arenas (give more digits)", arg, m.n);
		if (m.n == 1)
			return fi_arena_remove(NULL, m.id) ? cmd_error(NULL) : 0;
	}
	if (known_ids(&k, &nk))
		return cmd_error(NULL);
	for (int i = 0; i < nk; i++) {
		fi_err e;
		if (strcmp(k[i].name, arg))
			continue;
		named = 1;
		if (!(e = fi_arena_remove(NULL, k[i].id)))
			removed++;
		else if (e != FI_ENOTFOUND) {
			free(k);
			return cmd_error(NULL);
		}
	}
	free(k);
	if (!named)
		return cmd_error("no arena or model '%s' (fi-load --arena lists arenas)", arg);
	return 0;
}

static void print_json_value(const char *key, json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	printf("config.%-25s %s\n", key, s ? s : "?");
	free(s);
}

static int do_info(const char *arg)
{
	struct fi_image *im;
	char params[32], size[32], dts[64];
	json_t *cfg, *v, *prov = NULL;
	const struct fi_image_blob *pb;
	const char *k;
	if (fi_store_open(arg, &im))
		return cmd_error(NULL);
	fi_format_count(fi_image_params(im), params, sizeof params);
	fi_format_bytes(im->size, size, sizeof size);
	printf("%-32s %s\n", "path", im->path);
	printf("%-32s %zu (%s)\n", "size", im->size, size);
	printf("%-32s %d\n", "format", FI_IMAGE_VERSION);
	dtypes(im, dts, sizeof dts);
	printf("%-32s %s\n", "dtype", dts);
	printf("%-32s %s\n", "fingerprint", im->fingerprint_hex);
	printf("%-32s %s\n", "family", fi_family_name(im->config.family));
	printf("%-32s %s (%lld)\n", "params", params, fi_image_params(im));
	printf("%-32s %d\n", "tensors", im->set.n);
	if ((cfg = json_loads(im->config_json, 0, NULL))) {
		json_object_foreach(cfg, k, v)
			print_json_value(k, v);
		json_decref(cfg);
	}
	for (int i = 0; i < im->n_blobs; i++)
		printf("%-32s %s %zu\n", "blob", im->blobs[i].name, im->blobs[i].size);
	if ((pb = fi_image_blob(im, "provenance.json")) &&
	    (prov = json_loads(pb->data, 0, NULL))) {
		json_object_foreach(prov, k, v)
			if (json_is_string(v))
				printf("%-32s %s\n", k, json_string_value(v));
		json_decref(prov);
	}
	fi_image_close(im);
	return 0;
}

enum { O_DTYPE = OPT_LONG, O_NAME, O_RM, O_ARENA, O_ARENA_RM, O_QUANT };

int main(int argc, char **argv)
{
	const char *name = NULL, *info = NULL, *rm = NULL, *arena_rm = NULL, *dtype = "bf16";
	const char *quantize = NULL;
	int force = 0, list = 0, arena = 0, n;
	const struct opt own[] = {
		{'f', "force", NULL, OPT_FLAG, 0, 0, &force},
		{O_DTYPE, "dtype", "f32|f16|bf16", OPT_CHOICE, 0, 0, &dtype},
		{O_QUANT, "quantize", "fp8", OPT_CHOICE, 0, 0, &quantize},
		{O_NAME, "name", "NAME", OPT_STR, 0, 0, &name},
		{'l', "list", NULL, OPT_FLAG, 0, 0, &list},
		{'i', "info", "NAME|PATH", OPT_STR, 0, 0, &info},
		{O_RM, "rm", "NAME", OPT_STR, 0, 0, &rm},
		{O_ARENA, "arena", NULL, OPT_FLAG, 0, 0, &arena},
		{O_ARENA_RM, "arena-rm", "ID|NAME", OPT_STR, 0, 0, &arena_rm},
		{0},
	};
	static const char *const usage[] = {
		"[-f] [--dtype] [--quantize] [--name] SRC", "-l", "-i", "--rm", "--arena", "--arena-rm", NULL,
	};
	const struct cmd cmd = {.name = "fi-load", .opts = own, .usage = usage};
	struct cmd_args a;
	int ops = cmd_parse(&cmd, &a, argc, argv);
	n = argc - ops;
	if (list + !!info + !!rm + arena + !!arena_rm > 1 ||
	    ((list || info || rm || arena || arena_rm) && n))
		usage_error("-l, -i, --rm, --arena, --arena-rm and DIR exclude each other");
	if (arena)
		return do_arena_list();
	if (arena_rm)
		return do_arena_rm(arena_rm);
	if (list)
		return do_list();
	if (info)
		return do_info(info);
	if (rm)
		return fi_store_remove(rm) ? cmd_error(NULL) : EXIT_OK;
	if (n != 1)
		usage_error(n ? "expected one model directory or GGUF file, not %d" :
			    "expected a model directory or a GGUF file", n);
	return do_load(argv[ops], name, (enum fi_dtype)fi_dtype_parse_lname(dtype), force,
		       quantize ? FI_IMAGE_QUANT_FP8 : 0);
}
