"""Labelled examples for a classification head: JSONL (or CSV/TSV with a header) records turned into text (or a
text pair) by templates, tokenized once, drawn in epochs.

The rows of step s are positions s * B .. s * B + B - 1 of an endless sequence of epochs, each epoch a permutation
of the examples drawn from (seed, stage, epoch): resuming and any split over processes reproduce them, and every
example is seen once per epoch. Rows are padded to the longest in the step (valid marks the real tokens).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slmkit.corpus import read_records
from slmkit.errors import SlmError
from slmkit.tokenizer.tokenizer import Tokenizer
from slmkit.train.data import Batch


@dataclass
class TaskSpec:
    """A classification task: train (and val) files, how a record becomes the classifier's input, and its labels
    in the order of the head's outputs (for `slm eval`, the task's choice order: SST-2 [0, 1], RTE [0, 1], ...)."""

    train: str = ""
    val: str | None = None
    text: str = "{text}"  # the first segment, a str.format template over the record's fields
    text_pair: str | None = None  # the second segment (premise/hypothesis, passage/question), or none
    label: str = "label"  # the record's label field
    labels: list[Any] = field(default_factory=list)  # label values, in head order (matched as text: 0, "0" alike)
    max_len: int = 256  # tokens per example, the framing tokens included; longer ones are cut
    tokenizer: str | None = None  # where the tokenizer comes from (default: model.init)
    # a cloze (PET): text is a pattern with one {mask}, and each label value's word; the model keeps its
    # vocabulary head and the loss is cross-entropy over the verbalizers' logits at the mask (a masked LM) or
    # after the pattern, which then ends with {mask} (a decoder; with lora too: no new head to train). A word may
    # be several tokens, or a template over the record's fields ("{choice1}": COPA's choices): each label's score
    # is then the sum of its tokens' log-probabilities, in as many masks (a masked LM, all filled in one pass) or
    # after the text before the mask (a decoder, as lm-eval scores a choice)
    verbalizer: dict[str, str] | None = None
    # soft targets (PET's distillation): each record's field holding a teacher's label logits, used in place of
    # its label, with the KL at this temperature
    soft_labels: str | None = None
    temperature: float = 2.0

    def check(self) -> None:
        if not self.train:
            raise SlmError("task.train is missing: a JSONL (or CSV/TSV) file of labelled examples")
        if len(self.labels) < 2:
            raise SlmError(f"task.labels needs at least two label values in head order, got {self.labels}")
        if len({str(v) for v in self.labels}) != len(self.labels):
            raise SlmError(f"task.labels has a value twice: {self.labels}")
        if self.max_len < 4:
            raise SlmError(f"task.max_len must be at least 4, got {self.max_len}")
        if self.temperature <= 0:
            raise SlmError(f"task.temperature must be positive, got {self.temperature}")
        if self.verbalizer is not None:
            names = [str(v) for v in self.labels]
            if sorted(self.verbalizer) != sorted(names):
                raise SlmError(f"task.verbalizer must give one word for each label {names}, got "
                               f"{sorted(self.verbalizer)}")
            if "{mask}" not in self.text or self.text_pair is not None:
                raise SlmError("a cloze task's text is a pattern with one {mask} (and no text_pair), e.g. "
                               "'{sentence} It was {mask}.'")


@dataclass
class Example:
    ids: list[int]
    types: list[int]
    label: int
    at: int = -1  # a cloze's mask position
    soft: list[float] | None = None  # a teacher's label logits
    # a cloze whose words are several tokens or fields of the record: per label, (ids, positions, target ids): the
    # filled pattern, the positions whose vocabulary log-probabilities of the targets sum to the label's score
    choices: list[tuple[list[int], list[int], list[int]]] | None = None


def encode_text(tokenizer: Tokenizer, first: str, second: str | None, max_len: int) -> tuple[list[int], list[int]]:
    """A classifier's input: ids and token types of a text or text pair, framed as the tokenizer frames it; longer
    than max_len, the start and the closing token ([SEP], </s>) are kept."""
    if second is not None:
        ids, types = tokenizer.encode_pair(first, second)
    else:
        ids = tokenizer.encode(first)
        types = [0] * len(ids)
    if len(ids) > max_len:
        ids, types = ids[:max_len - 1] + ids[-1:], types[:max_len - 1] + types[-1:]
    return ids, types


def one_token_ids(tokenizer: Tokenizer, words: list[str]) -> list[int] | None:
    """The verbalizers' token ids when each word is one fixed token after a space (the fast path: one position
    scores every label); None when a word is several tokens or a template over the record ("{choice1}")."""
    if any("{" in w for w in words):
        return None
    out = []
    for w in words:
        ids = tokenizer.encode(" " + w.strip(), add_special_tokens=False)
        if len(ids) != 1:
            return None
        out.append(ids[0])
    return out


def fill_word(word: str, record: dict, where: str) -> str:
    """A verbalizer word, filled from the record's fields when it is a template ("{choice1}")."""
    return _fill(word, record, where, "verbalizer") if "{" in word else word


