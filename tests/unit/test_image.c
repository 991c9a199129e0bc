/* Model image: round trips, fingerprints, every kind of corruption, atomic writes. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/image.h"
#include "model/names.h"
#include "model/safetensors.h"
#include "model/store.h"
#include "image_synth.h"
#include "util.h"

static const struct fi_image_blob test_blobs[] = {
	{"tokenizer.json", "{\"model\":{}}", 12},
	{"empty", "", 0},
};

static char *write_tiny(const char *name, enum fi_dtype dt, unsigned seed, uint8_t fp[32])
{
	static char p[512];
	struct fi_config c = tiny();
	struct synth s;
	synth_make(&s, &c, seed);
	snprintf(p, sizeof p, "%s/%s", tmpdir, name);
	ck_assert_msg(!fi_image_write(p, &c, dt, s.src, s.n, test_blobs, 2, FI_IMAGE_OVERWRITE, fp),
		      "%s", fi_errmsg());
	synth_free(&s);
	return p;
}

START_TEST(test_roundtrip_f32)
{
	struct fi_config c = tiny();
	struct synth s;
	struct fi_image *im;
	uint8_t fp[32];
	char p[512], hex[65];
	mk_tmp();
	synth_make(&s, &c, 1);
	snprintf(p, sizeof p, "%s/a.fim", tmpdir);
	ck_assert_msg(!fi_image_write(p, &c, FI_DT_F32, s.src, s.n, test_blobs, 2, 0, fp), "%s",
		      fi_errmsg());
	ck_assert_int_eq(count_entries(tmpdir), 1);
	ck_assert_msg(!fi_image_open(p, &im), "%s", fi_errmsg());
	ck_assert_int_eq(im->set.n, s.n);
	ck_assert_int_eq(im->dtype, FI_DT_F32);
	for (int i = 0; i < s.n; i++) {
		const struct fi_tensor *t = fi_tensor_find(&im->set, s.ex[i].name);
		ck_assert_ptr_nonnull(t);
		ck_assert_str_eq(t->name, im->set.t[i].name); /* written in the given order */
		ck_assert_int_eq(t->dtype, FI_DT_F32);
		ck_assert_int_eq(t->ndim, s.ex[i].ndim);
		ck_assert_int_eq(t->shape[0], s.ex[i].shape[0]);
		ck_assert_uint_eq(((const uint8_t *)t->data - im->map) % FI_IMAGE_ALIGN, 0);
		ck_assert_uint_eq(t->nbytes, (uint64_t)fi_tensor_numel(t) * 4);
		ck_assert_int_eq(memcmp(t->data, s.data[i], t->nbytes), 0);
	}
	ck_assert_int_eq(im->config.hidden, 16);
	ck_assert_int_eq(im->config.n_kv_heads, 2);
	ck_assert_int_eq(im->config.vocab, 32);
	ck_assert_int_eq(im->config.eos_ids[0], 2);
	ck_assert_str_eq(fi_image_blob(im, "tokenizer.json")->data, "{\"model\":{}}");
	ck_assert_uint_eq(fi_image_blob(im, "empty")->size, 0);
	ck_assert_ptr_null(fi_image_blob(im, "nope"));
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", fp[i]);
	ck_assert_str_eq(im->fingerprint_hex, hex);
	ck_assert_int_eq(fi_image_verify(im), FI_OK);
	ck_assert_int_eq(fi_image_params(im), 32 * 16 * 2 + 2 * (16 * 2 + 16 * 16 * 2 + 8 * 16 * 2 + 3 * 24 * 16) + 16);
	fi_image_close(im);
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

