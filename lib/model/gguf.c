/* gguf: reading and validating GGUF files (format and checks in gguf.h). */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/utf8.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "this reader maps little-endian GGUF files directly"
#endif

#define MAX_KV (1u << 20)
#define MAX_TENSORS (1u << 20)

static const struct {
	const char *name;
	int block, bytes;
} ggml_types[] = {
	[0] = {"F32", 1, 4},	     [1] = {"F16", 1, 2},	  [2] = {"Q4_0", 32, 18},
	[3] = {"Q4_1", 32, 20},	     [6] = {"Q5_0", 32, 22},	  [7] = {"Q5_1", 32, 24},
	[8] = {"Q8_0", 32, 34},	     [9] = {"Q8_1", 32, 40},	  [10] = {"Q2_K", 256, 84},
	[11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},	  [13] = {"Q5_K", 256, 176},
	[14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},	  [16] = {"IQ2_XXS", 256, 66},
	[17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
	[20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
	[23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},	  [25] = {"I16", 1, 2},
	[26] = {"I32", 1, 4},	     [27] = {"I64", 1, 8},	  [28] = {"F64", 1, 8},
	[29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},	  [34] = {"TQ1_0", 256, 54},
	[35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},
};
#define N_GGML (sizeof ggml_types / sizeof ggml_types[0])

int fi_ggml_block(uint32_t type, int *bytes)
{
	if (type >= N_GGML || !ggml_types[type].name) {
		if (bytes)
			*bytes = 0;
		return 0;
	}
	if (bytes)
		*bytes = ggml_types[type].bytes;
	return ggml_types[type].block;
}

const char *fi_ggml_name(uint32_t type)
{
	return type < N_GGML && ggml_types[type].name ? ggml_types[type].name : "unknown";
}

static const int scalar_size[FI_GGUF_NTYPES] = {
	[FI_GGUF_U8] = 1,  [FI_GGUF_I8] = 1,  [FI_GGUF_U16] = 2, [FI_GGUF_I16] = 2,
	[FI_GGUF_U32] = 4, [FI_GGUF_I32] = 4, [FI_GGUF_F32] = 4, [FI_GGUF_BOOL] = 1,
	[FI_GGUF_U64] = 8, [FI_GGUF_I64] = 8, [FI_GGUF_F64] = 8,
};

/* A cursor over the file, every read bounded by the end. */
struct rd {
	const uint8_t *p;
	uint64_t pos, size;
	const char *path;
};

#define BAD(...) fi_fail(FI_EFORMAT, __VA_ARGS__)

static fi_err need(struct rd *r, uint64_t n, const char *what)
{
	if (n > r->size - r->pos)
		return BAD("gguf '%s': %s at offset %llu runs past the end of the file", r->path,
			   what, (unsigned long long)r->pos);
	return FI_OK;
}

static fi_err u32(struct rd *r, uint32_t *v, const char *what)
{
	fi_err e = need(r, 4, what);
	if (!e) {
		memcpy(v, r->p + r->pos, 4);
		r->pos += 4;
	}
	return e;
}

static fi_err u64(struct rd *r, uint64_t *v, const char *what)
{
	fi_err e = need(r, 8, what);
	if (!e) {
		memcpy(v, r->p + r->pos, 8);
		r->pos += 8;
	}
	return e;
}

/* A string: the length is checked against the bytes left before anything else. */
static fi_err str(struct rd *r, struct fi_gguf_str *s, const char *what)
{
	fi_err e;
	if ((e = u64(r, &s->n, what)) || (e = need(r, s->n, what)))
		return e;
	s->p = (const char *)r->p + r->pos;
	r->pos += s->n;
	return FI_OK;
}

/* Keys and tensor names: non-empty, UTF-8, no NUL (they are compared as C strings). */
static int name_ok(const struct fi_gguf_str *s)
{
	return s->n > 0 && !memchr(s->p, 0, s->n) && fi_utf8_valid(s->p, s->n) == s->n;
}

static fi_err value(struct rd *r, struct fi_gguf_kv *kv, int i)
{
	uint64_t start;
	fi_err e;
	kv->n = 1;
	if (kv->type >= FI_GGUF_NTYPES)
		return BAD("gguf '%s': key %d ('%.*s') has unknown type %u", r->path, i,
			   (int)(kv->key.n < 64 ? kv->key.n : 64), kv->key.p, kv->type);
	if (kv->type == FI_GGUF_ARRAY) {
		if ((e = u32(r, &kv->arr_type, "array type")) || (e = u64(r, &kv->n, "array length")))
			return e;
		if (kv->arr_type >= FI_GGUF_NTYPES || kv->arr_type == FI_GGUF_ARRAY)
			return BAD("gguf '%s': key '%.*s': array of type %u (nested arrays and unknown "
				   "types are refused)", r->path, (int)(kv->key.n < 64 ? kv->key.n : 64),
				   kv->key.p, kv->arr_type);
	}
	start = r->pos;
	kv->data = r->p + r->pos;
	if ((kv->type == FI_GGUF_ARRAY ? kv->arr_type : kv->type) == FI_GGUF_STRING) {
		/* Each string is at least its 8-byte length: bound the count first. */
		if (kv->n > (r->size - r->pos) / 8)
			return BAD("gguf '%s': key '%.*s': %llu strings cannot fit in the file", r->path,
				   (int)(kv->key.n < 64 ? kv->key.n : 64), kv->key.p,
				   (unsigned long long)kv->n);
		for (uint64_t j = 0; j < kv->n; j++) {
			struct fi_gguf_str s;
			if ((e = str(r, &s, "string value")))
				return e;
		}
	} else {
		int es = scalar_size[kv->type == FI_GGUF_ARRAY ? kv->arr_type : kv->type];
		if (kv->n > (r->size - r->pos) / (uint64_t)es)
			return BAD("gguf '%s': key '%.*s': %llu values of %d bytes run past the end of "
				   "the file", r->path, (int)(kv->key.n < 64 ? kv->key.n : 64),
				   kv->key.p, (unsigned long long)kv->n, es);
		r->pos += kv->n * (uint64_t)es;
	}
	kv->bytes = r->pos - start;
	return FI_OK;
}

static int same(const struct fi_gguf_str *s, const char *c)
{
	return s->n == strlen(c) && !memcmp(s->p, c, s->n);
}

struct span {
	uint64_t a, b;
	int i;
};

static int cmp_span(const void *x, const void *y)
{
	const struct span *p = x, *q = y;
	return p->a < q->a ? -1 : p->a > q->a;
}

static int cmp_str(const void *x, const void *y)
{
	const struct fi_gguf_str *p = *(struct fi_gguf_str *const *)x,
				 *q = *(struct fi_gguf_str *const *)y;
	uint64_t n = p->n < q->n ? p->n : q->n;
	int c = memcmp(p->p, q->p, n);
	return c ? c : (p->n > q->n) - (p->n < q->n);
}

/* Duplicates among n strings; returns the index of one or -1. */
static int dup_str(const struct fi_gguf_str *s, uint64_t n, size_t stride)
{
	const struct fi_gguf_str **v = malloc((n ? n : 1) * sizeof *v);
	int r = -1;
	if (!v)
		return -2;
	for (uint64_t i = 0; i < n; i++)
		v[i] = (const struct fi_gguf_str *)((const char *)s + i * stride);
	qsort(v, n, sizeof *v, cmp_str);
	for (uint64_t i = 1; i < n && r < 0; i++)
		if (!cmp_str(&v[i - 1], &v[i]))
			r = (int)(((const char *)v[i] - (const char *)s) / (ptrdiff_t)stride);
	free(v);
	return r;
}

static fi_err read_tensor(struct rd *r, struct fi_gguf *g, uint64_t i, struct fi_gguf_str *nm)
{
	struct fi_gguf_tensor *t = &g->t[i];
	uint32_t nd;
	int bytes, blk;
	uint64_t nel = 1;
	fi_err e;
	if ((e = str(r, nm, "tensor name")))
		return e;
	if (!name_ok(nm) || nm->n >= FI_GGUF_NAME_MAX)
		return BAD("gguf '%s': tensor %llu: name is empty, longer than %d bytes, not UTF-8 or "
			   "holds a NUL", r->path, (unsigned long long)i, FI_GGUF_NAME_MAX - 1);
	memcpy(t->name, nm->p, nm->n);
	t->name[nm->n] = 0;
	if ((e = u32(r, &nd, "tensor dimensions")))
		return e;
	if (nd < 1 || nd > FI_GGUF_MAX_DIMS)
		return BAD("gguf '%s': tensor '%s': %u dimensions (1 to %d)", r->path, t->name, nd,
			   FI_GGUF_MAX_DIMS);
	t->n_dims = (int)nd;
	for (int d = 0; d < FI_GGUF_MAX_DIMS; d++) {
		uint64_t v = 1;
		if (d < (int)nd && (e = u64(r, &v, "tensor dimension")))
			return e;
		if (v < 1 || v > ((uint64_t)1 << 40) || nel > (((uint64_t)1 << 50) / v))
			return BAD("gguf '%s': tensor '%s': dimension %d is %llu (zero, or the element "
				   "count overflows)", r->path, t->name, d, (unsigned long long)v);
		t->ne[d] = (int64_t)v;
		nel *= v;
	}
	if ((e = u32(r, &t->type, "tensor type")) || (e = u64(r, &t->offset, "tensor offset")))
		return e;
	if (!(blk = fi_ggml_block(t->type, &bytes)))
		return BAD("gguf '%s': tensor '%s': unknown type %u", r->path, t->name, t->type);
	if (t->ne[0] % blk)
		return BAD("gguf '%s': tensor '%s': %lld values per row are not a whole number of "
			   "%s blocks of %d", r->path, t->name, (long long)t->ne[0],
			   fi_ggml_name(t->type), blk);
	t->nbytes = nel / (uint64_t)blk * (uint64_t)bytes; /* < 2^50 x 292 */
	return FI_OK;
}

static fi_err validate(struct fi_gguf *g)
{
	struct rd r = {g->map, 0, g->size, g->path};
	struct fi_gguf_str *names = NULL;
	struct span *sp = NULL;
	uint64_t data_size;
	char magic[4];
	int d;
	fi_err e;
	if (g->size < 24)
		return BAD("gguf '%s': %zu bytes, too short for a GGUF header", g->path, g->size);
	memcpy(magic, g->map, 4);
	r.pos = 4;
	if (memcmp(magic, "GGUF", 4))
		return BAD("gguf '%s': bad magic (not a GGUF file)", g->path);
	u32(&r, &g->version, "version");
	if (g->version != 2 && g->version != 3)
		return BAD("gguf '%s': version %u (fi reads versions 2 and 3)", g->path, g->version);
	u64(&r, &g->n_tensors, "tensor count");
	u64(&r, &g->n_kv, "key count");
	/* A key is at least 8 + 1 + 4 bytes, a tensor info 8 + 1 + 4 + 8 + 4 + 8. */
	if (g->n_kv > MAX_KV || g->n_kv > (g->size - r.pos) / 13)
		return BAD("gguf '%s': %llu keys cannot fit in the file", g->path,
			   (unsigned long long)g->n_kv);
	if (g->n_tensors > MAX_TENSORS || g->n_tensors > (g->size - r.pos) / 33)
		return BAD("gguf '%s': %llu tensors cannot fit in the file", g->path,
			   (unsigned long long)g->n_tensors);
	g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
	g->t = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->t);
	names = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *names);
	sp = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *sp);
	if (!g->kv || !g->t || !names || !sp) {
		e = fi_fail(FI_ENOMEM, "gguf '%s'", g->path);
		goto out;
	}
	g->alignment = 32;
	for (uint64_t i = 0; i < g->n_kv; i++) {
		struct fi_gguf_kv *kv = &g->kv[i];
		if ((e = str(&r, &kv->key, "key")))
			goto out;
		if (!name_ok(&kv->key)) {
			e = BAD("gguf '%s': key %llu is empty, not UTF-8 or holds a NUL", g->path,
				(unsigned long long)i);
			goto out;
		}
		if ((e = u32(&r, &kv->type, "value type")) || (e = value(&r, kv, (int)i)))
			goto out;
		if (same(&kv->key, "general.alignment")) {
			uint32_t a;
			if (kv->type != FI_GGUF_U32) {
				e = BAD("gguf '%s': general.alignment is not a u32", g->path);
				goto out;
			}
			memcpy(&a, kv->data, 4);
			if (!a || (a & (a - 1)) || a > (1u << 20)) {
				e = BAD("gguf '%s': general.alignment %u is not a power of two up to 1 MiB",
					g->path, a);
				goto out;
			}
			g->alignment = a;
		}
	}
	if ((d = dup_str(&g->kv[0].key, g->n_kv, sizeof *g->kv)) != -1) {
		e = d == -2 ? fi_fail(FI_ENOMEM, "gguf '%s'", g->path)
			    : BAD("gguf '%s': key '%.*s' appears twice", g->path,
				  (int)(g->kv[d].key.n < 64 ? g->kv[d].key.n : 64), g->kv[d].key.p);
		goto out;
	}
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if ((e = read_tensor(&r, g, i, &names[i])))
			goto out;
	if ((d = dup_str(names, g->n_tensors, sizeof *names)) != -1) {
		e = d == -2 ? fi_fail(FI_ENOMEM, "gguf '%s'", g->path)
			    : BAD("gguf '%s': tensor '%s' appears twice", g->path, g->t[d].name);
		goto out;
	}
	/* The data section starts at the next multiple of the alignment. */
	g->data_off = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
	if (g->data_off > g->size) {
		e = g->n_tensors ? BAD("gguf '%s': the data section starts past the end of the file",
				       g->path)
				 : FI_OK;
		g->data_off = g->size;
		if (e)
			goto out;
	}
	data_size = g->size - g->data_off;
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		struct fi_gguf_tensor *t = &g->t[i];
		if (t->offset % g->alignment) {
			e = BAD("gguf '%s': tensor '%s': offset %llu is not a multiple of the alignment "
				"%u", g->path, t->name, (unsigned long long)t->offset, g->alignment);
			goto out;
		}
		if (t->offset > data_size || t->nbytes > data_size - t->offset) {
			e = BAD("gguf '%s': tensor '%s': data [%llu, +%llu) lies outside the file",
				g->path, t->name, (unsigned long long)t->offset,
				(unsigned long long)t->nbytes);
			goto out;
		}
		t->data = g->map + g->data_off + t->offset;
		sp[i] = (struct span){t->offset, t->offset + t->nbytes, (int)i};
	}
	qsort(sp, g->n_tensors, sizeof *sp, cmp_span);
	for (uint64_t i = 1; i < g->n_tensors; i++)
		if (sp[i].a < sp[i - 1].b) {
			e = BAD("gguf '%s': tensor '%s' overlaps tensor '%s'", g->path,
				g->t[sp[i].i].name, g->t[sp[i - 1].i].name);
			goto out;
		}
	e = FI_OK;
