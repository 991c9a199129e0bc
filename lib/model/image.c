/* image: opening and validating fi model images (format in image.h). */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/quant.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "fi model images are little-endian; this reader maps them directly"
#endif

_Static_assert(sizeof(struct fi_image_header) == FI_IMAGE_HEADER_SIZE, "header size");
_Static_assert(sizeof(struct fi_image_tensor_ent) == 160, "tensor entry size");
_Static_assert(sizeof(struct fi_image_blob_ent) == 96, "blob entry size");

/* Names are printable ASCII without spaces or quotes: engine names and file names. */
static int name_ok(const char *n, size_t cap)
{
	size_t len = strnlen(n, cap);
	if (len == 0 || len == cap)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)n[i];
		if (ch <= ' ' || ch >= 127 || ch == '"' || ch == '\\' || ch == '/')
			return 0;
	}
	/* NUL padding keeps the table deterministic, so it is part of the format. */
	for (size_t i = len; i < cap; i++)
		if (n[i])
			return 0;
	return 1;
}

struct span {
	uint64_t off, end;
	int idx;
};

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static int cmp_tname(const void *a, const void *b)
{
	return strcmp(((const struct fi_tensor *)a)->name, ((const struct fi_tensor *)b)->name);
}

/* Checks spans (sorted in place) do not overlap; returns the index of an offender or -1. */
static int overlap(struct span *s, int n)
{
	qsort(s, (size_t)n, sizeof *s, cmp_span);
	for (int i = 1; i < n; i++)
		if (s[i].off < s[i - 1].end)
			return s[i].idx;
	return -1;
}

#define BAD(...) fi_fail(FI_EFORMAT, __VA_ARGS__)

static fi_err check_header(const char *p, const struct fi_image_header *h, size_t size)
{
	uint64_t end;
	if (size < FI_IMAGE_HEADER_SIZE)
		return BAD("image '%s': truncated: %zu bytes, shorter than the %d-byte header", p,
			   size, FI_IMAGE_HEADER_SIZE);
	if (memcmp(h->magic, FI_IMAGE_MAGIC, 4))
		return BAD("image '%s': bad magic (not an fi model image)", p);
	if (h->version != FI_IMAGE_VERSION)
		return BAD("image '%s': format version %u, this fi reads version %d", p,
			   h->version, FI_IMAGE_VERSION);
	if (h->header_size != FI_IMAGE_HEADER_SIZE)
		return BAD("image '%s': header size %u, expected %d", p, h->header_size,
			   FI_IMAGE_HEADER_SIZE);
	if (h->flags)
		return BAD("image '%s': unknown flags 0x%x", p, h->flags);
	if (h->reserved[0] || h->reserved[1] || h->reserved[2])
		return BAD("image '%s': reserved header fields are not zero", p);
	if (h->file_size != size)
		return BAD("image '%s': truncated or extended: header says %llu bytes, file has %zu",
			   p, (unsigned long long)h->file_size, size);
	if (!fi_dtype_is_compute((enum fi_dtype)h->dtype))
		return BAD("image '%s': image dtype %u is not f32, f16 or bf16", p, h->dtype);
	if (h->n_tensors > FI_IMAGE_MAX_TENSORS)
		return BAD("image '%s': %u tensors exceeds the limit %u", p, h->n_tensors,
			   FI_IMAGE_MAX_TENSORS);
	if (h->n_blobs > FI_IMAGE_MAX_BLOBS)
		return BAD("image '%s': %u blobs exceeds the limit %d", p, h->n_blobs,
			   FI_IMAGE_MAX_BLOBS);
	/* Sections in order, each inside the file; counts are bounded so nothing overflows. */
	if (h->config_off != FI_IMAGE_HEADER_SIZE)
		return BAD("image '%s': config offset %llu, expected %d", p,
			   (unsigned long long)h->config_off, FI_IMAGE_HEADER_SIZE);
	if (h->config_len < 2 || h->config_len > FI_IMAGE_MAX_CONFIG)
		return BAD("image '%s': config length %llu out of range", p,
			   (unsigned long long)h->config_len);
	end = h->config_off + h->config_len + 1;
	if (h->tensors_off < end || h->tensors_off % 8 || h->tensors_off > size)
		return BAD("image '%s': tensor table offset %llu out of place", p,
			   (unsigned long long)h->tensors_off);
	end = h->tensors_off + (uint64_t)h->n_tensors * sizeof(struct fi_image_tensor_ent);
	if (h->blobs_off < end || h->blobs_off % 8 || h->blobs_off > size)
		return BAD("image '%s': blob table offset %llu out of place", p,
			   (unsigned long long)h->blobs_off);
	end = h->blobs_off + (uint64_t)h->n_blobs * sizeof(struct fi_image_blob_ent);
	if (h->data_off < end || h->data_off > size)
		return BAD("image '%s': data offset %llu out of place", p,
			   (unsigned long long)h->data_off);
	if (h->data_off % FI_IMAGE_ALIGN)
		return BAD("image '%s': data offset %llu is not %d-byte aligned", p,
			   (unsigned long long)h->data_off, FI_IMAGE_ALIGN);
	if (h->data_size != size - h->data_off)
		return BAD("image '%s': data size %llu does not reach the end of the file", p,
			   (unsigned long long)h->data_size);
	return FI_OK;
}

