/* Helpers shared by the Check suites. */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

const char *fi_test_corpus(const char *rel, const char *what)
{
	static char buf[8][4096];
	static int k;
	const char *root = getenv("FI_TEST_SHARED");
	char *p = buf[k++ % 8];
	snprintf(p, 4096, "%s/%s", root && *root ? root : "../shared", rel);
	if (access(p, R_OK)) {
		printf("SKIPPED: %s: corpus file %s absent\n", what, p);
		return NULL;
	}
	return p;
}

const char *fi_test_fixture(const char *rel)
{
	static char buf[8][4096];
	static int k;
	char *p = buf[k++ % 8];
	snprintf(p, 4096, "tests/fixtures/%s", rel);
	return p;
}

char *fi_test_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)n + 1);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	if (b) {
		b[n] = 0;
		if (len)
			*len = (size_t)n;
	}
	return b;
}

int fi_test_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int nf;
	if (!getenv("CK_FORK"))
		srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? 1 : 0;
}
