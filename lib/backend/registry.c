/* registry: choosing a backend by name, the one file above both cpu/ and cuda/ (their
 * constructors are in cpu/cpu.c and cuda/cuda.c). */
#include "backend.h"

#include <string.h>

fi_err fi_backend_create(const char *name, int n_threads, struct fi_backend **out)
{
	*out = NULL;
	if (!name || !strcmp(name, "auto")) {
#ifdef FI_HAVE_CUDA
		if (fi_backend_cuda_create(0, out) == FI_OK)
			return FI_OK;
#endif
		return fi_backend_cpu_create(n_threads, out);
	}
	if (!strcmp(name, "cpu"))
		return fi_backend_cpu_create(n_threads, out);
	if (!strcmp(name, "cuda")) {
#ifdef FI_HAVE_CUDA
		return fi_backend_cuda_create(0, out);
#else
		return fi_fail(FI_EUNSUPPORTED, "this build of fi has no CUDA support (built without nvcc)");
#endif
	}
	return fi_fail(FI_EINVAL, "unknown backend '%s' (expected auto, cuda or cpu)", name);
}
