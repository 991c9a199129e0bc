/* image_write: writing fi model images atomically (format in image.h). */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/log.h"
#include "base/quant.h"

#define ALIGN_UP(x, a) (((x) + (a) - 1) / (a) * (a))
#define DATA_START_ALIGN 4096      /* page-aligned data: friendly to registration and DMA */
#define CHUNK_ELEMS (1u << 20)     /* conversion chunk: bounds memory to a few MiB */

/* The temporary file of the write in progress, for the signal handler. */
static char tmp_path[4096];
static volatile sig_atomic_t tmp_live;

static void on_signal(int sig)
{
	if (tmp_live)
		unlink(tmp_path);
	signal(sig, SIG_DFL);
	raise(sig);
}

void fi_image_cleanup_on_signal(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static fi_err write_all(int fd, const void *buf, size_t n, const char *p)
{
	const char *b = buf;
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return fi_fail(FI_EIO, "cannot write '%s': %s", p,
				       w < 0 ? strerror(errno) : "short write");
		b += w;
		n -= (size_t)w;
	}
	return FI_OK;
}

static fi_err write_zeros(int fd, size_t n, const char *p)
{
	static const char z[4096];
	while (n) {
		size_t k = n < sizeof z ? n : sizeof z;
		fi_err e = write_all(fd, z, k, p);
		if (e)
			return e;
		n -= k;
	}
	return FI_OK;
}

/* Checks the tensor list against the config before writing anything (a failure names
 * the tensor), with the shapes and dtype the image will hold. */
static fi_err precheck(const struct fi_config *c, enum fi_dtype dt, const struct fi_image_src *t,
		       int n, const char *path)
{
	struct fi_tensor *v = calloc(n ? (size_t)n : 1, sizeof *v);
	struct fi_tensor_set s = {n, v};
	fi_err e = FI_OK;
	if (!v)
		return fi_fail(FI_ENOMEM, "image '%s'", path);
	for (int i = 0; i < n && !e; i++) {
		if (!t[i].name || strlen(t[i].name) >= FI_IMAGE_NAME_MAX)
			e = fi_fail(FI_EINVAL, "image '%s': tensor %d: name missing or longer than %d",
				    path, i, FI_IMAGE_NAME_MAX - 1);
		else if (t[i].ndim < 1 || t[i].ndim > FI_MAX_DIMS)
			e = fi_fail(FI_EINVAL, "image '%s': tensor '%s': ndim %d", path, t[i].name,
				    t[i].ndim);
		else if (fi_dtype_is_quant(t[i].src_dtype)) {
			struct fi_qlayout ql;
			if (t[i].ndim != 2)
				e = fi_fail(FI_EINVAL, "tensor '%s': a %s weight must have 2 dimensions",
					    t[i].name, fi_dtype_name(t[i].src_dtype));
			else if ((e = fi_quant_layout(t[i].src_dtype, t[i].shape[0], t[i].shape[1],
						      t[i].src, t[i].src_nbytes, &ql)))
				fi_fail_ctx(e, "tensor '%s'", t[i].name);
			else if (ql.nbytes != t[i].src_nbytes)
				e = fi_fail(FI_EINVAL, "tensor '%s': %llu bytes for a layout of %llu",
					    t[i].name, (unsigned long long)t[i].src_nbytes,
					    (unsigned long long)ql.nbytes);
		} else if (!fi_dtype_is_compute(t[i].src_dtype))
			e = fi_fail(FI_EUNSUPPORTED, "tensor '%s': dtype %s is not supported (fi "
				    "converts F32, F16 and BF16)", t[i].name,
				    fi_dtype_name(t[i].src_dtype));
		v[i].name = t[i].name;
		v[i].dtype = fi_dtype_is_quant(t[i].src_dtype) ? t[i].src_dtype : dt;
		v[i].ndim = t[i].ndim;
		memcpy(v[i].shape, t[i].shape, sizeof v[i].shape);
		for (int d = t[i].ndim; d < FI_MAX_DIMS; d++)
			v[i].shape[d] = 0;
		v[i].data = t[i].src;
		if (!e && fi_tensor_numel(&v[i]) < 0)
			e = fi_fail(FI_ERANGE, "tensor '%s': element count overflows", t[i].name);
		v[i].nbytes = fi_dtype_is_quant(t[i].src_dtype)
				      ? t[i].src_nbytes
				      : (uint64_t)fi_tensor_numel(&v[i]) * fi_dtype_size(dt);
	}
	for (int i = 0; i < n && !e; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(t[i].name, t[j].name)) {
				e = fi_fail(FI_EINVAL, "tensor '%s' appears twice", t[i].name);
				break;
			}
	if (!e && (e = fi_config_check(c, &s)))
		fi_fail_ctx(e, "image '%s'", path);
	free(v);
	return e;
}

