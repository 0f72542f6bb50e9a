#!/usr/bin/env python
"""Rebuild slmkit/zoo/data/{catalogue,phones}.json from the survey's SLM.json and phone_latency.json.

    python scripts/build-zoo.py                    # reads $SLMKIT_DATA/zoo (default ../shared/data/zoo)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from slmkit.zoo.catalogue import build

ZOO = Path(os.environ.get("SLMKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "zoo"

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=str(ZOO), help=f"folder with SLM.json and phone_latency.json (default {ZOO})")
    for path in build(Path(ap.parse_args().zoo)):
        print(f"wrote {path}")
