/* gemv_qfused for the 6- and 8-bit types (FP8, Q8_0, Q6_K): kernels/gemv_qfused.cuh. */
#include "gemv_qfused.cuh"

QF_ENTRY(fi_cu_qf_fp8, FI_CQ_FP8)
QF_ENTRY(fi_cu_qf_i8, FI_CQ_I8)
QF_ENTRY(fi_cu_qf_q6k, FI_CQ_Q6K)
