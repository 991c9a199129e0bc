/* cmdutil: option parsing and model opening shared by the commands. */
#include "cmdutil.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
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

struct bstart {
	const char *name;
	int threads;
	struct fi_backend *be;
	fi_err err;
	char msg[1024];
};

static void *backend_start(void *arg)
{
	struct bstart *b = arg;
	if ((b->err = fi_backend_create(b->name, b->threads, &b->be)))
		snprintf(b->msg, sizeof b->msg, "%s", fi_errmsg()); /* details are per thread */
	return NULL;
}

fi_err fi_open_backend_model(const char *backend, int threads, const char *arg,
			     struct fi_backend **be, struct fi_image **im, struct fi_model **m,
			     int *be_failed)
{
	struct bstart bs = {.name = backend, .threads = threads};
	struct stat st;
	pthread_t t;
	fi_err e = FI_OK;
	*be = NULL;
	*im = NULL;
	*m = NULL;
	*be_failed = 0;
	/* A Hugging Face directory is converted in the backend's precision: no overlap. */
	int dir = !stat(arg, &st) && S_ISDIR(st.st_mode);
	int threaded = !dir && !pthread_create(&t, NULL, backend_start, &bs);
	if (!threaded) {
		backend_start(&bs);
	} else {
		/* The image is not prefaulted meanwhile: mapping its pages in while CUDA starts
		 * slows the context creation several times over (tests/gpu/NOTES.md). */
		e = fi_store_open(arg, im);
		pthread_join(t, NULL);
	}
	if (bs.err) {
		if (*im)
			fi_image_close(*im);
		*im = NULL;
		*be_failed = 1;
		return fi_fail(bs.err, "%s", bs.msg);
	}
	*be = bs.be;
	if (!e && !*im)
		e = dir ? fi_store_open_dtype(arg, bs.be->act == FI_DT_F32 ? FI_DT_F32 : FI_DT_BF16, im)
			: fi_store_open(arg, im);
	if (!e)
		e = fi_model_load(&(*im)->config, &(*im)->set, bs.be, m);
	if (e) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", fi_errmsg());
		if (*im)
			fi_image_close(*im);
		fi_backend_destroy(bs.be);
		*im = NULL;
		*be = NULL;
		return fi_fail(e, "%s", msg);
	}
	return FI_OK;
}
