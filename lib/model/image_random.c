/* image_random: an in-memory model image of random weights for a config alone (image.h,
 * fi_image_random), as vLLM's --load-format dummy: the speed of a model too large to
 * download or convert, measured from its config.json. */
#include "image.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "base/quant.h"
#include "names.h"

#define MAX_FILE (256u << 20)

static char *slurp(const char *path, size_t *len)
{
	struct stat st;
	FILE *f;
	char *b;
	if (stat(path, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_FILE ||
	    !(f = fopen(path, "rb")))
		return NULL;
	b = malloc((size_t)st.st_size + 1);
	if (b && fread(b, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		free(b);
		b = NULL;
	}
	fclose(f);
	if (b) {
		b[st.st_size] = 0;
		*len = (size_t)st.st_size;
	}
	return b;
}

/* A BitNet checkpoint's linear layers (config "ternary"): TQ2, the only layout whose random
 * values are made here rather than by the backend. */
static int ternary_linear(const struct fi_config *c, const struct fi_expected *ex)
{
	static const char *const lin[] = {"attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate",
					  "ffn_up", "ffn_down"};
	const char *dot = strchr(ex->name + 4, '.');
	if (!c->ternary || ex->ndim != 2 || strncmp(ex->name, "blk.", 4) || !dot)
		return 0;
	for (size_t i = 0; i < sizeof lin / sizeof lin[0]; i++)
		if (!strcmp(dot + 1, lin[i]))
			return 1;
	return 0;
}

/* Random codes (about a third zeros, as absmean quantization of a Gaussian makes) and a
 * scale of 1 / sqrt(2/3 K), so outputs keep the inputs' size. */
static void ternary_fill(const struct fi_qlayout *l, uint8_t *b, uint64_t seed)
{
	uint64_t s = seed | 1, nq = (uint64_t)l->rows * (uint64_t)(l->cols / 4);
	float sc = 1.0f / sqrtf((float)l->cols * 2.0f / 3.0f);
	fi_quant_write_header(l, b);
	for (uint64_t i = 0; i < nq; i++) {
		uint8_t v = 0;
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		for (int k = 0; k < 4; k++)
			v |= (uint8_t)((s >> (16 * k)) % 3 << 2 * k);
		b[l->off_q + i] = v;
	}
	for (int64_t r = 0; r < l->rows; r++)
		memcpy(b + l->off_scale + 4 * (uint64_t)r, &sc, 4);
}

fi_err fi_image_random(const char *arg, uint64_t seed, struct fi_image **out)
{
	static const char *const blob_names[] = {"tokenizer.json", "tokenizer_config.json",
						 "chat_template.jinja", "generation_config.json"};
	struct fi_image *im;
	struct fi_config c;
	struct fi_expected ex;
	struct stat st;
	char dir[PATH_MAX], path[PATH_MAX + 64], *cj = NULL, *blob[4] = {0};
	size_t blen[4] = {0}, cjlen, own_bytes;
	char *own, (*names)[64];
	int n = 0, nb = 0;
	fi_err e;
	*out = NULL;
	if (stat(arg, &st))
		return fi_fail(errno == ENOENT ? FI_ENOTFOUND : FI_EIO, "cannot open '%s': %s", arg,
			       strerror(errno));
	if (S_ISDIR(st.st_mode)) {
		snprintf(dir, sizeof dir, "%s", arg);
		if ((e = fi_config_load_dir(arg, &c)))
			return e;
	} else { /* a config.json file: its directory may hold the tokenizer */
		size_t len;
		char *j = slurp(arg, &len);
		const char *slash;
		if (!j)
			return fi_fail(FI_EIO, "cannot read '%s'", arg);
		e = fi_config_parse(j, len, NULL, 0, &c);
		free(j);
		if (e)
			return fi_fail_ctx(e, "'%s'", arg);
		slash = strrchr(arg, '/');
		if (slash)
			snprintf(dir, sizeof dir, "%.*s", (int)(slash - arg), arg);
		else
			snprintf(dir, sizeof dir, ".");
	}
	while (fi_expected_tensor(&c, n, &ex))
		n++;
	if (!(cj = fi_config_to_json(&c)))
		return fi_fail(FI_ENOMEM, "'%s': out of memory", arg);
	cjlen = strlen(cj);
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, blob_names[i]);
		blob[i] = slurp(path, &blen[i]);
		nb += blob[i] != NULL;
	}
	/* One block: names, then the config JSON; tensors and blobs in their own arrays. */
	own_bytes = (size_t)n * 64 + cjlen + 1;
	im = calloc(1, sizeof *im);
	own = malloc(own_bytes);
	if (im) {
		im->t_ = calloc((size_t)n + 1, sizeof *im->t_);
		im->blobs = calloc((size_t)nb + 1, sizeof *im->blobs);
		im->path = malloc(strlen(arg) + 32);
	}
	if (!im || !own || !im->t_ || !im->blobs || !im->path) {
		fi_image_close(im);
		free(own);
		free(cj);
		for (int i = 0; i < 4; i++)
			free(blob[i]);
		return fi_fail(FI_ENOMEM, "'%s': out of memory", arg);
	}
	im->own_ = own;
	names = (char (*)[64])own;
	memcpy(own + (size_t)n * 64, cj, cjlen + 1);
	im->config_json = own + (size_t)n * 64;
	free(cj);
	sprintf(im->path, "%s (random weights)", arg);
	im->config = c;
	im->dtype = FI_DT_BF16;
	im->random = 1;
	im->random_seed = seed;
	for (int i = 0; i < n; i++) {
		struct fi_tensor *t = &im->t_[i];
		fi_expected_tensor(&c, i, &ex);
		snprintf(names[i], 64, "%s", ex.name);
		t->name = names[i];
		t->dtype = FI_DT_BF16;
		t->ndim = ex.ndim;
		t->shape[0] = ex.shape[0];
		t->shape[1] = ex.ndim == 2 ? ex.shape[1] : 0;
		t->data = NULL;
		t->nbytes = (uint64_t)fi_tensor_numel(t) * 2;
	}
	if (c.ternary) {
		uint64_t total = 0, at = 0;
		struct fi_qlayout l;
		uint8_t *q;
		for (int i = 0; i < n; i++) {
			fi_expected_tensor(&c, i, &ex);
			if (ternary_linear(&c, &ex) && !(ex.shape[1] % 128)) {
				fi_quant_layout_tq2(ex.shape[0], ex.shape[1], &l);
				total += (l.nbytes + 63) & ~(uint64_t)63;
			}
		}
		if (!(q = im->own_q_ = malloc(total ? total : 1))) {
			fi_image_close(im);
			return fi_fail(FI_ENOMEM, "'%s': out of memory for ternary weights", arg);
		}
		for (int i = 0; i < n; i++) {
			struct fi_tensor *t = &im->t_[i];
			fi_expected_tensor(&c, i, &ex);
			if (!ternary_linear(&c, &ex) || ex.shape[1] % 128)
				continue;
			fi_quant_layout_tq2(ex.shape[0], ex.shape[1], &l);
			ternary_fill(&l, q + at, seed * 0x9e3779b97f4a7c15ull + (uint64_t)i + 1);
			t->dtype = FI_DT_TQ2;
			t->data = q + at;
			t->nbytes = l.nbytes;
			at += (l.nbytes + 63) & ~(uint64_t)63;
		}
	}
	im->set = (struct fi_tensor_set){n, im->t_};
	for (int i = 0, k = 0; i < 4; i++)
		if (blob[i]) /* freed with the image: blobs own their bytes here */
			im->blobs[k++] = (struct fi_image_blob){blob_names[i], blob[i], blen[i]};
	im->n_blobs = nb;
	{ /* the fingerprint: the config, a marker and the seed */
		unsigned int len = 0;
		char mark[64];
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
			 EVP_DigestUpdate(md, im->config_json, cjlen) &&
			 EVP_DigestUpdate(md, mark, (size_t)snprintf(mark, sizeof mark,
					  "fi random weights %llu", (unsigned long long)seed)) &&
			 EVP_DigestFinal_ex(md, im->fingerprint, &len);
		EVP_MD_CTX_free(md);
		if (!ok) {
			fi_image_close(im);
			return fi_fail(FI_EIO, "'%s': SHA-256 failed", arg);
		}
		for (int i = 0; i < 32; i++)
			sprintf(im->fingerprint_hex + 2 * i, "%02x", im->fingerprint[i]);
	}
	*out = im;
	return FI_OK;
}
