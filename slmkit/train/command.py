"""`slm train` / `slm distill` and `python -m slmkit.train` (under torchrun): the arguments and the call into
the training library, shared by both entry points so that the torchrun one needs nothing of the CLI."""

from __future__ import annotations

import argparse


def add_arguments(s: argparse.ArgumentParser, distill: bool = False) -> None:
    s.add_argument("recipe", help="recipe YAML file (see recipes/)")
    s.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set optim.lr=1e-3 --set batch.global_batch=64 (repeatable)")
    s.add_argument("--out", "-o", help="run folder (the same as --set out=...)")
    s.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    s.add_argument("--stop-at", type=int, metavar="STEP",
                   help="stop after this step with a checkpoint (a job with a time limit); --resume goes on")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    if distill:
        s.add_argument("--teacher", help="teacher model (the same as --set distill.teacher=...)")


def run(a: argparse.Namespace, distill: bool = False) -> None:
    """Train a model from a recipe (YAML; see recipes/): pretraining, fine-tuning, or distillation when the recipe
    has a distill section. Runs in one process, or in many under torchrun (python -m slmkit.train)."""
    from slmkit.errors import SlmError
    from slmkit.train.loop import train
    from slmkit.train.recipe import load_recipe

    sets = list(a.set)
    if a.out:
        sets.append(f"out={a.out}")
    if distill and getattr(a, "teacher", None):
        sets.append(f"distill.teacher={a.teacher}")
    recipe = load_recipe(a.recipe, sets)
    if distill and recipe.distill is None:
        raise SlmError(f"{a.recipe}: has no distill section; add one (see recipes/distill-smollm2.yaml) or pass "
                       f"--teacher MODEL")
    train(recipe, resume=a.resume, progress=not a.quiet, stop_at=a.stop_at, overwrite=a.overwrite)