def encode_choices(tokenizer: Tokenizer, template: str, record: dict, words: list[str], max_len: int, where: str,
                   causal: bool = False) -> list[tuple[list[int], list[int], list[int]]]:
    """Per label, the pattern filled so that the label's word (several tokens, or filled from the record) can be
    scored: (ids, positions, targets), the label's score being the sum of the targets' log-probabilities at the
    positions. A masked LM: the mask becomes as many mask tokens as the word has, all predicted in one pass (PET's
    parallel decoding). A decoder: the text before the mask, then " word" (split from it as lm-eval splits a
    request); each word token is predicted from the position before it. Too long, the longest field is cut."""
    _check_cloze(tokenizer, template, where, causal)
    out = []
    for word in words:
        word = fill_word(word, record, where).strip()
        target = tokenizer.encode(" " + word, add_special_tokens=False)
        if not target:
            raise SlmError(f"{where}: the verbalizer word {word!r} encodes to no tokens")
        rec = dict(record)
        for _ in range(8):
            if causal:
                ctx, cont = tokenizer.split_continuation(
                    _fill(template.split("{mask}", 1)[0], rec, where, "text").rstrip(), " " + word)
                ids, pos, tgt = ctx + cont, list(range(len(ctx) - 1, len(ctx) + len(cont) - 1)), cont
            else:
                masks = tokenizer.mask_token * len(target)
                ids = tokenizer.encode(_fill(template, {**rec, "mask": masks}, where, "text"))
                pos = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
                tgt = target
            if len(ids) <= max_len or not _shorten(tokenizer, rec, template, len(ids) - max_len):
                break
        if len(ids) > max_len or not tgt or len(pos) != len(tgt) or (pos and pos[0] < 0):
            raise SlmError(f"{where}: the pattern filled with {word!r} does not fit task.max_len {max_len}"
                           + ("" if causal else f" with its {len(target)} mask tokens"))
        out.append((ids, pos, tgt))
    return out


def _check_cloze(tokenizer: Tokenizer, template: str, where: str, causal: bool) -> None:
    if causal and not mask_final(template):
        raise SlmError(f"{where}: a decoder reads the label as the next token after the pattern, so the pattern "
                       f"must end with {{mask}}; {template!r} has text after it (that order is for masked LMs)")
    if not causal and tokenizer.mask_id is None:
        raise SlmError("a cloze task needs a masked-LM tokenizer (a mask token such as <mask> or [MASK])")


def _shorten(tokenizer: Tokenizer, record: dict, template: str, over: int) -> bool:
    """Cut the longest field the template uses by `over` tokens (and 2 for the seam), as PET shortens its segments;
    False when no field is left to cut."""
    longest = max((k for k in record if isinstance(record[k], str) and f"{{{k}}}" in template),
                  key=lambda k: len(record[k]), default=None)
    if longest is None:
        return False
    part = tokenizer.encode(record[longest], add_special_tokens=False)
    record[longest] = tokenizer.decode(part[:max(0, len(part) - over - 2)])
    return True


def mask_final(template: str) -> bool:
    """Whether nothing but punctuation and spaces follows the pattern's {mask}: a decoder, which reads the label as
    the next token after the pattern, sees the whole of such a pattern."""
    return not template.split("{mask}", 1)[1].strip().strip(string.punctuation).strip()


