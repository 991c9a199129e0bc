/* safetensors: validated, memory-mapped safetensors files and sharded checkpoints.
 *
 * File layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data
 * section. The JSON maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets relative to the data section) plus an optional "__metadata__" object of strings.
 * Everything is checked before a tensor view is handed out, following the reference
 * implementation: sorted by offset, tensors tile the data section exactly from 0 to its end. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

/* The public struct plus what only this module needs. */
struct st_file {
	struct fi_st_file f;
	json_t *meta; /* __metadata__ (object of strings) or NULL */
};

struct span {
	uint64_t begin, end;
	int idx; /* header order, for a deterministic tie-break */
};

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return x->idx - y->idx;
}

static fi_err check_utf8(const char *who, const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t k;
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		k = utf8proc_iterate(p + i, (utf8proc_ssize_t)(n - i), &cp);
		if (k <= 0)
			return fi_fail(FI_EFORMAT, "safetensors '%s': header is not valid UTF-8 at byte %zu",
				       who, i + 8);
		i += (size_t)k;
	}
	return FI_OK;
}

static void shape_str(char *buf, size_t sz, const int64_t *s, int nd)
{
	size_t o = 0;
	o += (size_t)snprintf(buf, sz, "[");
	for (int i = 0; i < nd && o < sz; i++)
		o += (size_t)snprintf(buf + o, sz - o, "%s%lld", i ? ", " : "", (long long)s[i]);
	if (o < sz)
		snprintf(buf + o, sz - o, "]");
}

/* Validates one header entry into t (name not yet set); *b, *e get its data offsets. */
static fi_err parse_entry(const char *who, const char *name, json_t *v, uint64_t data_len,
			  struct fi_tensor *t, uint64_t *b, uint64_t *e)
{
	json_t *dt = json_object_get(v, "dtype"), *sh, *off;
	uint64_t numel = 1, nbytes;
	int d;
	char s[256];

	if (!json_is_object(v))
		return fi_fail(FI_EFORMAT, "safetensors '%s': tensor '%s': entry is not an object", who, name);
	if (!json_is_string(dt))
		return fi_fail(FI_EFORMAT, "safetensors '%s': tensor '%s': 'dtype' missing or not a string",
			       who, name);
	if ((d = fi_dtype_parse(json_string_value(dt))) < 0)
		return fi_fail(FI_EFORMAT, "safetensors '%s': tensor '%s': unknown dtype '%s'", who, name,
			       json_string_value(dt));
	t->dtype = (enum fi_dtype)d;

