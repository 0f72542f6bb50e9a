"""Training recipes: YAML files (recipes/*.yaml) read into typed sections, with `--set key.sub=value` overrides.

Unknown keys, wrong types and impossible values (a batch that does not divide over the processes, a token budget
below one step, a warmup longer than the run) are refused with one line that names the key, before any model is
built.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from slmkit.errors import SlmError
from slmkit.train.labelled import TaskSpec
from slmkit.train.mlm import MaskSpec


@dataclass
class ModelSpec:
    """The model to train: a preset or an existing config (folder, .gguf, config.json) with field overrides, and
    optionally weights to start from (fine-tuning, continued pretraining)."""

    preset: str | None = None
    config: str | None = None
    init: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    layers: list[int] | None = None  # with init: keep these of its layers (0-based), a student cut from a teacher


@dataclass
class Stage:
    """A stretch of training on one data mixture (shard folder -> weight) for a token budget."""

    name: str = "main"
    tokens: int = 0
    data: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchSpec:
    """global_batch rows of seq_len tokens per optimizer step, fed micro_batch rows at a time per process."""

    seq_len: int = 256
    global_batch: int = 32
    micro_batch: int = 8


@dataclass
class OptimSpec:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the schedule's floor, as a fraction of lr
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: Literal["cosine", "wsd", "linear", "constant"] = "cosine"
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly to the floor
    clip: float = 1.0  # max global gradient norm; 0 turns clipping off


@dataclass
class DistillSpec:
    """Knowledge distillation: loss = alpha * KD(teacher || student) + (1 - alpha) * cross-entropy."""

    teacher: str | None = None
    loss: Literal["forward_kl", "reverse_kl", "topk_kl"] = "forward_kl"
    temperature: float = 1.0
    top_k: int = 32  # topk_kl: the teacher's k most likely tokens per position
    alpha: float = 0.5
    teacher_dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@dataclass
class MupSpec:
    """muP (Tensor Programs V, table 3, for Adam): set base_width to the width whose hyperparameters transfer."""

    base_width: int | None = None


@dataclass
class LoraRecipe:
    """Train a LoRA adapter on a frozen model.init (slmkit.adapters): QLoRA when base is int8 or int4."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["attn"])  # attn, mlp, all-linear or module names (q_proj)
    rslora: bool = False
    base: Literal["fp32", "bf16", "int8", "int4"] = "fp32"  # the frozen base's precision
    group_size: int = 32  # int4 base: inputs per scale

    def spec(self):
        from slmkit.adapters.lora import LoRASpec

        return LoRASpec(r=self.r, alpha=self.alpha, dropout=self.dropout, targets=tuple(self.targets),
                        rslora=self.rslora)


@dataclass
class PruneSpec:
    """Dynamic token pruning while training a classification head (slmkit.model.prune, docs/prune.md): the soft
    mask at this keep ratio in training steps, hard pruning at it in validation, so the head learns to work with
    the tokens pruning leaves (Length-Adaptive Distillation's student, LTP's soft masking)."""

    keep: float = 0.5  # the share of each row's tokens the last layer runs on
    start: int | None = None  # the first layer that runs on fewer tokens (default 15% of the layers, at least 1)
    temperature: float = 1e-3  # the soft mask's sigmoid((importance - threshold) / temperature)
    restore: bool = False  # drop-and-restore: a dropped token keeps its state (objective hidden: reconstruct)

    def pruner(self, n_layer: int, soft: bool):
        from slmkit.model.prune import TokenPruning

        return TokenPruning(n_layer, keep=self.keep, soft=soft, temperature=self.temperature, start=self.start,
                            restore=self.restore)


@dataclass
class HiddenSpec:
    """Objective hidden (general distillation, TinyBERT's and Length-Adaptive Distillation's first stage): the
    student's layer outputs imitate the teacher's, mean squared error per token summed over the pairs."""

    # [student layer, teacher layer] pairs, 1-based outputs (0: the embeddings); default: each student layer i
    # against teacher layer round(i * teacher layers / student layers), the last against the last
    pairs: list[list[int]] | None = None


@dataclass
class DistSpec:
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    fsdp: bool = False


