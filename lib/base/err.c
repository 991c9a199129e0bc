/* err: per-thread error detail. */
#include "err.h"

#include <stdio.h>
#include <string.h>

static const char *const names[FI_ENCODE_COUNT] = {
	[FI_OK] = "success",
	[FI_ENOMEM] = "out of memory",
	[FI_EIO] = "input/output error",
	[FI_EINVAL] = "invalid argument",
	[FI_EFORMAT] = "malformed input",
	[FI_ERANGE] = "value out of range",
	[FI_ENOTFOUND] = "not found",
	[FI_EUNSUPPORTED] = "not supported",
	[FI_EMISMATCH] = "mismatch",
	[FI_EEXIST] = "already exists",
	[FI_EFULL] = "no space left",
	[FI_EBUSY] = "resource busy",
	[FI_EDEVICE] = "device error",
	[FI_ESTATE] = "invalid state",
	[FI_EINTERRUPT] = "interrupted",
};

static _Thread_local char msg[1024];
static _Thread_local fi_err last;

const char *fi_strerror(fi_err e)
{
	if ((unsigned)e >= FI_ENCODE_COUNT || !names[e])
		return "unknown error";
	return names[e];
}

fi_err fi_vfail(fi_err e, const char *fmt, va_list ap)
{
	last = e;
	vsnprintf(msg, sizeof msg, fmt, ap);
	return e;
}

fi_err fi_fail(fi_err e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fi_vfail(e, fmt, ap);
	va_end(ap);
	return e;
}

fi_err fi_fail_ctx(fi_err e, const char *fmt, ...)
{
	char pre[512], old[sizeof msg];
	va_list ap;
	snprintf(old, sizeof old, "%s", msg[0] ? msg : fi_strerror(e));
	va_start(ap, fmt);
	vsnprintf(pre, sizeof pre, fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof msg, "%s: %s", pre, old);
	last = e;
	return e;
}

const char *fi_errmsg(void)
{
	return msg[0] ? msg : fi_strerror(last);
}

fi_err fi_errcode(void)
{
	return last;
}

void fi_clear_error(void)
{
	msg[0] = 0;
	last = FI_OK;
}