	sh = json_object_get(v, "shape");
	if (!json_is_array(sh))
		return fi_fail(FI_EFORMAT, "safetensors '%s': tensor '%s': 'shape' missing or not an array",
			       who, name);
	if (json_array_size(sh) > FI_MAX_DIMS)
		return fi_fail(FI_ERANGE, "safetensors '%s': tensor '%s': %zu dims exceed the limit of %d",
			       who, name, json_array_size(sh), FI_MAX_DIMS);
	t->ndim = (int)json_array_size(sh);
	for (int i = 0; i < t->ndim; i++) {
		json_t *x = json_array_get(sh, (size_t)i);
		if (!json_is_integer(x) || json_integer_value(x) < 0)
			return fi_fail(FI_EFORMAT,
				       "safetensors '%s': tensor '%s': shape[%d] is not a non-negative integer",
				       who, name, i);
		t->shape[i] = json_integer_value(x);
		if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel))
			return fi_fail(FI_ERANGE, "safetensors '%s': tensor '%s': element count overflows",
				       who, name);
	}
	if (numel > (uint64_t)INT64_MAX ||
	    __builtin_mul_overflow(numel, (uint64_t)fi_dtype_size(t->dtype), &nbytes))
		return fi_fail(FI_ERANGE, "safetensors '%s': tensor '%s': byte size overflows", who, name);

	off = json_object_get(v, "data_offsets");
	if (!json_is_array(off) || json_array_size(off) != 2 ||
	    !json_is_integer(json_array_get(off, 0)) || !json_is_integer(json_array_get(off, 1)) ||
	    json_integer_value(json_array_get(off, 0)) < 0 || json_integer_value(json_array_get(off, 1)) < 0)
		return fi_fail(FI_EFORMAT,
			       "safetensors '%s': tensor '%s': 'data_offsets' is not a pair of non-negative integers",
			       who, name);
	*b = (uint64_t)json_integer_value(json_array_get(off, 0));
	*e = (uint64_t)json_integer_value(json_array_get(off, 1));
	if (*b > *e)
		return fi_fail(FI_EFORMAT, "safetensors '%s': tensor '%s': data_offsets [%llu, %llu] end before begin",
			       who, name, (unsigned long long)*b, (unsigned long long)*e);
	if (*e > data_len)
		return fi_fail(FI_EFORMAT,
			       "safetensors '%s': tensor '%s': data_offsets end %llu is past the data section (%llu bytes)",
			       who, name, (unsigned long long)*e, (unsigned long long)data_len);
	if (*e - *b != nbytes) {
		shape_str(s, sizeof s, t->shape, t->ndim);
		return fi_fail(FI_EFORMAT,
			       "safetensors '%s': tensor '%s': shape %s of %s needs %llu bytes but data_offsets span %llu",
			       who, name, s, fi_dtype_name(t->dtype), (unsigned long long)nbytes,
			       (unsigned long long)(*e - *b));
	}
	t->nbytes = nbytes;
	return FI_OK;
}

static fi_err check_metadata(const char *who, json_t *m)
{
	const char *k;
	json_t *v;
	if (!json_is_object(m))
		return fi_fail(FI_EFORMAT, "safetensors '%s': '__metadata__' is not an object", who);
	json_object_foreach(m, k, v) {
		if (!json_is_string(v))
			return fi_fail(FI_EFORMAT, "safetensors '%s': '__metadata__' key '%s' is not a string",
				       who, k);
	}
	return FI_OK;
}