/* Builds everything before the data section; fills the header fields it knows. */
static fi_err build_meta(const char *cfg, size_t cfg_len, enum fi_dtype dt,
			 const struct fi_image_src *t, int n, const struct fi_image_blob *b, int nb,
			 uint8_t **out, size_t *out_len, struct fi_image_header *h, const char *path)
{
	uint64_t off = 0, blob_data;
	uint8_t *m;
	memset(h, 0, sizeof *h);
	memcpy(h->magic, FI_IMAGE_MAGIC, 4);
	h->version = FI_IMAGE_VERSION;
	h->header_size = FI_IMAGE_HEADER_SIZE;
	h->n_tensors = (uint32_t)n;
	h->n_blobs = (uint32_t)nb;
	h->dtype = (uint32_t)dt;
	h->config_off = FI_IMAGE_HEADER_SIZE;
	h->config_len = cfg_len;
	h->tensors_off = ALIGN_UP(h->config_off + cfg_len + 1, 8);
	h->blobs_off = h->tensors_off + (uint64_t)n * sizeof(struct fi_image_tensor_ent);
	blob_data = h->blobs_off + (uint64_t)nb * sizeof(struct fi_image_blob_ent);
	off = blob_data;
	for (int i = 0; i < nb; i++)
		off += b[i].size + 1;
	h->data_off = ALIGN_UP(off, DATA_START_ALIGN);
	m = calloc(1, (size_t)h->data_off);
	if (!m)
		return fi_fail(FI_ENOMEM, "image '%s': %llu bytes of metadata", path,
			       (unsigned long long)h->data_off);
	memcpy(m + h->config_off, cfg, cfg_len);
	off = 0;
	for (int i = 0; i < n; i++) {
		struct fi_image_tensor_ent *e =
			(void *)(m + h->tensors_off + (uint64_t)i * sizeof *e);
		int64_t numel = 1;
		int q = fi_dtype_is_quant(t[i].src_dtype);
		snprintf(e->name, sizeof e->name, "%s", t[i].name);
		e->dtype = (uint32_t)(q ? t[i].src_dtype : dt);
		e->ndim = (uint32_t)t[i].ndim;
		for (int d = 0; d < t[i].ndim; d++) {
			e->shape[d] = t[i].shape[d];
			numel *= t[i].shape[d];
		}
		e->offset = off;
		e->nbytes = q ? t[i].src_nbytes : (uint64_t)numel * fi_dtype_size(dt);
		off = ALIGN_UP(off + e->nbytes, FI_IMAGE_ALIGN);
	}
	h->data_size = off;
	h->file_size = h->data_off + h->data_size;
	off = blob_data;
	for (int i = 0; i < nb; i++) {
		struct fi_image_blob_ent *e = (void *)(m + h->blobs_off + (uint64_t)i * sizeof *e);
		if (!b[i].name || strlen(b[i].name) >= FI_IMAGE_NAME_MAX) {
			free(m);
			return fi_fail(FI_EINVAL, "image '%s': blob %d: name missing or too long",
				       path, i);
		}
		snprintf(e->name, sizeof e->name, "%s", b[i].name);
		e->offset = off;
		e->size = b[i].size;
		if (b[i].size)
			memcpy(m + off, b[i].data, b[i].size);
		off += b[i].size + 1;
	}
	*out = m;
	*out_len = (size_t)h->data_off;
	return FI_OK;
}

/* Index of the first non-finite value (NaN or +-Inf) among n values of dtype dt, or -1. An
 * exponent of all ones is the test, so it runs at memory speed over a whole checkpoint. */
static int64_t first_nonfinite(const void *p, enum fi_dtype dt, size_t n)
{
	size_t i;
	if (dt == FI_DT_F32) {
		const uint32_t *u = p;
		for (i = 0; i < n; i++)
			if ((u[i] & 0x7f800000u) == 0x7f800000u)
				return (int64_t)i;
	} else {
		const uint16_t *u = p;
		uint16_t m = dt == FI_DT_F16 ? 0x7c00 : 0x7f80;
		for (i = 0; i < n; i++)
			if ((u[i] & m) == m)
				return (int64_t)i;
	}
	return -1;
}

/* Converts and writes one tensor in chunks, hashing what is written (a quantized tensor is
 * copied as it is). A non-finite value
 * (in the source, or made by the conversion: an f32 beyond the f16 range) is an error naming
 * the tensor: such weights give NaN logits and junk text for every prompt. */