def encode_cloze(tokenizer: Tokenizer, template: str, record: dict, max_len: int, where: str,
                 causal: bool = False) -> tuple[list[int], int]:
    """The pattern filled with the record: ids and the position whose vocabulary logits score the verbalizers.

    A masked LM: the whole pattern with the tokenizer's mask token; the position is the mask's. A decoder
    (causal): the text before the mask (the pattern must end with it, punctuation aside); the position is its last
    token, whose next-token logits score " word" as lm-eval scores a one-token choice. Too long, the longest field
    is cut (token by token, as PET shortens its segments) until the whole fits."""
    _check_cloze(tokenizer, template, where, causal)
    record = dict(record)
    text = template.split("{mask}", 1)[0] if causal else template
    for _ in range(8):
        filled = _fill(text, record if causal else {**record, "mask": tokenizer.mask_token}, where, "text")
        ids = tokenizer.encode(filled.rstrip() if causal else filled)
        if len(ids) <= max_len or not _shorten(tokenizer, record, text, len(ids) - max_len):
            break
    if causal:
        if len(ids) > max_len or not ids:
            raise SlmError(f"{where}: the filled pattern does not fit task.max_len {max_len}")
        return ids, len(ids) - 1
    if len(ids) > max_len or ids.count(tokenizer.mask_id) != 1:
        raise SlmError(f"{where}: the filled pattern does not fit task.max_len {max_len} with its mask, or holds "
                       f"{ids.count(tokenizer.mask_id)} mask tokens")
    return ids, ids.index(tokenizer.mask_id)


def _fill(template: str, record: dict, where: str, key: str) -> str:
    try:
        return template.format(**record)
    except KeyError as e:
        raise SlmError(f"{where}: the record has no field {e} that task.{key} names; it has "
                       f"{', '.join(record)}") from None
    except (IndexError, ValueError) as e:
        raise SlmError(f"task.{key} {template!r} is not a template of named fields like '{{sentence}}' ({e})") from None


def encode_examples(path: str, spec: TaskSpec, tokenizer: Tokenizer, causal: bool = False,
                    by_sequence: bool = False) -> list[Example]:
    """The file's records as token ids, types and label indices; a label outside task.labels is one line. causal: the
    model is a decoder (a cloze is read after the pattern); by_sequence: a cloze whose words are scored as token
    sequences (encode_choices), not as one token each."""
    names = [str(v) for v in spec.labels]
    out = []
    for where, record in read_records(Path(path)):
        soft = None
        if spec.soft_labels is not None:
            soft = record.get(spec.soft_labels)
            if not isinstance(soft, list) or len(soft) != len(names) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in soft):
                raise SlmError(f"{where}: task.soft_labels field {spec.soft_labels!r} must hold {len(names)} numbers "
                               f"(a teacher's label logits)")
            record = {**record, spec.label: record.get(spec.label, spec.labels[0])}
        if spec.label not in record:
            raise SlmError(f"{where}: the record has no label field {spec.label!r} (task.label); it has "
                           f"{', '.join(record)}")
        value = str(record[spec.label])
        if value not in names:
            raise SlmError(f"{where}: label {value!r} is not one of task.labels {names}")
        if spec.verbalizer is not None and by_sequence:
            words = [spec.verbalizer[str(v)] for v in spec.labels]
            rows = encode_choices(tokenizer, spec.text, record, words, spec.max_len, where, causal)
            out.append(Example(rows[0][0], [0] * len(rows[0][0]), names.index(value), soft=soft, choices=rows))
            continue
        if spec.verbalizer is not None:
            ids, at = encode_cloze(tokenizer, spec.text, record, spec.max_len, where, causal)
            out.append(Example(ids, [0] * len(ids), names.index(value), at, soft))
            continue
        second = _fill(spec.text_pair, record, where, "text_pair") if spec.text_pair is not None else None
        ids, types = encode_text(tokenizer, _fill(spec.text, record, where, "text"), second, spec.max_len)
        if not ids:
            raise SlmError(f"{where}: the text is empty after tokenizing")
        out.append(Example(ids, types, names.index(value), soft=soft))
    if not out:
        raise SlmError(f"{path}: no labelled examples")
    return out


