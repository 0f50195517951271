// torch binding of the fused ops: checks tensors, maps dtypes, calls the raw-pointer launchers on
// torch's current stream. Compiled only by the JIT loader (stylerig_au/ops/jit.py) on CUDA torch.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "bias_act.h"
#include "common.h"
#include "upfirdn2d.h"

namespace {

int dtype_code(const torch::Tensor& t) {
    switch (t.scalar_type()) {
        case torch::kFloat: return stylerig::kFloat32;
        case torch::kHalf: return stylerig::kFloat16;
        case torch::kBFloat16: return stylerig::kBFloat16;
        case torch::kDouble: return stylerig::kFloat64;
        default: TORCH_CHECK(false, "stylerig_au ops support float16, bfloat16, float32 and float64, got ", t.scalar_type());
    }
    return -1;
}

void check_cuda_contiguous(const torch::Tensor& t, const char* name) {
    TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// f: float64 for float64 x, else float32; 2-D [fh, fw], or 1-D [fw] with separable = true.
// flip = true gives a true convolution.
torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, bool separable, bool flip, double gain, int64_t up_x,
                        int64_t up_y, int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_y0, int64_t out_h,
                        int64_t out_w) {
    check_cuda_contiguous(x, "x");
    check_cuda_contiguous(f, "filter");
    TORCH_CHECK(x.dim() == 4, "x must be [N, C, H, W]");
    const auto f_type = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
    TORCH_CHECK(f.scalar_type() == f_type && f.dim() == (separable ? 1 : 2),
                "filter must be float64 for float64 x, else float32; 1-D if separable else 2-D");
    TORCH_CHECK(f.device() == x.device(), "filter and x must be on the same device");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "factors must be >= 1");
    TORCH_CHECK(out_h >= 1 && out_w >= 1, "output must not be empty");
    TORCH_CHECK(x.size(2) * up_y < INT32_MAX && x.size(3) * up_x < INT32_MAX, "image too large");
    const c10::cuda::OptionalCUDAGuard guard(x.device());
    auto y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
    stylerig::Upfirdn2dArgs a{};
    a.x = x.data_ptr();
    a.f = f.data_ptr();
    a.y = y.data_ptr();
    a.dtype = dtype_code(x);
    a.planes = x.size(0) * x.size(1);
    a.in_h = static_cast<int>(x.size(2));
    a.in_w = static_cast<int>(x.size(3));
    a.out_h = static_cast<int>(out_h);
    a.out_w = static_cast<int>(out_w);
    a.up_x = static_cast<int>(up_x);
    a.up_y = static_cast<int>(up_y);
    a.down_x = static_cast<int>(down_x);
    a.down_y = static_cast<int>(down_y);
    a.pad_x0 = static_cast<int>(pad_x0);
    a.pad_y0 = static_cast<int>(pad_y0);
    a.f_w = static_cast<int>(f.size(-1));
    a.f_h = separable ? a.f_w : static_cast<int>(f.size(0));
    a.separable = separable ? 1 : 0;
    a.flip = flip ? 1 : 0;
    a.gain = gain;
    const int err = stylerig::upfirdn2d_launch(a, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == 0, "upfirdn2d kernel launch failed: ", stylerig::cuda_error_text(err));
    return y;
}

// b, ref, dy may be empty tensors (numel 0) when unused.
torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor ref, torch::Tensor dy, int64_t dim, int64_t act,
                       int64_t grad, bool ref_is_y, double alpha, double gain, double clamp) {
    check_cuda_contiguous(x, "x");
    const c10::cuda::OptionalCUDAGuard guard(x.device());
    stylerig::BiasActArgs a{};
    a.dtype = dtype_code(x);
    if (b.numel() > 0) {
        check_cuda_contiguous(b, "b");
        TORCH_CHECK(b.dim() == 1 && dim >= 0 && dim < x.dim() && b.size(0) == x.size(dim), "bias must match x.shape[dim]");
        TORCH_CHECK(b.scalar_type() == x.scalar_type(), "bias must have x's dtype");
        int64_t step = 1;
        for (int64_t i = dim + 1; i < x.dim(); ++i) step *= x.size(i);
        a.b = b.data_ptr();
        a.bias_step = step;
        a.bias_len = static_cast<int>(b.size(0));
    }
    for (const torch::Tensor* t : {&ref, &dy}) {
        if (t->numel() > 0) {
            check_cuda_contiguous(*t, "ref/dy");
            TORCH_CHECK(t->sizes() == x.sizes() && t->scalar_type() == x.scalar_type(), "ref/dy must match x");
        }
    }
    TORCH_CHECK(grad == 0 || ref.numel() > 0, "grad >= 1 needs ref");
    TORCH_CHECK(grad != 2 || (dy.numel() > 0 && !ref_is_y), "grad == 2 needs dy and the forward input as ref");
    TORCH_CHECK(!ref_is_y || clamp < 0, "ref_is_y cannot be used with a clamp (see bias_act.h)");
    auto out = torch::empty_like(x);
    a.x = x.data_ptr();
    a.ref = ref.numel() > 0 ? ref.data_ptr() : nullptr;
    a.dy = dy.numel() > 0 ? dy.data_ptr() : nullptr;
    a.out = out.data_ptr();
    a.n = x.numel();
    a.act = static_cast<int>(act);
    a.grad = static_cast<int>(grad);
    a.ref_is_y = ref_is_y ? 1 : 0;
    a.alpha = alpha;  // double all the way: float64 tensors are computed in double
    a.gain = gain;
    a.clamp = clamp;
    const int err = stylerig::bias_act_launch(a, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == 0, "bias_act kernel launch failed: ", stylerig::cuda_error_text(err));
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "upsample, pad, FIR filter, downsample (NCHW)");
    m.def("bias_act", &bias_act, "bias + activation + gain + clamp, and its derivatives");
}
