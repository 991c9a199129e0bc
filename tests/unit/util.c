/* Helpers shared by the Check suites. */
#include "util.h"

#include "model/model.h"
#include "base/err.h"

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

float *fi_test_rows(struct fi_model *m, int s, const int32_t *ids, int n, int V, int one_by_one)
{
	float *lg = malloc(sizeof(float) * (size_t)n * V);
	int32_t *seq = malloc(sizeof *seq * (size_t)n);
	int8_t *want = malloc((size_t)n);
	int nr;
	ck_assert(lg && seq && want);
	for (int i = 0; i < n; i++)
		seq[i] = s, want[i] = 1;
	if (one_by_one) {
		for (int i = 0; i < n; i++) {
			struct fi_batch b = {1, ids + i, seq, NULL};
			ck_assert_msg(!fi_model_forward(m, &b, lg + (size_t)i * V, &nr), "%s",
				      fi_errmsg());
		}
	} else {
		struct fi_batch b = {n, ids, seq, want};
		ck_assert_msg(!fi_model_forward(m, &b, lg, &nr), "%s", fi_errmsg());
		ck_assert_int_eq(nr, n);
	}
	free(seq);
	free(want);
	return lg;
}

int fi_test_argmax(const float *l, int V)
{
	int b = 0;
	for (int i = 1; i < V; i++)
		if (l[i] > l[b])
			b = i;
	return b;
}
