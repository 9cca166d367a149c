"""Screens: cheaper copies of the model that score GCG's candidates first, and how one is chosen.

A screen only ranks candidates; the model itself computes the gradient, re-scores the best-ranked and
every near-match, and alone decides success (see :class:`acr.gcg.Screen`). So any copy whose errors the
margin and re-check logic bound can serve, and the fastest one on this machine should:

- ``bfloat16`` / ``float16``: the model cast to 16 bits (fast on CPUs with native bfloat16 dot products --
  AVX512-BF16, AMX -- and on GPUs; emulated and very slow on AVX2-only CPUs);
- ``int8``: the model's linear layers dynamically quantized to int8 (PyTorch's quantized linear kernels,
  FBGEMM/oneDNN, which run on AVX2), activations quantized per batch; CPU only.

``screen_dtype="auto"`` measures instead of guessing from CPU flags (:func:`choose_screen`): it times one
chunk of candidates with the model itself and with each screen this device can run, after a one-layer
probe that rules out in milliseconds a screen far slower than float32 (bfloat16 emulated on AVX2), and
keeps a screen only if it beats the model by :data:`MIN_SPEEDUP` (a screen costs re-checks; see
:func:`pick_screen`). The choice is cached per machine, torch version, thread count, int8 engine, model
and shape, so every run on a machine makes the same choice (the same seed gives the same results); it
and the measured speeds are recorded with every result.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from acr import llama_screen
from acr.gcg import logits_kwarg
from acr.measured import machine_fields, measured_once

SCREEN_KINDS = ("bfloat16", "float16", "int8")  # also the order of preference among about-equally fast ones
MIN_SPEEDUP = 1.3  # a screen must score candidates this much faster than the model to pay for its re-checks
NEAR_TIE = 1.15  # screens within this factor of the fastest count as equally fast: the most faithful one wins
MIN_FIDELITY = 0.9  # Spearman of a screen's losses with the model's on GCG-like candidates, to be used at all
PROBE_SLOWDOWN = 2.0  # a screen whose probe layer runs this much slower than float32 is not timed further
PROBE_TOKENS = 1024  # rows of the probe layer's input: milliseconds on a native path, about a second emulated


def available_screens(model: Any) -> list[str]:
    """The screens that can run for ``model`` on its device (none for a model already below float32)."""
    weight = model.get_input_embeddings().weight
    if weight.dtype != torch.float32:
        return []
    if weight.device.type == "cuda":
        return ["bfloat16"] if torch.cuda.is_bf16_supported() else ["float16"]
    kinds = ["bfloat16", "float16"]
    if "int8" in _quantized_engines():
        kinds.append("int8")
    return kinds


def _quantized_engines() -> list[str]:
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    return ["int8"] if engines else []


def screen_forward(model: Any, kind: str | None) -> str | None:
    """Which forward the screen ``kind`` of ``model`` runs: ``"llama-shared-start"``
    (:class:`acr.llama_screen.SharedStartLlama`, 16-bit screens of Llama models), ``"transformers"`` (a copy of
    the model itself), or None without a screen. Recorded with results and in the resume fingerprint."""
    if kind is None:
        return None
    if kind in ("bfloat16", "float16") and llama_screen.unsupported(model) is None:
        return llama_screen.FORWARD_NAME
    return "transformers"


def screen_copy(model: Any, kind: str) -> Any:
    """A copy of ``model`` as the screen ``kind``, on the same device, in eval mode (made once per model):
    for a 16-bit screen of a Llama model, :class:`acr.llama_screen.SharedStartLlama` (see :func:`screen_forward`).

    16-bit copies keep ``requires_grad`` on their parameters: on CPU, bfloat16 linear layers over frozen
    parameters were measured 8x slower (torch 2.13, AVX512-BF16). Gradients are never taken through a screen.
    """
    if kind not in SCREEN_KINDS:
        raise ValueError(f"screen must be one of {', '.join(SCREEN_KINDS)}; got {kind!r}")
    with torch.inference_mode(False):  # a caller's inference mode would make the copy unusable
        if screen_forward(model, kind) == llama_screen.FORWARD_NAME:
            return llama_screen.SharedStartLlama(model, getattr(torch, kind)).eval()
        if kind == "int8":
            if next(model.parameters()).device.type != "cpu":
                raise ValueError("the int8 screen runs on CPU only")
            import warnings

            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # torch deprecates quantized tensors in favour of torchao
                warnings.simplefilter("ignore")
                return quantize_dynamic(copy.deepcopy(model).float().eval(), {torch.nn.Linear}, dtype=torch.qint8)
        return copy.deepcopy(model).to(getattr(torch, kind)).eval()


def screen_for(model: Any, option: str | None, *, seq_len: int = 40, target_len: int = 24, rows: int = 64,
               cache_dir: str | Path | None = None) -> tuple[str | None, dict[str, Any] | None]:
    """The screen for ``option`` and this model: ``(kind or None, measurement or None)``.

    ``"none"``/None: no screen. ``"bfloat16"``/``"float16"``/``"int8"``: that one (None when the model is
    already in it). ``"auto"``: :func:`choose_screen` at this shape.
    """
    if option is None or option == "none":
        return None, None
    if option == "auto":
        return choose_screen(model, seq_len=seq_len, target_len=target_len, rows=rows, cache_dir=cache_dir)
    if option not in SCREEN_KINDS:
        raise ValueError(f"screen dtype must be auto, none, {', '.join(SCREEN_KINDS)}; got {option!r}")
    weight = model.get_input_embeddings().weight
    if option != "int8" and weight.dtype == getattr(torch, option):
        return None, None
    if option == "int8" and weight.device.type != "cpu":
        raise ValueError("the int8 screen runs on CPU only")
    return option, None


def _model_signature(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    weight = model.get_input_embeddings().weight
    return {"class": type(model).__name__, "name": getattr(config, "_name_or_path", None),
            "parameters": int(sum(p.numel() for p in model.parameters())), "dtype": str(weight.dtype),
            "device": str(weight.device)}


def choose_screen(model: Any, *, seq_len: int, target_len: int, rows: int,
                  cache_dir: str | Path | None = None) -> tuple[str | None, dict[str, Any]]:
    """The fastest screen for ``model`` on this machine, measured (or read from the cache of an earlier
    measurement at the same key): ``(kind or None, {"chosen", "candidates_per_second", "key", "cached"})``."""
    kinds = available_screens(model)
    if not kinds:
        return None, {"chosen": None, "candidates_per_second": {}, "reason": "the model is not float32",
                      "cached": False}
    key_fields = {**machine_fields(), "model": _model_signature(model), "shape": [rows, seq_len, target_len],
                  "kinds": kinds, "forwards": {kind: screen_forward(model, kind) for kind in kinds},
                  "rule": {"min_speedup": MIN_SPEEDUP, "near_tie": NEAR_TIE, "min_fidelity": MIN_FIDELITY}}

    def measure() -> dict[str, Any]:
        speeds, fidelity = measure_screens(model, kinds, seq_len=seq_len, target_len=target_len, rows=rows)
        return {"chosen": pick_screen(speeds, fidelity), "candidates_per_second": speeds, "fidelity": fidelity}

    entry, cached = measured_once(key_fields, measure, cache_dir)
    return entry["chosen"], {**entry, "cached": cached}


MEASURE_ROWS = 16  # candidates per timed forward: enough to batch like a search chunk, few enough for seconds


def pick_screen(speeds: dict[str, float], fidelity: dict[str, float] | None = None) -> str | None:
    """The screen to use given measured candidates/s (``"none"``: the model itself) and, when given, each
    screen's ranking fidelity: among the screens at least :data:`MIN_SPEEDUP` times faster than the model
    that rank candidates as it does (Spearman at least :data:`MIN_FIDELITY`), the most faithful kind
    (:data:`SCREEN_KINDS` order) within :data:`NEAR_TIE` of the fastest -- a timing coin flip between two
    about-equal screens should not decide which one searches."""
    base = speeds.get("none") or 0.0
    fast = {k: v for k, v in speeds.items() if k in SCREEN_KINDS and base and v >= MIN_SPEEDUP * base
            and (fidelity is None or fidelity.get(k, 0.0) >= MIN_FIDELITY)}
    if not fast:
        return None
    top = max(fast.values())
    return next(k for k in SCREEN_KINDS if k in fast and fast[k] * NEAR_TIE >= top)


def measure_screens(model: Any, kinds: list[str], *, seq_len: int, target_len: int, rows: int,
                    repeats: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """``(candidates/s, fidelity)``: how fast the model itself (``"none"``) and each screen score ``rows`` (at
    most :data:`MEASURE_ROWS`) teacher-forced candidates of ``seq_len`` tokens (logits at the last
    ``target_len + 1`` positions, after one warm-up forward), and how faithfully each screen ranks them.

    The candidates are what GCG scores: one prompt with single tokens swapped, before a fixed target. A
    screen's fidelity is the Spearman rank correlation of its losses with the model's over them: GCG moves
    by the screen's ranking (the model re-scores only its best few), so a fast screen that ranks them
    differently costs steps instead of saving time.

    Each screen is first probed on one linear layer of the model's shape against the same layer in float32
    (milliseconds); one more than :data:`PROBE_SLOWDOWN` times slower (bfloat16 emulated in software on an
    AVX2-only CPU) is recorded at speed 0 and not timed on the model, so the whole measurement takes
    seconds."""
    device = model.get_input_embeddings().weight.device
    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    rows = max(2, min(rows, MEASURE_ROWS))
    free = max(1, seq_len - target_len)
    ids = torch.randint(0, vocab, (1, seq_len), generator=generator).repeat(rows, 1)
    ids[torch.arange(rows), torch.arange(rows) % free] = torch.randint(0, vocab, (rows,), generator=generator)
    ids = ids.to(device)
    name = logits_kwarg(model)
    keep = {name: target_len + 1} if name else {}
    labels = ids[:, -target_len:]

    def timed(call: Any, repeats: int = repeats) -> float:
        with torch.inference_mode():
            call()  # warm-up: allocator, kernels, weight packing
            best = float("inf")
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                call()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - start)
        return best

    def losses(m: Any) -> Tensor:
        with torch.inference_mode():
            logits = m(input_ids=ids, **keep).logits[:, -target_len - 1:-1].float()
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(dim=1).cpu()

    layer = _probe_layer(model, PROBE_TOKENS)
    base_probe = timed(lambda: layer[0](layer[1]), 3)
    speeds = {"none": rows / timed(lambda: model(input_ids=ids, **keep))}
    reference = losses(model)
    fidelity: dict[str, float] = {}
    for kind in kinds:
        try:
            probe_layer = screen_copy(torch.nn.Sequential(layer[0]), kind)
            x = layer[1] if kind == "int8" else layer[1].to(getattr(torch, kind))
            if timed(lambda m=probe_layer, x=x: m(x), 3) > PROBE_SLOWDOWN * base_probe:
                speeds[kind] = 0.0  # far slower than float32 here: not worth a model copy
                continue
            screen = screen_copy(model, kind)
        except Exception:  # a copy or quantization this model does not support: not a candidate
            continue
        speeds[kind] = rows / timed(lambda m=screen: m(input_ids=ids, **keep))
        fidelity[kind] = round(_spearman(reference, losses(screen)), 3)
        del screen
    return {k: round(v, 2) for k, v in speeds.items()}, fidelity


def _spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation (ties by order; the losses are continuous)."""
    ranks = [t.argsort().argsort().double() for t in (a, b)]
    ranks = [r - r.mean() for r in ranks]
    denominator = float(ranks[0].norm() * ranks[1].norm())
    return float((ranks[0] * ranks[1]).sum()) / denominator if denominator else 0.0


def _probe_layer(model: Any, tokens: int) -> tuple[Any, Tensor]:
    """A float32 linear layer of the model's MLP shape (hidden -> intermediate) and an input of ``tokens`` rows."""
    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", None) or model.get_input_embeddings().weight.shape[1])
    wide = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    device = model.get_input_embeddings().weight.device
    generator = torch.Generator().manual_seed(1)
    linear = torch.nn.Linear(hidden, wide).to(device)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(wide, hidden, generator=generator) * 0.02)
    x = torch.randn(max(1, tokens), hidden, generator=generator).to(device)
    return linear, x
