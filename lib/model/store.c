/* store: the model store and `-m` resolution. */
#include "store.h"

#include "gguf.h"
#include "text/tokenizer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/settings.h"

int fi_store_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (!n || n >= FI_STORE_NAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
		return 0;
	return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			    "0123456789._-") == n;
}

/* FI_HOME and dir, one of its directories, may be trusted (base/home.h). Absent ones are
 * fine: nothing can be read from them, and fi makes them trusted. */
static fi_err trusted(const char *dir)
{
	fi_err e = fi_dir_trusted(fi_home(), NULL);
	if (!e)
		e = fi_dir_trusted(dir, NULL);
	if (e == FI_ENOTFOUND) {
		fi_clear_error();
		e = FI_OK;
	}
	return e;
}

fi_err fi_store_models_dir(char *out, size_t outsz, int create)
{
	fi_err e;
	if ((size_t)snprintf(out, outsz, "%s/models", fi_home()) >= outsz)
		return fi_fail(FI_ERANGE, "FI_HOME too long");
	if (!create)
		return trusted(out);
	if ((e = fi_dir_make(fi_home(), NULL)))
		return e;
	return fi_dir_make(out, NULL);
}

fi_err fi_store_path(const char *name, char *out, size_t outsz)
{
	char dir[PATH_MAX];
	fi_err e;
	if (!fi_store_name_valid(name))
		return fi_fail(FI_EINVAL, "invalid model name '%s' (use letters, digits, '.', '_' "
			       "and '-')", name);
	if ((e = fi_store_models_dir(dir, sizeof dir, 0)))
		return e;
	if ((size_t)snprintf(out, outsz, "%s/%s.fim", dir, name) >= outsz)
		return fi_fail(FI_ERANGE, "FI_HOME too long");
	return FI_OK;
}

/* Removes temporary images of writers that died (their lock is gone); a live writer holds
 * an exclusive flock on its file until it renames it. A writer takes the lock just after
 * creating the file, so a file younger than a minute is left alone: in that window it is
 * unlocked but alive. */
static void sweep_stale(const char *dir)
{
	DIR *dh = opendir(dir);
	struct dirent *d;
	if (!dh)
		return;
	while ((d = readdir(dh))) {
		char p[PATH_MAX];
		int fd;
		if (strncmp(d->d_name, ".fim-tmp.", 9))
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, d->d_name);
		if ((fd = open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0)
			continue;
		struct stat st;
		if (!fstat(fd, &st) && st.st_mtime > time(NULL) - 60) {
			close(fd);
			continue;
		}
		if (!flock(fd, LOCK_EX | LOCK_NB)) {
			fi_info("removing '%s', left by an interrupted conversion", p);
			unlink(p);
		}
		close(fd);
	}
	closedir(dh);
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct fi_store_entry *)a)->name,
		      ((const struct fi_store_entry *)b)->name);
}

void fi_store_list_free(struct fi_store_entry *e, int n)
{
	for (int i = 0; e && i < n; i++) {
		fi_image_close(e[i].im);
		free(e[i].path);
		free(e[i].err);
	}
	free(e);
}