/* Validates buf (len bytes) and fills f; who names the file in messages. */
static fi_err st_validate(const char *who, const uint8_t *buf, size_t len, struct st_file *sf)
{
	struct fi_st_file *f = &sf->f;
	uint64_t hlen = 0, data_len, pos = 0;
	json_t *root = NULL, *v;
	json_error_t jerr;
	struct span *sp = NULL;
	struct fi_tensor *tmp = NULL;
	const char *key;
	const uint8_t *data;
	fi_err err = FI_OK;
	size_t n = 0, i = 0;

	if (len < 8)
		return fi_fail(FI_EFORMAT, "safetensors '%s': file of %zu bytes is too small for a header",
			       who, len);
	for (int k = 7; k >= 0; k--)
		hlen = hlen << 8 | buf[k];
	if (hlen > FI_ST_MAX_HEADER)
		return fi_fail(FI_ERANGE, "safetensors '%s': header length %llu exceeds the limit of %u bytes",
			       who, (unsigned long long)hlen, FI_ST_MAX_HEADER);
	if (hlen > len - 8)
		return fi_fail(FI_EFORMAT, "safetensors '%s': header length %llu exceeds the file (%zu bytes)",
			       who, (unsigned long long)hlen, len);
	if (hlen < 2 || buf[8] != '{')
		return fi_fail(FI_EFORMAT, "safetensors '%s': header does not start with '{'", who);
	if ((err = check_utf8(who, buf + 8, (size_t)hlen)))
		return err;
	root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!root && json_error_code(&jerr) == json_error_duplicate_key)
		return fi_fail(FI_EFORMAT, "safetensors '%s': duplicate tensor name: %s at byte %d", who,
			       jerr.text, jerr.position + 8);
	if (!root)
		return fi_fail(FI_EFORMAT, "safetensors '%s': header is not valid JSON: %s at byte %d", who,
			       jerr.text, jerr.position + 8);
	if (!json_is_object(root)) {
		err = fi_fail(FI_EFORMAT, "safetensors '%s': header is not a JSON object", who);
		goto out;
	}
	data = buf + 8 + hlen;
	data_len = len - 8 - hlen;

	json_object_foreach(root, key, v) {
		if (strcmp(key, "__metadata__"))
			n++;
	}
	/* calloc(0) may return NULL: always ask for at least one element. */
	tmp = calloc(n + 1, sizeof *tmp);
	sp = calloc(n + 1, sizeof *sp);
	if (!tmp || !sp) {
		err = fi_fail(FI_ENOMEM, "safetensors '%s': out of memory for %zu tensors", who, n);
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (!strcmp(key, "__metadata__")) {
			if ((err = check_metadata(who, v)))
				goto out;
			sf->meta = json_incref(v);
			continue;
		}
		if ((err = parse_entry(who, key, v, data_len, &tmp[i], &sp[i].begin, &sp[i].end)))
			goto out;
		tmp[i].name = key; /* borrowed from root until copied below */
		sp[i].idx = (int)i;
		i++;
	}

	/* Sorted by offset, tensors must tile [0, data_len) exactly. */
	qsort(sp, n, sizeof *sp, span_cmp);
	for (i = 0; i < n; i++) {
		const struct fi_tensor *t = &tmp[sp[i].idx];
		if (sp[i].begin < pos) {
			err = fi_fail(FI_EFORMAT, "safetensors '%s': tensor '%s' overlaps tensor '%s'", who,
				      t->name, tmp[sp[i - 1].idx].name);
			goto out;
		}
		if (sp[i].begin > pos) {
			err = fi_fail(FI_EFORMAT,
				      "safetensors '%s': gap of %llu bytes in the data section before tensor '%s'",
				      who, (unsigned long long)(sp[i].begin - pos), t->name);
			goto out;
		}
		pos = sp[i].end;
	}
	if (pos != data_len) {
		err = fi_fail(FI_EFORMAT,
			      "safetensors '%s': %llu trailing bytes in the data section after the last tensor",
			      who, (unsigned long long)(data_len - pos));
		goto out;
	}

	f->t = calloc(n + 1, sizeof *f->t);
	if (!f->t) {
		err = fi_fail(FI_ENOMEM, "safetensors '%s': out of memory", who);
		goto out;
	}
	for (i = 0; i < n; i++) {
		struct fi_tensor *t = &f->t[i];
		*t = tmp[sp[i].idx];
		t->data = data + sp[i].begin;
		if (!(t->name = strdup(t->name))) {
			err = fi_fail(FI_ENOMEM, "safetensors '%s': out of memory", who);
			goto out;
		}
		f->n++;
	}
out:
	free(tmp);
	free(sp);
	json_decref(root);
	return err;
}

void fi_st_close(struct fi_st_file *f)
{
	struct st_file *sf = (struct st_file *)f;
	if (!f)
		return;
	for (int i = 0; i < f->n; i++)
		free((char *)f->t[i].name);
	free(f->t);
	if (f->mapped && f->map)
		munmap((void *)f->map, f->size);
	free(f->path);
	json_decref(sf->meta);
	free(sf);
}

