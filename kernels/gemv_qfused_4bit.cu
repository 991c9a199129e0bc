/* gemv_qfused for the 4- and 5-bit types (INT4, Q4_K, Q5_K): kernels/gemv_qfused.cuh. */
#include "gemv_qfused.cuh"

QF_ENTRY(fi_cu_qf_int4, FI_CQ_INT4)
QF_ENTRY(fi_cu_qf_q4k, FI_CQ_Q4K)
QF_ENTRY(fi_cu_qf_q5k, FI_CQ_Q5K)
