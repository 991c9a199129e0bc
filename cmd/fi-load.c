/* fi-load: convert a Hugging Face model into an fi model image in the store; list, inspect
 * and remove images. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "err.h"
#include "image.h"
#include "log.h"
#include "store.h"

static const char usage_text[] =
	"usage: fi-load [-f] [--dtype f32|f16|bf16] [--name NAME] DIR\n"
	"       fi-load -l\n"
	"       fi-load -i NAME|PATH\n"
	"       fi-load --rm NAME\n"
	"       fi-load -h\n";

static int usage(int rc)
{
	fputs(usage_text, rc ? stderr : stdout);
	return rc;
}

static int fail(void)
{
	fprintf(stderr, "fi-load: %s\n", fi_errmsg());
	return 1;
}

/* The directory's last component, without trailing slashes. */
static void base_name(const char *dir, char *out, size_t outsz)
{
	char tmp[PATH_MAX], *s;
	size_t n = (size_t)snprintf(tmp, sizeof tmp, "%s", dir);
	while (n > 1 && tmp[n - 1] == '/')
		tmp[--n] = 0;
	s = strrchr(tmp, '/');
	snprintf(out, outsz, "%s", s && s[1] ? s + 1 : tmp);
}

static int do_load(const char *dir, const char *name, enum fi_dtype dt, int force)
{
	char nm[FI_STORE_NAME_MAX], path[PATH_MAX], mdir[PATH_MAX], params[32], size[32];
	struct fi_image *im;
	struct stat st;
	double t0 = fi_now(), dt_s;
	if (stat(dir, &st)) {
		fprintf(stderr, "fi-load: cannot open '%s': %s\n", dir, strerror(errno));
		return 1;
	}
	if (!S_ISDIR(st.st_mode)) {
		fprintf(stderr, "fi-load: '%s' is not a directory (expected a Hugging Face model "
			"directory)\n", dir);
		return 1;
	}
	if (name)
		snprintf(nm, sizeof nm, "%s", name);
	else
		base_name(dir, nm, sizeof nm);
	if (!fi_store_name_valid(nm)) {
		fprintf(stderr, "fi-load: invalid model name '%s' (use letters, digits, '.', '_' "
			"and '-'; choose one with --name)\n", nm);
		return 2;
	}
	if (fi_store_models_dir(mdir, sizeof mdir, 1) || fi_store_path(nm, path, sizeof path))
		return fail();
	if (!force && !access(path, F_OK)) {
		fprintf(stderr, "fi-load: model '%s' already exists in %s (use -f to replace it)\n",
			nm, mdir);
		return 1;
	}
	fi_image_cleanup_on_signal();
	if (fi_image_convert_hf(dir, path, dt, FI_IMAGE_PROGRESS | (force ? FI_IMAGE_OVERWRITE : 0)))
		return fail();
	dt_s = fi_now() - t0;
	if (fi_image_open(path, &im))
		return fail();
	fi_format_count(fi_image_params(im), params, sizeof params);
	fi_format_bytes(im->size, size, sizeof size);
	printf("%s: %s, %s params, %d tensors, %s, %s, fingerprint %.16s, %.2fs -> %s\n", nm,
	       fi_family_name(im->config.family), params, im->set.n, fi_dtype_lname(im->dtype),
	       size, im->fingerprint_hex, dt_s, path);
	fi_image_close(im);
	return 0;
}

static int do_list(void)
{
	struct fi_store_entry *e;
	int n, bad = 0;
	if (fi_store_list(&e, &n))
		return fail();
	printf("%-24s %-8s %8s %-5s %9s\n", "NAME", "FAMILY", "PARAMS", "DTYPE", "SIZE");
	for (int i = 0; i < n; i++) {
		char params[32], size[32];
		if (!e[i].im) {
			printf("%-24s %-8s %8s %-5s %9s\n", e[i].name, "-", "-", "-", "-");
			fprintf(stderr, "fi-load: %s\n", e[i].err ? e[i].err : "invalid image");
			bad = 1;
			continue;
		}
		fi_format_count(fi_image_params(e[i].im), params, sizeof params);
		fi_format_bytes(e[i].im->size, size, sizeof size);
		printf("%-24s %-8s %8s %-5s %9s\n", e[i].name, fi_family_name(e[i].im->config.family),
		       params, fi_dtype_lname(e[i].im->dtype), size);
	}
	fi_store_list_free(e, n);
	return bad;
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
	char params[32], size[32];
	json_t *cfg, *v, *prov = NULL;
	const struct fi_image_blob *pb;
	const char *k;
	if (fi_store_open(arg, &im))
		return fail();
	fi_format_count(fi_image_params(im), params, sizeof params);
	fi_format_bytes(im->size, size, sizeof size);
	printf("%-32s %s\n", "path", im->path);
	printf("%-32s %zu (%s)\n", "size", im->size, size);
	printf("%-32s %d\n", "format", FI_IMAGE_VERSION);
	printf("%-32s %s\n", "dtype", fi_dtype_lname(im->dtype));
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

int main(int argc, char **argv)
{
	enum { OPT_DTYPE = 256, OPT_NAME, OPT_RM };
	static const struct option opts[] = {
		{"dtype", required_argument, NULL, OPT_DTYPE},
		{"name", required_argument, NULL, OPT_NAME},
		{"rm", required_argument, NULL, OPT_RM},
		{"list", no_argument, NULL, 'l'},
		{"info", required_argument, NULL, 'i'},
		{"force", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *name = NULL, *info = NULL, *rm = NULL;
	int force = 0, list = 0, c, dt = FI_DT_BF16;

	fi_log_set_prog("fi-load");
	while ((c = getopt_long(argc, argv, "fli:h", opts, NULL)) != -1) {
		switch (c) {
		case 'f': force = 1; break;
		case 'l': list = 1; break;
		case 'i': info = optarg; break;
		case 'h': return usage(0);
		case OPT_NAME: name = optarg; break;
		case OPT_RM: rm = optarg; break;
		case OPT_DTYPE:
			dt = fi_dtype_parse_lname(optarg);
			if (dt < 0 || !fi_dtype_is_compute((enum fi_dtype)dt)) {
				fprintf(stderr, "fi-load: invalid --dtype '%s' (f32, f16 or bf16)\n",
					optarg);
				return 2;
			}
			break;
		default: return usage(2);
		}
	}
	if (list + !!info + !!rm > 1 || ((list || info || rm) && optind != argc)) {
		fprintf(stderr, "fi-load: -l, -i, --rm and DIR exclude each other\n");
		return usage(2);
	}
	if (list)
		return do_list();
	if (info)
		return do_info(info);
	if (rm) {
		if (fi_store_remove(rm))
			return fail();
		return 0;
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "fi-load: expected one model directory\n");
		return usage(2);
	}
	return do_load(argv[optind], name, (enum fi_dtype)dt, force);
}
