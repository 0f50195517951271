"""Fused ops behind one signature each: a CUDA kernel (JIT-built on first CUDA use) and a PyTorch reference.

``impl='auto'`` uses the CUDA kernel for CUDA tensors when it builds, and the reference otherwise
(always for CPU tensors), except where the kernel cannot win: ``bias_act`` with a linear activation,
gain 1 and no clamp (a plain bias add, whose backward is free on the reference) stays on the
reference (:func:`~stylerig_au.ops.activation.kernel_can_win`). ``impl='ref'`` forces the reference; ``impl='cuda'`` forces the kernel and
raises :class:`~stylerig_au.errors.StylerigError` when it cannot be used. Importing this package
never compiles anything.
"""

from stylerig_au.ops.activation import ACTIVATIONS, bias_act
from stylerig_au.ops.jit import implementation_status
from stylerig_au.ops.upfirdn import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "downsample2d",
    "filter2d",
    "implementation_status",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
