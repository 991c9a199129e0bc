/* Replays a fuzz target over every file of a corpus directory (make check), so the
 * libFuzzer targets double as regression tests without clang. Exit 0 when every input
 * returns without crashing; sanitizers (make check-asan) catch the rest. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	int n = 0;
	for (int a = 1; a < argc; a++) {
		DIR *d = opendir(argv[a]);
		struct dirent *e;
		if (!d) {
			fprintf(stderr, "replay: cannot open '%s'\n", argv[a]);
			return 1;
		}
		while ((e = readdir(d))) {
			char p[4096];
			struct stat st;
			FILE *f;
			uint8_t *buf;
			if (e->d_name[0] == '.')
				continue;
			snprintf(p, sizeof p, "%s/%s", argv[a], e->d_name);
			if (stat(p, &st) || !S_ISREG(st.st_mode) || !(f = fopen(p, "rb")))
				continue;
			buf = malloc((size_t)st.st_size + 1);
			if (buf && fread(buf, 1, (size_t)st.st_size, f) == (size_t)st.st_size)
				LLVMFuzzerTestOneInput(buf, (size_t)st.st_size);
			free(buf);
			fclose(f);
			n++;
		}
		closedir(d);
	}
	printf("%s: %d inputs replayed\n", argv[0], n);
	return 0;
}
