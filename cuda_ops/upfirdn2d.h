// upfirdn2d launcher interface (host only; raw pointers, no torch types).
#pragma once

#include <cstdint>

#include "common.h"

namespace stylerig {

// y[p, oy, ox] = gain * sum_{ty, tx} w[ty, tx] * U[p, oy*down_y + ty - pad_y0, ox*down_x + tx - pad_x0]
// where U is x upsampled by zero insertion (U[k*up] = x[k], zero elsewhere and outside the image),
// and the correlation weights w come from the filter f (float64 when dtype is kFloat64, else float32;
// weights and sums are computed in that type, so float64 tensors are filtered in double):
//   separable == 0: f is [f_h, f_w],            w[ty, tx] = f[r(ty), r(tx)]
//   separable == 1: f is [f_w] (f_h == f_w),    w[ty, tx] = f[r(ty)] * f[r(tx)]
// with r(t) = t, or the reversed index when `flip` is set (flip = 1 gives a true convolution with f).
struct Upfirdn2dArgs {
    const void* x;     // [planes, in_h, in_w], contiguous, element type `dtype`
    const void* f;     // filter (see above), contiguous, on the same device
    void* y;           // [planes, out_h, out_w], contiguous, element type `dtype`
    int dtype;         // DType
    int64_t planes;    // N * C
    int in_h, in_w, out_h, out_w;
    int up_x, up_y, down_x, down_y;
    int pad_x0, pad_y0;  // leading padding after upsampling (negative crops)
    int f_h, f_w;
    int separable, flip;
    double gain;
};

// Launches on `stream` (a cudaStream_t); returns a cudaError_t (0 on success).
int upfirdn2d_launch(const Upfirdn2dArgs& args, void* stream);

}  // namespace stylerig