fi_err fi_store_list(struct fi_store_entry **out, int *n_out)
{
	char dir[PATH_MAX];
	struct fi_store_entry *v = NULL;
	struct dirent *d;
	int n = 0, cap = 0;
	DIR *dh;
	fi_err e;
	*out = NULL;
	*n_out = 0;
	if ((e = fi_store_models_dir(dir, sizeof dir, 0)))
		return e;
	sweep_stale(dir);
	if (!(dh = opendir(dir)))
		return errno == ENOENT ? FI_OK
				       : fi_fail(FI_EIO, "cannot open '%s': %s", dir, strerror(errno));
	while ((d = readdir(dh))) {
		size_t len = strlen(d->d_name);
		struct fi_store_entry *en;
		char p[PATH_MAX];
		/* Dot files are writes in progress. */
		if (d->d_name[0] == '.' || len <= 4 || strcmp(d->d_name + len - 4, ".fim") ||
		    len - 4 >= FI_STORE_NAME_MAX)
			continue;
		if (n == cap) {
			struct fi_store_entry *nv = realloc(v, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *v);
			if (!nv) {
				closedir(dh);
				fi_store_list_free(v, n);
				return fi_fail(FI_ENOMEM, "listing '%s'", dir);
			}
			v = nv;
		}
		en = &v[n++];
		memset(en, 0, sizeof *en);
		memcpy(en->name, d->d_name, len - 4);
		snprintf(p, sizeof p, "%s/%s", dir, d->d_name);
		en->path = strdup(p);
		if (fi_image_open(p, &en->im))
			en->err = strdup(fi_errmsg());
	}
	closedir(dh);
	if (n)
		qsort(v, (size_t)n, sizeof *v, cmp_entry);
	*out = v;
	*n_out = n;
	return FI_OK;
}

fi_err fi_store_remove(const char *name)
{
	char p[PATH_MAX], dir[PATH_MAX];
	fi_err e;
	if ((e = fi_store_path(name, p, sizeof p)))
		return e;
	if (unlink(p)) {
		if (errno == ENOENT) {
			fi_store_models_dir(dir, sizeof dir, 0);
			return fi_fail(FI_ENOTFOUND, "model '%s' not found in %s (fi-load -l lists "
				       "models)", name, dir);
		}
		return fi_fail(FI_EIO, "cannot remove '%s': %s", p, strerror(errno));
	}
	return FI_OK;
}

/* A directory for on-the-fly conversions: $FI_HOME/tmp if it can be made, else $TMPDIR. */
static void tmp_dir(char *out, size_t outsz)
{
	snprintf(out, outsz, "%s/tmp", fi_home());
	if (!fi_dir_make(fi_home(), NULL) && !fi_dir_make(out, NULL) && !access(out, W_OK))
		return;
	fi_clear_error();
	snprintf(out, outsz, "%s", fi_settings()->tmpdir);
}

/* The last error's message with every occurrence of the temporary path tmp replaced by
 * what the user named (dir): no temporary names in messages. */
static fi_err untemp(fi_err e, const char *tmp, const char *dir)
{
	char msg[2048];
	const char *m = fi_errmsg(), *at;
	size_t len = 0, n = strlen(tmp);
	if (!n)
		return e;
	while ((at = strstr(m, tmp)) && len < sizeof msg) {
		len += (size_t)snprintf(msg + len, sizeof msg - len, "%.*s%s", (int)(at - m), m, dir);
		m = at + n;
	}
	if (len < sizeof msg)
		snprintf(msg + len, sizeof msg - len, "%s", m);
	return fi_fail(e, "%s", msg);
}

static fi_err open_dir(const char *dir, enum fi_dtype dt, struct fi_image **out)
{
	char td[PATH_MAX], p[PATH_MAX];
	char *name;
	fi_err e;
	int fd;
	tmp_dir(td, sizeof td);
	sweep_stale(td);
	snprintf(p, sizeof p, "%s/.fi-convert.XXXXXX", td);
	if ((fd = mkstemp(p)) < 0)
		return fi_fail(FI_EIO, "cannot create a temporary file in '%s': %s", td,
			       strerror(errno));
	close(fd);
	fi_info("converting '%s' (fi-load stores it once for fast starts)", dir);
	e = fi_image_convert(dir, p, dt, FI_IMAGE_OVERWRITE | FI_IMAGE_PROGRESS);
	if (!e)
		e = fi_image_open(p, out);
	/* The map keeps the data alive; the name goes now so nothing is left behind. */
	unlink(p);
	if (e)
		return untemp(e, p, dir);
	/* Messages about the image name the directory, not the unlinked temporary file. */
	if ((name = strdup(dir))) {
		free((*out)->path);
		(*out)->path = name;
	}
	return FI_OK;
}

