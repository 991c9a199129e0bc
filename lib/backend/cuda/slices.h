/* slices.h: how many warps share a row's sum in the one-token half2 products
 * (kernels/gemv_half.cuh), as plain arithmetic the unit tests can check without a GPU. */
#ifndef FI_BACKEND_CUDA_SLICES_H
#define FI_BACKEND_CUDA_SLICES_H

#include <stdint.h>

/* FI_HALF_BALANCE: of S = 1, 2, 4, 8 up to smax, the one whose items (item1 / S rows each: an
 * item is a block's GH_WARPS / S warps of a kernel's rows a warp) fill the most of their
 * rounds over `slots` blocks; within 6% of it the smaller, as more items cost a barrier and a
 * store each. The kernels' own rules double S only until the items reach the slots, which can
 * leave a last round nearly empty: gemv_q4m on the 8B's gate and up (item1 = 128 rows, 396
 * blocks on an H100) stops at S = 2, 448 items, and 52 blocks take a second item alone on the
 * card (ncu: 57% of DRAM); here S = 8, 1,792 items in five rounds 90% busy. */
static inline int fi_half_slices_fill(int64_t rows, int64_t item1, int smax, int64_t slots)
{
	double fill = 0;
	int S = 1;
	if (rows < 1 || item1 < 1 || slots < 1)
		return 1;
	for (int s = 1; s <= smax && s <= 8; s *= 2) {
		const int64_t per = item1 / s > 0 ? item1 / s : 1, items = (rows + per - 1) / per;
		const double f = (double)items / (double)((items + slots - 1) / slots * slots);
		if (f > fill * 1.06) {
			fill = f;
			S = s;
		}
	}
	return S;
}

#endif
