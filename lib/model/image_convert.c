/* image_convert: a Hugging Face directory -> an fi model image. */
#include "image.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "base/log.h"
#include "gguf.h"
#include "names.h"
#include "quant_hf.h"
#include "safetensors.h"
#include "text/tokenizer.h"

#ifndef FI_VERSION
#define FI_VERSION "unknown"
#endif

#define MAX_BLOB_FILE (256u << 20)

/* HF files copied into the image when present, under the same names. */
static const char *const blob_files[] = {
	"tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
	"generation_config.json", "config.json",
};
#define N_BLOB_FILES (sizeof blob_files / sizeof blob_files[0])

static fi_err slurp(const char *dir, const char *name, char **out, size_t *len)
{
	char p[PATH_MAX];
	struct stat st;
	FILE *f;
	char *b;
	*out = NULL;
	snprintf(p, sizeof p, "%s/%s", dir, name);
	if (stat(p, &st))
		return errno == ENOENT ? FI_OK : fi_fail(FI_EIO, "cannot stat '%s': %s", p,
							  strerror(errno));
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_BLOB_FILE)
		return fi_fail(FI_EFORMAT, "'%s': not a regular file of at most %u bytes", p,
			       MAX_BLOB_FILE);
	if (!(f = fopen(p, "rb")))
		return fi_fail(FI_EIO, "cannot open '%s': %s", p, strerror(errno));
	b = malloc((size_t)st.st_size + 1);
	if (!b || fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		fclose(f);
		free(b);
		return fi_fail(b ? FI_EIO : FI_ENOMEM, "cannot read '%s'", p);
	}
	fclose(f);
	b[st.st_size] = 0;
	*out = b;
	*len = (size_t)st.st_size;
	return FI_OK;
}