static fi_err check_tensors(struct fi_image *im, const struct fi_image_header *h)
{
	const char *p = im->path;
	const struct fi_image_tensor_ent *e =
		(const struct fi_image_tensor_ent *)(im->map + h->tensors_off);
	struct span *sp;
	struct fi_tensor *sorted;
	int n = (int)h->n_tensors, bad;
	im->t_ = calloc(n ? (size_t)n : 1, sizeof *im->t_);
	sp = malloc((n ? (size_t)n : 1) * sizeof *sp);
	if (!im->t_ || !sp) {
		free(sp);
		return fi_fail(FI_ENOMEM, "image '%s': %d tensors", p, n);
	}
	for (int i = 0; i < n; i++) {
		struct fi_tensor *t = &im->t_[i];
		int64_t numel;
		size_t es;
		if (!name_ok(e[i].name, sizeof e[i].name)) {
			free(sp);
			return BAD("image '%s': tensor %d: name is empty, not NUL-terminated or has "
				   "bad characters", p, i);
		}
		t->name = e[i].name;
		es = e[i].dtype < FI_DT_COUNT ? fi_dtype_size((enum fi_dtype)e[i].dtype) : 0;
		if (!es && !fi_dtype_is_quant((enum fi_dtype)e[i].dtype)) {
			free(sp);
			return BAD("image '%s': tensor '%s': invalid dtype %u", p, t->name, e[i].dtype);
		}
		if (e[i].ndim < 1 || e[i].ndim > FI_MAX_DIMS) {
			free(sp);
			return BAD("image '%s': tensor '%s': ndim %u out of range", p, t->name,
				   e[i].ndim);
		}
		t->dtype = (enum fi_dtype)e[i].dtype;
		t->ndim = (int)e[i].ndim;
		for (int d = 0; d < FI_MAX_DIMS; d++) {
			if (d < t->ndim ? e[i].shape[d] < 0 : e[i].shape[d] != 0) {
				free(sp);
				return BAD("image '%s': tensor '%s': bad dimension %d", p, t->name, d);
			}
			t->shape[d] = e[i].shape[d];
		}
		numel = fi_tensor_numel(t);
		if (!es) {
			/* Quantized: a 2-D weight whose layout sizes it (checked below, once the
			 * bytes are known to lie inside the file). */
			if (t->ndim != 2 || numel < 0) {
				free(sp);
				return BAD("image '%s': tensor '%s': a %s weight must have 2 "
					   "dimensions", p, t->name, fi_dtype_name(t->dtype));
			}
		} else if (numel < 0 || (uint64_t)numel > UINT64_MAX / es ||
			   (uint64_t)numel * es != e[i].nbytes) {
			free(sp);
			return BAD("image '%s': tensor '%s': nbytes %llu does not match shape and dtype",
				   p, t->name, (unsigned long long)e[i].nbytes);
		}
		if (e[i].offset % FI_IMAGE_ALIGN) {
			free(sp);
			return BAD("image '%s': tensor '%s': offset %llu is not %d-byte aligned", p,
				   t->name, (unsigned long long)e[i].offset, FI_IMAGE_ALIGN);
		}
		if (e[i].offset > h->data_size || e[i].nbytes > h->data_size - e[i].offset) {
			free(sp);
			return BAD("image '%s': tensor '%s': data [%llu, +%llu) lies outside the file",
				   p, t->name, (unsigned long long)e[i].offset,
				   (unsigned long long)e[i].nbytes);
		}
		if (e[i].reserved) {
			free(sp);
			return BAD("image '%s': tensor '%s': reserved field is not zero", p, t->name);
		}
		t->nbytes = e[i].nbytes;
		t->data = im->map + h->data_off + e[i].offset;
		if (!es) {
			struct fi_qlayout ql;
			fi_err qe = fi_quant_layout(t->dtype, t->shape[0], t->shape[1], t->data,
						    t->nbytes, &ql);
			if (!qe && ql.nbytes != t->nbytes)
				qe = BAD("%llu bytes, its layout has %llu",
					 (unsigned long long)t->nbytes, (unsigned long long)ql.nbytes);
			if (qe) {
				free(sp);
				return fi_fail_ctx(qe, "image '%s': tensor '%s'", p, t->name);
			}
		}
		sp[i] = (struct span){e[i].offset, e[i].offset + e[i].nbytes, i};
	}
	bad = overlap(sp, n);
	free(sp);
	if (bad >= 0)
		return BAD("image '%s': tensor '%s' overlaps another tensor", p, im->t_[bad].name);
	/* Duplicate names: sort a copy of the views by name. */
	sorted = malloc((n ? (size_t)n : 1) * sizeof *sorted);
	if (!sorted)
		return fi_fail(FI_ENOMEM, "image '%s'", p);
	memcpy(sorted, im->t_, (size_t)n * sizeof *sorted);
	qsort(sorted, (size_t)n, sizeof *sorted, cmp_tname);
	for (int i = 1; i < n; i++)
		if (!strcmp(sorted[i].name, sorted[i - 1].name)) {
			BAD("image '%s': tensor '%s' appears twice", p, sorted[i].name);
			free(sorted);
			return FI_EFORMAT;
		}
	free(sorted);
	im->set.n = n;
	im->set.t = im->t_;
	return FI_OK;
}

