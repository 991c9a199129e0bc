/* Helpers shared by the Check suites. */
#ifndef FI_TEST_UTIL_H
#define FI_TEST_UTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* Path of a file in the shared corpus ($FI_TEST_SHARED, default ../shared), or NULL (and a
 * "SKIPPED: <what>: corpus absent" line on stdout) when it does not exist. */
const char *fi_test_corpus(const char *rel, const char *what);
/* Path under tests/fixtures (the working directory is the repository root). */
const char *fi_test_fixture(const char *rel);
/* Reads a whole file; NULL on failure. *len gets the size; the buffer is NUL-terminated. */
char *fi_test_slurp(const char *path, size_t *len);
/* Runs a suite with CK_NOFORK unless CK_FORK is set; returns the process exit status. */
int fi_test_run(Suite *s);

struct fi_model;
/* Logits [n, V] of ids[0..n) teacher-forced in sequence s of m: in one forward, or one token
 * a forward (the decode path); a failed forward fails the test. The caller frees them. */
float *fi_test_rows(struct fi_model *m, int s, const int32_t *ids, int n, int V, int one_by_one);
/* The index of the largest of l[0..V). */
int fi_test_argmax(const float *l, int V);

#endif
