#!/usr/bin/env python
"""What OS isolation costs per model-written program: the sandbox under bubblewrap (namespaces, user nobody)
against the same runner unisolated (Python layers only), on TinyGSM-style programs, in one run, interleaved.

    python benchmarks/sandbox.py                 # 40 programs of each kind
    python benchmarks/sandbox.py --n 100

Prints a table: median and p90 seconds per program, programs per second with 2 workers, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

from slmkit.combine.sandbox import SandboxLimits, isolation_available, run_program, run_programs

PROGRAM = ('def simple_math_problem() -> int:\n    """\n    Natalia sold clips to 48 of her friends in April, and then '
           'she sold half as many clips in May.\n    """\n    clips_april = 48\n    clips_may = clips_april / 2\n'
           '    result = clips_april + clips_may\n    return result\n')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40, help="programs per mode (default 40)")
    a = p.parse_args()
    ok, why = isolation_available()
    if not ok:
        raise SystemExit(f"sandbox.py: {why}")
    limits = SandboxLimits()
    one: dict[str, list[float]] = {"bwrap": [], "none": []}
    for _ in range(a.n):  # interleaved, so both modes see the same machine
        for mode in one:
            t0 = time.perf_counter()
            r = run_program(PROGRAM, limits, isolation="auto" if mode == "bwrap" else mode)
            one[mode].append(time.perf_counter() - t0)
            assert r.answer == "72.0" and r.isolation == mode, r
    rate = {}
    for mode in one:
        t0 = time.perf_counter()
        rs = run_programs([PROGRAM] * a.n, limits, workers=2, isolation="auto" if mode == "bwrap" else mode)
        rate[mode] = a.n / (time.perf_counter() - t0)
        assert all(r.answer == "72.0" for r in rs)
    print("| isolation | median ms / program | p90 ms | programs/s (2 workers) |")
    print("|---|---|---|---|")
    for mode, ts in one.items():
        ts = sorted(ts)
        print(f"| {mode} | {1000 * statistics.median(ts):.1f} | {1000 * ts[int(0.9 * (len(ts) - 1))]:.1f} | "
              f"{rate[mode]:.1f} |")
    print(f"bubblewrap / unisolated: {statistics.median(one['bwrap']) / statistics.median(one['none']):.2f}x per "
          f"program, {rate['none'] / rate['bwrap']:.2f}x in throughput ({a.n} programs each)")


if __name__ == "__main__":
    main()