out:
	free(names);
	free(sp);
	return e;
}

void fi_gguf_close(struct fi_gguf *g)
{
	if (!g)
		return;
	if (g->mapped && g->map)
		munmap((void *)g->map, g->size);
	free(g->kv);
	free(g->t);
	free(g->path);
	free(g);
}

static fi_err finish(struct fi_gguf *g, struct fi_gguf **out)
{
	fi_err e = validate(g);
	if (e) {
		fi_gguf_close(g);
		return e;
	}
	*out = g;
	return FI_OK;
}

fi_err fi_gguf_parse(const void *buf, size_t len, struct fi_gguf **out)
{
	struct fi_gguf *g = calloc(1, sizeof *g);
	*out = NULL;
	if (!g || !(g->path = strdup("<memory>"))) {
		free(g);
		return fi_fail(FI_ENOMEM, "gguf in memory");
	}
	g->map = buf;
	g->size = len;
	return finish(g, out);
}

fi_err fi_gguf_open(const char *path, struct fi_gguf **out)
{
	struct fi_gguf *g;
	struct stat st;
	void *m = NULL;
	int fd;
	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return fi_fail(errno == ENOENT ? FI_ENOTFOUND : FI_EIO, "cannot open '%s': %s", path,
			       strerror(errno));
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return fi_fail(FI_EIO, "cannot open '%s': not a regular file", path);
	}
	if (st.st_size > 0 &&
	    (m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		close(fd);
		return fi_fail(FI_EIO, "cannot map '%s': %s", path, strerror(errno));
	}
	close(fd);
	g = calloc(1, sizeof *g);
	if (!g || !(g->path = strdup(path))) {
		if (m)
			munmap(m, (size_t)st.st_size);
		free(g);
		return fi_fail(FI_ENOMEM, "opening '%s'", path);
	}
	g->map = m;
	g->size = (size_t)st.st_size;
	g->mapped = m != NULL;
	return finish(g, out);
}

