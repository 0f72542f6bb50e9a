"""Named presets that mirror real checkpoints; each carries the hub id it mirrors.

Values are taken from each checkpoint's config.json. A preset is a dict of ModelConfig fields; use
`ModelConfig.from_name(name, **overrides)` to build one (tests shrink them: n_layer=2, d_model=64, ...).
"""

from __future__ import annotations

from typing import Any

# family bases ---------------------------------------------------------------------------------------

_LLAMA = dict(family="llama", mlp_type="gated", activation="silu", norm_type="rmsnorm", pos_type="rope")
QWEN2_REGEX = dict(_LLAMA, family="qwen2", qkv_bias=True, norm_eps=1e-6, rope_theta=1_000_000.0)
_PHI = dict(
    family="phi", mlp_type="plain", activation="gelu_tanh", norm_type="layernorm", norm_bias=True,
    qkv_bias=True, out_bias=True, mlp_bias=True, lm_head_bias=True, partial_rotary=0.5,
    parallel_residual=True, shared_parallel_norm=True, vocab_size=51200, context_length=2048,
)
_GPT2 = dict(
    family="gpt2", pos_type="learned", mlp_type="plain", activation="gelu_tanh", norm_type="layernorm",
    norm_bias=True, qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True, vocab_size=50257,
    context_length=1024, bos_token_id=50256, eos_token_id=50256,
)
_NEOX = dict(
    family="gpt_neox", mlp_type="plain", activation="gelu", norm_type="layernorm", norm_bias=True,
    qkv_bias=True, out_bias=True, mlp_bias=True, partial_rotary=0.25, parallel_residual=True,
    vocab_size=50304, context_length=2048, bos_token_id=0, eos_token_id=0,
)
_OPT = dict(
    family="opt", pos_type="learned", pos_offset=2, mlp_type="plain", activation="relu", norm_type="layernorm",
    norm_bias=True, qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=True, vocab_size=50272,
    context_length=2048, bos_token_id=2, eos_token_id=2, pad_token_id=1,
)
_GEMMA = dict(
    family="gemma", mlp_type="gated", activation="gelu_tanh", norm_type="rmsnorm", norm_eps=1e-6,
    norm_unit_offset=True, tie_embeddings=True, vocab_size=256000, context_length=8192,
    bos_token_id=2, eos_token_id=1, pad_token_id=0,
)
# encoders: bidirectional post-LN blocks, learned positions + token types, a tied masked-LM head with a transform
_BERT = dict(
    family="bert", causal=False, pos_type="learned", mlp_type="plain", activation="gelu", norm_type="layernorm",
    norm_bias=True, norm_eps=1e-12, pre_norm=False, final_norm=False, embed_norm=True, qkv_bias=True, out_bias=True,
    mlp_bias=True, lm_head_bias=True, mlm_transform=True, tie_embeddings=True, type_vocab_size=2, vocab_size=30522,
    context_length=512, pad_token_id=0,
)
_ROBERTA = dict(_BERT, family="roberta", pos_offset=2, pos_from_mask=True, norm_eps=1e-5, type_vocab_size=1,
                vocab_size=50265, bos_token_id=0, eos_token_id=2, pad_token_id=1)
_SMOL = dict(_LLAMA, vocab_size=49152, tie_embeddings=True, bos_token_id=1, eos_token_id=2)

