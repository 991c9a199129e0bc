/* version: fi_version() of the public fi.h; FI_VERSION comes from the Makefile, which reads
 * it from fi.h's FI_VERSION_* (one place). */
#include "fi/fi.h"

const char *fi_version(void)
{
	return FI_VERSION;
}