int fi_gguf_is(const char *path)
{
	/* Only a regular file can be GGUF: opening a FIFO would wait for a writer. */
	char b[4];
	struct stat st;
	int fd, r;
	if (stat(path, &st) || !S_ISREG(st.st_mode))
		return 0;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return 0;
	r = read(fd, b, 4) == 4 && !memcmp(b, "GGUF", 4);
	close(fd);
	return r;
}

const struct fi_gguf_kv *fi_gguf_find(const struct fi_gguf *g, const char *key)
{
	for (uint64_t i = 0; i < g->n_kv; i++)
		if (same(&g->kv[i].key, key))
			return &g->kv[i];
	return NULL;
}

const struct fi_gguf_tensor *fi_gguf_tensor(const struct fi_gguf *g, const char *name)
{
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if (!strcmp(g->t[i].name, name))
			return &g->t[i];
	return NULL;
}

static int64_t int_at(uint32_t type, const uint8_t *p, int *ok)
{
	union {
		uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32;
		uint64_t u64; int64_t i64;
	} v;
	*ok = 1;
	memcpy(&v, p, (size_t)scalar_size[type]);
	switch (type) {
	case FI_GGUF_U8: return v.u8;
	case FI_GGUF_I8: return v.i8;
	case FI_GGUF_U16: return v.u16;
	case FI_GGUF_I16: return v.i16;
	case FI_GGUF_U32: return v.u32;
	case FI_GGUF_I32: return v.i32;
	case FI_GGUF_I64: return v.i64;
	case FI_GGUF_U64:
		if (v.u64 > INT64_MAX)
			*ok = 0;
		return (int64_t)v.u64;
	default: *ok = 0; return 0;
	}
}

