// Device helpers: accumulate in float (double for float64) whatever the storage type is.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "common.h"

namespace stylerig {

template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

// Host + device: the element math also runs in tests/cuda_host (a CPU-only check of the kernels' arithmetic).
#define SR_HD __host__ __device__ __forceinline__

SR_HD float to_acc(float v) { return v; }
SR_HD double to_acc(double v) { return v; }
SR_HD float to_acc(__half v) { return __half2float(v); }
SR_HD float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> SR_HD T from_acc(typename AccType<T>::type v);
template <> SR_HD float from_acc<float>(float v) { return v; }
template <> SR_HD double from_acc<double>(double v) { return v; }
template <> SR_HD __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> SR_HD __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// v rounded to the storage type T and back: what a T tensor holding v holds (identity for float, double).
template <typename T> SR_HD typename AccType<T>::type round_to(typename AccType<T>::type v) {
    return to_acc(from_acc<T>(v));
}

// Read-only load through the texture cache on the device, a plain load on the host.
template <typename V> SR_HD V load_ro(const V* p) {
#ifdef __CUDA_ARCH__
    return __ldg(p);
#else
    return *p;
#endif
}

// Non-negative remainder (C++ `%` keeps the dividend's sign).
SR_HD int pos_mod(int a, int m) {
    int r = a % m;
    return r < 0 ? r + m : r;
}

}  // namespace stylerig
