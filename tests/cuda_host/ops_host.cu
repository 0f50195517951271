// Host-side runner of the kernels' element math (no GPU needed): includes the kernel sources and calls
// their __host__ __device__ functions, bias_act_element and taps_of + filter_pixel, in plain loops.
// Built by tests/cuda_host/host_kernels.py with nvcc; tensors travel as raw little-endian files.
//
//   ops_host bias_act  DTYPE ACT GRAD REF_IS_Y ALPHA GAIN CLAMP N BIAS_STEP BIAS_LEN X B REF DY OUT
//   ops_host upfirdn2d DTYPE PLANES IN_H IN_W OUT_H OUT_W UP_X UP_Y DOWN_X DOWN_Y PAD_X0 PAD_Y0 F_H F_W
//                      SEPARABLE FLIP GAIN X F OUT
// DTYPE is a stylerig::DType code; '-' for an absent tensor; scalars are parsed with strtod (exact).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bias_act.cu"
#include "upfirdn2d.cu"

namespace {

std::vector<char> read_file(const char* path) {
    std::vector<char> data;
    if (std::strcmp(path, "-") == 0) return data;
    FILE* fp = std::fopen(path, "rb");
    if (!fp) { std::fprintf(stderr, "cannot read %s\n", path); std::exit(2); }
    char buf[65536];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, fp)) > 0) data.insert(data.end(), buf, buf + got);
    std::fclose(fp);
    return data;
}

void write_file(const char* path, const void* data, size_t bytes) {
    FILE* fp = std::fopen(path, "wb");
    if (!fp || std::fwrite(data, 1, bytes, fp) != bytes) { std::fprintf(stderr, "cannot write %s\n", path); std::exit(2); }
    std::fclose(fp);
}

const void* ptr(const std::vector<char>& v) { return v.empty() ? nullptr : v.data(); }

template <typename T>
void run_bias_act(stylerig::BiasActArgs a, const char* out_path) {
    std::vector<T> out(static_cast<size_t>(a.n));
    for (int64_t i = 0; i < a.n; ++i) out[i] = stylerig::bias_act_element<T, int64_t>(a, i);
    write_file(out_path, out.data(), out.size() * sizeof(T));
}

template <typename T>
void run_upfirdn2d(stylerig::Upfirdn2dArgs a, const char* out_path) {
    std::vector<T> out(static_cast<size_t>(a.planes) * a.out_h * a.out_w);
    const T* x = static_cast<const T*>(a.x);
    for (int oy = 0; oy < a.out_h; ++oy) {
        for (int ox = 0; ox < a.out_w; ++ox) {
            const stylerig::Taps t = stylerig::taps_of(a, oy, ox);
            for (int64_t p = 0; p < a.planes; ++p) {
                out[(p * a.out_h + oy) * a.out_w + ox] =
                    stylerig::from_acc<T>(stylerig::filter_pixel<T>(a, t, x + p * a.in_h * a.in_w));
            }
        }
    }
    write_file(out_path, out.data(), out.size() * sizeof(T));
}

template <template <typename> class Run, typename Args>
void dispatch(int dtype, const Args& a, const char* out) {
    switch (dtype) {
        case stylerig::kFloat32: Run<float>::go(a, out); break;
        case stylerig::kFloat16: Run<__half>::go(a, out); break;
        case stylerig::kBFloat16: Run<__nv_bfloat16>::go(a, out); break;
        case stylerig::kFloat64: Run<double>::go(a, out); break;
        default: std::fprintf(stderr, "bad dtype %d\n", dtype); std::exit(2);
    }
}

template <typename T> struct BiasActRun { static void go(const stylerig::BiasActArgs& a, const char* o) { run_bias_act<T>(a, o); } };
template <typename T> struct UpfirdnRun { static void go(const stylerig::Upfirdn2dArgs& a, const char* o) { run_upfirdn2d<T>(a, o); } };

long long as_int(const char* s) { return std::strtoll(s, nullptr, 10); }
double as_double(const char* s) { return std::strtod(s, nullptr); }

}  // namespace

int main(int argc, char** argv) {
    if (argc == 17 && std::strcmp(argv[1], "bias_act") == 0) {
        stylerig::BiasActArgs a{};
        const int dtype = static_cast<int>(as_int(argv[2]));
        a.dtype = dtype;
        a.act = static_cast<int>(as_int(argv[3]));
        a.grad = static_cast<int>(as_int(argv[4]));
        a.ref_is_y = static_cast<int>(as_int(argv[5]));
        a.alpha = as_double(argv[6]);
        a.gain = as_double(argv[7]);
        a.clamp = as_double(argv[8]);
        a.n = as_int(argv[9]);
        a.bias_step = as_int(argv[10]);
        a.bias_len = static_cast<int>(as_int(argv[11]));
        const std::vector<char> x = read_file(argv[12]), b = read_file(argv[13]), ref = read_file(argv[14]),
                                dy = read_file(argv[15]);
        a.x = ptr(x); a.b = ptr(b); a.ref = ptr(ref); a.dy = ptr(dy);
        dispatch<BiasActRun>(dtype, a, argv[16]);
        return 0;
    }
    if (argc == 22 && std::strcmp(argv[1], "upfirdn2d") == 0) {
        stylerig::Upfirdn2dArgs a{};
        const int dtype = static_cast<int>(as_int(argv[2]));
        a.dtype = dtype;
        a.planes = as_int(argv[3]);
        int* fields[] = {&a.in_h, &a.in_w, &a.out_h, &a.out_w, &a.up_x, &a.up_y, &a.down_x, &a.down_y,
                         &a.pad_x0, &a.pad_y0, &a.f_h, &a.f_w, &a.separable, &a.flip};
        for (int k = 0; k < 14; ++k) *fields[k] = static_cast<int>(as_int(argv[4 + k]));
        a.gain = as_double(argv[18]);
        const std::vector<char> x = read_file(argv[19]), f = read_file(argv[20]);
        a.x = ptr(x); a.f = ptr(f);
        dispatch<UpfirdnRun>(dtype, a, argv[argc - 1]);
        return 0;
    }
    std::fprintf(stderr, "usage: see the top of ops_host.cu\n");
    return 2;
}