static fi_err write_tensor(int fd, EVP_MD_CTX *md, const struct fi_image_src *t, enum fi_dtype dt,
			   void *buf, struct fi_progress *pr, uint64_t *done, const char *p)
{
	int q = fi_dtype_is_quant(t->src_dtype);
	int64_t numel = 1;
	size_t ss = q ? 1 : fi_dtype_size(t->src_dtype), ds = q ? 1 : fi_dtype_size(dt);
	if (q)
		numel = (int64_t)t->src_nbytes;
	else
		for (int d = 0; d < t->ndim; d++)
			numel *= t->shape[d];
	for (int64_t i = 0; i < numel; i += CHUNK_ELEMS) {
		size_t k = (size_t)(numel - i < CHUNK_ELEMS ? numel - i : CHUNK_ELEMS);
		const char *src = (const char *)t->src + (size_t)i * ss;
		fi_err e = FI_OK;
		int64_t bad;
		if (q)
			memcpy(buf, src, k);
		else if ((e = fi_convert(buf, dt, src, t->src_dtype, k)))
			return fi_fail_ctx(e, "tensor '%s'", t->name);
		if (!q && (bad = first_nonfinite(buf, dt, k)) >= 0) {
			const void *sp = (const char *)t->src + (size_t)(i + bad) * ss;
			if (first_nonfinite(sp, t->src_dtype, 1) < 0)
				return fi_fail(FI_ERANGE, "tensor '%s': element %lld overflows %s",
					       t->name, (long long)(i + bad), fi_dtype_lname(dt));
			return fi_fail(FI_ERANGE, "tensor '%s': element %lld is not finite (NaN or "
				       "infinite)", t->name, (long long)(i + bad));
		}
		if (!EVP_DigestUpdate(md, buf, k * ds))
			return fi_fail(FI_EIO, "sha256 failed");
		if ((e = write_all(fd, buf, k * ds, p)))
			return e;
		*done += k * ds;
		if (pr)
			fi_progress_update(pr, *done);
	}
	return FI_OK;
}

static fi_err write_body(int fd, const struct fi_image_header *h0, const uint8_t *meta,
			 size_t meta_len, enum fi_dtype dt, const struct fi_image_src *t, int n,
			 unsigned flags, uint8_t fp[32], const char *p)
{
	struct fi_image_header h = *h0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	void *buf = malloc((size_t)CHUNK_ELEMS * 4);
	struct fi_progress pr;
	uint64_t done = 0, pos = 0;
	unsigned mdlen = 0;
	fi_err e = FI_OK;
	if (!md || !buf) {
		e = fi_fail(FI_ENOMEM, "image '%s'", p);
		goto out;
	}
	if (flags & FI_IMAGE_PROGRESS)
		fi_progress_begin(&pr, "writing", h.data_size);
	if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
	    !EVP_DigestUpdate(md, meta + h.config_off, h.config_len) ||
	    !EVP_DigestUpdate(md, meta + h.tensors_off,
			      (size_t)n * sizeof(struct fi_image_tensor_ent))) {
		e = fi_fail(FI_EIO, "sha256 failed");
		goto out;
	}
	if ((e = write_all(fd, meta, meta_len, p)))
		goto out;
	for (int i = 0; i < n && !e; i++) {
		const struct fi_image_tensor_ent *te =
			(const void *)(meta + h.tensors_off + (uint64_t)i * sizeof *te);
		static const uint8_t zeros[FI_IMAGE_ALIGN];
		size_t pad = (size_t)(te->offset - pos);
		/* Padding is part of the data section, so it is hashed too. */
		if (pad && !(e = write_zeros(fd, pad, p)) && !EVP_DigestUpdate(md, zeros, pad))
			e = fi_fail(FI_EIO, "sha256 failed");
		if (!e)
			e = write_tensor(fd, md, &t[i], dt, buf, (flags & FI_IMAGE_PROGRESS) ? &pr : NULL,
					 &done, p);
		pos = te->offset + te->nbytes;
	}
	if (!e && pos < h.data_size) {
		static const uint8_t zeros[FI_IMAGE_ALIGN];
		size_t pad = (size_t)(h.data_size - pos);
		if (!(e = write_zeros(fd, pad, p)) && !EVP_DigestUpdate(md, zeros, pad))
			e = fi_fail(FI_EIO, "sha256 failed");
	}
	if (!e && (!EVP_DigestFinal_ex(md, h.fingerprint, &mdlen) || mdlen != 32))
		e = fi_fail(FI_EIO, "sha256 failed");
	/* The header goes last: until then the file has no valid fingerprint. */
	if (!e && pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
		e = fi_fail(FI_EIO, "cannot write '%s': %s", p, strerror(errno));
	if (!e && fsync(fd))
		e = fi_fail(FI_EIO, "cannot sync '%s': %s", p, strerror(errno));
	if (!e)
		memcpy(fp, h.fingerprint, 32);
	if (flags & FI_IMAGE_PROGRESS)
		fi_progress_end(&pr);
out:
	EVP_MD_CTX_free(md);
	free(buf);
	return e;
}