PRESETS: dict[str, dict[str, Any]] = {
    # SmolLM / SmolLM2 (LLaMA architecture, tied embeddings)
    "SmolLM-135M": dict(_SMOL, hf_id="HuggingFaceTB/SmolLM-135M", n_layer=30, d_model=576, n_head=9,
                        n_kv_head=3, intermediate_size=1536, context_length=2048, bos_token_id=0, eos_token_id=0),
    "SmolLM-360M": dict(_SMOL, hf_id="HuggingFaceTB/SmolLM-360M", n_layer=32, d_model=960, n_head=15,
                        n_kv_head=5, intermediate_size=2560, context_length=2048, bos_token_id=0, eos_token_id=0),
    "SmolLM-1.7B": dict(_SMOL, hf_id="HuggingFaceTB/SmolLM-1.7B", n_layer=24, d_model=2048, n_head=32,
                        n_kv_head=32, intermediate_size=8192, context_length=2048, bos_token_id=0, eos_token_id=0),
    "SmolLM2-135M": dict(_SMOL, hf_id="HuggingFaceTB/SmolLM2-135M", n_layer=30, d_model=576, n_head=9,
                         n_kv_head=3, intermediate_size=1536, context_length=8192, rope_theta=100000.0,
                         bos_token_id=0, eos_token_id=0),
    "SmolLM2-135M-Instruct": dict(_SMOL, hf_id="HuggingFaceTB/SmolLM2-135M-Instruct", n_layer=30, d_model=576,
                                  n_head=9, n_kv_head=3, intermediate_size=1536, context_length=8192,
                                  rope_theta=100000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2),
    "SmolLM2-360M": dict(_SMOL, hf_id="HuggingFaceTB/SmolLM2-360M", n_layer=32, d_model=960, n_head=15,
                         n_kv_head=5, intermediate_size=2560, context_length=8192, rope_theta=100000.0,
                         bos_token_id=0, eos_token_id=0),
    "SmolLM2-1.7B": dict(_SMOL, hf_id="HuggingFaceTB/SmolLM2-1.7B", n_layer=24, d_model=2048, n_head=32,
                         n_kv_head=32, intermediate_size=8192, context_length=8192, rope_theta=130000.0,
                         bos_token_id=0, eos_token_id=0),
    # LLaMA-architecture small models
    "TinyLlama-1.1B": dict(_LLAMA, hf_id="TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T", vocab_size=32000,
                           n_layer=22, d_model=2048, n_head=32, n_kv_head=4, intermediate_size=5632,
                           context_length=2048, bos_token_id=1, eos_token_id=2),
    "LiteLlama-460M-1T": dict(_LLAMA, hf_id="ahxt/LiteLlama-460M-1T", vocab_size=50304, n_layer=24, d_model=1024,
                              n_head=16, n_kv_head=16, intermediate_size=4096, context_length=1024,
                              bos_token_id=50256, eos_token_id=50256),
    # MobileLLM: deep-and-thin, GQA, tied embeddings; layer_repeat=2 gives the paper's block-wise sharing (LS)
    "MobileLLM-125M": dict(_LLAMA, hf_id="facebook/MobileLLM-125M", vocab_size=32000, n_layer=30, d_model=576,
                           n_head=9, n_kv_head=3, intermediate_size=1536, tie_embeddings=True,
                           context_length=2048, bos_token_id=1, eos_token_id=2),
    "MobileLLM-350M": dict(_LLAMA, hf_id="facebook/MobileLLM-350M", vocab_size=32000, n_layer=32, d_model=960,
                           n_head=15, n_kv_head=5, intermediate_size=2560, tie_embeddings=True,
                           context_length=2048, bos_token_id=1, eos_token_id=2),
    "Llama-3.2-1B": dict(_LLAMA, hf_id="meta-llama/Llama-3.2-1B", vocab_size=128256, n_layer=16, d_model=2048,
                         n_head=32, n_kv_head=8, intermediate_size=8192, context_length=131072,
                         rope_theta=500000.0, tie_embeddings=True, bos_token_id=128000, eos_token_id=128001,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0, original_max_position_embeddings=8192)),
    "H2O-Danube3-500M": dict(_LLAMA, hf_id="h2oai/h2o-danube3-500m-base", vocab_size=32000, n_layer=16,
                             d_model=1536, n_head=16, n_kv_head=8, intermediate_size=4096, context_length=8192,
                             rope_theta=100000.0, bos_token_id=1, eos_token_id=2),
    # Mistral architecture (LLaMA + sliding-window attention)
    "H2O-Danube2-1.8B": dict(_LLAMA, family="mistral", hf_id="h2oai/h2o-danube2-1.8b-base", vocab_size=32000,
                             n_layer=24, d_model=2560, n_head=32, n_kv_head=8, intermediate_size=6912,
                             context_length=8192, bos_token_id=1, eos_token_id=2),
    # Qwen
    "Qwen1.5-0.5B": dict(QWEN2_REGEX, hf_id="Qwen/Qwen1.5-0.5B", vocab_size=151936, n_layer=24, d_model=1024,
                         n_head=16, n_kv_head=16, intermediate_size=2816, context_length=32768,
                         tie_embeddings=True, bos_token_id=151643, eos_token_id=151643),
    "Qwen2-0.5B": dict(QWEN2_REGEX, hf_id="Qwen/Qwen2-0.5B", vocab_size=151936, n_layer=24, d_model=896, n_head=14,
                       n_kv_head=2, intermediate_size=4864, context_length=32768, tie_embeddings=True,
                       bos_token_id=151643, eos_token_id=151643),
    "Qwen2-1.5B": dict(QWEN2_REGEX, hf_id="Qwen/Qwen2-1.5B", vocab_size=151936, n_layer=28, d_model=1536, n_head=12,
                       n_kv_head=2, intermediate_size=8960, context_length=32768, tie_embeddings=True,
                       bos_token_id=151643, eos_token_id=151643),
    "Qwen2.5-0.5B": dict(QWEN2_REGEX, hf_id="Qwen/Qwen2.5-0.5B", vocab_size=151936, n_layer=24, d_model=896,
                         n_head=14, n_kv_head=2, intermediate_size=4864, context_length=32768,
                         tie_embeddings=True, bos_token_id=151643, eos_token_id=151643),
    "Qwen2.5-1.5B": dict(QWEN2_REGEX, hf_id="Qwen/Qwen2.5-1.5B", vocab_size=151936, n_layer=28, d_model=1536,
                         n_head=12, n_kv_head=2, intermediate_size=8960, context_length=131072,
                         tie_embeddings=True, bos_token_id=151643, eos_token_id=151643),
    # Phi
    "Phi-1": dict(_PHI, hf_id="microsoft/phi-1", n_layer=24, d_model=2048, n_head=32, intermediate_size=8192,
                  bos_token_id=50256, eos_token_id=50256),
    "Phi-1.5": dict(_PHI, hf_id="microsoft/phi-1_5", n_layer=24, d_model=2048, n_head=32, intermediate_size=8192,
                    bos_token_id=50256, eos_token_id=50256),
    "Phi-2": dict(_PHI, hf_id="microsoft/phi-2", n_layer=32, d_model=2560, n_head=32, intermediate_size=10240,
                  bos_token_id=50256, eos_token_id=50256),
    "Phi-3-mini-4k": dict(_LLAMA, family="phi3", hf_id="microsoft/Phi-3-mini-4k-instruct", vocab_size=32064,
                          n_layer=32, d_model=3072, n_head=32, intermediate_size=8192, context_length=4096,
                          sliding_window=2047, bos_token_id=1, eos_token_id=32000, pad_token_id=32000),
    # Gemma
    "Gemma-2B": dict(_GEMMA, hf_id="google/gemma-2b", n_layer=18, d_model=2048, n_head=8, n_kv_head=1,
                     head_dim=256, intermediate_size=16384, embed_scale=2048**0.5),
    "Gemma-2-2B": dict(_GEMMA, family="gemma2", hf_id="google/gemma-2-2b", n_layer=26, d_model=2304, n_head=8,
                       n_kv_head=4, head_dim=256, intermediate_size=9216, embed_scale=2304**0.5, post_norms=True,
                       attn_scale=256**-0.5, attn_softcap=50.0, final_softcap=30.0, sliding_window=4096,
                       sliding_pattern=2),
    "Gemma-3-270M": dict(_GEMMA, family="gemma3_text", hf_id="google/gemma-3-270m", vocab_size=262144,
                         n_layer=18, d_model=640, n_head=4, n_kv_head=1, head_dim=256, intermediate_size=2048,
                         context_length=32768, embed_scale=640**0.5, post_norms=True, qk_norm=True,
                         attn_scale=256**-0.5, sliding_window=512, sliding_pattern=6, rope_theta=1_000_000.0,
                         rope_local_theta=10000.0),
    # encoders (masked LM; head="classify" with n_labels for a sequence classifier)
    "BERT-base": dict(_BERT, hf_id="google-bert/bert-base-uncased", n_layer=12, d_model=768, n_head=12,
                      intermediate_size=3072),
    "RoBERTa-base": dict(_ROBERTA, hf_id="FacebookAI/roberta-base", n_layer=12, d_model=768, n_head=12,
                         intermediate_size=3072),
    "MiniLM-L6": dict(_BERT, hf_id="sentence-transformers/all-MiniLM-L6-v2", head="none", n_layer=6, d_model=384,
                      n_head=12, intermediate_size=1536),
    # GPT-2 family (learned positions); Cerebras-GPT and LaMini-GPT use the same architecture
    "GPT-2-124M": dict(_GPT2, hf_id="openai-community/gpt2", n_layer=12, d_model=768, n_head=12),
    "GPT-2-355M": dict(_GPT2, hf_id="openai-community/gpt2-medium", n_layer=24, d_model=1024, n_head=16),
    "Cerebras-GPT-111M": dict(_GPT2, hf_id="cerebras/Cerebras-GPT-111M", n_layer=10, d_model=768, n_head=12,
                              activation="gelu", context_length=2048),
    # Pythia (GPT-NeoX)
    "Pythia-70M": dict(_NEOX, hf_id="EleutherAI/pythia-70m", n_layer=6, d_model=512, n_head=8),
    "Pythia-160M": dict(_NEOX, hf_id="EleutherAI/pythia-160m", n_layer=12, d_model=768, n_head=12),
    "Pythia-410M": dict(_NEOX, hf_id="EleutherAI/pythia-410m", n_layer=24, d_model=1024, n_head=16),
    "Pythia-1B": dict(_NEOX, hf_id="EleutherAI/pythia-1b", n_layer=16, d_model=2048, n_head=8),
    "Pythia-1.4B": dict(_NEOX, hf_id="EleutherAI/pythia-1.4b", n_layer=24, d_model=2048, n_head=16),
    # OPT (learned positions with offset 2; OPT-350M is post-LN with 512-wide embeddings)
    "OPT-125M": dict(_OPT, hf_id="facebook/opt-125m", n_layer=12, d_model=768, n_head=12),
    "OPT-350M": dict(_OPT, hf_id="facebook/opt-350m", n_layer=24, d_model=1024, n_head=16, embed_dim=512,
                     pre_norm=False, final_norm=False),
    "OPT-1.3B": dict(_OPT, hf_id="facebook/opt-1.3b", n_layer=24, d_model=2048, n_head=32),
    # StableLM 2
    "StableLM-2-1.6B": dict(_LLAMA, family="stablelm", hf_id="stabilityai/stablelm-2-1_6b", vocab_size=100352,
                            n_layer=24, d_model=2048, n_head=32, intermediate_size=5632, context_length=4096,
                            norm_type="layernorm", norm_bias=True, qkv_bias=True, partial_rotary=0.25,
                            bos_token_id=100257, eos_token_id=100257),
    # OLMo (non-parametric LayerNorm)
    "OLMo-1B": dict(_LLAMA, family="olmo", hf_id="allenai/OLMo-1B-hf", vocab_size=50304, n_layer=16,
                    d_model=2048, n_head=16, intermediate_size=8192, context_length=2048, norm_type="layernorm",
                    norm_affine=False, tie_embeddings=True, pad_token_id=1, eos_token_id=50279),
    # BLOOM (ALiBi positions, LayerNorm after the embedding)
    "BLOOM-560M": dict(family="bloom", hf_id="bigscience/bloom-560m", pos_type="alibi", mlp_type="plain",
                       activation="gelu_tanh", norm_type="layernorm", norm_bias=True, qkv_bias=True,
                       out_bias=True, mlp_bias=True, embed_norm=True, tie_embeddings=True, vocab_size=250880,
                       n_layer=24, d_model=1024, n_head=16, context_length=2048, bos_token_id=1, eos_token_id=2,
                       pad_token_id=3),
}
