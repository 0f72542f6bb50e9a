"""`torchrun --nproc_per_node N -m slmkit.train RECIPE [--set KEY=VALUE ...] [--resume]`: `slm train` in every
process; torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR) makes them one run."""

import sys

from slmkit.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
