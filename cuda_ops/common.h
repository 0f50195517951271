// Host-side declarations shared by the kernels and the torch binding. No CUDA or torch headers here,
// so the binding can include it and the kernels compile with plain `nvcc -c`.
#pragma once

#include <cstdint>

namespace stylerig {

// Element type of the tensors handed to a kernel (the binding maps torch dtypes onto these).
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// Text of a cudaError_t returned by a launcher (0 = success).
const char* cuda_error_text(int code);

}  // namespace stylerig
