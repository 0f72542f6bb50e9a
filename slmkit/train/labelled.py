"""Labelled examples for a classification head: JSONL (or CSV/TSV with a header) records turned into text (or a
text pair) by templates, tokenized once, drawn in epochs.

The rows of step s are positions s * B .. s * B + B - 1 of an endless sequence of epochs, each epoch a permutation
of the examples drawn from (seed, stage, epoch): resuming and any split over processes reproduce them, and every
example is seen once per epoch. Rows are padded to the longest in the step (valid marks the real tokens).
"""

from __future__ import annotations

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

    def check(self) -> None:
        if not self.train:
            raise SlmError("task.train is missing: a JSONL (or CSV/TSV) file of labelled examples")
        if len(self.labels) < 2:
            raise SlmError(f"task.labels needs at least two label values in head order, got {self.labels}")
        if len({str(v) for v in self.labels}) != len(self.labels):
            raise SlmError(f"task.labels has a value twice: {self.labels}")
        if self.max_len < 4:
            raise SlmError(f"task.max_len must be at least 4, got {self.max_len}")


@dataclass
class Example:
    ids: list[int]
    types: list[int]
    label: int


def _fill(template: str, record: dict, where: str, key: str) -> str:
    try:
        return template.format(**record)
    except KeyError as e:
        raise SlmError(f"{where}: the record has no field {e} that task.{key} names; it has "
                       f"{', '.join(record)}") from None
    except (IndexError, ValueError) as e:
        raise SlmError(f"task.{key} {template!r} is not a template of named fields like '{{sentence}}' ({e})") from None


def encode_examples(path: str, spec: TaskSpec, tokenizer: Tokenizer) -> list[Example]:
    """The file's records as token ids, types and label indices; a label outside task.labels is one line."""
    names = [str(v) for v in spec.labels]
    out = []
    for where, record in read_records(Path(path)):
        if spec.label not in record:
            raise SlmError(f"{where}: the record has no label field {spec.label!r} (task.label); it has "
                           f"{', '.join(record)}")
        value = str(record[spec.label])
        if value not in names:
            raise SlmError(f"{where}: label {value!r} is not one of task.labels {names}")
        first = _fill(spec.text, record, where, "text")
        if spec.text_pair is not None:
            ids, types = tokenizer.encode_pair(first, _fill(spec.text_pair, record, where, "text_pair"))
        else:
            ids = tokenizer.encode(first)
            types = [0] * len(ids)
        if len(ids) > spec.max_len:  # keep the start and the closing token ([SEP], </s>)
            ids, types = ids[:spec.max_len - 1] + ids[-1:], types[:spec.max_len - 1] + types[-1:]
        if not ids:
            raise SlmError(f"{where}: the text is empty after tokenizing")
        out.append(Example(ids, types, names.index(value)))
    if not out:
        raise SlmError(f"{path}: no labelled examples")
    return out


def collate(examples: list[Example], pad_id: int) -> Batch:
    """Examples padded on the right to the longest: Batch(x, labels, valid, types)."""
    T = max(len(e.ids) for e in examples)
    x = np.full((len(examples), T), pad_id, dtype=np.int64)
    types = np.zeros((len(examples), T), dtype=np.int64)
    valid = np.zeros((len(examples), T), dtype=bool)
    for i, e in enumerate(examples):
        x[i, :len(e.ids)], types[i, :len(e.ids)], valid[i, :len(e.ids)] = e.ids, e.types, True
    return Batch(x, np.asarray([e.label for e in examples], dtype=np.int64), valid, types)


class LabelledData:
    """A classification task's examples (the loop's data-source interface: draw, val_batches)."""

    shards: list = []  # no token shards: the tokenizer comes from the model

    def __init__(self, spec: TaskSpec, tokenizer: Tokenizer, seed: int):
        spec.check()
        self.spec, self.seed = spec, seed
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        self.train = encode_examples(spec.train, spec, tokenizer)
        self.val = encode_examples(spec.val, spec, tokenizer) if spec.val else []
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
        return collate(chosen, self.pad_id)

    def val_batches(self, max_tokens: int, rows: int) -> list[Batch]:
        """Every validation example, in file order (max_tokens does not cut a task's validation set)."""
        return [collate(self.val[i:i + rows], self.pad_id) for i in range(0, len(self.val), rows)]
