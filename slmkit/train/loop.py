"""The one training loop, shared by pretraining, distillation and fine-tuning: they differ in the objective
(cross-entropy on next tokens, on an encoder's masked tokens or on a classification head's labels, or a KD loss
mixed with it, from a teacher run under no_grad in the same step) and in the data source (token shards, masked
token shards, labelled examples), not in a copied loop.

A step draws its global batch (a function of seed, stage and step alone), splits it over processes and
micro-batches, sums the loss over target tokens and divides by the step's token count, so 1 process and N
processes compute the same gradient. Then: global-norm clipping, AdamW (fused where available), the schedule's
learning rate; validation loss and perplexity every eval_every steps; an atomic checkpoint (HF folder +
trainer_state.pt) every save_every steps, and `out/latest` naming the newest complete one.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from slmkit.errors import SlmError
from slmkit.model.model import Transformer
from slmkit.tokenizer.tokenizer import Tokenizer
from slmkit.train import dist, mup
from slmkit.train.data import Batch, TokenData, stack_windows, vocab_fingerprint
from slmkit.train.log import RunLog
from slmkit.train.losses import IGNORE, cross_entropy_sum, kd_sum
from slmkit.train.recipe import DistillSpec, Recipe
from slmkit.train.schedule import lr_multiplier
from slmkit.train.state import Checkpoints


# --- model and teacher -----------------------------------------------------------------------------------------


def build_model(recipe: Recipe, tokenizer: Tokenizer, device: torch.device) -> Transformer:
    """The model to train, in float32: a preset or config with overrides, freshly initialised (muP or standard),
    or the weights named by model.init."""
    import dataclasses

    from slmkit.checkpoint import load, load_config
    from slmkit.model.config import ModelConfig

    spec = recipe.model
    if spec.init:
        if spec.overrides or spec.preset or spec.config:
            raise SlmError("model.init starts from a checkpoint's own architecture; drop model.preset/config/overrides")
        if spec.layers is not None and recipe.lora is not None:
            raise SlmError("model.layers cuts a student from model.init; it does not combine with lora")
        if recipe.lora is not None:
            if recipe.objective == "classify" and recipe.task.verbalizer is None:
                raise SlmError("lora with a classification head is not supported (the new head would need training "
                               "beside the adapter); fine-tune the whole model, use a cloze (task.verbalizer), or "
                               "drop lora")
            return build_adapted(recipe, device)
        model = load(spec.init, dtype="float32", device=device).model
        if spec.layers is not None:
            from slmkit.train.student import take_layers

            model = take_layers(model, spec.layers)
        if recipe.objective == "classify" and recipe.task.verbalizer is None:
            model = with_classifier(model, len(recipe.task.labels), [str(v) for v in recipe.task.labels],
                                    recipe.seed, recipe.init_std)
        return model.train()
    try:
        if spec.preset:
            config = ModelConfig.from_name(spec.preset, **spec.overrides)
        else:
            config = dataclasses.replace(load_config(spec.config)[0], **spec.overrides)
    except TypeError as e:
        raise SlmError(f"model.overrides: {e}") from None
    config = dataclasses.replace(config, name=config.name + "-trained" if spec.overrides else config.name,
                                 bos_token_id=tokenizer.bos_id if tokenizer.bos_id is not None else config.bos_token_id,
                                 eos_token_id=tokenizer.eos_id,
                                 pad_token_id=tokenizer.pad_id if tokenizer.pad_id is not None else config.pad_token_id)
    if recipe.objective == "classify" and recipe.task.verbalizer is None:
        config = dataclasses.replace(config, **classifier_fields(config, len(recipe.task.labels)),
                                     extra={**config.extra, "id2label": [str(v) for v in recipe.task.labels]})
    torch.manual_seed(recipe.seed)
    with torch.device(device):
        model = Transformer(config)
    mup.init(model, recipe.mup.base_width, recipe.init_std)
    return model.float().train()


def classifier_fields(config, n_labels: int) -> dict:
    """A classification head in transformers' own shape: an encoder pools its first token through dense + tanh
    (BERT's pooler, RoBERTa's classifier), a decoder reads its last real token with a bias-free projection."""
    encoder = not config.causal
    return dict(head="classify", n_labels=n_labels, pooling="first" if encoder else "last", pool_dense=encoder,
                score_bias=encoder)


def with_classifier(model: Transformer, n_labels: int, names: list[str], seed: int, std: float) -> Transformer:
    """The model with a fresh classification head of n_labels in place of its vocabulary head (or none); a model
    that already has one with n_labels keeps it."""
    import dataclasses

    c = model.config
    if c.head == "classify" and c.n_labels == n_labels:
        return model
    config = dataclasses.replace(c, **classifier_fields(c, n_labels), extra={**c.extra, "id2label": names})
    torch.manual_seed(seed)
    with torch.device(model.device):
        new = Transformer(config)
    for m in (new.pool, new.score):
        if m is not None:
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias) if m.bias is not None else None
    body = {k: v for k, v in model.state_dict().items()
            if not k.startswith(("lm_head.", "head_dense.", "head_norm.", "pool.", "score."))}
    missing, unexpected = new.load_state_dict(body, strict=False)
    left = [k for k in missing if not k.startswith(("pool.", "score."))]
    if left or unexpected:
        raise SlmError(f"cannot move {c.name}'s weights under a classification head ({(left or unexpected)[0]})")
    return new.float()


def build_adapted(recipe: Recipe, device: torch.device) -> Transformer:
    """model.init, frozen at lora.base's precision (int8/int4: QLoRA), with fresh LoRA adapters in float32."""
    from slmkit.adapters.lora import apply_lora
    from slmkit.adapters.peft_format import base_fingerprint
    from slmkit.checkpoint import load
    from slmkit.quant.quantize import QuantSpec, quantize

    lo = recipe.lora
    lm = load(recipe.model.init, dtype="bfloat16" if lo.base == "bf16" else "float32", device=device)
    model = lm.model
    model.base_fingerprint = base_fingerprint(model)  # before quantising: the base's own identity
    model.base_source = recipe.model.init
    if lo.base in ("int8", "int4"):
        quantize(model, QuantSpec(bits=int(lo.base[3:]), group_size=lo.group_size if lo.base == "int4" else None))
    torch.manual_seed(recipe.seed)  # the adapters' initialisation
    apply_lora(model, lo.spec())
    return model.train()