static fi_err check_blobs(struct fi_image *im, const struct fi_image_header *h)
{
	const char *p = im->path;
	const struct fi_image_blob_ent *e =
		(const struct fi_image_blob_ent *)(im->map + h->blobs_off);
	uint64_t lo = h->blobs_off + (uint64_t)h->n_blobs * sizeof *e;
	int n = (int)h->n_blobs, bad;
	struct span *sp;
	im->blobs = calloc(n ? (size_t)n : 1, sizeof *im->blobs);
	sp = malloc((n ? (size_t)n : 1) * sizeof *sp);
	if (!im->blobs || !sp) {
		free(sp);
		return fi_fail(FI_ENOMEM, "image '%s': %d blobs", p, n);
	}
	for (int i = 0; i < n; i++) {
		if (!name_ok(e[i].name, sizeof e[i].name)) {
			free(sp);
			return BAD("image '%s': blob %d: name is empty, not NUL-terminated or has bad "
				   "characters", p, i);
		}
		/* The blob and its NUL lie between the blob table and the data section. */
		if (e[i].offset < lo || e[i].offset > h->data_off ||
		    e[i].size >= h->data_off - e[i].offset || im->map[e[i].offset + e[i].size]) {
			free(sp);
			return BAD("image '%s': blob '%s': [%llu, +%llu) out of place or not "
				   "NUL-terminated", p, e[i].name, (unsigned long long)e[i].offset,
				   (unsigned long long)e[i].size);
		}
		if (e[i].reserved[0] || e[i].reserved[1]) {
			free(sp);
			return BAD("image '%s': blob '%s': reserved field is not zero", p, e[i].name);
		}
		for (int j = 0; j < i; j++)
			if (!strcmp(e[i].name, e[j].name)) {
				free(sp);
				return BAD("image '%s': blob '%s' appears twice", p, e[i].name);
			}
		im->blobs[i] = (struct fi_image_blob){e[i].name, im->map + e[i].offset,
						      (size_t)e[i].size};
		sp[i] = (struct span){e[i].offset, e[i].offset + e[i].size + 1, i};
	}
	bad = overlap(sp, n);
	free(sp);
	if (bad >= 0)
		return BAD("image '%s': blob '%s' overlaps another blob", p, im->blobs[bad].name);
	im->n_blobs = n;
	return FI_OK;
}

static fi_err validate(struct fi_image *im)
{
	struct fi_image_header h;
	fi_err e;
	if (im->size >= sizeof h)
		memcpy(&h, im->map, sizeof h);
	if ((e = check_header(im->path, &h, im->size)))
		return e;
	if (im->map[h.config_off + h.config_len])
		return BAD("image '%s': config is not NUL-terminated", im->path);
	im->dtype = (enum fi_dtype)h.dtype;
	memcpy(im->fingerprint, h.fingerprint, 32);
	for (int i = 0; i < 32; i++)
		snprintf(im->fingerprint_hex + 2 * i, 3, "%02x", h.fingerprint[i]);
	if ((e = check_tensors(im, &h)) || (e = check_blobs(im, &h)))
		return e;
	im->config_json = (const char *)im->map + h.config_off;
	if ((e = fi_config_parse(im->config_json, (size_t)h.config_len, NULL, 0, &im->config)))
		return fi_fail_ctx(FI_EFORMAT, "image '%s': config", im->path);
	if ((e = fi_config_check(&im->config, &im->set)))
		return fi_fail_ctx(FI_EFORMAT, "image '%s'", im->path);
	return FI_OK;
}

