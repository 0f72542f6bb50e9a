"""The one place that decides device and compute dtype (auto-detected, overridable by environment).

SLMKIT_DEVICE=cpu|cuda|cuda:1|mps and SLMKIT_DTYPE=float32|bfloat16|float16 override the defaults.
"""

from __future__ import annotations

import os

import torch

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "f32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "f16": torch.float16,
}


def configure_compile(recompile_limit: int = 64) -> None:
    """Process-wide torch.compile settings slmkit's compiled engines need, set explicitly and idempotently.

    Every engine compiles its own steps, and dynamo counts them all against one function: a process with several
    engines (a target and a draft per k in a benchmark, a server beside an evaluator) passes dynamo's default of 8
    and falls back to eager. Called by Engine(compile=True); call it yourself before compiling other code."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, recompile_limit)


def threads_per_process(local_world: int) -> int:
    """CPU threads for each of local_world processes on one machine, so they share its cores."""
    return max(1, (os.cpu_count() or 1) // max(1, local_world))


def default_device() -> torch.device:
    """CUDA when present, else CPU; SLMKIT_DEVICE overrides."""
    name = os.environ.get("SLMKIT_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """Turn 'bf16', 'float32', ... (or a torch dtype) into a torch dtype; None means the default."""
    if name is None:
        return default_dtype()
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        from slmkit.errors import SlmError

        raise SlmError(f"unknown dtype {name!r}; use one of: float32, bfloat16, float16") from None


def default_dtype(device: torch.device | None = None) -> torch.dtype:
    """float32 unless SLMKIT_DTYPE says otherwise; parity and training start from float32."""
    name = os.environ.get("SLMKIT_DTYPE")
    return parse_dtype(name) if name else torch.float32


def supports_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls are native on this device (CUDA with bf16, or a CPU with AVX-512 BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def native_precision(device: torch.device | None = None) -> str:
    """"bf16" where the device (default: default_device()) computes it natively, else "fp32": the training
    precision for recipes written for bf16 on machines without it (a CPU without AVX-512 BF16/AMX, such as AMD
    Zen 3)."""
    return "bf16" if supports_bf16(device or default_device()) else "fp32"


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation: MemAvailable on Linux for the CPU, free memory on a CUDA device; None
    where it cannot be told (SLMKIT_MEMORY_AVAILABLE, in bytes, overrides)."""
    if os.environ.get("SLMKIT_MEMORY_AVAILABLE"):
        return int(os.environ["SLMKIT_MEMORY_AVAILABLE"])
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def synchronize(device: torch.device) -> None:
    """Wait for queued work on the device (a no-op on CPU); benchmarks call this before reading clocks."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
