/* libFuzzer target: fi_st_parse_index. Shard names that pass must be unique, sorted and
 * plain file names (no directory parts), since fi_st_open_dir joins them to a directory. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char **files;
	int n;
	if (fi_st_parse_index((const char *)data, size, &files, &n) != FI_OK)
		return 0;
	if (n <= 0)
		abort();
	for (int i = 0; i < n; i++) {
		if (!files[i][0] || strchr(files[i], '/') || strstr(files[i], ".."))
			abort();
		if (i && strcmp(files[i - 1], files[i]) >= 0)
			abort();
	}
	fi_st_free_names(files, n);
	return 0;
}