static char *provenance(const char *dir, const struct fi_st_model *m, const char *quant)
{
	char abs[PATH_MAX], when[64];
	time_t now = time(NULL);
	struct tm tm;
	const char *sdt = m->set.n ? fi_dtype_name(m->set.t[0].dtype) : "none";
	json_t *o;
	char *s;
	for (int i = 1; i < m->set.n; i++)
		if (m->set.t[i].dtype != m->set.t[0].dtype)
			sdt = "mixed";
	if (!realpath(dir, abs))
		snprintf(abs, sizeof abs, "%s", dir);
	gmtime_r(&now, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	o = json_pack("{s:s, s:s, s:s, s:s}", "source", abs, "created", when, "fi_version",
		      FI_VERSION, "source_dtype", sdt);
	if (!o)
		return NULL;
	if (quant[0] && json_object_set_new(o, "quantization", json_string(quant))) {
		json_decref(o);
		return NULL;
	}
	s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

/* Maps HF names and orders the tensors as the engine expects them (the order of
 * fi_expected_tensor); anything unexpected goes last and fi_config_check names it. */
static fi_err map_tensors(const char *dir, const struct fi_config *c, const struct fi_qhf *m,
			  struct fi_image_src *src, char (*names)[FI_IMAGE_NAME_MAX], int *n_out)
{
	int n = 0, k = 0;
	int *taken = calloc(m->set.n ? (size_t)m->set.n : 1, sizeof *taken);
	struct fi_image_src *tmp = calloc(m->set.n ? (size_t)m->set.n : 1, sizeof *tmp);
	struct fi_expected ex;
	if (!taken || !tmp) {
		free(taken);
		free(tmp);
		return fi_fail(FI_ENOMEM, "'%s'", dir);
	}
	for (int i = 0; i < m->set.n; i++) {
		const struct fi_tensor *t = &m->set.t[i];
		int r = fi_name_from_hf_cfg(c, t->name, names[n], FI_IMAGE_NAME_MAX);
		if (r < 0) {
			free(taken);
			free(tmp);
			return fi_fail(FI_EUNSUPPORTED, "'%s': unknown tensor '%s'", dir, t->name);
		}
		/* Tied checkpoints sometimes store a copy of the embedding as lm_head. */
		if (r == 0 || (c->tie_embeddings && !strcmp(names[n], "output")))
			continue;
		if (!fi_dtype_is_compute(t->dtype) && !fi_dtype_is_quant(t->dtype)) {
			free(taken);
			free(tmp);
			return fi_fail(FI_EUNSUPPORTED, "'%s': tensor '%s': dtype %s is not supported "
				       "(fi converts F32, F16 and BF16)", dir, t->name,
				       fi_dtype_name(t->dtype));
		}
		tmp[n].name = names[n];
		tmp[n].ndim = t->ndim;
		memcpy(tmp[n].shape, t->shape, sizeof tmp[n].shape);
		tmp[n].src_dtype = t->dtype;
		tmp[n].src = t->data;
		tmp[n].src_nbytes = fi_dtype_is_quant(t->dtype) ? t->nbytes : 0;
		n++;
	}
	{ /* by name through a hash: a mixture of experts has tens of thousands of tensors */
		json_t *ix = json_object();
		if (!ix) {
			free(taken);
			free(tmp);
			return fi_fail(FI_ENOMEM, "'%s'", dir);
		}
		for (int j = n - 1; j >= 0; j--) /* the first of equal names wins, as before */
			json_object_set_new(ix, tmp[j].name, json_integer(j));
		for (int i = 0; fi_expected_tensor(c, i, &ex); i++) {
			json_t *v = json_object_get(ix, ex.name);
			int j = v ? (int)json_integer_value(v) : -1;
			if (j >= 0 && !taken[j]) {
				taken[j] = 1;
				src[k++] = tmp[j];
			}
		}
		json_decref(ix);
	}
	for (int j = 0; j < n; j++)
		if (!taken[j])
			src[k++] = tmp[j];
	free(taken);
	free(tmp);
	*n_out = n;
	return FI_OK;
}

/* The config cross-check, first, so that its error names the source directory. */
static fi_err check(const char *dir, const struct fi_config *c, const struct fi_image_src *src,
		    int n)
{
	struct fi_tensor *v = calloc(n ? (size_t)n : 1, sizeof *v);
	struct fi_tensor_set s = {n, v};
	fi_err e;
	if (!v)
		return fi_fail(FI_ENOMEM, "'%s'", dir);
	for (int i = 0; i < n; i++) {
		v[i].name = src[i].name;
		v[i].dtype = src[i].src_dtype;
		v[i].ndim = src[i].ndim;
		memcpy(v[i].shape, src[i].shape, sizeof v[i].shape);
		v[i].data = src[i].src;
	}
	if ((e = fi_config_check(c, &s)))
		fi_fail_ctx(e, "'%s'", dir);
	free(v);
	return e;
}

/* Adds the pre-built binary form of tokenizer.json as "tokenizer.bin": parsing a large
 * tokenizer.json takes hundreds of milliseconds, loading the binary form a few. A
 * tokenizer fi cannot load is reported here, at conversion, rather than at first use. */
static fi_err tokenizer_bin(const char *dir, struct fi_image_blob *blobs, int *nb, char **bufs)
{
	struct fi_tok *t = NULL;
	void *bin = NULL;
	size_t len = 0;
	fi_err e;
	int i;
	for (i = 0; i < *nb; i++)
		if (!strcmp(blobs[i].name, "tokenizer.json"))
			break;
	if (i == *nb)
		return FI_OK;
	if (fi_tok_load_json(blobs[i].data, blobs[i].size, &t)) {
		/* Token-id pipelines still work; text ones fail later, naming this. */
		fi_warn("'%s/tokenizer.json': %s (the image keeps it, but fi cannot tokenize text "
			"with it)", dir, fi_errmsg());
		fi_clear_error();
		return FI_OK;
	}
	e = fi_tok_save_binary(t, &bin, &len);
	fi_tok_free(t);
	if (e)
		return fi_fail_ctx(e, "'%s/tokenizer.json'", dir);
	bufs[*nb] = bin;
	blobs[*nb] = (struct fi_image_blob){"tokenizer.bin", bin, len};
	(*nb)++;
	return FI_OK;
}

fi_err fi_image_convert_hf(const char *dir, const char *path, enum fi_dtype dtype, unsigned flags)
{
	struct fi_config cfg;
	struct fi_st_model *m = NULL;
	struct fi_qhf *q = NULL;
	struct fi_image_src *src = NULL;
	char (*names)[FI_IMAGE_NAME_MAX] = NULL;
	struct fi_image_blob blobs[N_BLOB_FILES + 2];
	char *bufs[N_BLOB_FILES + 2] = {0};
	int n = 0, nb = 0;
	fi_err e;

	if ((e = fi_config_load_dir(dir, &cfg)))
		return e;
	if ((e = fi_st_open_dir(dir, &m)))
		return e;
	if ((e = fi_qhf_convert(dir, m, flags & FI_IMAGE_QUANT_FP8 ? FI_QHF_FP8 : 0, &q)))
		goto out;
	src = calloc(q->set.n ? (size_t)q->set.n : 1, sizeof *src);
	names = calloc(q->set.n ? (size_t)q->set.n : 1, sizeof *names);
	if (!src || !names) {
		e = fi_fail(FI_ENOMEM, "'%s'", dir);
		goto out;
	}
	if ((e = map_tensors(dir, &cfg, q, src, names, &n)) || (e = check(dir, &cfg, src, n)))
		goto out;
	for (size_t i = 0; i < N_BLOB_FILES; i++) {
		size_t len = 0;
		if ((e = slurp(dir, blob_files[i], &bufs[nb], &len)))
			goto out;
		if (bufs[nb])
			blobs[nb] = (struct fi_image_blob){blob_files[i], bufs[nb], len}, nb++;
	}
	if ((e = tokenizer_bin(dir, blobs, &nb, bufs)))
		goto out;
	if (!(bufs[nb] = provenance(dir, m, q->method))) {
		e = fi_fail(FI_ENOMEM, "'%s': provenance", dir);
		goto out;
	}
	blobs[nb] = (struct fi_image_blob){"provenance.json", bufs[nb], strlen(bufs[nb])};
	nb++;
	e = fi_image_write(path, &cfg, dtype, src, n, blobs, nb, flags & ~FI_IMAGE_QUANT_FP8, NULL);
out:
	fi_qhf_free(q);
	for (int i = 0; i < nb; i++)
		free(bufs[i]);
	free(src);
	free(names);
	fi_st_close_dir(m);
	return e;
}

fi_err fi_image_convert(const char *src, const char *path, enum fi_dtype dtype, unsigned flags)
{
	struct stat st;
	if (!stat(src, &st) && S_ISREG(st.st_mode)) {
		if (!fi_gguf_is(src))
			return fi_fail(FI_EFORMAT, "'%s' is neither a model directory nor a GGUF file",
				       src);
		return fi_image_convert_gguf(src, path, dtype, flags);
	}
	return fi_image_convert_hf(src, path, dtype, flags);
}
