"""The named precisions: one name per precision everywhere (the CLI's flags, results, the report's rows).

A precision is a compute dtype and, for the quantised ones, what slmkit.quant does to the weights: the block
linears at int8 (per output channel) or int4 (symmetric, groups of 32 unless asked otherwise), and with "+head"
the output head too (int8 per channel; an untied copy when it shares the embedding). `slm quantize --bits 8` is
"int8", `--bits 8 --head` is "int8+head"; `slm eval --precision` and `slm bench --precisions` take the same names.
llama.cpp's file types keep their own names (f32, f16, q8_0, q4_0, q4_1); `llamacpp` lists the ones that stand
beside each precision in `slm bench`.
"""

from __future__ import annotations

from dataclasses import dataclass

from slmkit.errors import SlmError


@dataclass(frozen=True)
class Precision:
    name: str
    dtype: str  # the compute dtype (a torch dtype's name)
    bits: int | None = None  # weight-only quantisation of the block linears (None: the float weights)
    head: bool = False  # the output head quantised too
    llamacpp: tuple[str, ...] = ()  # llama.cpp file types that stand beside it

    @property
    def quantised(self) -> bool:
        return self.bits is not None

    def quant_spec(self, group_size: int = 32, symmetric: bool = True):
        """The QuantSpec that makes this precision from float weights (None for the float precisions)."""
        from slmkit.quant.quantize import QuantSpec

        if self.bits is None:
            return None
        return QuantSpec(self.bits, group_size if self.bits == 4 else None, symmetric if self.bits == 4 else True,
                         self.head)


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", "float32", llamacpp=("f32",)),
    Precision("bf16", "bfloat16", llamacpp=("f16",)),
    Precision("fp16", "float16", llamacpp=("f16",)),
    Precision("int8", "float32", 8, False, ("q8_0",)),
    Precision("int8+head", "float32", 8, True, ("q8_0",)),
    Precision("int4", "float32", 4, False, ("q4_0", "q4_1")),
    Precision("int4+head", "float32", 4, True, ("q4_0", "q4_1")),
)}
FLOAT_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def precision(name: str) -> Precision:
    """The precision of that name; an SlmError listing the names otherwise."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise SlmError(f"unknown precision {name}; choose from {', '.join(PRECISIONS)}") from None


def name_of(dtype: str, spec=None) -> str:
    """The precision name of a model computing in `dtype` (torch's name) with quantisation `spec` (or None)."""
    dtype = str(dtype).removeprefix("torch.")
    if spec is None:
        return FLOAT_DTYPES.get(dtype, dtype)
    return f"int{spec.bits}" + ("+head" if spec.head else "")


def model_precision(model) -> str:
    """The precision name of a built slmkit model (its embedding's dtype and its quant_spec)."""
    return name_of(model.dtype, model.quant_spec)
