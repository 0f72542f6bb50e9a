#!/usr/bin/env bash
# Extract llama.cpp's vocab-only GGUF files and tokenizer test cases (models/ggml-vocab-*.gguf{,.inp,.out})
# and its HF->GGUF converter (convert_hf_to_gguf.py with conversion/ and gguf-py/) from the llama-cpp-python source
# distribution into .cache/llama.cpp-models and .cache/llama.cpp-convert (tests/test_tokenizer.py, tests/test_gguf.py).
set -euo pipefail
cd "$(dirname "$0")/.."
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
dest=.cache/llama.cpp-models
conv=.cache/llama.cpp-convert
if ls "$dest"/ggml-vocab-gpt-2.gguf.out "$conv"/convert_hf_to_gguf.py >/dev/null 2>&1; then echo "llama.cpp files already in .cache"; exit 0; fi
mkdir -p .cache/sdist "$dest"
python -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d .cache/sdist
src=.cache/sdist/llama_cpp_python-"$version"/vendor/llama.cpp
tar -xzf ".cache/sdist/llama_cpp_python-$version.tar.gz" -C .cache/sdist --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*' \
    '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion/*' '*/vendor/llama.cpp/gguf-py/*'
cp "$src"/models/ggml-vocab-* "$dest"/
rm -rf "$conv" && mkdir -p "$conv" && cp -r "$src"/convert_hf_to_gguf.py "$src"/conversion "$src"/gguf-py "$conv"/
rm -rf ".cache/sdist/llama_cpp_python-$version"
echo "llama.cpp vocab files in $dest: $(ls "$dest" | wc -l) files"