static fi_err st_new(const char *path, struct st_file **out)
{
	struct st_file *sf = calloc(1, sizeof *sf);
	if (!sf || !(sf->f.path = strdup(path))) {
		free(sf);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	*out = sf;
	return FI_OK;
}

fi_err fi_st_parse(const void *buf, size_t len, struct fi_st_file **out)
{
	struct st_file *sf;
	fi_err err;
	*out = NULL;
	if ((err = st_new("<memory>", &sf)))
		return err;
	sf->f.map = buf;
	sf->f.size = len;
	if ((err = st_validate(sf->f.path, buf, len, sf))) {
		fi_st_close(&sf->f);
		return err;
	}
	*out = &sf->f;
	return FI_OK;
}

fi_err fi_st_open(const char *path, struct fi_st_file **out)
{
	struct st_file *sf;
	struct stat st;
	void *m;
	fi_err err;
	int fd;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return fi_fail(errno == ENOENT ? FI_ENOTFOUND : FI_EIO, "cannot open '%s': %s", path,
			       strerror(errno));
	if (fstat(fd, &st)) {
		err = fi_fail(FI_EIO, "cannot stat '%s': %s", path, strerror(errno));
		close(fd);
		return err;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fi_fail(FI_EIO, "safetensors '%s': not a regular file", path);
	}
	if (st.st_size < 8) {
		close(fd);
		return fi_fail(FI_EFORMAT, "safetensors '%s': file of %lld bytes is too small for a header",
			       path, (long long)st.st_size);
	}
	m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return fi_fail(FI_EIO, "cannot map '%s': %s", path, strerror(errno));
	if ((err = st_new(path, &sf))) {
		munmap(m, (size_t)st.st_size);
		return err;
	}
	sf->f.map = m;
	sf->f.size = (size_t)st.st_size;
	sf->f.mapped = 1;
	if ((err = st_validate(path, m, (size_t)st.st_size, sf))) {
		fi_st_close(&sf->f);
		return err;
	}
	*out = &sf->f;
	return FI_OK;
}

const char *fi_st_metadata(const struct fi_st_file *f, const char *key)
{
	const struct st_file *sf = (const struct st_file *)f;
	return sf->meta ? json_string_value(json_object_get(sf->meta, key)) : NULL;
}

/* ---- sharded checkpoints ---- */

static int plain_file_name(const char *s)
{
	return *s && strlen(s) < 256 && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..") &&
	       strcmp(s, ".");
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void fi_st_free_names(char **v, int n)
{
	for (int i = 0; i < n && v; i++)
		free(v[i]);
	free(v);
}

/* Parses and validates an index; *wm_out (if wanted) is the weight_map, owned by *root_out. */
static fi_err index_load(const char *who, const char *json, size_t len, json_t **root_out,
			 json_t **wm_out, char ***files_out, int *n_out)
{
	json_t *root, *wm, *v;
	json_error_t jerr;
	const char *key, **names = NULL;
	char **files = NULL;
	size_t n = 0, u = 0, i = 0;
	fi_err err = FI_OK;

	*files_out = NULL;
	*n_out = 0;
	if (len > FI_ST_MAX_HEADER)
		return fi_fail(FI_ERANGE, "index '%s': %zu bytes exceed the limit of %u", who, len,
			       FI_ST_MAX_HEADER);
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root && json_error_code(&jerr) == json_error_duplicate_key)
		return fi_fail(FI_EFORMAT, "index '%s': duplicate tensor name: %s at byte %d", who,
			       jerr.text, jerr.position);
	if (!root)
		return fi_fail(FI_EFORMAT, "index '%s': not valid JSON: %s at byte %d", who, jerr.text,
			       jerr.position);
	wm = json_object_get(root, "weight_map");
	if (!json_is_object(root) || !json_is_object(wm)) {
		err = fi_fail(FI_EFORMAT, "index '%s': 'weight_map' missing or not an object", who);
		goto out;
	}
	if (!(n = json_object_size(wm))) {
		err = fi_fail(FI_EFORMAT, "index '%s': 'weight_map' is empty", who);
		goto out;
	}
	if (!(names = calloc(n, sizeof *names))) {
		err = fi_fail(FI_ENOMEM, "index '%s': out of memory", who);
		goto out;
	}
	json_object_foreach(wm, key, v) {
		if (!json_is_string(v)) {
			err = fi_fail(FI_EFORMAT, "index '%s': tensor '%s': shard is not a string", who, key);
			goto out;
		}
		if (!plain_file_name(json_string_value(v))) {
			err = fi_fail(FI_EFORMAT, "index '%s': tensor '%s': shard '%s' is not a plain file name",
				      who, key, json_string_value(v));
			goto out;
		}
		names[i++] = json_string_value(v);
	}
	qsort(names, n, sizeof *names, str_cmp);
	if (!(files = calloc(n, sizeof *files))) {
		err = fi_fail(FI_ENOMEM, "index '%s': out of memory", who);
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (u && !strcmp(files[u - 1], names[i]))
			continue;
		if (!(files[u] = strdup(names[i]))) {
			err = fi_fail(FI_ENOMEM, "index '%s': out of memory", who);
			goto out;
		}
		u++;
	}
	*files_out = files;
	*n_out = (int)u;
	files = NULL;
	if (root_out) {
		*root_out = root;
		*wm_out = wm;
		root = NULL;
	}
out:
	fi_st_free_names(files, (int)u);
	free(names);
	json_decref(root);
	return err;
}

fi_err fi_st_parse_index(const char *json, size_t len, char ***files_out, int *n_out)
{
	return index_load(INDEX_NAME, json, len, NULL, NULL, files_out, n_out);
}

/* Reads a whole file of at most max bytes. */
static fi_err slurp(const char *path, size_t max, char **out, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	struct stat st;
	char *b;
	fi_err err;
	*out = NULL;
	if (!fp)
		return fi_fail(errno == ENOENT ? FI_ENOTFOUND : FI_EIO, "cannot open '%s': %s", path,
			       strerror(errno));
	if (fstat(fileno(fp), &st) || !S_ISREG(st.st_mode)) {
		fclose(fp);
		return fi_fail(FI_EIO, "cannot read '%s': not a regular file", path);
	}
	if ((uint64_t)st.st_size > max) {
		fclose(fp);
		return fi_fail(FI_ERANGE, "'%s': %lld bytes exceed the limit of %zu", path,
			       (long long)st.st_size, max);
	}
	if (!(b = malloc((size_t)st.st_size + 1))) {
		fclose(fp);
		return fi_fail(FI_ENOMEM, "out of memory reading '%s'", path);
	}
	*len = fread(b, 1, (size_t)st.st_size, fp);
	err = ferror(fp) ? fi_fail(FI_EIO, "cannot read '%s': %s", path, strerror(errno)) : FI_OK;
	fclose(fp);
	if (err) {
		free(b);
		return err;
	}
	b[*len] = 0;
	*out = b;
	return FI_OK;
}

void fi_st_close_dir(struct fi_st_model *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n_files; i++)
		fi_st_close(m->files[i]);
	free(m->files);
	free(m->all);
	free(m);
}