def load_teacher(spec: DistillSpec, tokenizer: Tokenizer, student: Transformer, device: torch.device) -> Transformer:
    """The teacher, frozen in eval mode; its tokenizer must be the data's and its vocabulary the student's."""
    from slmkit.checkpoint import load

    lm = load(spec.teacher, dtype=spec.teacher_dtype, device=device, progress=False)
    if lm.tokenizer is None:
        raise SlmError(f"teacher {spec.teacher} has no tokenizer, so it cannot be checked against the student's")
    if vocab_fingerprint(lm.tokenizer) != vocab_fingerprint(tokenizer):
        raise SlmError(f"teacher {spec.teacher} and the student's data use different tokenizers; distillation "
                       f"compares their distributions token by token, so prepare the data with the teacher's "
                       f"tokenizer (slm data prepare --tokenizer {spec.teacher})")
    if lm.config.vocab_size != student.config.vocab_size:
        raise SlmError(f"teacher vocabulary {lm.config.vocab_size} != student vocabulary {student.config.vocab_size};"
                       f" set model.overrides.vocab_size: {lm.config.vocab_size}")
    lm.model.eval().requires_grad_(False)
    return lm.model


# --- objective ---------------------------------------------------------------------------------------------------


class Objective:
    """Cross-entropy, or alpha * KD + (1 - alpha) * cross-entropy with a teacher; sums over target tokens."""

    def __init__(self, distill: DistillSpec | None = None, teacher: nn.Module | None = None,
                 temperature: float = 2.0, prune=None, hidden_pairs: list[tuple[int, int]] | None = None):
        self.distill, self.teacher = distill, teacher
        self.temperature = temperature  # soft targets (a classify task's soft_labels): PET's T = 2
        self.prune = prune  # a TokenPruning factory: () -> TokenPruning (recipe.prune)
        self.hidden_pairs = hidden_pairs  # objective hidden: (student layer, teacher layer) outputs to match

    def __call__(self, model: nn.Module, batch: Batch, autocast) -> dict[str, torch.Tensor]:
        x, y = batch.x, batch.y
        prune = self.prune() if self.prune is not None else None
        if self.hidden_pairs is not None:  # general distillation: hidden states, per token, summed over the pairs
            mine, theirs = [], []
            with autocast():
                model(x, hidden=True, prune=prune, layers_out=mine)
            with torch.no_grad():
                self.teacher(x, hidden=True, layers_out=theirs)
            mse = sum(((mine[i].float() - theirs[j].float()) ** 2).mean(-1).sum() for i, j in self.hidden_pairs)
            return {"loss": mse, "mse": mse}
        if batch.soft:  # a teacher's label logits (PET's ensemble): KL at its temperature
            with autocast():
                logits = label_logits(model, batch, prune)
            kd = soft_label_kl(logits, y, self.temperature)
            return {"loss": kd, "kd": kd, "acc": (logits.argmax(-1) == y.argmax(-1)).sum().to(kd.dtype)}
        if batch.labels:  # a classification head, or a cloze's verbalizers: one label per row
            with autocast():
                logits = label_logits(model, batch, prune)
            ce = F.cross_entropy(logits.float(), y, ignore_index=IGNORE, reduction="sum")
            return {"loss": ce, "ce": ce, "acc": (logits.argmax(-1) == y).sum().to(ce.dtype)}
        if self.teacher is None:
            keep = y != IGNORE
            if not bool(keep.all()):  # loss masks: the vocabulary projection only where there are targets
                with autocast():
                    logits = model(x, rows=keep)
                ce = cross_entropy_sum(logits[None], y[keep][None])
                return {"loss": ce, "ce": ce}
        with autocast():
            logits = model(x)
        ce = cross_entropy_sum(logits, y)
        if self.teacher is None:
            return {"loss": ce, "ce": ce}
        d = self.distill
        with torch.no_grad():
            t_logits = self.teacher(x)
        kd = kd_sum(logits, t_logits, y, d.loss, d.temperature, d.top_k)
        return {"loss": d.alpha * kd + (1 - d.alpha) * ce, "ce": ce, "kd": kd}


