#!/usr/bin/env bash
# Verifier reranking on GSM8K end to end (TinyGSM's recipe at 135M scale, offline): fine-tune a program generator,
# sample and label programs on unseen train items, train a verifier, and report on GSM8K test. About 45 minutes on a
# 2-core CPU. Each step skips work already done (delete its output to redo it).
#   scripts/rerank-gsm8k.sh [TEST_LIMIT]        # default 30 test problems
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-30}
D=runs/data
# 1. the generator: SmolLM2-135M-Instruct fine-tuned on GSM8K train items 0-4999 as Python programs
[ -f $D/gsm8k-programs.jsonl ] || python scripts/gsm8k-programs.py -o $D/gsm8k-programs.jsonl --first 5000
[ -f $D/gsm8k-programs/meta.json ] || slm data prepare $D/gsm8k-programs.jsonl -o $D/gsm8k-programs \
    --prompt-template '{prompt}' --template '{response}' --val-fraction 0.02
[ -d ~/.cache/slmkit/models/default-gsm8k ] || slm train recipes/gsm8k-programs.yaml
# 2. verifier data: 4 programs for each of train items 5000-5059, run in the sandbox and labelled against gold
[ -f $D/verifier-gsm8k.jsonl ] || slm combine rerank -m default-gsm8k --shots 0 --split train --offset 5000 \
    --limit 60 -n 4 --batch 16 --dtype bfloat16 --label-out $D/verifier-gsm8k.jsonl -o runs/rerank-train
[ -f $D/verifier-gsm8k/meta.json ] || slm data prepare $D/verifier-gsm8k.jsonl -o $D/verifier-gsm8k \
    --prompt-template '{prompt}' --template '{response}' --val-fraction 0.25
# 3. test candidates: 8 programs for each of the first LIMIT test problems (first, majority, oracle)
[ -f runs/rerank-test/rerank-candidates.jsonl ] || slm combine rerank -m default-gsm8k --shots 0 --split test \
    --limit "$LIMIT" -n 8 --batch 16 --dtype bfloat16 -o runs/rerank-test
# 4. the verifier, then verifier-best on the same test candidates
[ -d ~/.cache/slmkit/models/default-gsm8k-verifier ] || slm train recipes/verifier-gsm8k.yaml
slm combine rerank --candidates runs/rerank-test/rerank-candidates.jsonl --verifier default-gsm8k-verifier \
    -o runs/rerank-test-verified