@dataclass
class Recipe:
    out: str = "runs/train"
    seed: int = 1337
    model: ModelSpec = field(default_factory=ModelSpec)
    data: dict[str, float] = field(default_factory=dict)  # one stage: shard folder -> weight
    tokens: int = 0  # that stage's token budget
    steps: int = 0  # or a number of optimizer steps (one stage; a classification task's natural budget)
    # what the loss is on: next tokens (causal), masked tokens of an encoder (mlm, with data), or the labels of
    # a classification head (classify, with task)
    objective: Literal["causal", "mlm", "classify", "hidden"] = "causal"
    mlm: MaskSpec = field(default_factory=MaskSpec)
    hidden: HiddenSpec = field(default_factory=HiddenSpec)  # objective hidden: which layers imitate which
    task: TaskSpec | None = None
    stages: list[Stage] = field(default_factory=list)  # or several stages (overrides data/tokens)
    batch: BatchSpec = field(default_factory=BatchSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str | None = None
    compile: bool = False
    init_std: float = 0.02  # normal(0, init_std) weights; under muP, the base width's std
    eval_every: int = 200  # steps between validation runs (0: only at the end)
    eval_tokens: int = 65536  # validation tokens per data source
    save_every: int = 500  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2
    log_every: int = 10
    export_as: str | None = None  # also copy the final model to ~/.cache/slmkit/models/NAME: `-m NAME` loads it
    distill: DistillSpec | None = None
    lora: LoraRecipe | None = None  # train an adapter instead of the whole model
    prune: PruneSpec | None = None  # objective classify: train and validate with dynamic token pruning
    mup: MupSpec = field(default_factory=MupSpec)
    dist: DistSpec = field(default_factory=DistSpec)

    # --- derived ------------------------------------------------------------------------------------------

    def all_stages(self) -> list[Stage]:
        if self.steps and not self.stages:
            return [Stage("main", self.steps * self.tokens_per_step(), dict(self.data))]
        return self.stages or [Stage("main", self.tokens, dict(self.data))]

    def tokens_per_step(self) -> int:
        return self.batch.global_batch * self.batch.seq_len

    def stage_steps(self) -> list[int]:
        return [s.tokens // self.tokens_per_step() for s in self.all_stages()]

    def grad_accum(self, world: int) -> int:
        return self.batch.global_batch // (self.batch.micro_batch * world)

    def validate(self, world: int = 1) -> None:
        """Refuse impossible values with one line naming the key."""
        b, o = self.batch, self.optim
        for key, v in (("batch.seq_len", b.seq_len), ("batch.global_batch", b.global_batch),
                       ("batch.micro_batch", b.micro_batch), ("log_every", self.log_every),
                       ("keep_checkpoints", self.keep_checkpoints)):
            if v < 1:
                raise SlmError(f"{key} must be at least 1, got {v}")
        if b.global_batch % (b.micro_batch * world):
            raise SlmError(f"batch.global_batch {b.global_batch} is not divisible by batch.micro_batch {b.micro_batch}"
                           f" x {world} process{'es' if world > 1 else ''}; make it a multiple of "
                           f"{b.micro_batch * world}")
        if o.lr <= 0 or not 0 <= o.min_lr_ratio <= 1:
            raise SlmError(f"optim.lr must be positive and optim.min_lr_ratio in [0, 1], got {o.lr}, {o.min_lr_ratio}")
        if not (0 <= o.betas[0] < 1 and 0 <= o.betas[1] < 1) or o.weight_decay < 0 or o.clip < 0:
            raise SlmError("optim.betas must be in [0, 1), optim.weight_decay and optim.clip non-negative")
        if not 0 < o.decay_fraction <= 1:
            raise SlmError(f"optim.decay_fraction must be in (0, 1], got {o.decay_fraction}")
        if self.steps < 0:
            raise SlmError(f"steps must be positive, got {self.steps}")
        if self.steps and (self.tokens or self.stages):
            raise SlmError("give the budget as steps or as tokens (or stages), not both")
        if self.objective == "classify":
            if self.task is None:
                raise SlmError("objective classify needs a task section: task.train (labelled examples), "
                               "task.labels, task.text")
            self.task.check()
            if self.data or self.stages:
                raise SlmError("objective classify trains on task.train; drop data/stages")
            if self.distill is not None:
                raise SlmError("distill is for language-model objectives; drop it for objective classify")
        elif self.task is not None:
            raise SlmError("a task section is for objective classify; set objective: classify")
        if self.objective == "hidden" and (self.distill is None or not self.distill.teacher):
            raise SlmError("objective hidden distils a teacher's hidden states: set distill.teacher")
        if self.prune is not None:
            head = self.objective == "classify" and self.task.verbalizer is None
            if not head and self.objective != "hidden":
                raise SlmError("prune trains a classification head (objective classify, no task.verbalizer) or a "
                               "student's hidden states (objective hidden) with token pruning: pruning drops the "
                               "positions other objectives score")
            if not 0 < self.prune.keep <= 1 or self.prune.temperature <= 0:
                raise SlmError(f"prune.keep must be in (0, 1] and prune.temperature positive, got "
                               f"{self.prune.keep}, {self.prune.temperature}")
        if self.objective == "mlm":
            self.mlm.check()
            if self.distill is not None:
                raise SlmError("distill with objective mlm is not supported; drop distill")
        stages = self.all_stages()
        if self.stages and (self.data or self.tokens):
            raise SlmError("give either stages or data + tokens, not both")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise SlmError(f"stage names must be unique, got {names}")
        for s, steps in zip(stages, self.stage_steps()):
            where = f"stage {s.name!r}" if self.stages else "the recipe"
            if not s.data and self.objective != "classify":
                raise SlmError(f"{where} has no data: give shard folders made by `slm data prepare` with weights")
            if steps < 1:
                raise SlmError(f"{where}: a token budget of {s.tokens:,} is below one step "
                               f"(global_batch x seq_len = {self.tokens_per_step():,} tokens); set tokens or steps")
        total = sum(self.stage_steps())
        if o.warmup_steps < 0 or o.warmup_steps >= total:
            raise SlmError(f"optim.warmup_steps {o.warmup_steps} must be below the run's {total} steps")
        if self.distill is not None:
            d = self.distill
            if not d.teacher:
                raise SlmError("distill.teacher is missing: name a model slmkit loads (a folder, .gguf, 'default')")
            if d.temperature <= 0 or not 0 <= d.alpha <= 1 or d.top_k < 1:
                raise SlmError(f"distill needs temperature > 0, alpha in [0, 1] and top_k >= 1, got "
                               f"{d.temperature}, {d.alpha}, {d.top_k}")
        if self.export_as is not None and (not self.export_as or "/" in self.export_as
                                           or self.export_as.startswith(".") or self.export_as == "default"):
            raise SlmError(f"export_as must be a plain name (no '/', not 'default'), got {self.export_as!r}")
        if self.mup.base_width is not None and self.mup.base_width < 1:
            raise SlmError(f"mup.base_width must be positive, got {self.mup.base_width}")
        if self.lora is not None:
            self.lora.spec()  # rank, alpha, dropout, targets
            if self.export_as:
                raise SlmError("export_as names a full model; a lora run writes OUT/adapter: run it with --adapter, "
                               "or fold it in with slm merge")
            if not self.model.init:
                raise SlmError("lora trains an adapter on existing weights: set model.init to the base model")
            if self.dist.fsdp:
                raise SlmError("lora runs with DDP (an adapter is small); set dist.fsdp: false")
            if self.mup.base_width is not None:
                raise SlmError("lora and mup do not combine; drop mup.base_width")
            if self.lora.base == "int4" and self.lora.group_size not in (32, 64, 128, 256):
                raise SlmError(f"lora.group_size must be 32, 64, 128 or 256, got {self.lora.group_size}")
        if self.model.preset is None and self.model.config is None and self.model.init is None:
            raise SlmError("model needs one of: preset (a name from `slm presets`), config (a folder, .gguf or "
                           "config.json) or init (weights to start from)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- reading -----------------------------------------------------------------------------------------------------


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Read a recipe YAML file (or start from the defaults when path is None) and apply KEY=VALUE overrides."""
    import yaml

    raw: dict[str, Any] = {}
    where = "the recipe"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise SlmError(f"{p}: no such recipe file (see recipes/ for examples)")
        where = str(p)
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise SlmError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise SlmError(f"{p}: a recipe is a mapping of keys to values")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SlmError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=1e-3")
        _set_path(raw, key.strip().split("."), yaml.safe_load(value))
    return _build(Recipe, raw, where, "")


def _set_path(raw: dict, keys: list[str], value: Any) -> None:
    node = raw
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise SlmError(f"--set {'.'.join(keys)}: {k} is not a section")
    node[keys[-1]] = value


def _build(cls, raw: Any, where: str, prefix: str):
    if raw is None and prefix:
        raw = {}
    if not isinstance(raw, dict):
        raise SlmError(f"{where}: {prefix.rstrip('.') or 'the recipe'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise SlmError(f"{where}: unknown key {prefix}{unknown[0]}; valid keys here: {', '.join(sorted(fields))}")
    kwargs = {k: _convert(hints[k], v, where, prefix + k) for k, v in raw.items()}
    return cls(**kwargs)


def _convert(tp, value: Any, where: str, key: str):
    """Check and convert one value against a field's type annotation."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, key + ".")
    if origin is Literal:
        if value not in args:
            raise SlmError(f"{where}: {key} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SlmError(f"{where}: {key} must be a list, got {value!r}")
        return [_convert(args[0], v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise SlmError(f"{where}: {key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, where, key) for a, v in zip(args, value))
    if origin is dict:
        if not isinstance(value, dict):
            raise SlmError(f"{where}: {key} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, where, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SlmError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads 1e6 (no dot) as a string
            try:
                value = float(value.replace("_", ""))
            except ValueError:
                raise SlmError(f"{where}: {key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SlmError(f"{where}: {key} must be a number, got {value!r}")
        if tp is int:
            if float(value) != int(value):
                raise SlmError(f"{where}: {key} must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise SlmError(f"{where}: {key} must be a string, got {value!r}")
        return str(value)
    return value
