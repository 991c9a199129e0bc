/* backend: what every backend shares below its own folder: ending one through its op table
 * (registry.c chooses and creates it). */
#include "backend.h"

void fi_backend_destroy(struct fi_backend *be)
{
	if (be && be->ops && be->ops->destroy)
		be->ops->destroy(be);
}