def soft_label_kl(logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Summed over rows: T^2 * KL(softmax(target / T) || softmax(logits / T)), PET's distillation loss."""
    log_q = F.log_softmax(logits.float() / temperature, dim=-1)
    p = F.softmax(target_logits.float() / temperature, dim=-1)
    return F.kl_div(log_q, p, reduction="sum") * temperature**2


def label_logits(model: nn.Module, batch: Batch, prune=None) -> torch.Tensor:
    """(B, L) label logits: the classification head's, or for a cloze (PET) the vocabulary logits of the
    verbalizers at each row's mask position; for a cloze scored by token sequences (x (B, L, T): one filled pattern
    per label), each label's summed log-probabilities of its targets (choices) at its positions (at)."""
    if batch.choices is None:
        if prune is not None:  # only a head's forward takes token pruning (recipe.prune): a cloze reads positions
            return model(batch.x, key_valid=batch.valid, token_types=batch.types, prune=prune)
        return model(batch.x, key_valid=batch.valid, token_types=batch.types)
    if batch.x.ndim == 3:
        B, L, T = batch.x.shape
        pos, tgt = batch.at.reshape(B * L, -1), batch.choices.reshape(B * L, -1)
        used = pos >= 0
        row = torch.arange(B * L, device=pos.device)[:, None].expand_as(pos)[used]
        rows = torch.zeros((B * L, T), dtype=torch.bool, device=pos.device)
        rows[row, pos[used]] = True  # positions ascend within a row, so rows' order is (row, position)'s
        vocab = model(batch.x.reshape(B * L, T), key_valid=batch.valid.reshape(B * L, T),
                      token_types=batch.types.reshape(B * L, T), rows=rows)
        logp = vocab.float().log_softmax(-1).gather(1, tgt[used][:, None])[:, 0]
        return torch.zeros(B * L, device=logp.device, dtype=logp.dtype).index_add_(0, row, logp).view(B, L)
    rows = torch.zeros_like(batch.x, dtype=torch.bool)
    rows[torch.arange(len(batch.x), device=batch.x.device), batch.at] = True
    vocab = model(batch.x, key_valid=batch.valid, token_types=batch.types, rows=rows)  # (B, V), one mask per row
    return vocab.gather(1, batch.choices)


def autocast_for(precision: str, device: torch.device):
    """A context factory: bf16 autocast, or nothing for fp32. 'auto' is bf16 on GPUs that have it, fp32 on CPU."""
    from slmkit.device import supports_bf16

    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and supports_bf16(device) else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext, "fp32"
    if not supports_bf16(device):
        raise SlmError(f"precision bf16 is not supported on {device}; use precision: fp32")
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)), "bf16"


