"""A 16-bit screen for Llama-architecture models that starts each candidate where it differs from its prompt.

GCG's candidates are the current prompt with a token or two swapped. Before the first swapped position a
candidate's tokens, and so their keys and values at every layer, are the prompt's own. transformers' forward
recomputes them for every candidate; :class:`SharedStartLlama` computes each candidate only from its first
swapped position and takes the keys and values before it from the prompt's, which it computes once, as one
more row of the same batch (a few rows, not a separate forward).

The rows of every candidate (of different lengths) are laid out one after another, so every matrix product
runs once over all of them, as one large product; only attention is done per candidate, padded to the longest.
q/k/v are one product, gate/up another. The rotary frequencies stay those of the float32 model (a
``model.to(bfloat16)`` copy rounds them to 8 bits). Normalization, rotary embedding and the MLP follow
transformers' Llama forward op for op in the screen's dtype; attention scores and softmax are in float32.

This is a screen, like the plain 16-bit copy it replaces (:mod:`acr.screens`): it only ranks candidates;
the model itself re-scores the best-ranked and every near-match, and alone decides success.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

FORWARD_NAME = "llama-shared-start"  # recorded with results (and in the resume fingerprint) when this screen runs


def unsupported(model: Any) -> str | None:
    """Why :class:`SharedStartLlama` cannot stand in for ``model`` (None: it can)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llama":
        return f"model type {getattr(config, 'model_type', None)!r} is not llama"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return "the model has no Llama decoder layers and rotary embedding"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "biased attention or MLP projections"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "an activation other than SiLU, or tensor-parallel pretraining slices"
    head = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return "the output head is not a plain linear layer"
    for layer in inner.layers:
        projections = (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                       layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)
        if any(type(p) is not torch.nn.Linear for p in projections):  # quantized, LoRA, ...: their forward is their own
            return "a projection is not a plain linear layer"
    return None


