"""Read tensors out of a pickle without running any code it names.

NVIDIA stylegan2-ada-pytorch snapshots are plain pickles whose modules are
``torch_utils.persistence`` objects: each one pickles as
``_reconstruct_persistent_obj({'type': 'class', 'version': ..., 'module_src': <python source>,
'class_name': ..., 'state': <the module's __dict__>})``, and loading it normally ``exec``s that source.

:func:`load_restricted` instead resolves every global the stream names through a fixed table:
tensor/storage rebuilders, ``OrderedDict``, ``set``, dtypes and numpy scalars are rebuilt; the
persistence reconstructor becomes an inert :class:`PersistentObject` that keeps ``class_name``
and ``state`` (never touching ``module_src``); every other global becomes an inert stub that only
records what it was called with. Nothing is imported and nothing from the file is executed.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from stylerig_au.errors import StylerigError


class PersistentObject:
    """An inert stand-in for a pickled module: its class name and its ``__dict__`` (``state``).

    For an ``nn.Module`` the state holds ``_parameters``, ``_buffers``, ``_modules`` and plain
    attributes; NVIDIA's persistent classes add ``_init_args`` and ``_init_kwargs``.
    """

    def __init__(self, class_name: str, state: dict | None = None, module: str = "") -> None:
        self.class_name = class_name
        self.module = module
        self.state: dict = dict(state) if isinstance(state, dict) else {}

    def __setstate__(self, state: Any) -> None:  # pickle BUILD on a copyreg-reconstructed object
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.state.update(state)

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name!r})"


class Stub:
    """An inert object standing for an unknown global (or the result of calling one)."""

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []

    def __new__(cls, *args: Any, **kwargs: Any) -> Stub:  # NEWOBJ calls cls.__new__(cls, *args)
        return object.__new__(cls)

    def __call__(self, *args: Any, **kwargs: Any) -> Stub:
        return _stub_class("call-result")(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<stub {self._qualname}>"


class StubDict(dict):
    """A plain dict standing for dict subclasses such as ``dnnlib.EasyDict``."""

    def __setstate__(self, state: Any) -> None:
        pass


class Unreadable:
    """A tensor that a known rebuilder could not rebuild (the error is kept for the message)."""

    def __init__(self, error: str) -> None:
        self.error = error


def _stub_class(qualname: str) -> type:
    return type("Stub", (Stub,), {"_qualname": qualname})


def _guard(fn):
    """Run a rebuilder on plain data only; any failure yields an :class:`Unreadable` instead of raising."""

    def wrapped(*args: Any) -> Any:
        if any(isinstance(a, (Stub, Unreadable)) for a in args):
            return Unreadable(f"{fn.__name__} got an unsupported argument")
        try:
            return fn(*args)
        except Exception as err:  # a malformed tensor must not stop the rest of the file from loading
            from stylerig_au.fileio import load_error_reason  # one line, and never torch's advice to load unsafely

            return Unreadable(f"{fn.__name__}: {load_error_reason(err)}")

    wrapped.__name__ = fn.__name__
    return wrapped


def _load_from_bytes(data: bytes) -> Any:
    # a storage pickled by torch: a legacy torch.save blob, read by torch's own weights-only loader
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("storage payload is not bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor_v2(storage: Any, offset: int, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise TypeError("not a torch storage")
    return torch._utils._rebuild_tensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any) -> torch.Tensor:
    return _rebuild_tensor_v2(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise TypeError("parameter data is not a tensor")
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # a tensor pickled with Python state or as a subclass: rebuild the plain tensor, drop type and state
    if func is not _REBUILD_TENSOR_V2 or not isinstance(args, tuple):
        raise TypeError("unsupported tensor subclass rebuild")
    return func(*args)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or not isinstance(data, (bytes, bytearray)) or dtype.hasobject:
        raise TypeError("unsupported numpy scalar")
    return np.frombuffer(bytes(data), dtype=dtype)[0].item()


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(spec, str):
        raise TypeError("unsupported numpy dtype")
    dtype = np.dtype(spec)
    if dtype.hasobject:
        raise TypeError("object dtypes are not allowed")
    return dtype


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    # The persistence meta carries the module source; we read the class name and state and drop the rest.
    if not isinstance(meta, dict):
        return PersistentObject("?")
    return PersistentObject(str(meta.get("class_name", "?")), meta.get("state"))


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # plain (non-persistent) pickled objects: keep the class name, fill the state on BUILD
    if isinstance(cls, type) and issubclass(cls, Stub):
        module, _, name = cls._qualname.rpartition(".")
        return PersistentObject(name, module=module)
    raise TypeError("unsupported reconstructor")


_REBUILD_TENSOR_V2 = _guard(_rebuild_tensor_v2)

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_TENSOR_V2,
    ("torch._utils", "_rebuild_tensor"): _guard(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _guard(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _guard(_rebuild_parameter),
    ("torch._tensor", "_rebuild_from_type_v2"): _guard(_rebuild_from_type_v2),
    ("torch.storage", "_load_from_bytes"): _guard(_load_from_bytes),
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("numpy", "dtype"): _guard(_numpy_dtype),
    ("numpy.core.multiarray", "scalar"): _guard(_numpy_scalar),
    ("numpy._core.multiarray", "scalar"): _guard(_numpy_scalar),
    ("copyreg", "_reconstructor"): _guard(_copyreg_reconstructor),
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): StubDict,
    ("dnnlib", "EasyDict"): StubDict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come only from a fixed table; unknown names become inert stubs."""

    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _stub_class(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported (is this a torch.save zip file?)")


def load_restricted(source: str | Path | BinaryIO) -> Any:
    """Unpickle ``source`` (a path or binary file) without importing or executing anything it names.

    Returns the unpickled structure, with :class:`PersistentObject`, :class:`Stub` and
    :class:`Unreadable` in place of objects it would otherwise construct.

    Raises:
        StylerigError: the file is missing or is not a readable pickle.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise StylerigError(f"checkpoint not found: {path}")
        with open(path, "rb") as f:
            return load_restricted(f)
    try:
        return RestrictedUnpickler(source).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise StylerigError(f"cannot read the pickle ({type(err).__name__}: {err}); "
                            "expected an NVIDIA stylegan2-ada-pytorch .pkl snapshot") from None
