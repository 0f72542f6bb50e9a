#!/usr/bin/env bash
# Extract llama.cpp's vocab-only GGUF files and tokenizer test cases (models/ggml-vocab-*.gguf{,.inp,.out})
# from the llama-cpp-python source distribution into .cache/llama.cpp-models (used by tests/test_tokenizer.py).
set -euo pipefail
cd "$(dirname "$0")/.."
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
dest=.cache/llama.cpp-models
if ls "$dest"/ggml-vocab-gpt-2.gguf.out >/dev/null 2>&1; then echo "llama.cpp vocab files already in $dest"; exit 0; fi
mkdir -p .cache/sdist "$dest"
python -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d .cache/sdist
tar -xzf ".cache/sdist/llama_cpp_python-$version.tar.gz" -C .cache/sdist --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*'
cp .cache/sdist/llama_cpp_python-"$version"/vendor/llama.cpp/models/ggml-vocab-* "$dest"/
rm -rf ".cache/sdist/llama_cpp_python-$version"
echo "llama.cpp vocab files in $dest: $(ls "$dest" | wc -l) files"