/* Gathers every tensor of every file into m->all. */
static fi_err gather(struct fi_st_model *m)
{
	int total = 0, k = 0;
	for (int i = 0; i < m->n_files; i++)
		total += m->files[i]->n;
	if (!(m->all = calloc((size_t)total + 1, sizeof *m->all)))
		return fi_fail(FI_ENOMEM, "out of memory for %d tensors", total);
	for (int i = 0; i < m->n_files; i++)
		for (int j = 0; j < m->files[i]->n; j++)
			m->all[k++] = m->files[i]->t[j];
	m->set.n = total;
	m->set.t = m->all;
	return FI_OK;
}

/* Every tensor in exactly one shard, the one the index names; every index entry present. */
static fi_err check_shards(const char *who, struct fi_st_model *m, char **files, json_t *wm)
{
	json_t *seen = json_object(), *v;
	const char *key;
	fi_err err = FI_OK;
	if (!seen)
		return fi_fail(FI_ENOMEM, "out of memory");
	for (int i = 0; i < m->n_files; i++)
		for (int j = 0; j < m->files[i]->n; j++) {
			const char *nm = m->files[i]->t[j].name;
			json_t *prev = json_object_get(seen, nm);
			if (prev) {
				err = fi_fail(FI_EFORMAT, "index '%s': tensor '%s' is in two shards, '%s' and '%s'",
					      who, nm, files[json_integer_value(prev)], files[i]);
				goto out;
			}
			json_object_set_new(seen, nm, json_integer(i));
		}
	for (int i = 0; i < m->n_files; i++)
		for (int j = 0; j < m->files[i]->n; j++) {
			const char *nm = m->files[i]->t[j].name;
			const char *want = json_string_value(json_object_get(wm, nm));
			if (!want) {
				err = fi_fail(FI_EFORMAT, "index '%s': tensor '%s' in shard '%s' is not in the index",
					      who, nm, files[i]);
				goto out;
			}
			if (strcmp(want, files[i])) {
				err = fi_fail(FI_EFORMAT,
					      "index '%s': tensor '%s' is in shard '%s' but the index names '%s'",
					      who, nm, files[i], want);
				goto out;
			}
		}
	json_object_foreach(wm, key, v) {
		if (!json_object_get(seen, key)) {
			err = fi_fail(FI_EFORMAT, "index '%s': tensor '%s' is missing from shard '%s'", who, key,
				      json_string_value(v));
			goto out;
		}
	}
out:
	json_decref(seen);
	return err;
}

