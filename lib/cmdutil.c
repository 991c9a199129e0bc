/* cmdutil: option parsing and model opening shared by the commands. */
#include "cmdutil.h"

#include <errno.h>
#include <math.h>
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

fi_err fi_model_open_arg(const char *arg, struct fi_backend *be, struct fi_image **im,
			 struct fi_model **m)
{
	struct stat st;
	fi_err e;
	if (!stat(arg, &st) && S_ISDIR(st.st_mode))
		e = fi_store_open_dtype(arg, be->act == FI_DT_F32 ? FI_DT_F32 : FI_DT_BF16, im);
	else
		e = fi_store_open(arg, im);
	if (e)
		return e;
	return fi_model_load(&(*im)->config, &(*im)->set, be, m);
}