class SharedStartLlama(torch.nn.Module):
    """A ``dtype`` copy of a Llama model's weights with a forward that can start candidates late.

    Called like a transformers model (``input_ids``, ``past_key_values`` as legacy ``((k, v), ...)``,
    ``use_cache``, ``logits_to_keep`` / ``num_logits_to_keep``), returning ``.logits`` and, with
    ``use_cache``, ``.past_key_values`` (legacy, batch of ``input_ids``). ``shared_start=(prompt_ids, first)``:
    row ``i`` of ``input_ids`` equals ``prompt_ids`` before position ``first[i]``; the past must then be the
    same for every row (the prefix's), and those positions are not recomputed.
    """

    _supports_cache_class = False  # acr.gcg hands it legacy K/V tuples
    shares_start = True

    def __init__(self, model: Any, dtype: torch.dtype) -> None:
        super().__init__()
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"not a supported Llama model: {reason}")
        config, inner = model.config, model.model
        self.config = config
        self.eps = float(config.rms_norm_eps)
        self.heads, self.kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        self.rotary = inner.rotary_emb  # the float32 model's module: frequencies kept in float32
        self.dtype = dtype

        def cast(*weights: Tensor) -> torch.nn.Parameter:
            # requires_grad kept: bfloat16 linear layers over frozen parameters were measured 8x slower on CPU
            # (see acr.screens.screen_copy); no gradient is ever taken through a screen.
            with torch.no_grad():
                return torch.nn.Parameter(torch.cat([w.detach() for w in weights]).to(dtype).contiguous())

        self.embed = cast(inner.embed_tokens.weight)
        self.layers = torch.nn.ModuleList()
        for layer in inner.layers:
            attention, mlp = layer.self_attn, layer.mlp
            self.layers.append(torch.nn.ParameterDict({
                "input_norm": cast(layer.input_layernorm.weight),
                "qkv": cast(attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight),
                "o": cast(attention.o_proj.weight),
                "post_norm": cast(layer.post_attention_layernorm.weight),
                "gate_up": cast(mlp.gate_proj.weight, mlp.up_proj.weight),
                "down": cast(mlp.down_proj.weight)}))
        self.norm = cast(inner.norm.weight)
        head = model.get_output_embeddings().weight
        self.head = self.embed if head is inner.embed_tokens.weight else cast(head)

    def get_input_embeddings(self) -> Any:
        return SimpleNamespace(weight=self.embed)

    def _norm(self, x: Tensor, weight: Tensor) -> Tensor:
        """transformers' LlamaRMSNorm: in float32, then back to the screen's dtype, then the weight."""
        x32 = x.to(torch.float32)
        return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(self.dtype)

    def forward(self, input_ids: Tensor, past_key_values: tuple | None = None, use_cache: bool = False,
                logits_to_keep: int = 0, num_logits_to_keep: int | None = None,
                shared_start: tuple[Tensor, Tensor] | None = None) -> SimpleNamespace:
        n_keep = int(num_logits_to_keep if num_logits_to_keep is not None else logits_to_keep)
        n, length = input_ids.shape
        device = input_ids.device
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        past = past_key_values
        past_len = 0 if past is None else past[0][0].shape[2]
        kept = n_keep if 0 < n_keep <= length else length
        first = torch.zeros(n, dtype=torch.long, device=device)
        shared = 0  # leading positions taken from the prompt: its extra row computes them
        if shared_start is not None:
            prompt, first = shared_start[0].to(device), shared_start[1].to(device).clamp(0, length - kept)
            first = first.clamp(max=prompt.shape[0])
            shared = int(first.max()) if n else 0
        batch = n + (1 if shared else 0)
        lengths = length - first
        if shared:
            lengths = torch.cat([lengths, torch.tensor([shared], device=device)])
            padded = torch.zeros(1, length, dtype=input_ids.dtype, device=device)
            padded[0, :shared] = prompt[:shared]
            input_ids = torch.cat([input_ids, padded])
            first = torch.cat([first, torch.zeros(1, dtype=torch.long, device=device)])
        row_of = torch.repeat_interleave(torch.arange(batch, device=device), lengths)  # each computed row's sequence
        starts = torch.cumsum(lengths, 0) - lengths
        position = torch.arange(row_of.shape[0], device=device) - starts[row_of] + first[row_of]
        x = F.embedding(input_ids[row_of, position], self.embed)  # (rows, hidden)
        cos, sin = self.rotary(x, torch.arange(past_len, past_len + length, device=device).unsqueeze(0))
        cos, sin = cos[0, position].unsqueeze(1), sin[0, position].unsqueeze(1)  # (rows, 1, dim)
        group, scale, half = heads // kv_heads, dim ** -0.5, dim // 2
        causal = torch.ones(length, past_len + length, dtype=torch.bool, device=device).tril(past_len)
        bias = torch.zeros(causal.shape, device=device).masked_fill_(~causal, float("-inf"))
        before = None
        if shared:  # (n, 1, shared, 1): positions a candidate takes from the prompt's row
            before = (torch.arange(shared, device=device) < first[:n, None]).view(n, 1, shared, 1)
        at = (row_of, past_len + position)
        cache = []
        for index, w in enumerate(self.layers):
            qkv = F.linear(self._norm(x, w["input_norm"]), w["qkv"]).view(-1, heads + 2 * kv_heads, dim)
            qk = qkv[:, :heads + kv_heads]
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            keys = torch.empty(batch, kv_heads, past_len + length, dim, dtype=x.dtype, device=device)
            values = torch.empty_like(keys)
            if past is not None:
                past_keys, past_values = past[index]
                if shared:
                    past_keys, past_values = past_keys[:1], past_values[:1]
                keys[:, :, :past_len], values[:, :, :past_len] = past_keys, past_values
            keys.transpose(1, 2)[at] = qk[:, heads:]
            values.transpose(1, 2)[at] = qkv[:, heads + kv_heads:]
            if shared:
                region = slice(past_len, past_len + shared)
                keys[:n, :, region] = torch.where(before, keys[n:, :, region], keys[:n, :, region])
                values[:n, :, region] = torch.where(before, values[n:, :, region], values[:n, :, region])
                keys[n:, :, past_len + shared:] = 0  # never attended by the prompt's rows; kept finite
                values[n:, :, past_len + shared:] = 0
            queries = torch.zeros(batch, kv_heads, group, length, dim, dtype=x.dtype, device=device)
            queries.permute(0, 3, 1, 2, 4)[row_of, position] = qk[:, :heads].view(-1, kv_heads, group, dim)
            attended = _attention(queries, keys, values, bias, scale)  # (batch, kv_heads, group, length, dim)
            attended = attended.permute(0, 3, 1, 2, 4)[row_of, position]
            x = x + F.linear(attended.reshape(-1, heads * dim), w["o"])
            gate_up = F.linear(self._norm(x, w["post_norm"]), w["gate_up"])
            inner = gate_up.shape[-1] // 2
            x = x + F.linear(F.silu(gate_up[:, :inner]) * gate_up[:, inner:], w["down"])
            if use_cache:
                cache.append((keys[:n], values[:n]))
        # each candidate's last `kept` rows end its block (its first computed position is at most length - kept)
        rows = (starts[:n] + lengths[:n] - kept).unsqueeze(1) + torch.arange(kept, device=device)
        logits = F.linear(self._norm(x[rows], self.norm), self.head)
        return SimpleNamespace(logits=logits, past_key_values=tuple(cache) if use_cache else None)


def _attention(queries: Tensor, keys: Tensor, values: Tensor, bias: Tensor, scale: float) -> Tensor:
    """Grouped-query attention as two batched products, without repeating the K/V: ``queries`` (batch, kv_heads,
    group, length, dim), ``keys``/``values`` (batch, kv_heads, keys, dim), ``bias`` (length, keys) additive (0 or
    -inf). Scores and softmax in float32, as the flash kernel accumulates. At GCG's shapes (64 candidates, a
    dozen tokens, SmolLM2's 9 heads over 3 K/V heads, bfloat16, 2 CPU threads) 1.1-1.2x faster than
    ``scaled_dot_product_attention``'s flash kernel (medians of 40-60 alternating calls); with bfloat16 scores
    2x, but further from the model."""
    batch, kv_heads, group, length, dim = queries.shape
    flat = batch * kv_heads
    queries = queries.reshape(flat, group * length, dim).float()
    keys = keys.reshape(flat, -1, dim).transpose(1, 2).float()
    scores = torch.baddbmm(bias.repeat(group, 1).expand(flat, -1, -1), queries, keys, alpha=scale)
    weights = scores.softmax(-1).to(values.dtype)
    return torch.bmm(weights, values.reshape(flat, -1, dim)).view(batch, kv_heads, group, length, dim)
