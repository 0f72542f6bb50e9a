"""How far a quantised model's logits are from the original's, on a fixed English text."""

from __future__ import annotations

import torch

TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening at dusk. From the top he could see the "
        "fishing boats returning to the harbour, their lights flickering on the dark water. In 1887 a storm had "
        "destroyed half of the village, and since then he had never missed a night. Children asked him why he "
        "stayed; he said the sea remembers those who watch it.")


@torch.inference_mode()
def logit_error(model, tokenizer, reference: torch.Tensor | None = None) -> torch.Tensor | dict:
    """Without a reference: the model's log-probabilities on TEXT (keep them). With one: KL(reference || model)
    per token, top-1 agreement and the largest absolute logit difference."""
    ids = torch.tensor([tokenizer.encode(TEXT)], device=model.tok_emb.weight.device)
    logits = model(ids).float()[0]
    if reference is None:
        return logits
    logp, ref = logits.log_softmax(-1), reference.log_softmax(-1)
    kl = (ref.exp() * (ref - logp)).sum(-1).mean().item()
    return {"tokens": ids.shape[1], "kl": kl, "top1": (logits.argmax(-1) == reference.argmax(-1)).float().mean().item(),
            "max_abs": (logits - reference).abs().max().item()}
