"""One target's ACR outcome, as a dataclass that serializes to plain JSON."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ACRResult:
    """Everything needed to audit one ACR measurement without rerunning it.

    ``acr`` is exact (``target_tokens / prompt_tokens``) when ``success``; for a censored result (no prompt
    up to the cap made the model emit the target) it is the bound ``target_tokens / cap``: the true ACR
    is below it. Censored results are kept and are never ``memorized``.
    """

    target: str
    target_ids: list[int]
    prompt_ids: list[int]  # the free tokens only: what |x| counts
    input_ids: list[int]  # exactly what the model was fed: prefix (BOS / scaffold) + free tokens + suffix
    prompt_text: str  # decode(prompt_ids)
    target_tokens: int
    prompt_tokens: int
    acr: float
    memorized: bool
    success: bool  # some prompt of at most the cap emitted the target, confirmed by greedy generation
    verified_generation: bool  # model.generate(input_ids, greedy) reproduced target_ids exactly
    retokenizes: bool  # encode(prompt_text) == prompt_ids (the prompt survives a round trip through text)
    censored: bool
    lengths_tried: list[dict[str, Any]]  # in search order: {length, success, steps, best_loss, restart,
    #                                       candidates, seconds}
    bracket: dict[str, int | None]  # {"longest_failed", "shortest_success"}
    steps: int  # GCG steps over all lengths (one gradient each)
    forward_passes: int  # candidate prompts scored (teacher-forced; by the screen copy if any), over all lengths
    wall_seconds: float
    seed: int
    model: str | None
    scaffold: dict[str, Any]  # {"chat_template", "before_ids", "after_ids", "before_text", "after_text", "counted"}
    bos_added: bool
    gzip_ratio: float
    memorized_vs_gzip: bool  # success and ACR > gzip_ratio
    threshold: float = 1.0
    false_matches: int = 0  # teacher-forced matches that real generation did not confirm (numerics); rejected
    screen_dtype: str | None = None  # dtype of the copy that scored candidates first (None: the model itself)
    exact_rechecks: int = 0  # screened candidates the model itself scored again (best-ranked and near-matches)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (``json.dumps`` works on it; infinities become ``None``)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        for entry in out["lengths_tried"]:
            loss = entry.get("best_loss")
            if isinstance(loss, float) and not math.isfinite(loss):
                entry["best_loss"] = None
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def gzip_ratio(text: str) -> float:
    """``len(bytes) / len(gzip(bytes))``: the compression a generic compressor achieves on ``text``.

    The paper's alternative threshold: a string whose ACR beats gzip is compressed by the model better than
    by a generic compressor. ``mtime=0`` keeps the header, and so the ratio, deterministic.
    """
    raw = text.encode("utf-8")
    return len(raw) / len(gzip.compress(raw, mtime=0))
