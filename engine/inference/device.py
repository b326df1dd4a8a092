"""Compute devices for inference: CUDA, then Apple MPS, then the CPU, with a user override."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from typing import Iterator, Optional

from ..errors import ModelError

log = logging.getLogger(__name__)


def available_devices() -> list[str]:
    """Devices this machine can run a model on, best first, e.g. ``["cuda:0", "mps", "cpu"]``."""
    import torch

    out: list[str] = []
    try:
        if torch.cuda.is_available():
            out.extend(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    except Exception as exc:  # noqa: BLE001 - a broken driver must not stop CPU inference
        log.warning("CUDA is installed but unusable: %s", exc)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(device: Optional[str] = "auto"):
    """A ``torch.device`` for a user's choice ("auto", "cpu", "cuda", "cuda:1", "mps", "gpu")."""
    import torch

    choice = (device or "auto").strip().lower()
    avail = available_devices()
    if choice == "auto":
        return torch.device(avail[0])
    if choice == "gpu":
        gpus = [d for d in avail if d != "cpu"]
        if not gpus:
            raise ModelError("No GPU is available on this computer; choose the CPU (device 'cpu' or 'auto').")
        return torch.device(gpus[0])
    if choice == "cuda":
        choice = "cuda:0"
    if choice not in avail:
        if not re.fullmatch(r"cpu|mps|cuda:\d+", choice):
            raise ModelError(f"'{device}' is not a device name: choose auto, cpu, gpu, cuda, cuda:N or mps "
                             f"(here: {', '.join(avail)}).")
        raise ModelError(f"The device '{device}' is not available here (available: {', '.join(avail)}).")
    return torch.device(choice)


def default_threads() -> int:
    """CPU threads for torch: all cores the process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS/Windows
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[int]:
    """Set torch's intra-op thread count for the block and restore the previous value afterwards."""
    import torch

    before = torch.get_num_threads()
    n = int(n) if n else default_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures (torch raises several types for them)."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "mps backend out of memory" in msg
                                              or "can't allocate memory" in msg)


def empty_device_cache(device) -> None:
    import torch

    if device is None:
        return
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        with contextlib.suppress(Exception):
            torch.mps.empty_cache()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16, read from
    /proc/cpuinfo on Linux) and torch's oneDNN backend can use it. Elsewhere bfloat16 would be emulated
    (slower than float32), so the CPU path stays in float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    try:
        import torch

        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
