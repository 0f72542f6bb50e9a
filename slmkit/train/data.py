"""Token shards: `slm data prepare` turns text, JSONL(.gz), CSV/TSV and parquet files into a folder of
train.bin / val.bin (numpy memmaps of uint16 or uint32 ids, documents separated by the end-of-text token),
meta.json and the tokenizer; `TokenData` reads such folders back and draws batches from them.

Inputs are streamed: files are read in pieces, tokenized in batches and appended to the shard files, so a
corpus larger than memory works. The validation split is made on the token stream: the stream is cut into
blocks of `block` tokens and every k-th block (k = 1 / val_fraction) goes to val.bin, so a split is
deterministic, has no document-level leakage beyond one block boundary, and needs no second pass.

Batches are drawn without state: the windows of step s are a function of (seed, stage, s) alone, so resuming at
step s reproduces the uninterrupted run, and N processes that each take 1/N of a global batch see exactly the
rows one process would.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
import numpy as np

from slmkit.corpus import Piece, Template, input_files, read_documents
from slmkit.errors import SlmError
from slmkit.outputs import atomic_dir
from slmkit.tokenizer.tokenizer import Tokenizer

FORMAT = "slmkit-tokens/1"


# --- one step's rows ---------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Rows the loop trains on: inputs x (B, T) and targets y, either (B, T) token ids with IGNORE where a position
    carries no loss (language modelling, masked LM) or (B,) label ids (a classification head); valid (B, T) is
    False on padding, types (B, T) the segment ids of text pairs; a cloze (PET) adds the mask position of each row and
    the verbalizer ids whose logits there score the labels. numpy arrays from the data, tensors after `to`."""

    x: "np.ndarray | torch.Tensor"
    y: "np.ndarray | torch.Tensor"
    valid: "np.ndarray | torch.Tensor | None" = None
    types: "np.ndarray | torch.Tensor | None" = None
    at: "np.ndarray | torch.Tensor | None" = None  # (B,) a cloze's mask position (PET)
    choices: "np.ndarray | torch.Tensor | None" = None  # (B, L) the verbalizers' token ids scored there

    def _fields(self):
        return (self.x, self.y, self.valid, self.types, self.at, self.choices)

    def __getitem__(self, rows: slice) -> "Batch":
        return Batch(*(None if a is None else a[rows] for a in self._fields()))

    def to(self, device) -> "Batch":
        import torch

        def conv(a):
            return None if a is None else (torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray)
                                           else a).to(device)
        return Batch(*(conv(a) for a in self._fields()))

    @property
    def labels(self) -> bool:
        """True for a classification batch: one label per row, or soft targets (B, L) to distil (PET)."""
        return self.y.ndim == 1 or self.soft

    @property
    def soft(self) -> bool:
        """True when y holds a teacher's label logits (B, L), floats, rather than ids."""
        floats = self.y.dtype.kind == "f" if isinstance(self.y, np.ndarray) else self.y.is_floating_point()
        return self.y.ndim == 2 and floats

    def n_targets(self):
        """What the loss is summed over: rows for labels and soft targets, non-IGNORE positions for tokens."""
        from slmkit.train.losses import IGNORE

        return len(self.y) if self.soft else (self.y != IGNORE).sum()


