// bias_act kernel: bias add + activation + gain + clamp in one elementwise pass, and its first and
// second derivatives (grad = 1, 2) so that double backward (R1 penalties) stays on the GPU.
#include "bias_act.h"
#include "common.cuh"

namespace stylerig {
namespace {

constexpr int kThreads = 256;

template <typename A> SR_HD A sigmoid(A v) { return A(1) / (A(1) + exp(-v)); }

// Value, first and second derivative of the activation at v.
template <typename A>
SR_HD void activation(int act, A v, A alpha, A& f, A& d1, A& d2) {
    const A selu_scale = A(1.0507009873554804934193349852946);
    const A selu_alpha = A(1.6732632423543772848170429916717);
    switch (act) {
        case kRelu: f = v > A(0) ? v : A(0); d1 = v > A(0) ? A(1) : A(0); d2 = A(0); break;
        case kLrelu: f = v > A(0) ? v : v * alpha; d1 = v > A(0) ? A(1) : alpha; d2 = A(0); break;
        case kTanh: {
            const A t = tanh(v);
            f = t; d1 = A(1) - t * t; d2 = A(-2) * t * d1;
            break;
        }
        case kSigmoid: {
            const A s = sigmoid(v);
            f = s; d1 = s * (A(1) - s); d2 = d1 * (A(1) - A(2) * s);
            break;
        }
        case kElu: {
            const A e = alpha * exp(v);
            f = v > A(0) ? v : e - alpha; d1 = v > A(0) ? A(1) : e; d2 = v > A(0) ? A(0) : e;
            break;
        }
        case kSelu: {
            const A e = selu_scale * selu_alpha * exp(v);
            f = v > A(0) ? selu_scale * v : e - selu_scale * selu_alpha;
            d1 = v > A(0) ? selu_scale : e;
            d2 = v > A(0) ? A(0) : e;
            break;
        }
        case kSoftplus: {  // beta 1, threshold 20 (torch's defaults)
            if (v > A(20)) { f = v; d1 = A(1); d2 = A(0); break; }
            const A s = sigmoid(v);
            f = log1p(exp(v)); d1 = s; d2 = s * (A(1) - s);
            break;
        }
        case kSwish: {
            const A s = sigmoid(v);
            f = v * s; d1 = s * (A(1) + v * (A(1) - s)); d2 = s * (A(1) - s) * (A(2) + v * (A(1) - A(2) * s));
            break;
        }
        default: f = v; d1 = A(1); d2 = A(0); break;  // kLinear
    }
}

// Output element i (see bias_act.h). Host + device, so tests/cuda_host can check it without a GPU.
template <typename T, typename I>
SR_HD T bias_act_element(const BiasActArgs& a, I i) {
    using A = typename AccType<T>::type;
    const T* __restrict__ x = static_cast<const T*>(a.x);
    const T* __restrict__ b = static_cast<const T*>(a.b);
    const T* __restrict__ ref = static_cast<const T*>(a.ref);
    const T* __restrict__ dy = static_cast<const T*>(a.dy);
    const A alpha = A(a.alpha), gain = A(a.gain), clamp = A(a.clamp);
    const I step = static_cast<I>(a.bias_step), len = static_cast<I>(a.bias_len);
    const A bias = b ? to_acc(b[(i / step) % len]) : A(0);
    A f, d1, d2, r;
    if (a.grad == 0) {
        activation<A>(a.act, to_acc(x[i]) + bias, alpha, f, d1, d2);
        r = f * gain;
        if (clamp >= A(0)) {
            const A rt = round_to<T>(r);
            r = rt > clamp ? clamp : (rt < -clamp ? -clamp : rt);
        }
    } else if (a.ref_is_y) {
        // Piecewise-linear activation with gain > 0 and no clamp: the output's sign tells the slope.
        const A yv = to_acc(ref[i]);
        const A slope = a.act == kLinear ? A(1) : (yv > A(0) ? A(1) : (a.act == kLrelu ? alpha : A(0)));
        r = to_acc(x[i]) * slope * gain;
    } else {
        activation<A>(a.act, to_acc(ref[i]) + bias, alpha, f, d1, d2);
        const A rt = round_to<T>(f * gain);  // the value the forward pass clamped
        const bool pass = clamp < A(0) || (rt <= clamp && rt >= -clamp);
        if (!pass) r = A(0);
        else if (a.grad == 1) r = to_acc(x[i]) * d1 * gain;
        else r = to_acc(x[i]) * to_acc(dy[i]) * d2 * gain;
    }
    return from_acc<T>(r);
}

// I: index type; 32-bit when the tensor allows it (64-bit division is many instructions on a GPU).
template <typename T, typename I>
__global__ void bias_act_kernel(const BiasActArgs a) {
    T* __restrict__ out = static_cast<T*>(a.out);
    const I n = static_cast<I>(a.n);
    for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += static_cast<I>(gridDim.x) * kThreads) {
        out[i] = bias_act_element<T, I>(a, i);
    }
}

template <typename T>
int launch(const BiasActArgs& a, cudaStream_t stream) {
    int64_t blocks = (a.n + kThreads - 1) / kThreads;
    if (blocks > 65536 * 8) blocks = 65536 * 8;  // grid-stride loop covers the rest
    // 32-bit indices while i + gridDim.x * kThreads cannot overflow.
    if (a.n + blocks * kThreads < INT32_MAX) {
        bias_act_kernel<T, int32_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
    } else {
        bias_act_kernel<T, int64_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
    }
    return static_cast<int>(cudaGetLastError());
}

}  // namespace

int bias_act_launch(const BiasActArgs& a, void* stream) {
    if (a.n <= 0) return 0;
    if (a.b && (a.bias_step <= 0 || a.bias_len <= 0)) return static_cast<int>(cudaErrorInvalidValue);
    if (a.ref_is_y && a.clamp >= 0) return static_cast<int>(cudaErrorInvalidValue);  // see bias_act.h
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (a.dtype) {
        case kFloat32: return launch<float>(a, s);
        case kFloat16: return launch<__half>(a, s);
        case kBFloat16: return launch<__nv_bfloat16>(a, s);
        case kFloat64: return launch<double>(a, s);
        default: return static_cast<int>(cudaErrorInvalidValue);
    }
}

}  // namespace stylerig