static double f64_at(uint32_t type, const uint8_t *p, int *ok)
{
	float f;
	double d;
	if (type == FI_GGUF_F32) {
		memcpy(&f, p, 4);
		*ok = 1;
		return f;
	}
	if (type == FI_GGUF_F64) {
		memcpy(&d, p, 8);
		*ok = 1;
		return d;
	}
	return (double)int_at(type, p, ok);
}

fi_err fi_gguf_get_int(const struct fi_gguf *g, const char *key, int64_t *out)
{
	const struct fi_gguf_kv *kv = fi_gguf_find(g, key);
	int ok = 0;
	if (!kv)
		return FI_ENOTFOUND;
	if (kv->type != FI_GGUF_ARRAY && kv->type != FI_GGUF_STRING &&
	    kv->type != FI_GGUF_BOOL)
		*out = int_at(kv->type, kv->data, &ok);
	if (!ok)
		return BAD("gguf '%s': key '%s' is not an integer", g->path, key);
	return FI_OK;
}

fi_err fi_gguf_get_f64(const struct fi_gguf *g, const char *key, double *out)
{
	const struct fi_gguf_kv *kv = fi_gguf_find(g, key);
	int ok = 0;
	if (!kv)
		return FI_ENOTFOUND;
	if (kv->type != FI_GGUF_ARRAY && kv->type != FI_GGUF_STRING &&
	    kv->type != FI_GGUF_BOOL)
		*out = f64_at(kv->type, kv->data, &ok);
	if (!ok)
		return BAD("gguf '%s': key '%s' is not a number", g->path, key);
	return FI_OK;
}