void fi_image_close(struct fi_image *im)
{
	if (!im)
		return;
	if (im->mapped && im->map)
		munmap((void *)im->map, im->size);
	free(im->t_);
	for (int i = 0; im->random && im->blobs && i < im->n_blobs; i++)
		free((void *)im->blobs[i].data); /* a random image's blobs are its own */
	free(im->blobs);
	free(im->path);
	free(im->own_);
	free(im->own_q_);
	free(im);
}

static fi_err finish(struct fi_image *im, struct fi_image **out)
{
	fi_err e = validate(im);
	if (e) {
		fi_image_close(im);
		return e;
	}
	*out = im;
	return FI_OK;
}

fi_err fi_image_parse(const void *buf, size_t len, struct fi_image **out)
{
	struct fi_image *im;
	*out = NULL;
	/* The tables are read in place as structs of 8-byte fields. */
	if ((uintptr_t)buf % 8)
		return fi_fail(FI_EINVAL, "image in memory: buffer is not 8-byte aligned");
	im = calloc(1, sizeof *im);
	if (!im || !(im->path = strdup("<memory>"))) {
		free(im);
		return fi_fail(FI_ENOMEM, "image in memory");
	}
	im->map = buf;
	im->size = len;
	return finish(im, out);
}

fi_err fi_image_open(const char *path, struct fi_image **out)
{
	struct fi_image *im;
	struct stat st;
	int fd;
	void *m;
	*out = NULL;
	/* Non-blocking: opening a FIFO (or a device) must not wait for a writer; it is then
	 * refused as not a regular file. The flag changes nothing for a regular file. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return fi_fail(errno == ENOENT ? FI_ENOTFOUND : FI_EIO, "cannot open '%s': %s", path,
			       strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return fi_fail(FI_EIO, "cannot open '%s': not a regular file", path);
	}
	if ((uint64_t)st.st_size < FI_IMAGE_HEADER_SIZE) {
		close(fd);
		return fi_fail(FI_EFORMAT, "image '%s': truncated: %lld bytes, shorter than the "
			       "%d-byte header", path, (long long)st.st_size, FI_IMAGE_HEADER_SIZE);
	}
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return fi_fail(FI_EIO, "cannot map '%s': %s", path, strerror(errno));
	im = calloc(1, sizeof *im);
	if (!im || !(im->path = strdup(path))) {
		munmap(m, (size_t)st.st_size);
		free(im);
		return fi_fail(FI_ENOMEM, "opening '%s'", path);
	}
	im->map = m;
	im->size = (size_t)st.st_size;
	im->mapped = 1;
	return finish(im, out);
}

const struct fi_image_blob *fi_image_blob(const struct fi_image *im, const char *name)
{
	for (int i = 0; i < im->n_blobs; i++)
		if (!strcmp(im->blobs[i].name, name))
			return &im->blobs[i];
	return NULL;
}

long long fi_image_params(const struct fi_image *im)
{
	long long n = 0;
	for (int i = 0; i < im->set.n; i++)
		n += fi_tensor_numel(&im->set.t[i]);
	return n;
}

fi_err fi_image_verify(const struct fi_image *im)
{
	const struct fi_image_header *h = (const void *)im->map;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t md[32];
	unsigned mdlen = 0;
	int ok;
	if (!ctx)
		return fi_fail(FI_ENOMEM, "image '%s': sha256", im->path);
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(ctx, im->map + h->config_off, h->config_len) &&
	     EVP_DigestUpdate(ctx, im->map + h->tensors_off,
			      (size_t)h->n_tensors * sizeof(struct fi_image_tensor_ent)) &&
	     EVP_DigestUpdate(ctx, im->map + h->data_off, h->data_size) &&
	     EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	if (!ok || mdlen != 32)
		return fi_fail(FI_EIO, "image '%s': sha256 failed", im->path);
	if (memcmp(md, im->fingerprint, 32))
		return fi_fail(FI_EMISMATCH, "image '%s': fingerprint does not match its contents "
			       "(the file was altered)", im->path);
	return FI_OK;
}
