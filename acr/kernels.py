"""Which kernel multiplies the model's linear layers while candidates are scored, chosen by measurement.

On x86 CPUs torch runs a float32 ``nn.Linear`` through MKL's sgemm, and packs the weight again on every
call. oneDNN, with the weight reordered once into its blocked layout (``torch.ops.mkldnn._reorder_linear_weight``
and ``_linear_pointwise``: what torch.compile's CPU backend does for frozen weights), is faster at some of the
shapes GCG scores and not at others. Measured on an AMD EPYC (family 25, AVX2 only, 2 cores, torch 2.13), at
about 1,000 rows (64 candidates of 15 tokens), over several runs: SmolLM2's gate/up projections 86-111 GFLOP/s
through torch, 111-130 packed; its output head (512 rows x 49,152 tokens) 55-67 vs 82-100; its down projection
faster either way from run to run (torch 90-124, packed 92-124).

Both are float32 products of the same numbers; they differ only in summation order (logits within about
1e-5). So this is not a screen: the packed model is the model itself, and its scores decide as the plain
forward's do. The packed weights are used only while candidates are teacher-forced
(:meth:`PackedLinears.active`); the gradient, the prefix caches and the real ``generate`` that verifies a
found prompt run the model exactly as loaded.

``linear_kernel="auto"`` times both kernels on each distinct weight shape of the model, at the rows one
candidate chunk feeds it, and packs the shapes where oneDNN is at least :data:`PACK_MIN_SPEEDUP` faster
(cached per machine, torch version, thread count, model and shape, as the screen is). The packed copies
cost memory: the model's linear weights once more, so a model whose copy would not fit in
:data:`MEMORY_SHARE` of the memory available is not packed. CPU and float32 only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from acr.measured import machine_fields, measured_once

KERNEL_OPTIONS = ("auto", "torch", "onednn")
PACK_MIN_SPEEDUP = 1.1  # oneDNN must be this much faster on a shape for its weights to be packed
MEMORY_SHARE = 0.25  # the packed copies may take at most this share of the memory available
MEASURE_SECONDS = 0.05  # each kernel is timed on each shape for about this long (after a warm-up call)
# Rows timed, at most: a chunk's rows, capped so that the output head (the largest shape) is timed in a fraction
# of a second. torch's rate grows with the rows, oneDNN's barely (see the module docstring); short targets,
# whose chunks have the fewest head rows, are where the search spends most (the whole budget, when censored).
MEASURE_BODY_ROWS = 1024
MEASURE_HEAD_ROWS = 512


def _packing_op() -> Any:
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def packing_unavailable(model: Any) -> str | None:
    """Why the model's linear layers cannot be packed here (None: they can)."""
    weight = model.get_input_embeddings().weight
    if weight.device.type != "cpu":
        return f"the model is on {weight.device.type}, packed oneDNN linears are CPU only"
    if weight.dtype != torch.float32:
        return f"the model is {str(weight.dtype).removeprefix('torch.')}, packing is measured for float32 only"
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    try:
        if _packing_op() is None or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
            return "this torch build has no packed oneDNN linear"
    except (AttributeError, RuntimeError):
        return "this torch build has no packed oneDNN linear"
    return None


def _shape_key(linear: torch.nn.Linear) -> str:
    return f"{linear.in_features}x{linear.out_features}"


def linear_groups(model: Any) -> dict[str, list[torch.nn.Linear]]:
    """The model's ``nn.Linear`` layers by weight shape (``"in x out"``), in module order."""
    groups: dict[str, list[torch.nn.Linear]] = {}
    for module in model.modules():
        if type(module) is torch.nn.Linear:  # not subclasses (quantized, LoRA, ...): their forward is their own
            groups.setdefault(_shape_key(module), []).append(module)
    return groups


def _head_key(model: Any) -> str | None:
    head = model.get_output_embeddings() if callable(getattr(model, "get_output_embeddings", None)) else None
    return _shape_key(head) if type(head) is torch.nn.Linear else None


def _available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _pack(weight: Tensor, rows: int) -> Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)


