"""One target's ACR outcome, as a dataclass that serializes to plain JSON.

Vocabulary (README, results, analysis, CLI and report use exactly these words):

* **found**: the search found a prompt of at most the cap that makes the model emit the target (verified
  by real greedy generation). The true shortest prompt is at most that long, so the found ACR is a
  **lower bound** on the true ACR (the true ACR is at least ``acr``).
* **no prompt found within the budget** (``censored``): the search ran out of its budget (steps per
  length, search width, restarts, lengths tried: recorded in ``budget``). This proves nothing about the
  true shortest prompt; such a row has no ACR (``acr`` is None) and is never memorized.
* **memorized**: found, and the found ACR is above the threshold tau (>= 1).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ACRResult:
    """Everything needed to audit one ACR measurement without rerunning it."""

    target: str
    target_ids: list[int]  # what |y| counts (in chat mode the end-of-turn token that must follow is not counted)
    prompt_ids: list[int]  # the free tokens only: what |x| counts
    input_ids: list[int]  # exactly what the model was fed: prefix (BOS / scaffold) + free tokens + suffix
    prompt_text: str  # decode(prompt_ids); when nothing was found, the lowest-loss prompt at the last length
    target_tokens: int
    prompt_tokens: int
    acr: float | None  # |y| / |x| of the found prompt: a lower bound on the true ACR; None when none was found
    memorized: bool
    success: bool  # a prompt of at most the cap emitted the target, confirmed by greedy generation
    verified_generation: bool  # model.generate(input_ids, greedy) reproduced the target (and end of turn) exactly
    retokenizes: bool  # the text a user would type (the rendered chat, or the prompt with its BOS) encodes back
    #                    to exactly input_ids
    censored: bool  # no prompt found within the budget (the complement of success)
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
    budget: dict[str, Any]  # what the search could spend: steps per length, width, top-k, restarts, cap, lengths tried
    end_of_turn_ids: list[int] = field(default_factory=list)  # must follow the target (chat mode), not counted
    target_bytes: int = 0  # UTF-8 bytes of the target
    prompt_bytes: int = 0  # UTF-8 bytes of prompt_text
    deflate_bytes: int = 0  # bytes of the target compressed by raw DEFLATE (level 9, no header or checksum)
    beats_deflate: bool = False  # found, and the prompt is shorter in bytes than DEFLATE's compression of y
    threshold: float = 1.0
    false_matches: int = 0  # teacher-forced matches that real generation did not confirm (numerics); rejected
    screen_dtype: str | None = None  # the screen that scored candidates first: bfloat16, float16, int8 (None: none)
    screen_forward: str | None = None  # its forward: "llama-shared-start" or "transformers" (see acr.screens)
    screen_speeds: dict[str, float] | None = None  # "auto": measured candidates/s of the model ("none") and each screen
    screen_fidelity: dict[str, float] | None = None  # "auto": Spearman of each screen's losses with the model's
    linear_kernels: dict[str, Any] | None = None  # {"packed": weight shapes packed for oneDNN, "gflops": measured}
    exact_rechecks: int = 0  # screened candidates the model itself scored again (best-ranked and near-matches)
    pruned: int = 0  # candidates whose scoring stopped before the target's end: they could not match or move GCG
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "found" if self.success else "no prompt found within the budget"

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


def deflate_bytes(text: str) -> int:
    """Bytes of ``text`` (UTF-8) compressed by raw DEFLATE at level 9: no gzip or zlib header, no checksum,
    so short strings are not dominated by framing (a gzip stream adds 18 bytes to every string)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return len(compressor.compress(text.encode("utf-8")) + compressor.flush())


def search_budget(config: dict[str, Any], cap: int, lengths: list[int]) -> dict[str, Any]:
    """The ``budget`` of one row: what the search was allowed and which prompt lengths it tried."""
    return {"steps_per_length": config.get("steps_per_length"), "search_width": config.get("search_width"),
            "topk": config.get("topk"), "restarts": config.get("restarts"), "max_prompt_tokens": cap,
            "lengths_tried": list(dict.fromkeys(lengths))}
