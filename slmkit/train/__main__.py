"""`torchrun --nproc_per_node N -m slmkit.train RECIPE [--set KEY=VALUE ...] [--resume]`: `slm train` in every
process; torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR) makes them one run. The processes on one machine
share its cores (each gets cores / LOCAL_WORLD_SIZE threads)."""

import argparse
import os
import sys

import torch

from slmkit.device import threads_per_process
from slmkit.errors import run_main
from slmkit.train import command


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m slmkit.train", description=command.run.__doc__)
    command.add_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="use a run folder that is not a previous run's")
    a = p.parse_args(argv)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if local_world > 1 and not torch.cuda.is_available():
        torch.set_num_threads(threads_per_process(local_world))
    return run_main("slm train", lambda: command.run(a))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