# --- writing shards ------------------------------------------------------------------------------------------


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def vocab_fingerprint(tokenizer: Tokenizer) -> str:
    """A hash of the token -> id map: two tokenizers with the same fingerprint encode text to the same ids."""
    vocab = sorted(tokenizer.backend.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


@dataclass
class PrepareStats:
    documents: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    text_tokens: int = 0  # tokens other than the separators
    max_id: int = -1


class _SplitWriter:
    """Appends a token stream to train.bin and val.bin, every k-th block of `block` tokens going to val."""

    def __init__(self, out: Path, dtype: np.dtype, block: int, val_every: int | None, masks: bool = False):
        self.files = {"train": open(out / "train.bin", "wb"), "val": open(out / "val.bin", "wb")}
        self.mask_files = ({"train": open(out / "train.mask.bin", "wb"), "val": open(out / "val.mask.bin", "wb")}
                           if masks else None)
        self.dtype, self.block, self.val_every = dtype, block, val_every
        self.buf: list[np.ndarray] = []
        self.mask_buf: list[np.ndarray] = []
        self.buffered = 0
        self.blocks = 0
        self.counts = {"train": 0, "val": 0}
        self.in_document = False  # the last text added was a Piece: the next one continues its document

    def add(self, ids: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Append tokens; with loss masks, mask (same length, uint8) is 1 where a token is a training target."""
        self.buf.append(ids)
        if self.mask_files is not None:
            self.mask_buf.append(mask if mask is not None else np.ones(len(ids), dtype=np.uint8))
        self.buffered += len(ids)
        if self.buffered >= self.block:
            stream = np.concatenate(self.buf)
            masks = np.concatenate(self.mask_buf) if self.mask_files is not None else None
            n_full = len(stream) // self.block
            for b in range(n_full):
                part = slice(b * self.block, (b + 1) * self.block)
                self._emit(stream[part], None if masks is None else masks[part])
            rest = stream[n_full * self.block:]
            self.buf, self.buffered = [rest], len(rest)
            self.mask_buf = [masks[n_full * self.block:]] if masks is not None else []

    def _emit(self, block: np.ndarray, mask: np.ndarray | None) -> None:
        self.blocks += 1
        split = "val" if self.val_every and self.blocks % self.val_every == 0 else "train"
        self.files[split].write(block.astype(self.dtype).tobytes())
        if self.mask_files is not None:
            self.mask_files[split].write(mask.astype(np.uint8).tobytes())
        self.counts[split] += len(block)

    def close(self) -> None:
        if self.buffered:
            self._emit(np.concatenate(self.buf), np.concatenate(self.mask_buf) if self.mask_files is not None else None)
        for f in [*self.files.values(), *(self.mask_files or {}).values()]:
            f.close()


def prepare(inputs: list[str], out_dir: str | os.PathLike, tokenizer: Tokenizer, tokenizer_source: str,
            val_fraction: float = 0.01, block: int = 2048, template: str | None = None,
            progress: bool = True, batch_docs: int = 256, separator: str | None = None,
            prompt_template: str | None = None, overwrite: bool = False) -> tuple[Path, dict]:
    """Tokenize the inputs into a shard folder (written atomically); returns its path and its meta.
    separator: the token between documents (default <|endoftext|> when the vocabulary has it, else EOS).
    prompt_template: each record's document is prompt_template's text, then template's (the response), and the
    folder gets loss masks (train.mask.bin, val.mask.bin) so training computes the loss on the response (and the
    separator after it) only."""
    from tqdm import tqdm

    if not 0 <= val_fraction <= 1:
        raise SlmError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if block < 1:
        raise SlmError(f"--block must be positive, got {block}")
    if separator is not None:
        eos = tokenizer.token_to_id(separator)
        if eos is None:
            raise SlmError(f"--separator {separator!r} is not a token of the tokenizer from {tokenizer_source}")
    else:
        eos = tokenizer.token_to_id("<|endoftext|>")
        eos = eos if eos is not None else tokenizer.eos_id
    if eos is None:
        raise SlmError(f"the tokenizer from {tokenizer_source} has no end-of-text token to separate documents; "
                       f"name one with --separator")
    files = input_files(inputs)
    tmpl = Template(template)
    if prompt_template is not None and not template:
        raise SlmError("--prompt-template needs --template for the response part, e.g. --prompt-template "
                       "'{prompt}' --template '{completion}'")
    prompt_tmpl = Template(prompt_template) if prompt_template is not None else None
    vocab = tokenizer.max_id + 1
    dtype = token_dtype(vocab)
    val_every = None if val_fraction == 0 else max(1, round(1 / val_fraction))
    stats = PrepareStats()
    sources = []
    out = Path(out_dir)
    with atomic_dir(out, "data", overwrite) as tmp:
        writer = _SplitWriter(tmp, dtype, block, val_every, masks=prompt_tmpl is not None)
        bar = tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc="tokenizing",
                   disable=True if not progress else None, dynamic_ncols=True)
        for f in files:
            before = stats.documents, writer.counts["train"] + writer.counts["val"] + writer.buffered
            pending: list = []
            docs = read_documents(f, tmpl) if prompt_tmpl is None else _pairs(f, prompt_tmpl, tmpl)
            for doc in docs:
                pending.append(doc)
                if len(pending) >= batch_docs or isinstance(doc, Piece):
                    _encode_into(pending, tokenizer, eos, writer, stats)
                    pending = []
            _encode_into(pending, tokenizer, eos, writer, stats)
            tokens = writer.counts["train"] + writer.counts["val"] + writer.buffered - before[1]
            sources.append(dict(file=str(f), documents=stats.documents - before[0], tokens=tokens))
            bar.update(f.stat().st_size)
            bar.set_postfix_str(f"{writer.counts['train'] + writer.counts['val'] + writer.buffered:,} tokens")
        writer.close()
        bar.close()
        stats.train_tokens, stats.val_tokens = writer.counts["train"], writer.counts["val"]
        if stats.text_tokens == 0:
            raise SlmError(f"no text found in {', '.join(inputs)}: every document is empty")
        meta = dict(format=FORMAT, dtype=dtype.name, vocab_size=vocab, max_id=stats.max_id, eos_id=eos,
                    tokenizer=tokenizer_source, vocab_fingerprint=vocab_fingerprint(tokenizer),
                    documents=stats.documents, train_tokens=stats.train_tokens, val_tokens=stats.val_tokens,
                    block=block, val_fraction=val_fraction, template=template, sources=sources,
                    loss_mask=prompt_tmpl is not None, prompt_template=prompt_template)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        tokenizer.save(tmp)
    return out, meta


def _pairs(path: Path, prompt: Template, response: Template):
    """(prompt text, response text) per record, from two lockstep reads of the file."""
    for p, r in zip(read_documents(path, prompt), read_documents(path, response)):
        if isinstance(p, Piece) or isinstance(r, Piece):
            raise SlmError(f"{path}: --prompt-template needs records (JSONL, CSV/TSV, parquet), not plain text")
        yield (p, r)


def _encode_into(docs: list, tokenizer: Tokenizer, eos: int, writer: _SplitWriter, stats: PrepareStats) -> None:
    """Encode and append documents: strings (or Pieces of one), or (prompt, response) pairs whose prompt tokens
    carry no loss."""
    if not docs:
        return
    paired = isinstance(docs[0], tuple)
    texts = [t for d in docs for t in d] if paired else list(map(str, docs))
    encodings = tokenizer.backend.encode_batch(texts, add_special_tokens=False)
    if paired:  # [(prompt ids, response ids)] per document
        parts = [(encodings[2 * i].ids, encodings[2 * i + 1].ids) for i in range(len(docs))]
    else:
        parts = [([], enc.ids) for enc in encodings]
    for doc, (prompt_ids, ids) in zip(docs, parts):
        stats.text_tokens += len(prompt_ids) + len(ids)
        head = list(prompt_ids)
        if not writer.in_document and tokenizer.add_bos and tokenizer.bos_id is not None:
            head = [tokenizer.bos_id] + head
        continues = isinstance(doc, Piece)
        writer.in_document = continues
        if not continues:
            ids = ids + [eos]
            stats.documents += 1
        if head or ids:
            arr = np.asarray(head + ids, dtype=np.int64)
            stats.max_id = max(stats.max_id, int(arr.max()))
            mask = np.concatenate([np.zeros(len(head), np.uint8), np.ones(len(ids), np.uint8)]) if paired else None
            writer.add(arr, mask)


# --- reading shards ------------------------------------------------------------------------------------------


@dataclass
class Shards:
    """One prepared folder: its meta and its train/val token arrays (memory-mapped)."""

    path: Path
    meta: dict
    train: np.ndarray
    val: np.ndarray
    train_mask: np.ndarray | None = None  # uint8, 1 where the token is a training target (loss masks)
    val_mask: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Shards":
        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            raise SlmError(f"{path}: not a token-shard folder (no meta.json); make one with `slm data prepare`")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SlmError(f"{meta_file}: not valid JSON ({e.msg})") from None
        if meta.get("format") != FORMAT:
            raise SlmError(f"{meta_file}: unknown format {meta.get('format')!r} (expected {FORMAT})")
        dtype = np.dtype(meta["dtype"])
        arrays = []
        for split in ("train", "val"):
            f = path / f"{split}.bin"
            if not f.is_file():
                raise SlmError(f"{path}: {split}.bin is missing; prepare the folder again")
            size = f.stat().st_size
            if size % dtype.itemsize or size // dtype.itemsize != meta[f"{split}_tokens"]:
                raise SlmError(f"{f}: {size} bytes does not match meta.json's {meta[f'{split}_tokens']} "
                               f"{dtype.name} tokens; the folder is damaged, prepare it again")
            arrays.append(np.memmap(f, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype))
        masks = []
        if meta.get("loss_mask"):
            for split, tokens in zip(("train", "val"), arrays):
                f = path / f"{split}.mask.bin"
                if not f.is_file() or f.stat().st_size != len(tokens):
                    raise SlmError(f"{f}: missing or not one byte per token; the folder is damaged, prepare it again")
                masks.append(np.memmap(f, dtype=np.uint8, mode="r") if len(tokens) else np.zeros(0, np.uint8))
        return cls(path, meta, *arrays, *masks)

    def check_vocab(self, vocab_size: int, fingerprint: str | None = None) -> None:
        """Refuse ids the model cannot embed, and data made with another tokenizer than the model's."""
        top = int(self.meta.get("max_id", -1))
        if len(self.train) + len(self.val) <= 1 << 28:  # cheap enough to check the data itself, not only meta
            top = max([top] + [int(a.max()) for a in (self.train, self.val) if len(a)])
        if top >= vocab_size:
            raise SlmError(f"{self.path}: token id {top} is beyond the model's vocabulary of {vocab_size}; prepare "
                           f"the data with the model's tokenizer or give the model a larger vocab_size")
        if fingerprint is not None and self.meta.get("vocab_fingerprint") != fingerprint:
            raise SlmError(f"{self.path}: prepared with another tokenizer ({self.meta.get('tokenizer')}) than the "
                           f"model's; prepare it again with --tokenizer set to the model")


class TokenData:
    """A weighted mixture of shard folders; draws (input, target) windows of seq_len tokens per step."""

    def __init__(self, mixture: dict[str, float], seq_len: int, seed: int):
        if not mixture:
            raise SlmError("the data mixture is empty; give at least one shard folder")
        self.shards = [Shards.open(p) for p in mixture]
        weights = np.asarray(list(mixture.values()), dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise SlmError(f"mixture weights must be non-negative and not all zero, got {list(mixture.values())}")
        self.weights = weights / weights.sum()
        self.seq_len, self.seed = seq_len, seed
        for s, w in zip(self.shards, self.weights):
            if w > 0 and len(s.train) < seq_len + 1:
                raise SlmError(f"{s.path}: {len(s.train)} training tokens, fewer than one window of seq_len + 1 = "
                               f"{seq_len + 1}; use more data or a shorter seq_len")

    @property
    def meta(self) -> dict:
        return self.shards[0].meta

    def batch(self, step: int, stage: int, rows: slice, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows `rows` of the global batch of step `step`: (len(rows), seq_len) inputs and targets (int64).

        The whole global batch's draws (source and start of each of n_rows windows) depend only on
        (seed, stage, step), so any split of it over processes or micro-batches gives the same rows.
        """
        rng = np.random.default_rng([self.seed, stage, step])
        source = rng.choice(len(self.shards), size=n_rows, p=self.weights)
        u = rng.random(n_rows)
        T = self.seq_len
        x = np.empty((n_rows, T + 1), dtype=np.int64)[rows]
        y = x[:, 1:].copy() if any(s.train_mask is not None for s in self.shards) else None
        for i, row in enumerate(range(n_rows)[rows]):
            shard = self.shards[source[row]]
            start = int(u[row] * (len(shard.train) - T))
            x[i] = shard.train[start:start + T + 1]
            if y is not None:
                y[i] = _masked(x[i, 1:], None if shard.train_mask is None else shard.train_mask[start + 1:start + T + 1])
        return x[:, :-1], (x[:, 1:] if y is None else y)

    def draw(self, step: int, stage: int, rows: slice, n_rows: int) -> Batch:
        """`batch` as a Batch (the loop's one interface to its data sources)."""
        return Batch(*self.batch(step, stage, rows, n_rows))

    def val_batches(self, max_tokens: int, rows: int) -> list[Batch]:
        """The fixed validation windows (val_windows), stacked rows at a time."""
        return stack_windows(self.val_windows(max_tokens), rows)

    def val_windows(self, max_tokens: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Non-overlapping (seq_len + 1)-token windows from the start of each source's val split, up to max_tokens
        per source, as (inputs, targets) of seq_len tokens (targets IGNORE where a loss mask says so): a fixed
        validation set."""
        T = self.seq_len
        out = []
        for s in self.shards:
            n = min(len(s.val) // (T + 1), max(1, max_tokens // T))
            for i in range(n):
                w = np.asarray(s.val[i * (T + 1):(i + 1) * (T + 1)], dtype=np.int64)
                mask = None if s.val_mask is None else s.val_mask[i * (T + 1) + 1:(i + 1) * (T + 1)]
                out.append((w[:-1], _masked(w[1:], mask)))
        return out


def _masked(targets: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """targets with IGNORE where mask is 0 (a prompt token); unchanged without a mask."""
    from slmkit.train.losses import IGNORE

    return targets if mask is None else np.where(np.asarray(mask) == 0, IGNORE, targets)


def stack_windows(windows: list[tuple[np.ndarray, np.ndarray]], rows: int) -> list[Batch]:
    """(inputs, targets) windows stacked into Batches of `rows` rows."""
    return [Batch(np.stack([w[0] for w in windows[i:i + rows]]), np.stack([w[1] for w in windows[i:i + rows]]))
            for i in range(0, len(windows), rows)]