static fi_err sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return fi_fail(FI_EIO, "cannot open directory '%s': %s", dir, strerror(errno));
	/* Some file systems (tmpfs) do not sync directories; that is not a failure. */
	if (fsync(fd) && errno != EINVAL && errno != ENOTSUP) {
		int er = errno;
		close(fd);
		return fi_fail(FI_EIO, "cannot sync directory '%s': %s", dir, strerror(er));
	}
	close(fd);
	return FI_OK;
}

/* Moves tmp to path; without overwrite, fails if path exists (atomically, via link). */
static fi_err place(const char *tmp, const char *path, unsigned flags)
{
	if (flags & FI_IMAGE_OVERWRITE) {
		if (rename(tmp, path))
			return fi_fail(FI_EIO, "cannot rename to '%s': %s", path, strerror(errno));
		return FI_OK;
	}
	if (link(tmp, path)) {
		if (errno == EEXIST)
			return fi_fail(FI_EEXIST, "'%s' already exists", path);
		return fi_fail(FI_EIO, "cannot create '%s': %s", path, strerror(errno));
	}
	unlink(tmp);
	return FI_OK;
}

fi_err fi_image_write(const char *path, const struct fi_config *c, enum fi_dtype dt,
		      const struct fi_image_src *t, int n, const struct fi_image_blob *blobs,
		      int n_blobs, unsigned flags, uint8_t fingerprint_out[32])
{
	char *cfg = NULL, *dcopy = NULL, *dir;
	uint8_t *meta = NULL, fp[32];
	size_t meta_len = 0;
	struct fi_image_header h;
	struct fi_image *im = NULL;
	mode_t um;
	int fd = -1;
	fi_err e;

	if (!fi_dtype_is_compute(dt))
		return fi_fail(FI_EINVAL, "image dtype must be f32, f16 or bf16");
	if (n < 0 || (unsigned)n > FI_IMAGE_MAX_TENSORS || n_blobs < 0 || n_blobs > FI_IMAGE_MAX_BLOBS)
		return fi_fail(FI_ERANGE, "image '%s': too many tensors or blobs", path);
	if (!(flags & FI_IMAGE_OVERWRITE) && !access(path, F_OK))
		return fi_fail(FI_EEXIST, "'%s' already exists", path);
	if ((e = precheck(c, dt, t, n, path)))
		return e;
	if (!(cfg = fi_config_to_json(c)))
		return fi_fail(FI_ENOMEM, "image '%s': config", path);
	if (strlen(cfg) > FI_IMAGE_MAX_CONFIG) {
		free(cfg);
		return fi_fail(FI_ERANGE, "image '%s': config too long", path);
	}
	e = build_meta(cfg, strlen(cfg), dt, t, n, blobs, n_blobs, &meta, &meta_len, &h, path);
	free(cfg);
	if (e)
		return e;
	if (!(dcopy = strdup(path))) {
		free(meta);
		return fi_fail(FI_ENOMEM, "image '%s'", path);
	}
	dir = dirname(dcopy);
	/* A dot name keeps listings from showing a half-written image. */
	snprintf(tmp_path, sizeof tmp_path, "%s/.fim-tmp.XXXXXX", dir);
	fd = mkstemp(tmp_path);
	if (fd < 0) {
		e = fi_fail(FI_EIO, "cannot create a temporary file in '%s': %s", dir,
			    strerror(errno));
		goto out;
	}
	tmp_live = 1;
	/* Held until the file is renamed or removed: fi_store_list removes unlocked leftovers
	 * of writers that were killed (in /dev/shm they would hold memory until reboot). */
	flock(fd, LOCK_EX);
	um = umask(0);
	umask(um);
	fchmod(fd, 0644 & ~um);
	if ((e = write_body(fd, &h, meta, meta_len, dt, t, n, flags, fp, tmp_path)))
		goto out;
	/* Read back what was written, with the reader's full validation. */
	if ((e = fi_image_open(tmp_path, &im)))
		goto out;
	if (memcmp(im->fingerprint, fp, 32))
		e = fi_fail(FI_EIO, "image '%s': fingerprint changed on reread", path);
	fi_image_close(im);
	if (e || (e = place(tmp_path, path, flags)) || (e = sync_dir(dir)))
		goto out;
	tmp_live = 0;
	if (fingerprint_out)
		memcpy(fingerprint_out, fp, 32);
out:
	if (fd >= 0)
		close(fd);
	if (tmp_live) {
		unlink(tmp_path);
		tmp_live = 0;
	}
	free(meta);
	free(dcopy);
	return e;
}
