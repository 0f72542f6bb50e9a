#!/usr/bin/env bash
# Make `default-draft`: distil the embedded default model (SmolLM2-135M-Instruct) into a 28M student on the shared
# corpora (recipes/distill-smollm2.yaml). Prepares the token shards under runs/data (seconds), then trains (about
# 55 minutes on 2 CPU cores). Afterwards `-m default-draft` loads the student anywhere (it is copied to
# ~/.cache/slmkit/models/default-draft). --data-only stops after the shards. Run from the project root.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${SLMKIT_DATA:-../shared/data}"
[ -d "$DATA/corpus" ] || { echo "no corpora at $DATA (set SLMKIT_DATA to the shared data folder)" >&2; exit 2; }
[ -f runs/data/prose/meta.json ] || slm data prepare "$DATA"/corpus/nltk_gutenberg "$DATA"/corpus/tinyshakespeare \
    "$DATA"/corpus/wikitext-2/valid.txt "$DATA"/corpus/ptb/ptb.valid.txt -o runs/data/prose --val-fraction 0.02
[ -f runs/data/flan/meta.json ] || slm data prepare "$DATA"/instruct/flan_cot/*_train.tsv -o runs/data/flan \
    --val-fraction 0.02 --template '{0}\n{2} So the answer is {1}.'
[ -f runs/data/t0/meta.json ] || slm data prepare "$DATA"/instruct/t0_train_50k -o runs/data/t0 --val-fraction 0.02
[ "${1:-}" = "--data-only" ] && exit 0
if [ -f runs/distill-smollm2/latest ]; then
    slm distill recipes/distill-smollm2.yaml --resume
else
    slm distill recipes/distill-smollm2.yaml
fi
