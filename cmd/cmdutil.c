/* cmdutil: option parsing and model opening shared by the commands. */
#include "cmdutil.h"
#include "base/log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int fi_parse_num(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	*out = strtod(s, &end);
	return errno || end == s || *end || isnan(*out) || *out < lo || *out > hi;
}

int fi_parse_int(const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	*out = strtoll(s, &end, 10);
	return errno || end == s || *end || *out < lo || *out > hi;
}

int fi_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	while (*s == ' ')
		s++;
	if (*s == '-' || *s == '+')
		return -1; /* strtoull would wrap "-1" to 2^64 - 1 */
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || end == s || *end;
}

int fi_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || isnan(v) || v <= 0)
		return -1;
	switch (*end) {
	case 'k': case 'K': v *= 1024.0; end++; break;
	case 'm': case 'M': v *= 1048576.0; end++; break;
	case 'g': case 'G': v *= 1073741824.0; end++; break;
	case 't': case 'T': v *= 1099511627776.0; end++; break;
	}
	if (*end == 'i' || *end == 'B')
		end += *end == 'i' && end[1] == 'B' ? 2 : 1;
	if (*end || v < 1048576.0 || v > 1e15)
		return -1;
	*out = (uint64_t)v;
	return 0;
}

int fi_parse_kv_size(const char *s, uint64_t *bytes, uint64_t *tokens)
{
	size_t n = strlen(s);
	char buf[64];
	long long v;
	*bytes = *tokens = 0;
	if (n && (s[n - 1] == 't' || s[n - 1] == 'T')) { /* tokens */
		if (n >= sizeof buf)
			return -1;
		memcpy(buf, s, n - 1);
		buf[n - 1] = 0;
		if (fi_parse_int(buf, 1, 1ll << 40, &v))
			return -1;
		*tokens = (uint64_t)v;
		return 0;
	}
	return fi_parse_size(s, bytes);
}

struct fi_backend_start {
	const char *name;
	int threads;
	struct fi_backend *be;
	fi_err err;
	char msg[1024];
	double secs;
	pthread_t t;
	int threaded;
};

static void *backend_start(void *arg)
{
	struct fi_backend_start *b = arg;
	double t = fi_now();
	if ((b->err = fi_backend_create(b->name, b->threads, &b->be)))
		snprintf(b->msg, sizeof b->msg, "%s", fi_errmsg()); /* details are per thread */
	b->secs = fi_now() - t;
	return NULL;
}

fi_err fi_backend_start(const char *name, int threads, struct fi_backend_start **out)
{
	struct fi_backend_start *b = calloc(1, sizeof *b);
	*out = NULL;
	if (!b)
		return fi_fail(FI_ENOMEM, "backend: out of memory");
	b->name = name;
	b->threads = threads;
	b->threaded = !pthread_create(&b->t, NULL, backend_start, b);
	if (!b->threaded)
		backend_start(b);
	*out = b;
	return FI_OK;
}

fi_err fi_backend_join(struct fi_backend_start *b, struct fi_backend **be, double *secs)
{
	fi_err e;
	if (b->threaded)
		pthread_join(b->t, NULL);
	*be = b->be;
	if (secs)
		*secs = b->secs;
	e = b->err ? fi_fail(b->err, "%s", b->msg) : FI_OK;
	free(b);
	return e;
}

fi_err fi_open_backend_model(const char *backend, int threads, const char *arg,
			     struct fi_backend **be, struct fi_image **im, struct fi_model **m,
			     int *be_failed)
{
	struct fi_backend_start *bs = NULL;
	struct stat st;
	fi_err e = FI_OK, be_e;
	*be = NULL;
	*im = NULL;
	*m = NULL;
	*be_failed = 0;
	/* A Hugging Face directory is converted in the backend's precision: no overlap. The
	 * image is not prefaulted meanwhile: mapping its pages in while CUDA starts slows the
	 * context creation several times over (tests/gpu/NOTES.md). */
	int dir = !stat(arg, &st) && S_ISDIR(st.st_mode);
	if ((be_e = fi_backend_start(backend, threads, &bs)))
		return be_e;
	if (!dir)
		e = fi_store_open(arg, im);
	if ((be_e = fi_backend_join(bs, be, NULL))) {
		if (*im)
			fi_image_close(*im);
		*im = NULL;
		*be_failed = 1;
		return be_e;
	}
	if (dir)
		e = fi_store_open_dtype(arg, (*be)->act == FI_DT_F32 ? FI_DT_F32 : FI_DT_BF16, im);
	if (!e)
		e = fi_model_load(&(*im)->config, &(*im)->set, *be, m);
	if (e) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", fi_errmsg());
		if (*im)
			fi_image_close(*im);
		fi_backend_destroy(*be);
		*im = NULL;
		*be = NULL;
		return fi_fail(e, "%s", msg);
	}
	return FI_OK;
}