# --- evaluation --------------------------------------------------------------------------------------------------


@torch.no_grad()
def validation_loss(model: nn.Module, windows: list[tuple[np.ndarray, np.ndarray]], batch: int, device: torch.device,
                    autocast, ctx: dist.DistContext | None = None, shard: bool = True) -> float:
    """Mean next-token loss over fixed (inputs, targets) windows (TokenData.val_windows), over the targets that
    are not IGNORE; with shard, the processes split them and sum."""
    return validate(model, stack_windows(windows, batch), device, autocast, ctx, shard)["val_loss"]


@torch.no_grad()
def validate(model: nn.Module, batches: list[Batch], device: torch.device, autocast,
             ctx: dist.DistContext | None = None, shard: bool = True, temperature: float = 2.0,
             prune=None, objective: "Objective | None" = None) -> dict[str, float]:
    """Mean loss over fixed validation Batches, the training objective's (without a teacher) over their targets
    (and, for labels, accuracy); with shard, the processes split the batches and sum. prune: a TokenPruning
    factory for a classification head (hard pruning, as at inference); objective: the loss to take, in place of
    the plain one (objective hidden's, which needs its teacher)."""
    ctx = ctx or dist.DistContext(device=device)
    mine = batches[ctx.rank::ctx.world] if shard else batches
    was_training = model.training
    model.eval()
    objective = objective or Objective(temperature=temperature, prune=prune)
    total = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, targets, correct labels
    labels = bool(batches) and batches[0].labels
    for b in mine:
        b = b.to(device)
        parts = objective(model, b, autocast)
        total[0] += parts["loss"].double()
        total[1] += float(b.n_targets())
        total[2] += parts["acc"].double() if "acc" in parts else 0.0
    if shard:
        dist.all_reduce_sum(total, ctx)
    model.train(was_training)
    out = {"val_loss": (total[0] / total[1].clamp(min=1)).item()}
    if labels:
        out["val_acc"] = (total[2] / total[1].clamp(min=1)).item()
    return out


# --- the loop ----------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out: Path
    steps: int
    tokens: int
    final_val_loss: float | None
    model_dir: Path


def train(recipe: Recipe, resume: bool = False, progress: bool = True, echo=print,
          stop_at: int | None = None, overwrite: bool = False) -> TrainResult:
    """Run a recipe to the end (or from its latest checkpoint with resume); returns where the model went.
    stop_at: stop after that step with a checkpoint (for jobs with a time limit; --resume goes on).
    The run folder must be new, empty or a previous run's (slmkit.outputs), unless overwrite=True."""
    from tqdm import tqdm

    from slmkit.outputs import claim_dir

    claim_dir(recipe.out, "train-run", overwrite)  # before any process starts work

    ctx = dist.setup(recipe.device, recipe.dist.backend)
    try:
        recipe.validate(ctx.world)
        return _train(recipe, resume, progress and ctx.main, echo if ctx.main else (lambda *a, **k: None), ctx, tqdm,
                      stop_at)
    finally:
        dist.teardown(ctx)


