/* slices.h: how many warps share a row's sum in the one-token half2 products
 * (kernels/gemv_half.cuh), as plain arithmetic the unit tests can check without a GPU. */
#ifndef FI_BACKEND_CUDA_SLICES_H
#define FI_BACKEND_CUDA_SLICES_H

#include <stdint.h>

/* The items of rows at S slices, item1 / S rows each (at least one). */
static inline int64_t fi_half_items(int64_t rows, int64_t item1, int S)
{
	const int64_t per = item1 / S > 0 ? item1 / S : 1;
	return (rows + per - 1) / per;
}

/* K slices a row (1, 2, 4 or 8, at most smax: the kernel's bound) for rows split in items of
 * item1 / S rows (a block's GH_WARPS / S warps of a kernel's rows a warp) taken by `slots`
 * blocks. By default S doubles while the items are fewer than the slots. With balance
 * (FI_HALF_BALANCE), the S whose items fill the most of their rounds over the slots; within 6%
 * of it the smaller, as more items cost a barrier and a store each. Doubling can leave a last
 * round nearly empty: gemv_q4m on the 8B's gate and up (item1 = 128 rows, 396 blocks on an
 * H100) stops at S = 2, 448 items, and 52 blocks take a second item alone on the card (ncu:
 * 57% of DRAM); balanced, S = 8, 1,792 items in five rounds 90% busy. */
static inline int fi_half_slices(int64_t rows, int64_t item1, int smax, int64_t slots,
				 int balance)
{
	double fill = 0;
	int S = 1;
	if (rows < 1 || item1 < 1 || slots < 1)
		return 1;
	if (!balance) {
		while (2 * S <= smax && S < 8 && fi_half_items(rows, item1, S) < slots)
			S *= 2;
		return S;
	}
	for (int s = 1; s <= smax && s <= 8; s *= 2) {
		const int64_t items = fi_half_items(rows, item1, s);
		const double f = (double)items / (double)((items + slots - 1) / slots * slots);
		if (f > fill * 1.06) {
			fill = f;
			S = s;
		}
	}
	return S;
}

#endif