START_TEST(test_fingerprint)
{
	uint8_t a[32], b[32], c2[32], d[32];
	struct fi_config c = tiny();
	struct synth s;
	char p[512];
	mk_tmp();
	write_tiny("a.fim", FI_DT_BF16, 7, a);
	write_tiny("b.fim", FI_DT_BF16, 7, b);
	ck_assert_int_eq(memcmp(a, b, 32), 0);
	/* Other blobs (tokenizer, provenance) leave it alone... */
	synth_make(&s, &c, 7);
	snprintf(p, sizeof p, "%s/c.fim", tmpdir);
	ck_assert(!fi_image_write(p, &c, FI_DT_BF16, s.src, s.n, NULL, 0, 0, c2));
	ck_assert_int_eq(memcmp(a, c2, 32), 0);
	/* ...one changed weight does not. */
	s.data[3][5] += 1.0f;
	snprintf(p, sizeof p, "%s/d.fim", tmpdir);
	ck_assert(!fi_image_write(p, &c, FI_DT_BF16, s.src, s.n, NULL, 0, 0, d));
	ck_assert_int_ne(memcmp(a, d, 32), 0);
	/* Nor does the dtype. */
	write_tiny("e.fim", FI_DT_F16, 7, d);
	ck_assert_int_ne(memcmp(a, d, 32), 0);
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

START_TEST(test_dtype_conversion)
{
	struct fi_config c = tiny();
	struct synth s;
	struct fi_image *im;
	char *p;
	mk_tmp();
	synth_make(&s, &c, 3);
	for (int k = 0; k < 2; k++) {
		enum fi_dtype dt = k ? FI_DT_F16 : FI_DT_BF16;
		p = write_tiny(k ? "h.fim" : "b.fim", dt, 3, NULL);
		ck_assert_msg(!fi_image_open(p, &im), "%s", fi_errmsg());
		ck_assert_int_eq(im->dtype, dt);
		for (int i = 0; i < s.n; i++) {
			const struct fi_tensor *t = &im->set.t[i];
			int64_t n = fi_tensor_numel(t);
			const uint16_t *h = t->data;
			float back[1024];
			ck_assert_int_eq(t->dtype, dt);
			ck_assert_uint_eq(t->nbytes, (uint64_t)n * 2);
			ck_assert(n <= 1024);
			ck_assert(!fi_convert(back, FI_DT_F32, h, dt, (size_t)n));
			for (int64_t j = 0; j < n; j++) {
				float x = s.data[i][j];
				uint16_t want = dt == FI_DT_BF16 ? fi_f32_to_bf16(x) : fi_f32_to_f16(x);
				ck_assert_uint_eq(h[j], want);
				ck_assert(fabsf(back[j] - x) <= fabsf(x) / (dt == FI_DT_BF16 ? 128 : 1024) + 1e-7f);
			}
		}
		fi_image_close(im);
	}
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

/* A small image read into memory, for corruption. */
static uint8_t *load_tiny(size_t *len)
{
	char *p;
	uint8_t *b;
	mk_tmp();
	p = write_tiny("t.fim", FI_DT_BF16, 5, NULL);
	b = (uint8_t *)fi_test_slurp(p, len);
	ck_assert_ptr_nonnull(b);
	rm_tree(tmpdir);
	return b;
}

static struct fi_image_header *hdr(uint8_t *b) { return (struct fi_image_header *)b; }

static struct fi_image_tensor_ent *ent(uint8_t *b, int i)
{
	return (struct fi_image_tensor_ent *)(b + hdr(b)->tensors_off) + i;
}

static struct fi_image_blob_ent *bent(uint8_t *b, int i)
{
	return (struct fi_image_blob_ent *)(b + hdr(b)->blobs_off) + i;
}

/* Applies one corruption to a fresh copy and expects FI_EFORMAT with a message naming it. */
static void expect_bad(const uint8_t *orig, size_t len, void (*f)(uint8_t *, size_t *),
		       const char *what)
{
	uint8_t *b = malloc(len + 4096);
	struct fi_image *im = NULL;
	size_t l = len;
	fi_err e;
	memcpy(b, orig, len);
	f(b, &l);
	e = fi_image_parse(b, l, &im);
	ck_assert_msg(e == FI_EFORMAT, "%s: got %d (%s)", what, e, fi_errmsg());
	ck_assert_ptr_null(im);
	ck_assert_msg(strstr(fi_errmsg(), what), "expected '%s' in: %s", what, fi_errmsg());
	free(b);
}

static void c_magic(uint8_t *b, size_t *l) { b[0] = 'X'; }
static void c_version(uint8_t *b, size_t *l) { hdr(b)->version = 2; }
static void c_hsize(uint8_t *b, size_t *l) { hdr(b)->header_size = 64; }
static void c_flags(uint8_t *b, size_t *l) { hdr(b)->flags = 4; }
static void c_fsize(uint8_t *b, size_t *l) { hdr(b)->file_size += 256; }
static void c_extend(uint8_t *b, size_t *l) { memset(b + *l, 0, 256); *l += 256; }
static void c_dtype(uint8_t *b, size_t *l) { hdr(b)->dtype = FI_DT_I8; }
static void c_ntensors(uint8_t *b, size_t *l) { hdr(b)->n_tensors = 0xffffffffu; }
static void c_tabs(uint8_t *b, size_t *l) { hdr(b)->tensors_off = hdr(b)->file_size + 8; }
static void c_blobs(uint8_t *b, size_t *l) { hdr(b)->blobs_off = 1ull << 62; }
static void c_dataoff(uint8_t *b, size_t *l) { hdr(b)->data_off += 8; hdr(b)->data_size -= 8; }
static void c_datasize(uint8_t *b, size_t *l) { hdr(b)->data_size -= 256; }
static void c_cfglen(uint8_t *b, size_t *l) { hdr(b)->config_len = ~0ull; }
static void c_cfgnul(uint8_t *b, size_t *l) { b[hdr(b)->config_off + hdr(b)->config_len] = ' '; }
static void c_cfgjson(uint8_t *b, size_t *l) { b[hdr(b)->config_off] = '['; }
static void c_off_out(uint8_t *b, size_t *l) { ent(b, 3)->offset = hdr(b)->data_size; }
static void c_off_huge(uint8_t *b, size_t *l) { ent(b, 3)->offset = ~0ull & ~255ull; }
static void c_misalign(uint8_t *b, size_t *l) { ent(b, 2)->offset += 2; }
static void c_name_nonul(uint8_t *b, size_t *l) { memset(ent(b, 1)->name, 'a', FI_IMAGE_NAME_MAX); }
static void c_name_empty(uint8_t *b, size_t *l) { ent(b, 1)->name[0] = 0; }
static void c_name_char(uint8_t *b, size_t *l) { ent(b, 1)->name[0] = '\n'; }
static void c_tdtype(uint8_t *b, size_t *l) { ent(b, 1)->dtype = 99; }
static void c_ndim(uint8_t *b, size_t *l) { ent(b, 1)->ndim = 9; }
static void c_negdim(uint8_t *b, size_t *l) { ent(b, 1)->shape[0] = -16; }
static void c_nbytes(uint8_t *b, size_t *l) { ent(b, 1)->nbytes += 2; }
static void c_overlap(uint8_t *b, size_t *l) { ent(b, 4)->offset = ent(b, 3)->offset; }
static void c_dup(uint8_t *b, size_t *l) { memcpy(ent(b, 4)->name, ent(b, 3)->name, FI_IMAGE_NAME_MAX); }
static void c_reserved(uint8_t *b, size_t *l) { ent(b, 4)->reserved = 1; }
static void c_bname(uint8_t *b, size_t *l) { memset(bent(b, 0)->name, 'b', FI_IMAGE_NAME_MAX); }
static void c_bsize(uint8_t *b, size_t *l) { bent(b, 0)->size = hdr(b)->file_size; }
static void c_bnul(uint8_t *b, size_t *l) { b[bent(b, 0)->offset + bent(b, 0)->size] = 'x'; }
static void c_boff(uint8_t *b, size_t *l) { bent(b, 0)->offset = 0; }
/* Shape [32,16] -> [16,32]: same bytes, so only the config cross-check catches it. */
static void c_shape(uint8_t *b, size_t *l)
{
	ent(b, 0)->shape[0] = 16;
	ent(b, 0)->shape[1] = 32;
}

START_TEST(test_corruption_named)
{
	size_t len;
	uint8_t *b = load_tiny(&len);
	struct fi_image *im;
	ck_assert_msg(!fi_image_parse(b, len, &im), "%s", fi_errmsg());
	ck_assert_str_eq(im->set.t[0].name, "tok_embd");
	fi_image_close(im);
	expect_bad(b, len, c_magic, "bad magic");
	expect_bad(b, len, c_version, "format version 2");
	expect_bad(b, len, c_hsize, "header size");
	expect_bad(b, len, c_flags, "flags");
	expect_bad(b, len, c_fsize, "truncated");
	expect_bad(b, len, c_extend, "truncated");
	expect_bad(b, len, c_dtype, "image dtype");
	expect_bad(b, len, c_ntensors, "tensors exceeds");
	expect_bad(b, len, c_tabs, "tensor table offset");
	expect_bad(b, len, c_blobs, "blob table offset");
	expect_bad(b, len, c_dataoff, "data offset");
	expect_bad(b, len, c_datasize, "data size");
	expect_bad(b, len, c_cfglen, "config length");
	expect_bad(b, len, c_cfgnul, "NUL-terminated");
	expect_bad(b, len, c_cfgjson, "config");
	expect_bad(b, len, c_off_out, "outside the file");
	expect_bad(b, len, c_off_huge, "outside the file");
	expect_bad(b, len, c_misalign, "aligned");
	expect_bad(b, len, c_name_nonul, "tensor 1: name");
	expect_bad(b, len, c_name_empty, "tensor 1: name");
	expect_bad(b, len, c_name_char, "tensor 1: name");
	expect_bad(b, len, c_tdtype, "invalid dtype");
	expect_bad(b, len, c_ndim, "ndim");
	expect_bad(b, len, c_negdim, "dimension");
	expect_bad(b, len, c_nbytes, "nbytes");
	expect_bad(b, len, c_overlap, "overlaps");
	expect_bad(b, len, c_dup, "appears twice");
	expect_bad(b, len, c_reserved, "reserved");
	expect_bad(b, len, c_bname, "blob 0: name");
	expect_bad(b, len, c_bsize, "blob 'tokenizer.json'");
	expect_bad(b, len, c_bnul, "blob 'tokenizer.json'");
	expect_bad(b, len, c_boff, "blob 'tokenizer.json'");
	expect_bad(b, len, c_shape, "tok_embd");
	free(b);
}
END_TEST

START_TEST(test_truncation_every_prefix)
{
	size_t len;
	uint8_t *b = load_tiny(&len);
	for (size_t l = 0; l < len; l++) {
		struct fi_image *im = NULL;
		uint8_t *c = malloc(l ? l : 1);
		memcpy(c, b, l);
		ck_assert_int_eq(fi_image_parse(c, l, &im), FI_EFORMAT);
		ck_assert_ptr_null(im);
		free(c);
	}
	free(b);
}
END_TEST

/* Every single-byte change of the metadata either still parses or fails with FI_EFORMAT;
 * a change in the data section is caught by fi_image_verify. */
START_TEST(test_byte_flips)
{
	size_t len;
	uint8_t *b = load_tiny(&len);
	uint64_t meta = hdr(b)->data_off;
	struct fi_image *im;
	for (uint64_t i = 0; i < meta; i++) {
		uint8_t *c = malloc(len);
		fi_err e;
		memcpy(c, b, len);
		c[i] ^= 0x5a;
		e = fi_image_parse(c, len, &im);
		ck_assert_msg(e == FI_OK || e == FI_EFORMAT, "byte %llu: %d", (unsigned long long)i, e);
		if (!e)
			fi_image_close(im);
		free(c);
	}
	b[meta + 3] ^= 1;
	ck_assert(!fi_image_parse(b, len, &im));
	ck_assert_int_eq(fi_image_verify(im), FI_EMISMATCH);
	fi_image_close(im);
	free(b);
}
END_TEST

START_TEST(test_atomic_and_check_failure)
{
	struct fi_config c = tiny();
	struct synth s;
	struct fi_image *im;
	char p[512];
	mk_tmp();
	synth_make(&s, &c, 9);
	snprintf(p, sizeof p, "%s/x.fim", tmpdir);
	/* A missing tensor: the error names it and nothing is written. */
	s.src[5] = s.src[--s.n];
	ck_assert_int_eq(fi_image_write(p, &c, FI_DT_BF16, s.src, s.n, NULL, 0, 0, NULL), FI_EMISMATCH);
	ck_assert_msg(strstr(fi_errmsg(), s.ex[5].name), "%s", fi_errmsg());
	ck_assert_int_eq(count_entries(tmpdir), 0);
	s.n++;
	synth_free(&s);
	synth_make(&s, &c, 9);
	/* A wrong shape. */
	s.src[2].shape[0] = 8;
	ck_assert_int_eq(fi_image_write(p, &c, FI_DT_BF16, s.src, s.n, NULL, 0, 0, NULL), FI_EMISMATCH);
	ck_assert_msg(strstr(fi_errmsg(), "blk.0.attn_q"), "%s", fi_errmsg());
	ck_assert_int_eq(count_entries(tmpdir), 0);
	s.src[2].shape[0] = 16;
	/* An unsupported source dtype. */
	s.src[1].src_dtype = FI_DT_I8;
	ck_assert_int_eq(fi_image_write(p, &c, FI_DT_BF16, s.src, s.n, NULL, 0, 0, NULL), FI_EUNSUPPORTED);
	ck_assert_msg(strstr(fi_errmsg(), "I8"), "%s", fi_errmsg());
	s.src[1].src_dtype = FI_DT_F32;
	/* Success leaves exactly one file; a second write without overwrite is refused. */
	ck_assert(!fi_image_write(p, &c, FI_DT_BF16, s.src, s.n, NULL, 0, 0, NULL));
	ck_assert_int_eq(count_entries(tmpdir), 1);
	ck_assert_int_eq(fi_image_write(p, &c, FI_DT_F32, s.src, s.n, NULL, 0, 0, NULL), FI_EEXIST);
	ck_assert_int_eq(count_entries(tmpdir), 1);
	ck_assert(!fi_image_write(p, &c, FI_DT_F32, s.src, s.n, NULL, 0, FI_IMAGE_OVERWRITE, NULL));
	ck_assert_int_eq(count_entries(tmpdir), 1);
	ck_assert(!fi_image_open(p, &im));
	ck_assert_int_eq(im->dtype, FI_DT_F32);
	fi_image_close(im);
	/* A directory that does not exist: a clear error, nothing left. */
	snprintf(p, sizeof p, "%s/no/such/x.fim", tmpdir);
	ck_assert_int_eq(fi_image_write(p, &c, FI_DT_F32, s.src, s.n, NULL, 0, 0, NULL), FI_EIO);
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

/* Non-finite weights are refused at conversion, naming the tensor and the element: NaN and
 * Inf in the source, and a finite f32 that f16 cannot hold. Nothing is written. */
START_TEST(test_nonfinite_refused)
{
	static const struct {
		float v;
		enum fi_dtype dt;
		const char *msg;
	} cases[] = {
		{NAN, FI_DT_F32, "element 7 is not finite"},
		{NAN, FI_DT_BF16, "element 7 is not finite"},
		{-INFINITY, FI_DT_F16, "element 7 is not finite"},
		{INFINITY, FI_DT_BF16, "element 7 is not finite"},
		{1e6f, FI_DT_F16, "element 7 overflows f16"},
	};
	struct fi_config c = tiny();
	struct synth s;
	char p[512];
	mk_tmp();
	snprintf(p, sizeof p, "%s/x.fim", tmpdir);
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		synth_make(&s, &c, 3);
		s.data[4][7] = cases[k].v;
		ck_assert_int_eq(fi_image_write(p, &c, cases[k].dt, s.src, s.n, NULL, 0, 0, NULL),
				 FI_ERANGE);
		ck_assert_msg(strstr(fi_errmsg(), s.ex[4].name) && strstr(fi_errmsg(), cases[k].msg),
			      "case %zu: %s", k, fi_errmsg());
		ck_assert_int_eq(count_entries(tmpdir), 0);
		synth_free(&s);
	}
	/* 1e6 is finite in bf16 and f32 */
	synth_make(&s, &c, 3);
	s.data[4][7] = 1e6f;
	ck_assert_msg(!fi_image_write(p, &c, FI_DT_BF16, s.src, s.n, NULL, 0, 0, NULL), "%s",
		      fi_errmsg());
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

/* Anything but a regular file is refused at once: a FIFO used to block the open. */
START_TEST(test_open_fifo)
{
	struct fi_image *im;
	char p[512];
	mk_tmp();
	snprintf(p, sizeof p, "%s/pipe.fim", tmpdir);
	ck_assert_int_eq(mkfifo(p, 0600), 0);
	ck_assert_int_eq(fi_image_open(p, &im), FI_EIO);
	ck_assert_msg(strstr(fi_errmsg(), "not a regular file"), "%s", fi_errmsg());
	ck_assert_int_eq(fi_image_open(tmpdir, &im), FI_EIO);
	rm_tree(tmpdir);
}
END_TEST

START_TEST(test_format_helpers)
{
	char b[32];
	fi_format_count(8030261248LL, b, sizeof b);
	ck_assert_str_eq(b, "8.03B");
	fi_format_count(260032, b, sizeof b);
	ck_assert_str_eq(b, "260K");
	fi_format_count(494032768, b, sizeof b);
	ck_assert_str_eq(b, "494M");
	fi_format_count(999, b, sizeof b);
	ck_assert_str_eq(b, "999");
	fi_format_count(12345, b, sizeof b);
	ck_assert_str_eq(b, "12.3K");
	fi_format_bytes(550144, b, sizeof b);
	ck_assert_str_eq(b, "537KiB");
	fi_format_bytes(100, b, sizeof b);
	ck_assert_str_eq(b, "100B");
	ck_assert(fi_store_name_valid("Llama-3.1_8B"));
	ck_assert(!fi_store_name_valid("a/b"));
	ck_assert(!fi_store_name_valid(".."));
	ck_assert(!fi_store_name_valid(""));
	ck_assert(!fi_store_name_valid("a b"));
}
END_TEST


/* Images from the independent writer in tools/gen_image_corpus.py (the fuzz seeds). */
START_TEST(test_independent_writer)
{
	static const char *const bad[] = {"trunc-header", "trunc-data", "bad-magic",
					  "bad-version", "bad-tensor-offset"};
	const char *dir = "tests/fuzz/corpus/fuzz_image";
	char p[256];
	struct fi_image *im;
	snprintf(p, sizeof p, "%s/valid-tiny-bf16", dir);
	ck_assert_msg(!fi_image_open(p, &im), "%s", fi_errmsg());
	ck_assert_int_eq(im->set.n, 11);
	ck_assert_int_eq(im->dtype, FI_DT_BF16);
	ck_assert(im->config.tie_embeddings);
	ck_assert_int_eq(fi_image_verify(im), FI_OK);
	fi_image_close(im);
	snprintf(p, sizeof p, "%s/valid-untied-f32-blobs", dir);
	ck_assert_msg(!fi_image_open(p, &im), "%s", fi_errmsg());
	ck_assert_int_eq(im->set.n, 12);
	ck_assert_str_eq(fi_image_blob(im, "tokenizer.json")->data, "{\"model\":{}}");
	ck_assert_int_eq(fi_image_verify(im), FI_OK);
	fi_image_close(im);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, bad[i]);
		ck_assert_int_eq(fi_image_open(p, &im), FI_EFORMAT);
	}
	ck_assert_int_eq(fi_image_open("tests/fuzz/corpus/fuzz_image/none", &im), FI_ENOTFOUND);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("image");
	TCase *tc = tcase_create("image");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_roundtrip_f32);
	tcase_add_test(tc, test_fingerprint);
	tcase_add_test(tc, test_dtype_conversion);
	tcase_add_test(tc, test_corruption_named);
	tcase_add_test(tc, test_truncation_every_prefix);
	tcase_add_test(tc, test_byte_flips);
	tcase_add_test(tc, test_atomic_and_check_failure);
	tcase_add_test(tc, test_nonfinite_refused);
	tcase_add_test(tc, test_open_fifo);
	tcase_add_test(tc, test_format_helpers);
	tcase_add_test(tc, test_independent_writer);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
