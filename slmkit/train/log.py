"""Run logs: one JSON object per line in log.jsonl, and the same scalars as TensorBoard events in tb/ when the
`tensorboard` package is installed (pip install 'slmkit[train]')."""

from __future__ import annotations

import json
import time
from pathlib import Path


class RunLog:
    def __init__(self, out: Path, enabled: bool = True):
        self.enabled = enabled
        self.file = None
        self.tb = None
        self.note = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "log.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            self.note = "TensorBoard logging is off (pip install tensorboard); log.jsonl has everything"

    def write(self, record: dict) -> None:
        """Append a record (it gets a wall-clock time); numeric fields also go to TensorBoard under its kind."""
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None and "step" in record:
            kind = record.get("event", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time"):
                    self.tb.add_scalar(f"{kind}/{k}", v, record["step"])
            if kind != "train":
                self.tb.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