def _train(recipe: Recipe, resume: bool, progress: bool, echo, ctx: dist.DistContext, tqdm,
           stop_at: int | None) -> TrainResult:
    out = Path(recipe.out)
    stages = recipe.all_stages()
    stage_steps = recipe.stage_steps()
    total_steps = sum(stage_steps)
    ends = np.cumsum(stage_steps)
    data, tokenizer = data_sources(recipe, stages)
    fingerprint = vocab_fingerprint(tokenizer)

    if ctx.main:
        from slmkit.outputs import mark_dir

        mark_dir(out, "train-run")
    ckpts = Checkpoints(out, recipe.keep_checkpoints, ctx)
    latest = ckpts.latest()
    if latest is not None and not resume:
        raise SlmError(f"{out} already holds a run (latest checkpoint {latest}); pass --resume to continue it, or "
                       f"choose another out")

    model = build_model(recipe, tokenizer, ctx.device)
    if recipe.objective == "mlm" and model.config.causal:
        raise SlmError(f"objective mlm trains an encoder; {model.config.name} is a causal decoder (start from an "
                       f"encoder preset such as RoBERTa-base or BERT-base)")
    if recipe.objective == "mlm" and model.config.head != "lm":
        raise SlmError(f"objective mlm needs a masked-LM head; {model.config.name} has head {model.config.head!r}")
    if recipe.objective == "classify" and recipe.task.verbalizer is not None and model.config.head != "lm":
        raise SlmError(f"a cloze task (task.verbalizer) scores the labels with a vocabulary head; "
                       f"{model.config.name} has head {model.config.head!r}")
    if recipe.objective == "causal" and not model.config.causal:
        raise SlmError(f"{model.config.name} is an encoder: train it with objective mlm (or classify)")
    if model.config.tie_embeddings and recipe.dist.fsdp:
        raise SlmError("FSDP2 shards each block separately; use a model without tied embeddings or DDP")
    for d in data:
        for s in d.shards:
            s.check_vocab(model.config.vocab_size, fingerprint)
    teacher = load_teacher(recipe.distill, tokenizer, model, ctx.device) if recipe.distill else None
    n_exec = model.n_exec_layers
    train_prune = val_prune = None
    if recipe.prune is not None:  # soft masks in training steps, hard pruning in validation (a head's)
        train_prune = lambda: recipe.prune.pruner(n_exec, soft=True)  # noqa: E731
        val_prune = lambda: recipe.prune.pruner(n_exec, soft=recipe.objective == "hidden")  # noqa: E731
    pairs = None
    if recipe.objective == "hidden":
        from slmkit.train.student import hidden_pairs

        pairs = hidden_pairs(recipe.hidden.pairs, model, teacher)
    objective = Objective(recipe.distill, teacher, recipe.task.temperature if recipe.task else 2.0, train_prune,
                          pairs)
    autocast, precision = autocast_for(recipe.precision, ctx.device)

    state = None
    if latest is not None:
        state = ckpts.read(latest, model)
        echo(f"resuming from {latest} (step {state['step']}/{total_steps})")
    wrapped = dist.wrap(model, ctx, recipe.dist.fsdp)
    o = recipe.optim
    groups = mup.param_groups(model, o.lr, o.weight_decay, recipe.mup.base_width)
    fused = ctx.device.type in ("cpu", "cuda") and not recipe.dist.fsdp
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, fused=fused or None)
    if state is not None:
        ckpts.restore_optimizer(optimizer, wrapped, state)
    step = state["step"] if state else 0
    forward = torch.compile(wrapped) if recipe.compile else wrapped

    accum = recipe.grad_accum(ctx.world)
    per_rank = recipe.batch.global_batch // ctx.world
    rows = slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
    mb = recipe.batch.micro_batch
    n_params = sum(p.numel() for p in model.parameters()) + sum(  # int8/int4 weights are buffers (QLoRA)
        m.in_features * m.out_features for m in model.modules() if getattr(m, "bits", None) in (4, 8))
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log = RunLog(out, ctx.main)
    if log.note:
        echo(log.note)
    adapter = (f" (LoRA r={recipe.lora.r} on {recipe.lora.base} base: {n_trainable / 1e6:.2f}M trainable)"
               if recipe.lora else "")
    echo(f"model {model.config.name}: {n_params / 1e6:.1f}M parameters{adapter} | {total_steps} steps x "
         f"{recipe.tokens_per_step():,} tokens ({recipe.batch.global_batch} x {recipe.batch.seq_len}) = "
         f"{total_steps * recipe.tokens_per_step():,} tokens | {ctx.world} process(es), {accum} micro-batch(es) of "
         f"{mb} | {precision} on {ctx.device}" + (f" | teacher {recipe.distill.teacher} ({recipe.distill.loss}, "
                                                  f"T={recipe.distill.temperature}, alpha={recipe.distill.alpha})"
                                                  if teacher is not None else ""))
    log.write(dict(event="start" if state is None else "resume", step=step, total_steps=total_steps,
                   params=n_params, trainable=n_trainable, world=ctx.world, precision=precision,
                   recipe=recipe.to_dict()))
    val_batches = validation_source(recipe, stages, data, tokenizer).val_batches(recipe.eval_tokens, max(1, mb))

    def run_validation(at_step: int) -> float | None:
        if not val_batches:
            return None
        got = validate(forward, val_batches, ctx.device, autocast, ctx, shard=not recipe.dist.fsdp,
                       temperature=objective.temperature, prune=val_prune,
                       objective=Objective(recipe.distill, teacher, prune=val_prune, hidden_pairs=pairs)
                       if pairs is not None else None)
        loss = got["val_loss"]
        log.write(dict(event="eval", step=at_step, **got, val_ppl=math.exp(min(loss, 50))))
        if "val_acc" in got:
            echo(f"step {at_step}: val loss {loss:.4f}, val accuracy {100 * got['val_acc']:.1f}%")
        return loss

    def save(at_step: int, val: float | None) -> Path:
        return ckpts.save(at_step, wrapped, model, optimizer, tokenizer, recipe,
                          dict(stage=stage_of(at_step), val_loss=val, tokens=at_step * recipe.tokens_per_step()))

    def stage_of(s: int) -> int:
        return int(np.searchsorted(ends, s, side="right")) if s < total_steps else len(stages) - 1

    bar = tqdm(total=total_steps, initial=step, disable=True if not progress else None, unit="step",
               dynamic_ncols=True)
    last_val = state.get("val_loss") if state else None
    tok_rate = None
    stage = stage_of(step)
    if step < total_steps:
        log.write(dict(event="stage", step=step, stage=stage, name=stages[stage].name))
        echo(f"stage {stages[stage].name!r}: steps {int(ends[stage] - stage_steps[stage])}-{int(ends[stage])}, "
             f"data {stages[stage].data}")
    wrapped.train()
    try:
        while step < total_steps:
            if stage_of(step) != stage:
                stage = stage_of(step)
                log.write(dict(event="stage", step=step, stage=stage, name=stages[stage].name))
                echo(f"stage {stages[stage].name!r} from step {step}: data {stages[stage].data}")
            t0 = time.perf_counter()
            mult = lr_multiplier(step, total_steps, o.warmup_steps, o.schedule, o.min_lr_ratio, o.decay_fraction)
            for g in optimizer.param_groups:
                g["lr"] = o.lr * mult * g["lr_scale"]
            b = data[stage].draw(step, stage, rows, recipe.batch.global_batch).to(ctx.device)
            n_targets = dist.all_reduce_sum(torch.tensor([float(b.n_targets())], dtype=torch.float64,
                                                         device=ctx.device), ctx).clamp(min=1)  # all masked: 0 loss
            sums: dict[str, torch.Tensor] = {}
            for i in range(accum):
                last = i == accum - 1
                with _no_sync(wrapped, ctx, recipe.dist.fsdp, last):
                    parts = objective(forward, b[i * mb:(i + 1) * mb], autocast)
                    (parts["loss"] * (ctx.world / n_targets.item())).backward()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0) + v.detach().double()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip if o.clip > 0 else float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            keys = sorted(sums)
            totals = dist.all_reduce_sum(torch.stack([sums[k] for k in keys]), ctx) / n_targets
            metrics = dict(zip(keys, totals.tolist()))
            step += 1
            if not math.isfinite(metrics["loss"]):
                good = ckpts.latest()
                raise SlmError(f"the loss became {metrics['loss']} at step {step}; stopped without saving. Last good "
                               f"checkpoint: {good or 'none yet'}. Lower optim.lr or set optim.clip, then "
                               f"{'--resume' if good else 'start again'}")
            dt = time.perf_counter() - t0
            tps = recipe.tokens_per_step() / dt
            tok_rate = tps if tok_rate is None else 0.9 * tok_rate + 0.1 * tps
            if step % recipe.log_every == 0 or step == total_steps:
                log.write(dict(event="train", step=step, stage=stage, tokens=step * recipe.tokens_per_step(),
                               lr=o.lr * mult, grad_norm=float(grad_norm), tok_s=round(tok_rate, 1),
                               step_s=round(dt, 4), **metrics))
            bar.update(1)
            bar.set_postfix_str(f"loss {metrics['loss']:.3f} | lr {o.lr * mult:.2e} | {tok_rate:,.0f} tok/s"
                                + (f" | val {last_val:.3f}" if last_val is not None else ""))
            end = step == total_steps
            stop = stop_at is not None and step >= stop_at and not end
            if (recipe.eval_every and step % recipe.eval_every == 0) or end:
                last_val = run_validation(step)
            if (recipe.save_every and step % recipe.save_every == 0) or end or stop:
                save(step, last_val)
            if stop:
                break
    except KeyboardInterrupt:
        bar.close()
        if step > (state["step"] if state else 0) and step < total_steps:
            echo(f"interrupted: saving step {step} so --resume continues from it")
            save(step, last_val)
        raise
    finally:
        bar.close()
    if step < total_steps:
        log.write(dict(event="stop", step=step))
        log.close()
        echo(f"stopped at step {step} of {total_steps}: {ckpts.latest()}; --resume continues")
        return TrainResult(out, step, step * recipe.tokens_per_step(), last_val, ckpts.latest())
    model_dir = ckpts.export_final(out / ("adapter" if recipe.lora else "model"))
    if recipe.export_as and ctx.main:
        from slmkit.paths import cache_dir

        named = ckpts.export_final(cache_dir("models", recipe.export_as))
        echo(f"saved as {named}: load it with -m {recipe.export_as}")
    log.write(dict(event="end", step=step, val_loss=last_val))
    log.close()
    if last_val is not None:
        echo(f"done: {step} steps, {step * recipe.tokens_per_step():,} tokens | val loss {last_val:.4f} "
             f"(ppl {math.exp(min(last_val, 50)):.2f}) | model: {model_dir}")
    return TrainResult(out, step, step * recipe.tokens_per_step(), last_val, model_dir)