def collate(examples: list[Example], pad_id: int, choices: list[int] | None = None) -> Batch:
    """Examples padded on the right to the longest: Batch(x, labels, valid, types), and for a cloze the mask
    positions and the verbalizer ids (`choices`). Examples with per-label choices (encode_choices) give x (B, L, T)
    and the positions and targets (B, L, K), -1 past each label's tokens."""
    if examples[0].choices is not None:
        return _collate_choices(examples, pad_id)
    T = max(len(e.ids) for e in examples)
    x = np.full((len(examples), T), pad_id, dtype=np.int64)
    types = np.zeros((len(examples), T), dtype=np.int64)
    valid = np.zeros((len(examples), T), dtype=bool)
    for i, e in enumerate(examples):
        x[i, :len(e.ids)], types[i, :len(e.ids)], valid[i, :len(e.ids)] = e.ids, e.types, True
    y = (np.asarray([e.soft for e in examples], dtype=np.float32) if examples[0].soft is not None
         else np.asarray([e.label for e in examples], dtype=np.int64))
    b = Batch(x, y, valid, types)
    if choices is not None:
        b.at = np.asarray([e.at for e in examples], dtype=np.int64)
        b.choices = np.tile(np.asarray(choices, dtype=np.int64), (len(examples), 1))
    return b


def _collate_choices(examples: list[Example], pad_id: int) -> Batch:
    B, L = len(examples), len(examples[0].choices)
    T = max(len(ids) for e in examples for ids, _, _ in e.choices)
    K = max(len(pos) for e in examples for _, pos, _ in e.choices)
    x = np.full((B, L, T), pad_id, dtype=np.int64)
    valid = np.zeros((B, L, T), dtype=bool)
    pos = np.full((B, L, K), -1, dtype=np.int64)
    tgt = np.full((B, L, K), -1, dtype=np.int64)
    for i, e in enumerate(examples):
        for j, (ids, p, t) in enumerate(e.choices):
            x[i, j, :len(ids)], valid[i, j, :len(ids)] = ids, True
            pos[i, j, :len(p)], tgt[i, j, :len(t)] = p, t
    y = (np.asarray([e.soft for e in examples], dtype=np.float32) if examples[0].soft is not None
         else np.asarray([e.label for e in examples], dtype=np.int64))
    b = Batch(x, y, valid, np.zeros_like(x))
    b.at, b.choices = pos, tgt
    return b


class LabelledData:
    """A classification task's examples (the loop's data-source interface: draw, val_batches)."""

    shards: list = []  # no token shards: the tokenizer comes from the model

    def __init__(self, spec: TaskSpec, tokenizer: Tokenizer, seed: int, causal: bool = False):
        spec.check()
        self.spec, self.seed = spec, seed
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.choices = None if spec.verbalizer is None else one_token_ids(
            tokenizer, [spec.verbalizer[str(v)] for v in spec.labels])
        seq = spec.verbalizer is not None and self.choices is None  # words scored as token sequences
        self.train = encode_examples(spec.train, spec, tokenizer, causal, seq)
        self.val = encode_examples(spec.val, spec, tokenizer, causal, seq) if spec.val else []
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _order(self, stage: int, epoch: int) -> np.ndarray:
        key = (stage, epoch)
        if key not in self._orders:
            self._orders = {key: np.random.default_rng([self.seed, stage, epoch]).permutation(len(self.train))}
        return self._orders[key]

    def draw(self, step: int, stage: int, rows: slice, n_rows: int) -> Batch:
        n = len(self.train)
        chosen = []
        for pos in (step * n_rows + r for r in range(n_rows)[rows]):
            chosen.append(self.train[int(self._order(stage, pos // n)[pos % n])])
        return collate(chosen, self.pad_id, self.choices)

    def val_batches(self, max_tokens: int, rows: int) -> list[Batch]:
        """Every validation example, in file order (max_tokens does not cut a task's validation set)."""
        return [collate(self.val[i:i + rows], self.pad_id, self.choices) for i in range(0, len(self.val), rows)]