fi_err fi_gguf_get_bool(const struct fi_gguf *g, const char *key, int *out)
{
	const struct fi_gguf_kv *kv = fi_gguf_find(g, key);
	if (!kv)
		return FI_ENOTFOUND;
	if (kv->type != FI_GGUF_BOOL)
		return BAD("gguf '%s': key '%s' is not a bool", g->path, key);
	*out = kv->data[0] != 0;
	return FI_OK;
}

fi_err fi_gguf_get_str(const struct fi_gguf *g, const char *key, char **out)
{
	const struct fi_gguf_kv *kv = fi_gguf_find(g, key);
	uint64_t n;
	if (!kv)
		return FI_ENOTFOUND;
	if (kv->type != FI_GGUF_STRING)
		return BAD("gguf '%s': key '%s' is not a string", g->path, key);
	memcpy(&n, kv->data, 8);
	if (!(*out = malloc(n + 1)))
		return fi_fail(FI_ENOMEM, "gguf '%s': key '%s'", g->path, key);
	memcpy(*out, kv->data + 8, n);
	(*out)[n] = 0;
	return FI_OK;
}

fi_err fi_gguf_get_strs(const struct fi_gguf *g, const char *key, struct fi_gguf_str **out,
			uint64_t *n)
{
	const struct fi_gguf_kv *kv = fi_gguf_find(g, key);
	const uint8_t *p;
	if (!kv)
		return FI_ENOTFOUND;
	if (kv->type != FI_GGUF_ARRAY || kv->arr_type != FI_GGUF_STRING)
		return BAD("gguf '%s': key '%s' is not an array of strings", g->path, key);
	if (!(*out = malloc((kv->n ? kv->n : 1) * sizeof **out)))
		return fi_fail(FI_ENOMEM, "gguf '%s': key '%s'", g->path, key);
	p = kv->data;
	for (uint64_t i = 0; i < kv->n; i++) { /* lengths were bounded by validate() */
		memcpy(&(*out)[i].n, p, 8);
		(*out)[i].p = (const char *)p + 8;
		p += 8 + (*out)[i].n;
	}
	*n = kv->n;
	return FI_OK;
}

double fi_gguf_arr_f64(const struct fi_gguf_kv *kv, uint64_t i)
{
	int ok;
	if (kv->arr_type == FI_GGUF_STRING || kv->arr_type >= FI_GGUF_NTYPES)
		return 0;
	return f64_at(kv->arr_type, kv->data + i * (uint64_t)scalar_size[kv->arr_type], &ok);
}

int64_t fi_gguf_arr_int(const struct fi_gguf_kv *kv, uint64_t i)
{
	int ok;
	if (kv->arr_type == FI_GGUF_STRING || kv->arr_type >= FI_GGUF_NTYPES)
		return 0;
	return int_at(kv->arr_type, kv->data + i * (uint64_t)scalar_size[kv->arr_type], &ok);
}
