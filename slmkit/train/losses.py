"""Training losses, each returned as a sum over target positions (the loop divides by the step's token count, so
micro-batches and processes add up to the mean over the whole global batch).

Knowledge distillation (Hinton et al. 2015; MiniLLM's reverse KL, Gu et al. 2024): with temperature t,
p = softmax(teacher / t), q = softmax(student / t),
  forward_kl = t^2 * KL(p || q)   (mean-seeking, the classic KD loss)
  reverse_kl = t^2 * KL(q || p)   (mode-seeking)
  topk_kl    = t^2 * KL(p_k || q) over the teacher's k most likely tokens, p_k renormalised over them and q the
               student's full-vocabulary distribution (what a cache of teacher top-k logits allows).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # target id of positions that carry no loss


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy; logits (B, T, V), targets (B, T) with IGNORE where there is no target."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum")


def kd_sum(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, kind: str = "forward_kl",
           temperature: float = 1.0, top_k: int = 32) -> torch.Tensor:
    """Summed per-position distillation loss over positions with a target; student/teacher logits (B, T, V)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ")
    keep = (targets != IGNORE).flatten()
    s = student.float().flatten(0, 1)[keep] / temperature  # (N, V)
    t = teacher.float().flatten(0, 1)[keep] / temperature
    log_q = F.log_softmax(s, dim=-1)
    if kind == "forward_kl":
        log_p = F.log_softmax(t, dim=-1)
        per = (log_p.exp() * (log_p - log_q)).sum(-1)
    elif kind == "reverse_kl":
        log_p = F.log_softmax(t, dim=-1)
        per = (log_q.exp() * (log_q - log_p)).sum(-1)
    elif kind == "topk_kl":
        top, idx = t.topk(min(top_k, t.shape[-1]), dim=-1)  # (N, k)
        log_pk = F.log_softmax(top, dim=-1)
        per = (log_pk.exp() * (log_pk - log_q.gather(-1, idx))).sum(-1)
    else:
        raise ValueError(f"unknown distillation loss {kind!r}")
    return per.sum() * temperature**2
