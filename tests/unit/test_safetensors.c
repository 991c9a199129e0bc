/* safetensors: valid files built in memory, the real stories260K checkpoint, the malformed
 * corpus of tests/fixtures/bad (one case per validation rule), every truncation of a valid
 * file, and sharded checkpoints in temporary directories. */
#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "util.h"

/* A safetensors image: u64 LE header length, the header, dlen data bytes (i * 7 + 1). */
static uint8_t *mkfile(const char *hdr, size_t dlen, size_t *len)
{
	size_t h = strlen(hdr);
	uint8_t *b = malloc(8 + h + dlen + 1);
	ck_assert_ptr_nonnull(b);
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)((uint64_t)h >> (8 * i));
	memcpy(b + 8, hdr, h);
	for (size_t i = 0; i < dlen; i++)
		b[8 + h + i] = (uint8_t)(i * 7 + 1);
	*len = 8 + h + dlen;
	return b;
}

static const struct fi_tensor *find(const struct fi_st_file *f, const char *name)
{
	struct fi_tensor_set s = {f->n, f->t};
	return fi_tensor_find(&s, name);
}

START_TEST(test_all_dtypes)
{
	/* One tensor per dtype, shape [2, 3], packed in dtype order. */
	char hdr[4096];
	size_t o = 0, off = 0, len;
	struct fi_st_file *f;
	uint8_t *b;
	o += (size_t)snprintf(hdr + o, sizeof hdr - o, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (int d = 0; d < FI_DT_COUNT; d++) {
		size_t n = 6 * fi_dtype_size((enum fi_dtype)d);
		o += (size_t)snprintf(hdr + o, sizeof hdr - o,
				      ",\"t%d\":{\"dtype\":\"%s\",\"shape\":[2,3],\"data_offsets\":[%zu,%zu]}", d,
				      fi_dtype_name((enum fi_dtype)d), off, off + n);
		off += n;
	}
	snprintf(hdr + o, sizeof hdr - o, "}");
	b = mkfile(hdr, off, &len);
	ck_assert_int_eq(fi_st_parse(b, len, &f), FI_OK);
	ck_assert_int_eq(f->n, FI_DT_COUNT);
	ck_assert_int_eq(f->mapped, 0);
	ck_assert_ptr_eq(f->map, b);
	ck_assert_str_eq(fi_st_metadata(f, "format"), "pt");
	ck_assert_ptr_null(fi_st_metadata(f, "nothing"));
	off = 0;
	for (int d = 0; d < FI_DT_COUNT; d++) {
		const struct fi_tensor *t = &f->t[d];
		char nm[16];
		snprintf(nm, sizeof nm, "t%d", d);
		ck_assert_str_eq(t->name, nm);
		ck_assert_int_eq(t->dtype, d);
		ck_assert_int_eq(t->ndim, 2);
		ck_assert_int_eq(t->shape[0], 2);
		ck_assert_int_eq(t->shape[1], 3);
		ck_assert_uint_eq(t->nbytes, 6 * fi_dtype_size((enum fi_dtype)d));
		ck_assert_ptr_eq(t->data, b + 8 + strlen(hdr) + off);
		off += t->nbytes;
	}
	fi_st_close(f);
	free(b);
}
END_TEST

START_TEST(test_valid_edges)
{
	struct fi_st_file *f;
	size_t len;
	uint8_t *b;
	/* No tensors, no data. */
	b = mkfile("{}", 0, &len);
	ck_assert_int_eq(fi_st_parse(b, len, &f), FI_OK);
	ck_assert_int_eq(f->n, 0);
	fi_st_close(f);
	free(b);
	/* Out of offset order in the header, a scalar, an empty tensor and the header padding
	 * of spaces the reference writer adds: tensors come back sorted by offset. */
	b = mkfile("{\"w\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[4,10]},"
		   "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[10,10]},"
		   "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}      ",
		   10, &len);
	ck_assert_int_eq(fi_st_parse(b, len, &f), FI_OK);
	ck_assert_int_eq(f->n, 3);
	ck_assert_str_eq(f->t[0].name, "s");
	ck_assert_int_eq(f->t[0].ndim, 0);
	ck_assert_uint_eq(f->t[0].nbytes, 4);
	ck_assert_str_eq(f->t[1].name, "w");
	ck_assert_int_eq(((const uint8_t *)f->t[1].data)[0], (uint8_t)(4 * 7 + 1));
	ck_assert_str_eq(f->t[2].name, "e");
	ck_assert_uint_eq(f->t[2].nbytes, 0);
	ck_assert_int_eq(f->t[2].shape[1], 5);
	fi_st_close(f);
	free(b);
	/* Two empty tensors at the same offset do not overlap (as in the reference). */
	b = mkfile("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
		   "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}",
		   0, &len);
	ck_assert_int_eq(fi_st_parse(b, len, &f), FI_OK);
	ck_assert_int_eq(f->n, 2);
	fi_st_close(f);
	free(b);
}
END_TEST

static fi_err code_of(const char *s)
{
	static const struct {
		const char *n;
		fi_err e;
	} m[] = {{"EFORMAT", FI_EFORMAT}, {"ERANGE", FI_ERANGE}, {"ENOTFOUND", FI_ENOTFOUND},
		 {"EUNSUPPORTED", FI_EUNSUPPORTED}};
	for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
		if (!strcmp(s, m[i].n))
			return m[i].e;
	ck_abort_msg("unknown code %s in cases.tsv", s);
	return FI_OK;
}

START_TEST(test_bad_corpus)
{
	size_t len;
	char *tab = fi_test_slurp(fi_test_fixture("bad/cases.tsv"), &len), *line, *save = NULL;
	int n_st = 0, n_index = 0;
	ck_assert_msg(tab != NULL, "tests/fixtures/bad/cases.tsv missing (tools/make_bad_fixtures.py)");
	for (line = strtok_r(tab, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *kind, *file, *code, *sub, *s2 = NULL, path[512], *data;
		size_t dlen;
		fi_err want, got;
		if (line[0] == '#')
			continue;
		kind = strtok_r(line, "\t", &s2);
		file = strtok_r(NULL, "\t", &s2);
		code = strtok_r(NULL, "\t", &s2);
		sub = strtok_r(NULL, "\t", &s2);
		ck_assert_msg(kind && file && code && sub, "bad line in cases.tsv");
		want = code_of(code);
		snprintf(path, sizeof path, "%s", fi_test_fixture("bad/"));
		strncat(path, file, sizeof path - strlen(path) - 1);
		data = fi_test_slurp(path, &dlen);
		ck_assert_msg(data != NULL, "%s missing", path);
		fi_clear_error();
		if (!strcmp(kind, "config")) { /* family configs: test_config.c */
			free(data);
			continue;
		}
		if (!strcmp(kind, "st")) {
			struct fi_st_file *f = (void *)1;
			uint8_t *copy;
			got = fi_st_open(path, &f);
			ck_assert_msg(got == want, "%s: got %s (%s), want %s", file, fi_strerror(got),
				      fi_errmsg(), code);
			ck_assert_msg(strstr(fi_errmsg(), sub), "%s: message '%s' lacks '%s'", file,
				      fi_errmsg(), sub);
			ck_assert_msg(strstr(fi_errmsg(), path), "%s: message '%s' does not name the file",
				      file, fi_errmsg());
			ck_assert_ptr_null(f);
			/* The same bytes in memory (an exact-size copy, for ASan) fail the same way. */
			copy = malloc(dlen ? dlen : 1);
			memcpy(copy, data, dlen);
			ck_assert_int_eq(fi_st_parse(copy, dlen, &f), want);
			ck_assert_ptr_nonnull(strstr(fi_errmsg(), sub));
			free(copy);
			n_st++;
		} else {
			char **files = (void *)1;
			int nf = -1;
			got = fi_st_parse_index(data, dlen, &files, &nf);
			ck_assert_msg(got == want, "%s: got %s (%s), want %s", file, fi_strerror(got),
				      fi_errmsg(), code);
			ck_assert_msg(strstr(fi_errmsg(), sub), "%s: message '%s' lacks '%s'", file,
				      fi_errmsg(), sub);
			ck_assert_ptr_null(files);
			ck_assert_int_eq(nf, 0);
			n_index++;
		}
		free(data);
	}
	free(tab);
	ck_assert_int_ge(n_st, 40);
	ck_assert_int_ge(n_index, 10);
}
END_TEST

static const char small_hdr[] =
	"{\"__metadata__\":{\"format\":\"pt\"},"
	"\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":[4,2],\"data_offsets\":[0,32]},"
	"\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[32,36]},"
	"\"lm_head.weight\":{\"dtype\":\"F16\",\"shape\":[4,2],\"data_offsets\":[36,52]}}";

START_TEST(test_truncation)
{
	size_t len;
	uint8_t *b = mkfile(small_hdr, 52, &len);
	struct fi_st_file *f;
	ck_assert_int_eq(fi_st_parse(b, len, &f), FI_OK);
	ck_assert_int_eq(f->n, 3);
	fi_st_close(f);
	/* Every proper prefix fails cleanly; an exact-size copy lets ASan see over-reads. */
	for (size_t n = 0; n < len; n++) {
		uint8_t *p = malloc(n ? n : 1);
		fi_err e;
		memcpy(p, b, n);
		f = (void *)1;
		fi_clear_error();
		e = fi_st_parse(p, n, &f);
		ck_assert_msg(e == FI_EFORMAT || e == FI_ERANGE, "prefix %zu: %d (%s)", n, e, fi_errmsg());
		ck_assert_ptr_null(f);
		ck_assert_ptr_nonnull(strstr(fi_errmsg(), "safetensors '<memory>'"));
		free(p);
	}
	free(b);
}
END_TEST

START_TEST(test_real_model)
{
	const char *p = fi_test_corpus("corpus/models/stories260K-hf/model.safetensors", "stories260K");
	const char *dir = fi_test_corpus("corpus/models/stories260K-hf", "stories260K");
	const struct fi_tensor *t;
	struct fi_st_file *f;
	struct fi_st_model *m;
	uint32_t u;
	char nm[96];
	if (!p || !dir)
		return;
	ck_assert_int_eq(fi_st_open(p, &f), FI_OK);
	ck_assert_int_eq(f->mapped, 1);
	ck_assert_uint_eq(f->size, 1044992);
	ck_assert_int_eq(f->n, 2 + 5 * 9);
	ck_assert_str_eq(fi_st_metadata(f, "format"), "pt");
	t = find(f, "model.embed_tokens.weight");
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(t->dtype, FI_DT_F32);
	ck_assert_int_eq(t->ndim, 2);
	ck_assert_int_eq(t->shape[0], 512);
	ck_assert_int_eq(t->shape[1], 64);
	/* Reference values from the safetensors Python package (bit patterns of f32). */
	memcpy(&u, (const char *)t->data + 4 * 64, 4); /* [1, 0] */
	ck_assert_uint_eq(u, 3187811008u);
	ck_assert_ptr_null(find(f, "lm_head.weight")); /* tied */
	for (int l = 0; l < 5; l++) {
		snprintf(nm, sizeof nm, "model.layers.%d.self_attn.k_proj.weight", l);
		t = find(f, nm);
		ck_assert_ptr_nonnull(t);
		ck_assert_int_eq(t->shape[0], 32);
		ck_assert_int_eq(t->shape[1], 64);
		snprintf(nm, sizeof nm, "model.layers.%d.mlp.down_proj.weight", l);
		t = find(f, nm);
		ck_assert_int_eq(t->shape[0], 64);
		ck_assert_int_eq(t->shape[1], 172);
	}
	ck_assert_ptr_null(find(f, "model.layers.5.input_layernorm.weight"));
	t = find(f, "model.norm.weight");
	ck_assert_int_eq(t->ndim, 1);
	memcpy(&u, t->data, 4);
	ck_assert_uint_eq(u, 1075664111u);
	t = find(f, "model.layers.4.self_attn.v_proj.weight");
	memcpy(&u, (const char *)t->data + 4 * (31 * 64 + 63), 4);
	ck_assert_uint_eq(u, 1035270879u);
	fi_st_close(f);

	ck_assert_int_eq(fi_st_open_dir(dir, &m), FI_OK);
	ck_assert_int_eq(m->n_files, 1);
	ck_assert_int_eq(m->set.n, 47);
	ck_assert_ptr_nonnull(fi_tensor_find(&m->set, "model.layers.2.self_attn.q_proj.weight"));
	fi_st_close_dir(m);
}
END_TEST

/* ---- directories ---- */

static char tmpdir[512];

static void mk_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof tmpdir, "%s/fi-st-XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

static void rm_tmpdir(void)
{
	nftw(tmpdir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void put(const char *name, const void *data, size_t len)
{
	char p[1024];
	FILE *f;
	snprintf(p, sizeof p, "%s/%s", tmpdir, name);
	f = fopen(p, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	fclose(f);
}

/* Writes a shard holding the named F32 tensors of shape [2] (8 bytes each). */
static void put_shard(const char *file, const char *const *names)
{
	char hdr[1024];
	size_t o = 0, len, n = 0;
	uint8_t *b;
	o += (size_t)snprintf(hdr, sizeof hdr, "{");
	for (; names[n]; n++)
		o += (size_t)snprintf(hdr + o, sizeof hdr - o,
				      "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[%zu,%zu]}",
				      n ? "," : "", names[n], 8 * n, 8 * n + 8);
	snprintf(hdr + o, sizeof hdr - o, "}");
	b = mkfile(hdr, 8 * n, &len);
	put(file, b, len);
	free(b);
}

#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"
#define INDEX "model.safetensors.index.json"

START_TEST(test_sharded)
{
	static const char *const s1[] = {"a", "b", NULL}, *const s2[] = {"c", NULL};
	static const char index[] = "{\"metadata\":{\"total_size\":24},\"weight_map\":"
				    "{\"c\":\"" S2 "\",\"a\":\"" S1 "\",\"b\":\"" S1 "\"}}";
	struct fi_st_model *m;
	char **files;
	int nf;
	const struct fi_tensor *t;
	mk_tmpdir();
	put_shard(S1, s1);
	put_shard(S2, s2);
	put(INDEX, index, strlen(index));
	ck_assert_int_eq(fi_st_parse_index(index, strlen(index), &files, &nf), FI_OK);
	ck_assert_int_eq(nf, 2);
	ck_assert_str_eq(files[0], S1);
	ck_assert_str_eq(files[1], S2);
	fi_st_free_names(files, nf);
	ck_assert_msg(fi_st_open_dir(tmpdir, &m) == FI_OK, "%s", fi_errmsg());
	ck_assert_int_eq(m->n_files, 2);
	ck_assert_int_eq(m->set.n, 3);
	t = fi_tensor_find(&m->set, "c");
	ck_assert_ptr_nonnull(t);
	ck_assert_ptr_eq(t->data, m->files[1]->t[0].data);
	ck_assert_int_eq(((const uint8_t *)fi_tensor_find(&m->set, "b")->data)[0], 8 * 7 + 1);
	fi_st_close_dir(m);
	rm_tmpdir();
}
END_TEST

START_TEST(test_single_in_dir)
{
	size_t len;
	uint8_t *b = mkfile(small_hdr, 52, &len);
	struct fi_st_model *m;
	char p[1024];
	mk_tmpdir();
	ck_assert_int_eq(fi_st_open_dir(tmpdir, &m), FI_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "no model.safetensors"));
	ck_assert_ptr_null(m);
	put("model.safetensors", b, len);
	ck_assert_int_eq(fi_st_open_dir(tmpdir, &m), FI_OK);
	ck_assert_int_eq(m->set.n, 3);
	fi_st_close_dir(m);
	/* A file named directly works too. */
	snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
	ck_assert_int_eq(fi_st_open_dir(p, &m), FI_OK);
	ck_assert_int_eq(m->n_files, 1);
	fi_st_close_dir(m);
	/* A corrupt file is named in the error. */
	b[8] = '[';
	put("model.safetensors", b, len);
	ck_assert_int_eq(fi_st_open_dir(tmpdir, &m), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), p));
	free(b);
	rm_tmpdir();
	ck_assert_int_eq(fi_st_open_dir(tmpdir, &m), FI_ENOTFOUND);
}
END_TEST

static const struct shard_case {
	const char *name;
	const char *s1[4], *s2[4]; /* tensors in S1 and S2 */
	const char *wm;            /* weight_map body */
	fi_err code;
	const char *msg;
} shard_cases[] = {
	{"missing tensor", {"a", "b"}, {"c"},
	 "\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\",\"d\":\"" S2 "\"", FI_EFORMAT,
	 "tensor 'd' is missing from shard '" S2 "'"},
	{"wrong shard", {"a", "b"}, {"c"}, "\"a\":\"" S2 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\"",
	 FI_EFORMAT, "tensor 'a' is in shard '" S1 "' but the index names '" S2 "'"},
	{"two shards", {"a", "b"}, {"a", "c"}, "\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\"",
	 FI_EFORMAT, "tensor 'a' is in two shards, '" S1 "' and '" S2 "'"},
	{"not in index", {"a", "b"}, {"c", "z"}, "\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\"",
	 FI_EFORMAT, "tensor 'z' in shard '" S2 "' is not in the index"},
	{"shard absent", {"a"}, {"c"}, "\"a\":\"" S1 "\",\"c\":\"model-00003.safetensors\"",
	 FI_ENOTFOUND, "model-00003.safetensors': No such file"},
	{"escape", {"a"}, {"c"}, "\"a\":\"" S1 "\",\"c\":\"../" S2 "\"", FI_EFORMAT,
	 "is not a plain file name"},
	{"bad index", {"a"}, {"c"}, "\"a\":", FI_EFORMAT, INDEX "': not valid JSON"},
	{"bad shard", {"a", "b"}, {"?"}, "\"a\":\"" S1 "\",\"b\":\"" S1 "\",\"c\":\"" S2 "\"",
	 FI_EFORMAT, S2 "': header does not start with '{'"},
};

START_TEST(test_shard_errors)
{
	const struct shard_case *c = &shard_cases[_i];
	struct fi_st_model *m = (void *)1;
	char index[1024];
	fi_err e;
	mk_tmpdir();
	put_shard(S1, c->s1);
	if (!strcmp(c->s2[0], "?"))
		put(S2, "\x02\0\0\0\0\0\0\0[]", 10);
	else
		put_shard(S2, c->s2);
	snprintf(index, sizeof index, "{\"weight_map\":{%s}}", c->wm);
	put(INDEX, index, strlen(index));
	e = fi_st_open_dir(tmpdir, &m);
	ck_assert_msg(e == c->code, "%s: got %s (%s)", c->name, fi_strerror(e), fi_errmsg());
	ck_assert_msg(strstr(fi_errmsg(), c->msg), "%s: '%s' lacks '%s'", c->name, fi_errmsg(), c->msg);
	ck_assert_ptr_null(m);
	rm_tmpdir();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("safetensors");
	tcase_add_test(tc, test_all_dtypes);
	tcase_add_test(tc, test_valid_edges);
	tcase_add_test(tc, test_bad_corpus);
	tcase_add_test(tc, test_truncation);
	tcase_add_test(tc, test_real_model);
	tcase_add_test(tc, test_sharded);
	tcase_add_test(tc, test_single_in_dir);
	tcase_add_loop_test(tc, test_shard_errors, 0, sizeof shard_cases / sizeof shard_cases[0]);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
