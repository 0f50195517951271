// upfirdn2d kernel: one thread per output pixel, visiting only the filter taps that land on
// non-zero (non-inserted) samples, so an up=2 pass costs a quarter of the naive taps.
#include "common.cuh"
#include "upfirdn2d.h"

namespace stylerig {
namespace {

constexpr int kBlockX = 32;
constexpr int kBlockY = 8;
constexpr int kMaxGridZ = 65535;

// The filter taps of output pixel (oy, ox) that land on real (non-inserted, inside) samples.
struct Taps {
    int ty_begin, ty_end, tx_begin, tx_end;  // tap ranges, stepping by up_y / up_x
    int iy_begin, ix_begin;                  // input row / column under the first tap; +1 per further tap
};

// Along one axis: the first tap with a real sample under it (k + tap a multiple of `up` and >= 0, where k is
// the upsampled coordinate under tap 0) and that sample's input index.
SR_HD void first_tap(int k, int up, int& tap, int& index) {
    if (up == 1) {  // every tap lands on a sample: no integer divisions (blur and downsampling passes)
        tap = k < 0 ? -k : 0;
        index = k + tap;
        return;
    }
    tap = pos_mod(-k, up);
    if (k + tap < 0) tap += ((-(k + tap) + up - 1) / up) * up;  // skip taps above / left of the image
    index = (k + tap) / up;  // exact division
}

SR_HD Taps taps_of(const Upfirdn2dArgs& a, int oy, int ox) {
    Taps t;
    const int ky = oy * a.down_y - a.pad_y0;
    const int kx = ox * a.down_x - a.pad_x0;
    first_tap(ky, a.up_y, t.ty_begin, t.iy_begin);
    first_tap(kx, a.up_x, t.tx_begin, t.ix_begin);
    t.ty_end = min(a.f_h, a.in_h * a.up_y - ky);  // stop at taps below / right of the image
    t.tx_end = min(a.f_w, a.in_w * a.up_x - kx);
    return t;
}

// One output value from plane xp (see upfirdn2d.h), in the accumulation type (double for float64).
// Host + device, so tests/cuda_host can check it without a GPU.
template <typename T>
SR_HD typename AccType<T>::type filter_pixel(const Upfirdn2dArgs& a, const Taps& t, const T* __restrict__ xp) {
    using Acc = typename AccType<T>::type;  // also the filter's element type
    const Acc* __restrict__ f = static_cast<const Acc*>(a.f);
    const Acc gain = static_cast<Acc>(a.gain);
    Acc acc = 0;
    for (int ty = t.ty_begin, iy = t.iy_begin; ty < t.ty_end; ty += a.up_y, ++iy) {
        const T* __restrict__ row = xp + static_cast<int64_t>(iy) * a.in_w;
        const int ry = a.flip ? a.f_h - 1 - ty : ty;
        const Acc wy = a.separable ? load_ro(f + ry) * gain : gain;
        const Acc* __restrict__ frow = a.separable ? f : f + ry * a.f_w;
        for (int tx = t.tx_begin, ix = t.ix_begin; tx < t.tx_end; tx += a.up_x, ++ix) {
            const int rx = a.flip ? a.f_w - 1 - tx : tx;
            acc += wy * load_ro(frow + rx) * to_acc(row[ix]);
        }
    }
    return acc;
}

template <typename T>
__global__ void upfirdn2d_kernel(const Upfirdn2dArgs a) {
    const int ox = blockIdx.x * kBlockX + threadIdx.x;
    const int oy = blockIdx.y * kBlockY + threadIdx.y;
    if (ox >= a.out_w || oy >= a.out_h) return;

    const T* __restrict__ x = static_cast<const T*>(a.x);
    T* __restrict__ y = static_cast<T*>(a.y);
    const Taps t = taps_of(a, oy, ox);
    const int64_t in_plane = static_cast<int64_t>(a.in_h) * a.in_w;
    const int64_t out_plane = static_cast<int64_t>(a.out_h) * a.out_w;
    for (int64_t p = blockIdx.z; p < a.planes; p += gridDim.z) {
        y[p * out_plane + static_cast<int64_t>(oy) * a.out_w + ox] = from_acc<T>(filter_pixel<T>(a, t, x + p * in_plane));
    }
}

template <typename T>
int launch(const Upfirdn2dArgs& a, cudaStream_t stream) {
    const dim3 block(kBlockX, kBlockY, 1);
    const int64_t z = a.planes < kMaxGridZ ? a.planes : kMaxGridZ;
    const dim3 grid((a.out_w + kBlockX - 1) / kBlockX, (a.out_h + kBlockY - 1) / kBlockY, static_cast<unsigned>(z));
    upfirdn2d_kernel<T><<<grid, block, 0, stream>>>(a);
    return static_cast<int>(cudaGetLastError());
}

}  // namespace

int upfirdn2d_launch(const Upfirdn2dArgs& a, void* stream) {
    if (a.planes <= 0 || a.out_h <= 0 || a.out_w <= 0) return 0;
    if (a.out_h > 65535 * kBlockY) return static_cast<int>(cudaErrorInvalidConfiguration);
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    switch (a.dtype) {
        case kFloat32: return launch<float>(a, s);
        case kFloat16: return launch<__half>(a, s);
        case kBFloat16: return launch<__nv_bfloat16>(a, s);
        case kFloat64: return launch<double>(a, s);
        default: return static_cast<int>(cudaErrorInvalidValue);
    }
}

const char* cuda_error_text(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace stylerig
