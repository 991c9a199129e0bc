/* random: the values of random weights (backend.h): a counter-based generator, so any
 * element can be made anywhere (a CUDA thread, a CPU loop) from its index alone. */
#include <math.h>

#include "backend.h"

static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

uint64_t fi_random_name_hash(uint64_t seed, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)name; p && *p; p++)
		h = (h ^ *p) * 0x100000001b3ull;
	return splitmix64(h ^ splitmix64(seed));
}

float fi_random_weight(uint64_t name_hash, uint64_t i, int64_t cols, int ndim)
{
	/* 24 random bits -> u in [-1, 1) exactly representable in f32 */
	float u = (float)(int32_t)(splitmix64(name_hash + i) >> 40) / 8388608.0f - 1.0f;
	if (ndim < 2)
		return 1.0f + 0.1f * u;
	return u * sqrtf(3.0f / (float)(cols > 0 ? cols : 1));
}

void fi_random_fill_f32(float *out, uint64_t name_hash, uint64_t n, int64_t cols, int ndim)
{
	for (uint64_t i = 0; i < n; i++)
		out[i] = fi_random_weight(name_hash, i, cols, ndim);
}
