"""Quantised decode against llama.cpp on the default SmolLM2-135M: the issue's targets, as ratios from one run.

    python benchmarks/bench_peers.py                 # int8+head vs q8_0, int4+head vs q4_0 and q4_1
    python benchmarks/bench_peers.py --precisions int8+head,int4+head --n-gen 128

Targets: slmkit int8 decode >= 1.0x llama.cpp q8_0, slmkit int4 decode >= 1.0x llama.cpp q4_0 and q4_1.
slmkit quantises the dequantised default weights itself (blocks int8 per channel or int4 groups of 32, and
the output head int8, as llama.cpp keeps its 4-bit files' token embedding/head at q8_0 for this width), with
the decode step compiled; llama.cpp's files come from its own quantiser (llama_model_quantize) run on an F32
GGUF of the same weights. Both greedy, batch 1, the same prompt ids, each backend in its own process.
"""

from __future__ import annotations

import argparse
import os
import sys

from slmkit.runtime.precision import PRECISIONS  # the llama.cpp types beside each precision

PEERS = {name: list(p.llamacpp) for name, p in PRECISIONS.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--precisions", default="int8+head,int4+head",
                   help="slmkit precisions to compare (default int8+head,int4+head)")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens before decoding (default 128)")
    p.add_argument("--n-gen", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="write the raw rows here")
    a = p.parse_args()

    from slmkit.bench.run import BenchSpec, bench

    precisions = a.precisions.split(",")
    spec = BenchSpec(model=a.model, backends=["slmkit", "llamacpp"], precisions=precisions, prompts=[a.prompt],
                     depths=[a.prompt], n_gen=a.n_gen, repeats=a.repeats, threads=os.cpu_count() or 1)
    result = bench(spec, echo=lambda line: print(line, file=sys.stderr, flush=True))
    print(result.table())
    decode = {(r["backend"], r["precision"]): r for r in result.rows if r["n_gen"]}
    print()
    for precision in precisions:
        ours = decode.get(("slmkit", precision))
        for peer in PEERS[precision]:
            theirs = decode.get(("llamacpp", peer))
            if ours and theirs:
                ratio = ours["avg_ts"] / theirs["avg_ts"]
                verdict = "met" if ratio >= 1.0 else "not met"
                print(f"- decode {ours['type']} / llama.cpp {peer}: {ours['avg_ts']:.1f} / {theirs['avg_ts']:.1f} "
                      f"tok/s = {ratio:.2f}x (target >= 1.0x: {verdict})")
    for line in result.skipped + result.errors:
        print(f"- {line}")
    if a.json:
        import json

        with open(a.json, "w") as f:
            json.dump(result.to_json(), f, indent=1)


if __name__ == "__main__":
    main()
