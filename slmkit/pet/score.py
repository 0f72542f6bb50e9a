"""Scoring cloze questions: label probabilities (N, L) of records under one pattern.

- A masked LM (BERT, RoBERTa): the pattern filled with the mask token; the vocabulary logits of the verbalizers
  (one token each, after a space) at the mask, softmaxed over the labels (PET's scoring). A word of several
  tokens, or one filled from the record (COPA's choices), fills as many masks; its score is the sum of its tokens'
  log-probabilities there, all predicted in one pass (PET's "parallel" decoding; its default fills the masks one at
  a time, most confident first).
- A decoder: each label's verbalizer in place of the mask, scored as lm-eval scores choices: the log-likelihood of
  " word" plus the rest of the pattern after it (nothing when only punctuation follows the mask), given the text
  before it; softmaxed over the labels. Words of several tokens are fine here.
"""

from __future__ import annotations

from typing import Sequence

import torch

from slmkit.pet.patterns import Pattern, fill
from slmkit.train.labelled import Example, collate, encode_choices, encode_cloze, one_token_ids


@torch.no_grad()
def mlm_probs(model, tokenizer, pattern: Pattern, labels: list[str], records: Sequence[dict], max_len: int = 256,
              batch_size: int = 16) -> torch.Tensor:
    from slmkit.train.loop import label_logits

    words = pattern.words(labels)
    choices = one_token_ids(tokenizer, words)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    examples = []
    for i, r in enumerate(records):
        if choices is None:  # words of several tokens, or filled from the record
            rows = encode_choices(tokenizer, pattern.text, r, words, max_len, f"record {i}")
            examples.append(Example(rows[0][0], [], 0, choices=rows))
        else:
            ids, at = encode_cloze(tokenizer, pattern.text, r, max_len, f"record {i}")
            examples.append(Example(ids, [0] * len(ids), 0, at))
    out = []
    for i in range(0, len(examples), batch_size):
        b = collate(examples[i:i + batch_size], pad, choices).to(model.device)
        out.append(torch.softmax(label_logits(model, b).float(), dim=-1).cpu())
    return torch.cat(out)


def decoder_probs(lm, pattern: Pattern, labels: list[str], records: Sequence[dict]) -> torch.Tensor:
    """lm: an slmkit.eval.lm EvalLM (its loglikelihood shares each record's context over the labels). A pattern
    that ends with its mask (punctuation aside) is scored as a decoder trains on it: the label word alone."""
    from slmkit.train.labelled import mask_final

    final = mask_final(pattern.text)
    requests = []
    for r in records:
        before, after = fill(pattern, r)
        requests += [(before.rstrip(), " " + w.strip() + ("" if final else after))
                     for w in pattern.words(labels, r)]
    ll = torch.tensor([x for x, _ in lm.loglikelihood(requests)], dtype=torch.float64)
    return torch.softmax(ll.view(len(records), len(labels)), dim=-1).float()
