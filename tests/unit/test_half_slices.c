/* The one-token half2 products' slices a row (backend/cuda/slices.h), checked without a GPU:
 * the 8B's decode shapes on 396 block slots (3 blocks on each of an H100's or H200's 132 SMs),
 * by the default doubling and by FI_HALF_BALANCE (the rounds it fills, its ties to fewer
 * slices), the bounds and bad input. */
#include "backend/cuda/slices.h"
#include "util.h"

#define SLOTS 396

/* Items of rows at S slices, item1 rows an item at S = 1; and the share of their rounds over
 * SLOTS blocks that they fill. */
static double fill_of(int64_t rows, int64_t item1, int S)
{
	const int64_t per = item1 / S, items = (rows + per - 1) / per;
	return (double)items / (double)((items + SLOTS - 1) / SLOTS * SLOTS);
}

START_TEST(doubling)
{
	/* S doubles while the items are fewer than the slots, up to the kernel's bound */
	ck_assert_int_eq(fi_half_slices(28672, 128, 8, SLOTS, 0), 2); /* INT4 gate and up: 448 */
	ck_assert_int_eq(fi_half_slices(6144, 128, 8, SLOTS, 0), 8);  /* INT4 q, k, v: 384 */
	ck_assert_int_eq(fi_half_slices(6144, 128, 4, SLOTS, 0), 4);  /* the bound */
	ck_assert_int_eq(fi_half_slices(4096, 16, 8, SLOTS, 0), 2);   /* FP8 o: 512 */
	ck_assert_int_eq(fi_half_slices(28672, 16, 4, SLOTS, 0), 1);  /* FP8 gate and up: 1,792 */
	ck_assert_int_eq(fi_half_slices(100, 128, 1, SLOTS, 0), 1);
}
END_TEST

START_TEST(int4_tensor_core_rows)
{
	/* gemv_q4m: 8 warps of 16 rows, at most 8 slices (K = 4096: 32 quads of 128 columns) */
	const int64_t item1 = 128;
	ck_assert_int_eq(fi_half_slices(28672, item1, 8, SLOTS, 1), 8); /* gate and up */
	ck_assert_int_eq(fi_half_slices(6144, item1, 8, SLOTS, 1), 8);  /* q, k, v */
	ck_assert_int_eq(fi_half_slices(4096, item1, 8, SLOTS, 1), 8);  /* o */
	/* gate and up: 448 items at S = 2 leave the second round 13% full; 1,792 at S = 8 fill
	 * five rounds to 90% */
	ck_assert(fill_of(28672, item1, 2) < 0.6);
	ck_assert(fill_of(28672, item1, 8) > 0.9);
	/* a bound of 2 slices (K = 512: 4 quads) is kept */
	ck_assert_int_eq(fi_half_slices(28672, item1, 2, SLOTS, 1), 1);
	ck_assert_int_eq(fi_half_slices(1000, item1, 2, SLOTS, 1), 2);
}
END_TEST

START_TEST(two_row_warps)
{
	/* gemv_f8h and gemv_q4kh: 8 warps of 2 rows */
	const int64_t item1 = 16;
	ck_assert_int_eq(fi_half_slices(4096, item1, 8, SLOTS, 1), 4); /* o, down: 86% */
	ck_assert(fill_of(4096, item1, 4) > 0.85 && fill_of(4096, item1, 2) < 0.65);
	ck_assert_int_eq(fi_half_slices(6144, item1, 8, SLOTS, 1), 1); /* q, k, v: 97% */
	/* gate and up (K = 4096: at most 4 slices): S = 4 fills 95% against 90% at S = 1,
	 * within 6%: the fewer items */
	ck_assert(fill_of(28672, item1, 4) > fill_of(28672, item1, 1));
	ck_assert_int_eq(fi_half_slices(28672, item1, 4, SLOTS, 1), 1);
	/* small launches, one round: each doubling doubles the blocks at work */
	ck_assert_int_eq(fi_half_slices(512, item1, 8, SLOTS, 1), 8);
}
END_TEST

START_TEST(bounds)
{
	/* one block's worth of rows or fewer, any bound: 1 */
	ck_assert_int_eq(fi_half_slices(1, 128, 8, SLOTS, 1), 1);
	ck_assert_int_eq(fi_half_slices(5, 16, 8, 1, 1), 1);
	/* never past smax, never past 8, a power of two */
	for (int64_t rows = 1; rows <= 70000; rows += 997)
		for (int smax = 1; smax <= 16; smax *= 2) {
			for (int bal = 0; bal < 2; bal++) {
				const int S = fi_half_slices(rows, 128, smax, SLOTS, bal);
				ck_assert(S >= 1 && S <= smax && S <= 8 && !(S & (S - 1)));
			}
		}
	/* nonsense sizes fall back to 1 rather than divide by zero */
	ck_assert_int_eq(fi_half_slices(0, 128, 8, SLOTS, 1), 1);
	ck_assert_int_eq(fi_half_slices(4096, 0, 8, SLOTS, 1), 1);
	ck_assert_int_eq(fi_half_slices(4096, 128, 8, 0, 1), 1);
	ck_assert_int_eq(fi_half_slices(4096, 128, 0, SLOTS, 1), 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("half_slices");
	TCase *tc = tcase_create("slices");
	tcase_add_test(tc, doubling);
	tcase_add_test(tc, int4_tensor_core_rows);
	tcase_add_test(tc, two_row_warps);
	tcase_add_test(tc, bounds);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
