"""How far a quantised model's logits are from the original's, on a fixed English text; `slm quantize`'s job."""

from __future__ import annotations

from dataclasses import dataclass

import torch

TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening at dusk. From the top he could see the "
        "fishing boats returning to the harbour, their lights flickering on the dark water. In 1887 a storm had "
        "destroyed half of the village, and since then he had never missed a night. Children asked him why he "
        "stayed; he said the sea remembers those who watch it.")


@torch.inference_mode()
def logit_error(model, tokenizer, reference: torch.Tensor | None = None) -> torch.Tensor | dict:
    """Without a reference: the model's log-probabilities on TEXT (keep them). With one: KL(reference || model)
    per token, top-1 agreement and the largest absolute logit difference."""
    ids = torch.tensor([tokenizer.encode(TEXT)], device=model.device)
    logits = model(ids).float()[0]
    if reference is None:
        return logits
    logp, ref = logits.log_softmax(-1), reference.log_softmax(-1)
    kl = (ref.exp() * (ref - logp)).sum(-1).mean().item()
    return {"tokens": ids.shape[1], "kl": kl, "top1": (logits.argmax(-1) == reference.argmax(-1)).float().mean().item(),
            "max_abs": (logits - reference).abs().max().item()}


@dataclass
class QuantizeRun:
    """What `quantize_checkpoint` wrote and how far its logits are from fp32's (None without a tokenizer)."""

    path: str
    precision: str  # the registry's name: int8, int8+head, int4, int4+head
    label: str  # the spec in detail: int4-g32, int4-g64-asym, ...
    weights_mib: float
    error: dict | None = None

    def line(self) -> str:
        text = f"wrote {self.path} ({self.precision}: {self.label}, {self.weights_mib:.1f} MiB of weights)"
        if self.error is not None:
            e = self.error
            text += (f"; against fp32 on a {e['tokens']}-token text: KL {e['kl']:.4f} nats/token, top-1 agreement "
                     f"{100 * e['top1']:.1f}%, max |logit diff| {e['max_abs']:.3f}")
        return text


def quantize_checkpoint(model: str, out: str, bits: int = 8, group: int | None = None, symmetric: bool = True,
                        head: bool = False, overwrite: bool = False) -> QuantizeRun:
    """Load `model` in fp32, quantise it (QuantSpec(bits, group, symmetric, head)), save it to `out` and measure
    its logit error against fp32 on a fixed text. The group size is checked before any weights load."""
    from slmkit.checkpoint import load, load_config, save
    from slmkit.model.model import Transformer
    from slmkit.outputs import claim_dir
    from slmkit.quant.quantize import QuantSpec, check, quantize
    from slmkit.runtime.precision import name_of

    spec = QuantSpec(bits, group, symmetric, head)
    claim_dir(out, "model", overwrite, replaces=True)
    config, _ = load_config(model)
    with torch.device("meta"):
        check(Transformer(config), spec)
    lm = load(model, dtype="float32", device="cpu", progress=True)
    reference = logit_error(lm.model, lm.tokenizer) if lm.tokenizer is not None else None
    quantize(lm.model, spec)
    path = save(lm, out, overwrite=overwrite)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20
    error = logit_error(lm.model, lm.tokenizer, reference) if reference is not None else None
    return QuantizeRun(str(path), name_of("float32", spec), spec.label, size, error)