def recipe_config(recipe: Recipe):
    """The architecture the recipe trains (no weights read): model.init's, the preset's or the config file's."""
    import dataclasses

    from slmkit.checkpoint import load_config
    from slmkit.model.config import ModelConfig

    spec = recipe.model
    if spec.init:
        return load_config(spec.init)[0]
    try:  # as build_model makes it
        if spec.preset:
            return ModelConfig.from_name(spec.preset, **spec.overrides)
        return dataclasses.replace(load_config(spec.config)[0], **spec.overrides)
    except TypeError as e:
        raise SlmError(f"model.overrides: {e}") from None


def data_sources(recipe: Recipe, stages) -> tuple[list, Tokenizer]:
    """One data source per stage (token shards, masked token shards or labelled examples) and the tokenizer."""
    if recipe.objective == "classify":
        from slmkit.checkpoint import load_tokenizer
        from slmkit.train.labelled import LabelledData

        source = recipe.task.tokenizer or recipe.model.init
        if source is None:
            raise SlmError("objective classify needs a tokenizer: set task.tokenizer (or model.init)")
        tokenizer = load_tokenizer(source)
        if tokenizer is None:
            raise SlmError(f"{source} has no tokenizer; set task.tokenizer to a model folder that has one")
        causal = recipe_config(recipe).causal  # a decoder reads a cloze after the pattern
        return [LabelledData(recipe.task, tokenizer, recipe.seed, causal)], tokenizer  # classify: one stage
    data = [TokenData(s.data, recipe.batch.seq_len, recipe.seed) for s in stages]
    tokenizer = Tokenizer.from_dir(data[0].shards[0].path)
    if recipe.objective == "mlm":
        from slmkit.train.mlm import MaskedTokens

        data = [MaskedTokens(d, tokenizer, recipe.mlm, tokenizer.max_id + 1, recipe.seed, str(d.shards[0].path))
                for d in data]
    return data, tokenizer


def validation_source(recipe: Recipe, stages, data: list, tokenizer: Tokenizer):
    """What the validation batches come from: each token source once, whatever its stages (masked alike for mlm),
    or the task's val file."""
    if recipe.objective == "classify":
        return data[0]
    sources = list(dict.fromkeys(p for s in stages for p in s.data))
    val = TokenData({p: 1.0 for p in sources}, recipe.batch.seq_len, recipe.seed)
    if recipe.objective == "mlm":
        from slmkit.train.mlm import MaskedTokens

        return MaskedTokens(val, tokenizer, recipe.mlm, tokenizer.max_id + 1, recipe.seed)
    return val


def _no_sync(model: nn.Module, ctx: dist.DistContext, fsdp: bool, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if not ctx.distributed or last:
        if fsdp and ctx.distributed:
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if fsdp:
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    return model.no_sync()