enum fi_store_kind fi_store_resolve(const char *arg, char *path, size_t cap)
{
	struct stat st;
	/* A store name wins over a file or directory of the same name in the working
	 * directory, as a command name does; an argument with a slash is always a path. */
	if (arg && !strchr(arg, '/') && fi_store_name_valid(arg) &&
	    !fi_store_path(arg, path, cap) && !access(path, F_OK))
		return FI_STORE_NAME;
	fi_clear_error();
	if (!arg || !*arg || stat(arg, &st))
		return FI_STORE_NONE;
	snprintf(path, cap, "%s", arg);
	return S_ISDIR(st.st_mode) ? FI_STORE_DIR : FI_STORE_FILE;
}

fi_err fi_store_open_dtype(const char *arg, enum fi_dtype dt, struct fi_image **out)
{
	char p[PATH_MAX], dir[PATH_MAX];
	int er;
	*out = NULL;
	if (!arg || !*arg)
		return fi_fail(FI_EINVAL, "empty model name");
	switch (fi_store_resolve(arg, p, sizeof p)) {
	case FI_STORE_NAME:
	case FI_STORE_FILE:
		if (fi_gguf_is(p)) /* converted on the fly, as a directory is */
			return open_dir(arg, dt, out);
		return fi_image_open(p, out);
	case FI_STORE_DIR:
		return open_dir(arg, dt, out);
	case FI_STORE_NONE:
		break;
	}
	er = errno;
	if (!fi_store_name_valid(arg))
		return fi_fail(FI_ENOTFOUND, "cannot open '%s': %s, and it is not a model name",
			       arg, strerror(er));
	if (fi_store_models_dir(dir, sizeof dir, 0) || fi_store_path(arg, p, sizeof p))
		return fi_errcode();
	if (access(p, F_OK))
		return fi_fail(FI_ENOTFOUND, "model '%s' not found in %s (fi-load -l lists models)",
			       arg, dir);
	return fi_image_open(p, out);
}

fi_err fi_store_open(const char *arg, struct fi_image **out)
{
	return fi_store_open_dtype(arg, FI_DT_BF16, out);
}

static void three_digits(double x, const char *unit, char *out, size_t outsz)
{
	if (x >= 99.95)
		snprintf(out, outsz, "%.0f%s", x, unit);
	else if (x >= 9.995)
		snprintf(out, outsz, "%.1f%s", x, unit);
	else
		snprintf(out, outsz, "%.2f%s", x, unit);
}

void fi_format_count(long long n, char *out, size_t outsz)
{
	static const char *const u[] = {"K", "M", "B", "T"};
	double x = (double)n;
	int i = -1;
	if (n < 1000) {
		snprintf(out, outsz, "%lld", n);
		return;
	}
	while (x >= 999.5 && i < 3) {
		x /= 1000;
		i++;
	}
	three_digits(x, u[i], out, outsz);
}

void fi_format_bytes(uint64_t n, char *out, size_t outsz)
{
	static const char *const u[] = {"KiB", "MiB", "GiB", "TiB"};
	double x = (double)n;
	int i = -1;
	if (n < 1024) {
		snprintf(out, outsz, "%lluB", (unsigned long long)n);
		return;
	}
	while (x >= 1023.5 && i < 3) {
		x /= 1024;
		i++;
	}
	three_digits(x, u[i], out, outsz);
}

fi_err fi_image_tokenizer(const struct fi_image *im, struct fi_tok **out)
{
	const struct fi_image_blob *b = fi_image_blob(im, "tokenizer.bin");
	fi_err e;
	*out = NULL;
	if (!b)
		b = fi_image_blob(im, "tokenizer.json");
	if (!b)
		return fi_fail(FI_ENOTFOUND, "'%s': the model image holds no tokenizer", im->path);
	if ((e = fi_tok_load_mem(b->data, b->size, out)))
		return fi_fail_ctx(e, "'%s': %s", im->path, b->name);
	return FI_OK;
}