static fi_err open_sharded(const char *dir, const char *ipath, struct fi_st_model *m)
{
	char *text = NULL, **files = NULL;
	json_t *root = NULL, *wm = NULL;
	size_t len = 0;
	int nf = 0;
	fi_err err;

	if ((err = slurp(ipath, FI_ST_MAX_HEADER, &text, &len)))
		return err;
	err = index_load(ipath, text, len, &root, &wm, &files, &nf);
	free(text);
	if (err)
		return err;
	if (!(m->files = calloc((size_t)nf, sizeof *m->files))) {
		err = fi_fail(FI_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < nf; i++) {
		char p[4096];
		if (snprintf(p, sizeof p, "%s/%s", dir, files[i]) >= (int)sizeof p) {
			err = fi_fail(FI_ERANGE, "path '%s/%s' is too long", dir, files[i]);
			goto out;
		}
		if ((err = fi_st_open(p, &m->files[i])))
			goto out;
		m->n_files++;
	}
	err = check_shards(ipath, m, files, wm);
out:
	fi_st_free_names(files, nf);
	json_decref(root);
	return err;
}

fi_err fi_st_open_dir(const char *dir, struct fi_st_model **out)
{
	struct fi_st_model *m;
	struct stat st;
	char p[4096];
	fi_err err;

	*out = NULL;
	if (stat(dir, &st))
		return fi_fail(errno == ENOENT ? FI_ENOTFOUND : FI_EIO, "cannot open '%s': %s", dir,
			       strerror(errno));
	if (!(m = calloc(1, sizeof *m)))
		return fi_fail(FI_ENOMEM, "out of memory");
	if (S_ISREG(st.st_mode)) {
		/* A single .safetensors file named directly. */
		if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
			fi_st_close_dir(m);
			return fi_fail(FI_ERANGE, "path '%s' is too long", dir);
		}
	} else if (snprintf(p, sizeof p, "%s/" SINGLE_NAME, dir) >= (int)sizeof p) {
		fi_st_close_dir(m);
		return fi_fail(FI_ERANGE, "path '%s' is too long", dir);
	}
	/* Like transformers, a single model.safetensors wins over an index. */
	if (!access(p, F_OK)) {
		if (!(m->files = calloc(1, sizeof *m->files))) {
			err = fi_fail(FI_ENOMEM, "out of memory");
			goto fail;
		}
		if ((err = fi_st_open(p, &m->files[0])))
			goto fail;
		m->n_files = 1;
	} else {
		snprintf(p, sizeof p, "%s/" INDEX_NAME, dir);
		if (access(p, F_OK)) {
			err = fi_fail(FI_ENOTFOUND, "'%s': no " SINGLE_NAME " or " INDEX_NAME, dir);
			goto fail;
		}
		if ((err = open_sharded(dir, p, m)))
			goto fail;
	}
	if ((err = gather(m)))
		goto fail;
	*out = m;
	return FI_OK;
fail:
	fi_st_close_dir(m);
	return err;
}
