// bias_act launcher interface (host only; raw pointers, no torch types).
#pragma once

#include <cstdint>

#include "common.h"

namespace stylerig {

// Activation ids; must match ACTIVATIONS[...].cuda_id in stylerig_au/ops/activation.py.
enum Act : int {
    kLinear = 0, kRelu = 1, kLrelu = 2, kTanh = 3, kSigmoid = 4, kElu = 5, kSelu = 6, kSoftplus = 7, kSwish = 8
};

// grad == 0: out = clamp(act(x + b) * gain)
// grad == 1: out = x * d/dv[clamp(act(v) * gain)]   with x = dy and v taken from `ref`:
//            ref_is_y == 0: v = ref + b (ref is the forward input);
//            ref_is_y == 1: ref is the forward output (piecewise-linear activations, gain > 0, no clamp).
// grad == 2: out = x * dy * d2/dv2[act(v) * gain] * clamp mask, with x = d(dx), v = ref + b (ref_is_y == 0).
// The bias of element i is b[(i / bias_step) % bias_len].
// Clamp (as torch.clamp on a tensor of the storage type): the pre-clamp value r = act(v) * gain is first
// rounded to the storage type, then limited to [-clamp, clamp]; the gradient passes where the rounded r
// lies inside, bounds included. (A saved half output cannot tell "clamped" from "rounded onto the bound",
// hence no ref_is_y with a clamp.)
// Scalars are double so that float64 tensors are computed in double; float/half paths use them as float.
struct BiasActArgs {
    const void* x;
    const void* b;    // nullptr: no bias
    const void* ref;  // grad >= 1
    const void* dy;   // grad == 2
    void* out;
    int dtype;        // DType, shared by every tensor
    int64_t n;
    int64_t bias_step;
    int bias_len;
    int act, grad, ref_is_y;
    double alpha, gain, clamp;  // clamp < 0: no clamping
};

int bias_act_launch(const BiasActArgs& args, void* stream);

}  // namespace stylerig
