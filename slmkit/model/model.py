"""One transformer for every supported family, configured by ModelConfig: decoders (causal) and encoders
(bidirectional: BERT, RoBERTa), with a vocabulary head, a classification head or none.

Reads top to bottom: norms, rotary, masks, attention, MLP, block, model. Imports nothing from
training, CLI, conversion or evaluation. Shapes: B batch, T new tokens, S key length (the cache
length when a KV cache is set up), H query heads, K key/value heads, D head size, L labels.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from slmkit.errors import SlmError
from slmkit.model.cache import KVCache
from slmkit.model.config import ModelConfig

if TYPE_CHECKING:
    from slmkit.model.prune import TokenPruning

# --- norms -----------------------------------------------------------------------------------------


class Norm(nn.Module):
    """RMSNorm or LayerNorm over the last dim, computed in float32 and cast back.

    Covers Gemma's (1 + w) scale (`unit_offset`) and OLMo's non-parametric LayerNorm (`affine=False`).
    """

    def __init__(self, dim: int, config: ModelConfig):
        super().__init__()
        self.kind = config.norm_type
        self.eps = config.norm_eps
        self.unit_offset = config.norm_unit_offset
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(dim)) if config.norm_affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if config.norm_affine and config.norm_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        if self.kind == "rmsnorm":
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        else:
            x = F.layer_norm(x, (self.dim,), None, None, self.eps)
        if self.weight is not None:
            w = self.weight.float()
            x = x * (1.0 + w if self.unit_offset else w)
        if self.bias is not None:
            x = x + self.bias.float()
        return x.to(dtype)

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.zeros_(self.weight) if self.unit_offset else nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


# --- rotary positions --------------------------------------------------------------------------------


def rope_inv_freq(config: ModelConfig, theta: float) -> torch.Tensor:
    """Inverse frequencies (rotary_dim // 2,) in float32, with the config's scaling applied."""
    dim = config.rotary_dim
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_ctx = scaling["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif kind != "default":
        raise ValueError(f"unsupported rope_type {kind!r}")
    return inv_freq


def rope_cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (B, T, 1, rotary_dim) in float32 for integer positions (B, T)."""
    freqs = positions.float()[..., None] * inv_freq  # (B, T, rotary_dim // 2)
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first rotary_dim dims of each head (GPT-NeoX 'rotate half' layout); x is (B, T, n, D)."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot].float(), x[..., rot:]
    half = rot // 2
    rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    x_rot = (x_rot * cos + rotated * sin).to(x.dtype)
    return torch.cat((x_rot, x_pass), dim=-1) if x_pass.shape[-1] else x_rot


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi head slopes (BLOOM), including the interleaved extra slopes for non-power-of-two head counts."""
    closest = 2 ** math.floor(math.log2(n_head))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = [base ** (i + 1) for i in range(closest)]
    if closest != n_head:
        extra_base = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra_base ** (i + 1) for i in range(0, 2 * (n_head - closest), 2)]
    return torch.tensor(slopes, dtype=torch.float32)


# --- masks -------------------------------------------------------------------------------------------


def causal_mask(
    q_slots: torch.Tensor, n_keys: int, key_valid: torch.Tensor | None, window: int | None
) -> torch.Tensor:
    """Boolean mask (B or 1, 1, T, S), True where a query may attend.

    q_slots (T,) or, one row each, (B, T) are the key-axis slots of the new queries; key_valid (B, S) marks
    real (non-padding) keys. Each query always sees itself, so a padding row never becomes all -inf (NaN in
    softmax).
    """
    k_slots = torch.arange(n_keys, device=q_slots.device)
    q = q_slots.view(-1, 1, q_slots.shape[-1], 1)  # (1 or B, 1, T, 1)
    mask = k_slots <= q  # causal
    if window is not None:
        mask = mask & (q - k_slots < window)
    if key_valid is not None:
        mask = mask & key_valid[:, None, None, :].bool()
    return mask | (k_slots == q)


# --- attention ---------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head attention with fused QKV, MHA/GQA/MQA, optional QK-norm, clipping and soft-capping."""

    def __init__(self, config: ModelConfig, layer_type: str):
        super().__init__()
        c = config
        self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.n_kv_head, c.head_dim
        self.wqkv = nn.Linear(c.d_model, (c.n_head + 2 * c.n_kv_head) * c.head_dim, bias=c.qkv_bias)
        self.wo = nn.Linear(c.n_head * c.head_dim, c.d_model, bias=c.out_bias)
        self.q_norm = Norm(c.head_dim, c) if c.qk_norm else None
        self.k_norm = Norm(c.head_dim, c) if c.qk_norm else None
        self.use_rope = c.pos_type == "rope"
        self.scale = c.softmax_scale
        self.softcap = c.attn_softcap
        self.clip = c.clip_qkv
        self.window = c.sliding_window if layer_type == "sliding" else None
        self.is_sliding = layer_type == "sliding"
        self.causal = c.causal

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor,
                bias: torch.Tensor | None, cache: KVCache | None, slots: torch.Tensor | None,
                probs_out: list | None = None) -> torch.Tensor:
        """probs_out: a list that receives this layer's attention probabilities (B, H, T, S) (token pruning);
        attention then runs as an explicit softmax over the given mask."""
        B, T, _ = x.shape
        H, K, D = self.n_head, self.n_kv_head, self.head_dim
        qkv = self.wqkv(x)
        if self.clip is not None:
            qkv = qkv.clamp(-self.clip, self.clip)
        q, k, v = qkv.split([H * D, K * D, K * D], dim=-1)
        q, k, v = q.view(B, T, H, D), k.view(B, T, K, D), v.view(B, T, K, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, n, T, D)
        if cache is not None:
            k, v = cache.update(slots, k, v)  # (B, K, S, D)
            n_keys = T if mask is None else mask.shape[-1]
            if n_keys != k.shape[2]:  # a prefill attends only to the slots filled so far
                k, v = k[:, :, :n_keys], v[:, :, :n_keys]
            q = q.to(k.dtype)  # a float32 cache under bf16 linears keeps attention in float32
        if probs_out is not None:
            y, probs = self._eager(q, k, v, mask, bias, with_probs=True)
            probs_out.append(probs)
        elif T == 1 and mask is not None and bias is None and torch.compiler.is_compiling():
            y = self._decode_attention(q, k, v, mask)
        elif mask is None:  # plain causal over the T new tokens (SDPA's causal kernel skips the masked blocks), or
            # an encoder's full attention with no padding
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale, enable_gqa=H != K)
        elif self.softcap is None and bias is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=H != K)
        else:
            y = self._eager(q, k, v, mask, bias)
        y = y.transpose(1, 2).reshape(B, T, H * D).to(x.dtype)
        return self.wo(y)

    def _decode_attention(self, q, k, v, mask):
        """One query per row, written as elementwise products and sums, which inductor fuses into a couple of
        C++ loops; in a compiled decode step this is cheaper than an SDPA call per layer."""
        B, H, _, D = q.shape
        K = self.n_kv_head
        qg = q.view(B, K, H // K, 1, D)
        scores = (qg * k[:, :, None]).sum(-1) * self.scale  # (B, K, G, S)
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        scores = scores.masked_fill(~mask.view(B, 1, 1, -1), float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        return (probs[..., None] * v[:, :, None]).sum(-2).view(B, H, 1, D)  # (B, K, G, D) -> (B, H, 1, D)

    def _eager(self, q, k, v, mask, bias, with_probs: bool = False):
        """Explicit softmax attention, for logit soft-capping (Gemma 2), ALiBi bias (BLOOM) and the probabilities
        token pruning scores tokens by (with_probs: also return them, (B, H, T, S)).

        Query heads are grouped by the key/value head they share (B, K, G, T, D), so GQA needs no copies.
        """
        B, H, T, D = q.shape
        K = self.n_kv_head
        q = q.view(B, K, H // K, T, D)
        scores = (q @ k[:, :, None].transpose(-2, -1)).mul_(self.scale)  # (B, K, G, T, S); in place: no copies
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if bias is not None:
            scores = scores + bias.view(bias.shape[0], K, H // K, T, -1)
        if torch.compiler.is_compiling() or not bool(mask.all()):  # nothing masked: skip a pass over the scores
            scores = scores.masked_fill_(~mask[:, :, None], float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        y = (probs @ v[:, :, None]).view(B, H, T, D)
        return (y, probs.view(B, H, T, -1)) if with_probs else y


# --- feed-forward ------------------------------------------------------------------------------------

_ACTIVATIONS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


class MLP(nn.Module):
    """Gated (SwiGLU/GeGLU, gate and up fused in one matmul) or plain two-layer feed-forward."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gated = config.mlp_type == "gated"
        n_up = 2 * config.intermediate_size if self.gated else config.intermediate_size
        self.w_up = nn.Linear(config.d_model, n_up, bias=config.mlp_bias)  # gated: [gate; up]
        self.w_down = nn.Linear(config.intermediate_size, config.d_model, bias=config.mlp_bias)
        self.act = _ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w_up(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.w_down(h)


# --- block -------------------------------------------------------------------------------------------


class Block(nn.Module):
    """One transformer layer: pre-norm (default), post-norm (OPT-350M), parallel (GPT-NeoX, Phi) or sandwich (Gemma 2/3)."""

    def __init__(self, config: ModelConfig, layer_type: str):
        super().__init__()
        c = config
        self.pre_norm, self.parallel, self.shared_norm = c.pre_norm, c.parallel_residual, c.shared_parallel_norm
        self.attn_norm = Norm(c.d_model, c)
        self.attn = Attention(c, layer_type)
        self.mlp_norm = None if (self.parallel and self.shared_norm) else Norm(c.d_model, c)
        self.mlp = MLP(c)
        self.post_attn_norm = Norm(c.d_model, c) if c.post_norms else None
        self.post_mlp_norm = Norm(c.d_model, c) if c.post_norms else None

    def forward(self, x, rope, mask, bias, cache, slots, probs_out=None):
        if not self.pre_norm:
            x = self.attn_norm(x + self.attn(x, rope, mask, bias, cache, slots, probs_out))
            return self.mlp_norm(x + self.mlp(x))
        if self.parallel:
            h = self.attn_norm(x)
            a = self.attn(h, rope, mask, bias, cache, slots, probs_out)
            return x + a + self.mlp(h if self.shared_norm else self.mlp_norm(x))
        a = self.attn(self.attn_norm(x), rope, mask, bias, cache, slots, probs_out)
        if self.post_attn_norm is not None:
            a = self.post_attn_norm(a)
        x = x + a
        m = self.mlp(self.mlp_norm(x))
        if self.post_mlp_norm is not None:
            m = self.post_mlp_norm(m)
        return x + m


# --- model -------------------------------------------------------------------------------------------


def _embedding(n: int, dim: int) -> nn.Embedding:
    """nn.Embedding, initialised as it initialises itself except on the meta device: there normal_ has no meta
    kernel and its Python fallback imports torch._dynamo, 1.5 s of every load and `slm info`."""
    weight = torch.empty(n, dim)
    if weight.device.type != "meta":
        nn.init.normal_(weight)
    return nn.Embedding(n, dim, _weight=weight, _freeze=False)


class Transformer(nn.Module):
    """Token ids in, next-token logits out (slmkit.model.contract.LanguageModel). The model holds no runtime state:
    a caller that decodes asks `new_caches` for static KV caches, keeps them and passes them to forward."""

    quant_spec = None  # the QuantSpec once slmkit.quant.quantize has swapped its linear layers; None: float

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        emb_dim = c.embed_dim or c.d_model
        self.tok_emb = _embedding(c.vocab_size, emb_dim)
        self.pos_emb = _embedding(c.context_length + c.pos_offset, c.d_model) if c.pos_type == "learned" else None
        self.type_emb = _embedding(c.type_vocab_size, c.d_model) if c.type_vocab_size else None
        self.emb_norm = Norm(c.d_model, c) if c.embed_norm else None
        self.proj_in = nn.Linear(emb_dim, c.d_model, bias=False) if emb_dim != c.d_model else None
        self.proj_out = nn.Linear(c.d_model, emb_dim, bias=False) if emb_dim != c.d_model else None
        self.blocks = nn.ModuleList(Block(c, t) for t in c.layer_types)
        self.norm = Norm(c.d_model, c) if c.final_norm else None
        # masked-LM heads transform the hidden state before the vocabulary projection
        self.head_dense = nn.Linear(c.d_model, c.d_model) if c.mlm_transform and c.head == "lm" else None
        self.head_norm = Norm(c.d_model, c) if c.mlm_transform and c.head == "lm" else None
        self.lm_head = nn.Linear(emb_dim, c.vocab_size, bias=c.lm_head_bias) if c.head == "lm" else None
        self.pool = nn.Linear(c.d_model, c.d_model) if c.pool_dense else None
        self.score = nn.Linear(c.d_model, c.n_labels, bias=c.score_bias) if c.head == "classify" else None
        self.tie_weights()
        self.register_buffer("inv_freq", torch.empty(0), persistent=False)
        self.register_buffer("inv_freq_local", torch.empty(0), persistent=False)
        self.register_buffer("alibi", torch.empty(0), persistent=False)
        if self.tok_emb.weight.device.type != "meta":  # on meta, the loader calls reset_buffers after loading
            self.reset_buffers()

    def tie_weights(self) -> None:
        if self.config.tie_embeddings and self.lm_head is not None:
            self.lm_head.weight = self.tok_emb.weight

    def reset_buffers(self, device: torch.device | None = None) -> None:
        """(Re)compute rotary frequencies and ALiBi slopes; call after loading weights built on the meta device."""
        c = self.config
        device = device or self.tok_emb.weight.device
        if c.pos_type == "rope":
            self.inv_freq = rope_inv_freq(c, c.rope_theta).to(device)
            self.inv_freq_local = rope_inv_freq(c, c.rope_local_theta or c.rope_theta).to(device)
        if c.pos_type == "alibi":
            self.alibi = alibi_slopes(c.n_head).to(device)

    def reset_parameters(self, std: float = 0.02) -> None:
        """Fresh initialisation: normal(0, std) matrices and embeddings, zero biases, unit norms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, Norm):
                module.reset_parameters()
        self.tie_weights()

    @property
    def n_exec_layers(self) -> int:
        return self.config.n_layer * self.config.layer_repeat

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_emb.weight.dtype

    def new_caches(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> nn.ModuleList:
        """One preallocated KV cache per executed layer (shared blocks get one per repeat), for the caller."""
        c = self.config
        if not c.causal or c.head != "lm":
            raise ValueError("KV caches are for decoding with a causal language model; this model is an encoder "
                             "or has no vocabulary head")
        return nn.ModuleList(KVCache(batch, c.n_kv_head, max_len, c.head_dim, dtype or self.dtype, self.device)
                             for _ in range(self.n_exec_layers))

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                key_valid: torch.Tensor | None = None, slots: torch.Tensor | None = None,
                last_only: bool = False, kv_len: int | None = None, hidden: bool = False,
                mask: torch.Tensor | None = None, caches: Sequence[KVCache] | None = None,
                rows: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_types: torch.Tensor | None = None, prune: "TokenPruning | None" = None,
                layers_out: list | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids idx (B, T); (B, 1, vocab) for the last position with last_only.
        A classification head (config.head "classify") gives label logits (B, L) for each row's pooled token;
        no head ("none") gives the final hidden states (B, T, d_model).

        positions (B, T): position ids (default 0..T-1, or the slots when a cache is set up).
        key_valid (B, S): False on padding keys (S = T without a cache, the cache length with one).
        slots (T,): cache slots the new tokens are written to (required with a cache); (B, T) writes each row
        at its own slots (rows at different lengths), with positions given.
        kv_len: attend only to the first kv_len cache slots (a prefill: the end of its slots); default all.
        hidden: return the final hidden states (B, T, emb_dim) instead of logits; `head` turns them into logits.
        mask (B, T, T), without a cache: which tokens of its row each token attends to (it always sees itself),
        in place of causality; with positions, rows can pack several sequences that share a prefix (the
        evaluator scores every choice of a question in one row). Sliding windows and ALiBi use the positions.
        With caches, mask is (B, T, kv_len) over the cache slots, slots (T,) and positions are required, and a
        cached key not written by this call sits at position = its slot (the evaluator's rows that continue a
        shared few-shot prefix computed once).
        caches: the KV caches (new_caches) the new tokens' keys and values are written to and attended over.
        rows (B, T) bool: logits (N, vocab) for those positions only (training with loss masks: the vocabulary
        matmul, the largest of a small model, then runs on the target positions alone).
        attention_mask (B, T): transformers' name for key_valid (1 on real tokens), without a cache.
        token_types (B, T): segment ids for the token-type embeddings (default 0: BERT's first segment).
        prune: dynamic token pruning (slmkit.model.prune.TokenPruning): later layers run on the tokens earlier
        layers' attention ranked highest; hard pruning returns the kept positions only (prune.kept says which).
        layers_out: a list that receives the hidden states (B, T, d_model) after the embeddings and after each
        executed layer (hidden-state distillation); not with hard pruning, whose layers see different tokens.
        """
        c = self.config
        B, T = idx.shape
        if attention_mask is not None:
            if key_valid is not None:
                raise ValueError("give key_valid or attention_mask, not both")
            key_valid = attention_mask.bool()
        if caches is not None and not c.causal:
            raise ValueError("an encoder attends in both directions and takes no KV cache")
        if caches is not None:
            if slots is None:
                raise ValueError("slots are required with KV caches")
            n_keys = kv_len if kv_len is not None else caches[0].k.shape[2]
            if mask is not None and (mask.shape[-1] != n_keys or slots.dim() != 1 or positions is None):
                raise ValueError("an explicit mask with KV caches is (B, T, kv_len) over the cache's first kv_len "
                                 "slots, with one set of slots (T,) for every row and the positions given")
        else:
            slots = torch.arange(T, device=idx.device)
            n_keys = T
        if positions is None and c.pos_from_mask and key_valid is not None:
            positions = key_valid.long().cumsum(-1) * key_valid - 1  # padding -> -1: RoBERTa's padding_idx row
        if positions is None:
            positions = slots.view(-1, T).expand(B, T)

        x = self.tok_emb(idx)  # (B, T, emb_dim)
        if self.proj_in is not None:
            x = self.proj_in(x)
        if c.embed_scale is not None:
            x = x * torch.tensor(c.embed_scale, dtype=x.dtype)
        if self.type_emb is not None:
            types = token_types if token_types is not None else torch.zeros_like(idx)
            x = x + self.type_emb(types)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions + c.pos_offset)
        if self.emb_norm is not None:
            x = self.emb_norm(x)

        rope, rope_local = self._rope_at(positions)
        bias = None
        key_pos = None  # with an explicit mask: each key's position (B, S)
        if mask is not None:
            key_pos = positions
            if caches is not None:  # cached keys written earlier sit at position = slot (a prefix's prefill)
                key_pos = torch.arange(n_keys, device=idx.device).expand(B, n_keys).clone()
                key_pos[:, slots] = positions
        if c.pos_type == "alibi":  # slope * (key position - query position), (1 or B, H, T, S)
            if mask is None:
                dist = (torch.arange(n_keys, device=idx.device) - slots[..., None]).view(-1, T, n_keys)  # (1|B, T, S)
            else:
                dist = key_pos[:, None, :] - positions[:, :, None]  # (B, T, S)
            bias = (self.alibi[None, :, None, None] * dist[:, None]).to(x.dtype)
        if key_valid is not None:
            key_valid = key_valid[:, :n_keys]
        if mask is not None:
            itself = torch.arange(n_keys, device=mask.device) == slots[:, None]  # (T, S)
            full_mask = (mask | itself)[:, None]  # (B, 1, T, S)
            sliding_mask = None
            if c.sliding_window:
                near = positions[:, :, None] - key_pos[:, None, :] < c.sliding_window
                sliding_mask = full_mask & near[:, None]
        elif not c.causal:  # an encoder: every real token, in both directions (no mask tensor without padding);
            # padding queries see the real tokens too (as transformers'), a row of padding alone sees everything
            padded = key_valid is not None and not bool(key_valid.all())
            valid = key_valid.bool() | ~key_valid.bool().any(-1, keepdim=True) if padded else None
            full_mask = valid[:, None, None, :] if padded else None  # (B, 1, 1, S)
            sliding_mask = None
            if c.sliding_window:
                raise ValueError("sliding-window attention is causal; an encoder with local attention is not supported")
        else:
            # Plain causal attention over exactly the new tokens needs no mask tensor (SDPA's is_causal path);
            # soft-capping and ALiBi run the explicit-softmax path, which needs one.
            plain_causal = (T > 1 and n_keys == T and c.attn_softcap is None and bias is None
                            and (key_valid is None or bool(key_valid.all())))
            full_mask = None if plain_causal else causal_mask(slots, n_keys, key_valid, None)
            sliding_mask = causal_mask(slots, n_keys, key_valid, c.sliding_window) if c.sliding_window else None

        if prune is not None:
            key_valid = key_valid if key_valid is not None else torch.ones(B, T, dtype=torch.bool, device=idx.device)
            if not prune.begin(self.n_exec_layers, key_valid):
                prune = None  # keep ratio 1: the plain path, exactly
            else:
                prune.check(c, caches is not None or mask is not None, bias is not None, rows is not None,
                            last_only, hidden, layers_out is not None)
                full_mask = prune.attention_mask(key_valid, positions, c.causal)
                rope, rope_local = self._rope_at(positions)
        if layers_out is not None:
            layers_out.append(x)
        i = 0
        mask_next = None  # soft restore: the mask decided before this layer, mixing its output with its input
        input_valid = key_valid
        for block in self.blocks:
            attn = block.attn
            for _ in range(c.layer_repeat):
                cache = caches[i] if caches is not None else None
                probs = [] if prune is not None and prune.prunes_before(i + 1) else None
                before = x
                x = block(x, rope_local if attn.is_sliding else rope, sliding_mask if attn.is_sliding else full_mask,
                          bias, cache, slots, probs)
                if mask_next is not None:
                    x = mask_next * x + (1 - mask_next) * before
                    mask_next = None
                i += 1
                if layers_out is not None:
                    layers_out.append(x)
                if probs:
                    x, key_valid, positions, mask_next = prune.apply(i, x, probs[0], key_valid, positions, c.causal)
                    if not prune.soft:  # fewer tokens: their mask and rotary tables
                        full_mask = prune.attention_mask(key_valid, positions, c.causal)
                        rope, rope_local = self._rope_at(positions)
                if prune is not None and i < self.n_exec_layers:
                    prune.lengths.append(int(key_valid.sum()))
        if prune is not None and prune.restore and not prune.soft:  # drop-and-restore: every position again
            x, key_valid = prune.restored(x, key_valid), input_valid

        if c.head == "classify" and not hidden:
            return self.classify(x, key_valid)
        if c.head == "none" and not hidden:
            return self.norm(x) if self.norm is not None else x
        if last_only:  # prefill needs only the next-token logits; skips T-1 rows of the vocabulary matmul
            x = x[:, -1:]
        if rows is not None:
            x = x[rows]
        return x if hidden else self.head(x)

    def _rope_at(self, positions: torch.Tensor):
        """Rotary tables (global, local) at the given positions; None for models without rotary embeddings."""
        if self.config.pos_type != "rope":
            return None, None
        rope = rope_cos_sin(self.inv_freq, positions)
        return rope, rope_cos_sin(self.inv_freq_local, positions) if self.config.rope_local_theta else rope

    def classify(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Label logits (B, L) for the last hidden states (B, T, d_model): the final norm, then the first token
        (encoders) or each row's last real token (decoders, either padding side), an optional dense + tanh, and
        the label projection."""
        if self.norm is not None:
            x = self.norm(x)
        if self.config.pooling == "first":
            pooled = x[:, 0]
        else:
            T = x.shape[1]
            last = (T - 1 if key_valid is None else
                    (torch.arange(T, device=x.device) * key_valid.long()).argmax(-1))  # rightmost real token
            pooled = x[torch.arange(x.shape[0], device=x.device), last]
        if self.pool is not None:
            pooled = torch.tanh(self.pool(pooled))
        return self.score(pooled)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, output projection and (soft-capped) vocabulary logits for hidden states (..., emb_dim)."""
        c = self.config
        if self.lm_head is None:
            raise ValueError(f"this model has no vocabulary head (head {c.head!r})")
        if self.norm is not None:
            x = self.norm(x)
        if self.head_dense is not None:  # a masked-LM head: dense, activation, LayerNorm
            x = self.head_norm(_ACTIVATIONS[c.activation](self.head_dense(x)))
        if self.proj_out is not None:
            x = self.proj_out(x)
        logits = self.lm_head(x)
        if c.final_softcap is not None:
            logits = torch.tanh(logits / c.final_softcap) * c.final_softcap
        return logits