def _packed_linear(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _gflops(call: Any, flops: float) -> float:
    """Best rate of ``call`` over about :data:`MEASURE_SECONDS` (at least two timed calls, after a warm-up)."""
    call()
    best, spent, calls = float("inf"), 0.0, 0
    while calls < 2 or spent < MEASURE_SECONDS:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        best, spent, calls = min(best, elapsed), spent + elapsed, calls + 1
    return flops / best / 1e9


def measure_linear_kernels(model: Any, *, body_rows: int, head_rows: int) -> dict[str, dict[str, float]]:
    """GFLOP/s of torch's linear and of the packed oneDNN one on each of the model's weight shapes: the output
    head at ``head_rows`` rows (the target positions of a chunk), every other shape at ``body_rows``."""
    head = _head_key(model)
    generator = torch.Generator().manual_seed(0)
    speeds = {}
    with torch.inference_mode():
        for key, modules in linear_groups(model).items():
            linear = modules[0]
            rows = head_rows if key == head else body_rows
            x = torch.randn(rows, linear.in_features, generator=generator)
            flops = 2.0 * rows * linear.in_features * linear.out_features
            packed = _pack(linear.weight, rows)
            speeds[key] = {"rows": rows,
                           "torch": round(_gflops(lambda lin=linear, x=x: torch.nn.functional.linear(x, lin.weight,
                                                                                                  lin.bias), flops), 1),
                           "onednn": round(_gflops(lambda p=packed, lin=linear, x=x: _packed_linear(x, p, lin.bias),
                                                   flops), 1)}
            del packed
    return speeds


def pick_packed(speeds: dict[str, dict[str, float]]) -> list[str]:
    """The shapes worth packing: oneDNN at least :data:`PACK_MIN_SPEEDUP` times torch's rate."""
    return sorted(key for key, rate in speeds.items() if rate["onednn"] >= PACK_MIN_SPEEDUP * rate["torch"])


def linear_kernels_for(model: Any, option: str, *, rows: int, seq_len: int, target_len: int,
                       cache_dir: str | Path | None = None) -> tuple[list[str], dict[str, Any] | None]:
    """``(shapes to pack, measurement or None)`` for ``option``: ``"torch"`` packs nothing, ``"onednn"`` every
    shape, ``"auto"`` the shapes measured faster packed on this machine (cached as the screen choice is)."""
    if option not in KERNEL_OPTIONS:
        raise ValueError(f"linear kernel must be one of {', '.join(KERNEL_OPTIONS)}; got {option!r}")
    if option == "torch":
        return [], None
    reason = packing_unavailable(model)
    if reason is None:
        linear_bytes = sum(m.weight.numel() * m.weight.element_size()
                           for group in linear_groups(model).values() for m in group)
        available = _available_bytes()
        if available is not None and linear_bytes > MEMORY_SHARE * available:
            reason = (f"the packed copies ({linear_bytes / 2**30:.1f} GiB) would take more than "
                      f"{MEMORY_SHARE:.0%} of the {available / 2**30:.1f} GiB available")
    if reason is not None:
        if option == "onednn":
            raise ValueError(f"cannot pack the linear layers: {reason}")
        return [], {"chosen": [], "reason": reason, "cached": False}
    if option == "onednn":
        return sorted(linear_groups(model)), None
    body_rows = max(1, min(MEASURE_BODY_ROWS, rows * seq_len))
    head_rows = max(1, min(MEASURE_HEAD_ROWS, rows * (target_len + 1)))
    key_fields = {**machine_fields(), "choice": "linear_kernels", "model": _model_signature(model),
                  "rows": [body_rows, head_rows], "rule": {"min_speedup": PACK_MIN_SPEEDUP}}

    def measure() -> dict[str, Any]:
        speeds = measure_linear_kernels(model, body_rows=body_rows, head_rows=head_rows)
        return {"chosen": pick_packed(speeds), "gflops": speeds}

    entry, cached = measured_once(key_fields, measure, cache_dir)
    return list(entry["chosen"]), {**entry, "cached": cached}


def _model_signature(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    return {"class": type(model).__name__, "name": getattr(config, "_name_or_path", None),
            "shapes": sorted(linear_groups(model))}


@dataclass
class PackedLinears:
    """Packed oneDNN weights for some of a model's linear layers, swapped in only inside :meth:`active`.

    The swap is on the model's own modules: a second thread running the same model object meanwhile would run
    packed too. evalkit runs one search per process (or Ray actor); share a model across threads only with
    ``linear_kernel="torch"``."""

    layers: list[tuple[torch.nn.Linear, Tensor]] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within: each packed layer's forward is the packed product (same weights, same bias). Always undone."""
        try:
            for linear, packed in self.layers:
                linear.forward = (lambda x, packed=packed, bias=linear.bias: _packed_linear(x, packed, bias))
            yield
        finally:
            for linear, _ in self.layers:
                linear.__dict__.pop("forward", None)


def pack_linears(model: Any, shapes: list[str], rows: int) -> PackedLinears | None:
    """The packed copies of the model's linear layers of these shapes (None when there are none). Layers that
    share a weight (a head tied to the input embeddings) share one packed copy too."""
    if not shapes:
        return None
    wanted = set(shapes)
    by_weight: dict[int, Tensor] = {}
    layers = []
    with torch.no_grad():
        for key, modules in linear_groups(model).items():
            if key not in wanted:
                continue
            for linear in modules:
                if id(linear.weight) not in by_weight:
                    by_weight[id(linear.weight)] = _pack(linear.weight, rows)
                layers.append((linear, by_weight[id(linear.weight)]))
    return PackedLinears(layers, sorted(wanted)) if layers else None
