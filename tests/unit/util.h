/* Helpers shared by the Check suites. */
#ifndef FI_TEST_UTIL_H
#define FI_TEST_UTIL_H

#include <check.h>
#include <stddef.h>

/* Path of a file in the shared corpus ($FI_TEST_SHARED, default ../shared), or NULL (and a
 * "SKIPPED: <what>: corpus absent" line on stdout) when it does not exist. */
const char *fi_test_corpus(const char *rel, const char *what);
/* Path under tests/fixtures (the working directory is the repository root). */
const char *fi_test_fixture(const char *rel);
/* Reads a whole file; NULL on failure. *len gets the size; the buffer is NUL-terminated. */
char *fi_test_slurp(const char *path, size_t *len);
/* Runs a suite with CK_NOFORK unless CK_FORK is set; returns the process exit status. */
int fi_test_run(Suite *s);

#endif
