"""Checkpoints of a run: out/checkpoints/step-NNNNNNN/ is an HF folder (config.json, model.safetensors, tokenizer)
plus trainer_state.pt (optimizer, RNG, step, data position) and recipe.yaml; out/latest names the newest complete
one. Each folder is written to a hidden temp folder and renamed into place, and `latest` is replaced by rename
after that, so a process killed mid-write leaves the previous checkpoint loadable and named."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from slmkit.errors import SlmError
from slmkit.model.model import Transformer
from slmkit.train import dist

STATE_FILE = "trainer_state.pt"


class Checkpoints:
    # Called with (step, temp folder) once a checkpoint's files are written and before the folder moves into
    # place; tests set it to stop a write midway (they kill the process then and check what survives).
    write_hook: Callable[[int, Path], None] | None = None

    def __init__(self, out: Path, keep: int, ctx: dist.DistContext):
        self.out, self.keep, self.ctx = out, keep, ctx
        self.dir = out / "checkpoints"
        if ctx.main and self.dir.is_dir():  # temp folders of a write that was killed
            for tmp in self.dir.glob(".step-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint: the one `latest` names, else the highest step folder with its state."""
        pointer = self.out / "latest"
        if pointer.is_file():
            path = self.out / pointer.read_text(encoding="utf-8").strip()
            if (path / STATE_FILE).is_file():
                return path
        done = sorted(p for p in self.dir.glob("step-*") if (p / STATE_FILE).is_file()) if self.dir.is_dir() else []
        return done[-1] if done else None

    # --- saving ------------------------------------------------------------------------------------------------

    def save(self, step: int, wrapped: nn.Module, model: Transformer, optimizer: torch.optim.Optimizer,
             tokenizer, recipe, info: dict) -> Path:
        """Write step's checkpoint on the main process (every process takes part in gathering FSDP shards)."""
        import yaml

        from slmkit.checkpoint import save

        weights, opt_state = self._gather(wrapped, model, optimizer)
        path = self.dir / f"step-{step:07d}"
        if self.ctx.main:
            state = dict(step=step, optimizer=opt_state, rng=torch.get_rng_state(), world=self.ctx.world, **info)
            if torch.cuda.is_available():
                state["cuda_rng"] = torch.cuda.get_rng_state_all()

            def extra(tmp: Path) -> None:
                torch.save(state, tmp / STATE_FILE)
                (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
                if Checkpoints.write_hook is not None:
                    Checkpoints.write_hook(step, tmp)

            if getattr(model, "lora_spec", None) is not None:  # the adapter and the base's identity, not the base
                from slmkit.adapters.peft_format import write_adapter
                from slmkit.outputs import atomic_dir

                with atomic_dir(path, "adapter", overwrite=True) as folder:
                    write_adapter(model, folder)
                    extra(folder)
            else:
                save(self._plain(model, weights), path, tokenizer, extra=extra)
            tmp = self.out / ".latest.tmp"
            tmp.write_text(str(path.relative_to(self.out)), encoding="utf-8")
            os.replace(tmp, self.out / "latest")
            self._prune(path)
        dist.barrier(self.ctx)
        return path

    def _gather(self, wrapped: nn.Module, model: Transformer, optimizer) -> tuple[dict | None, dict]:
        if self.ctx.distributed and not hasattr(wrapped, "module"):  # FSDP2: gather full tensors on every rank
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_optimizer_state_dict)

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return (get_model_state_dict(wrapped, options=opts),
                    get_optimizer_state_dict(wrapped, optimizer, options=opts))
        return None, optimizer.state_dict()

    @staticmethod
    def _plain(model: Transformer, weights: dict | None) -> Transformer:
        """The model to write: itself, or (FSDP2) a CPU copy built from the gathered full weights."""
        if weights is None:
            return model
        with torch.device("meta"):
            plain = Transformer(model.config)
        plain.load_state_dict(weights, strict=True, assign=True)
        plain.tie_weights()
        plain.reset_buffers(torch.device("cpu"))
        return plain

    def _prune(self, newest: Path) -> None:
        done = sorted(p for p in self.dir.glob("step-*") if (p / STATE_FILE).is_file() and p != newest)
        for old in done[:max(0, len(done) - (self.keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)

    def export_final(self, target: Path) -> Path:
        """Copy the last checkpoint's weights, config and tokenizer (or adapter) without the trainer state to
        target."""
        latest = self.latest()
        if self.ctx.main and latest is not None:
            from slmkit.adapters.peft_format import CONFIG
            from slmkit.outputs import atomic_dir

            with atomic_dir(target, "adapter" if (latest / CONFIG).is_file() else "model") as tmp:
                for f in latest.iterdir():
                    if f.name != STATE_FILE:
                        shutil.copy2(f, tmp / f.name)
        return target

    # --- resuming ----------------------------------------------------------------------------------------------

    def read(self, path: Path, model: Transformer) -> dict:
        """Load a checkpoint's weights into the (unwrapped) model and restore the RNG; returns the trainer state."""
        from slmkit.checkpoint import load

        try:
            state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged file: say which
            raise SlmError(f"{path / STATE_FILE}: cannot read the trainer state ({type(e).__name__}); resume from an "
                           f"earlier checkpoint by editing {self.out / 'latest'}") from None
        if getattr(model, "lora_spec", None) is not None:
            from slmkit.adapters.lora import set_adapter_weights
            from slmkit.adapters.peft_format import read_adapter

            adapter, _ = read_adapter(path)
            a, b = adapter.spec, model.lora_spec  # the targets: set_adapter_weights checks them by name
            if (a.r, a.alpha, a.dropout, a.rslora) != (b.r, b.alpha, b.dropout, b.rslora):
                raise SlmError(f"{path}: its adapter ({adapter.spec}) differs from the recipe's lora section; resume "
                               f"with the recipe that wrote it (saved beside it as recipe.yaml)")
            set_adapter_weights(model, adapter, str(path))
        else:
            saved = load(path, dtype="float32", device=model.device).model
            try:
                model.load_state_dict(saved.state_dict(), strict=True)
            except RuntimeError:
                raise SlmError(f"{path}: its architecture differs from the recipe's model; resume with the recipe "
                               f"that wrote it (saved beside it as recipe.yaml)") from None
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, wrapped: nn.Module, state: dict) -> None:
        if self.ctx.distributed and not hasattr(wrapped, "module"):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(wrapped, optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state["optimizer"])
