"""Local Hugging Face transformers runner: ``hf:smollm2``, ``hf:/path/to/model``, ``hf:org/name``.

The model is loaded once, at construction, and generates greedily in left-padded batches. Prompts are
sorted by token length before batching (less padding) and results come back in the caller's order;
a batch gives the same completions as generating the prompts one at a time. Within a batch the shared
prompt prefix (chat header, task instruction) is prefilled once and the rest in nearly unpadded
groups, then all prompts decode together (``HFRunner._prefill``).

torch and transformers are imported here, so this module is imported lazily (``RUNNERS`` maps the
``hf`` prefix to it) and ``evalkit --help`` never pays for them.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from evalkit.devices import resolve_device
from evalkit.errors import EvalkitError, ResourceMissingError, UsageError
from evalkit.progress import progress_counter, quiet_library_progress
from evalkit.runners.base import RUNNERS, Request, Result, Runner, RunnerOptions
from evalkit.runners.hf_source import resolve_source

# End-of-turn markers of common chat templates. One is added to the stop tokens when the chat template
# in use mentions it and the vocabulary has it: a chat model's turn ends there even where the
# tokenizer's eos_token says otherwise (SmolLM2's GGUF tokenizer reports <|im_start|> as eos).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """``auto`` -> float32 on CPU, bfloat16 on CUDA where supported (else float16)."""
    value = (name or "auto").strip().lower()
    if value == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if value not in _DTYPE_NAMES:
        raise UsageError(f"unknown dtype '{name}'; use auto, float32, bfloat16 or float16")
    return getattr(torch, _DTYPE_NAMES[value])


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' load-time chatter (e.g. the GGUF 'legacy tokenizer' notice)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class _Loaded:
    """A loaded (tokenizer, model) pair; runners of the same files, dtype and device share one."""

    def __init__(self, tokenizer: Any, model: Any) -> None:
        self.tokenizer, self.model = tokenizer, model


# Weak values: a model stays loaded while some runner holds it, and no longer. A compare run whose systems
# and judge all use hf:smollm2 with different generation settings (and a later runner in the same notebook)
# loads SmolLM2 once. Generation settings live in the runner, never on the shared model.
_LOADED: weakref.WeakValueDictionary[tuple, _Loaded] = weakref.WeakValueDictionary()


def _files_key(path: str, single_file: str | None = None) -> tuple:
    """The model files' names, sizes and modification times: a model saved again is loaded again."""
    import os

    from evalkit.runners.identity import model_files

    return tuple((str(f), (st := os.stat(f)).st_size, st.st_mtime_ns) for f in model_files(path, single_file))


class HFRunner(Runner):
    """Greedy, batched generation with a local transformers causal LM, loaded once here (or shared with a
    runner of the same model files, dtype and device)."""

    def __init__(self, target: str, options: RunnerOptions | None = None):
        self.options = options or RunnerOptions()
        self.target = target
        self.spec = f"hf:{target}"
        if self.options.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {self.options.batch_size}")
        if self.options.max_new_tokens < 1:
            raise UsageError(f"max new tokens must be at least 1, got {self.options.max_new_tokens}")
        if self.options.temperature or self.options.top_p is not None or self.options.stop_sequences:
            raise UsageError("a local hf: model decodes greedily: temperature, top_p and stop sequences are for "
                             "remote models")
        self._identity: dict[str, Any] | None = None
        self.device = resolve_device(self.options.device)
        self.dtype = resolve_dtype(self.options.dtype, self.device)
        self.source = resolve_source(target)

        torch.manual_seed(self.options.seed)
        started = time.perf_counter()
        self.tokenizer, self.model = self._load()
        self.load_seconds = time.perf_counter() - started

        tok = self.tokenizer
        self.uses_chat_template = bool(self.options.use_chat_template and getattr(tok, "chat_template", None))
        self.stop_token_ids = self._stop_token_ids()
        if tok.pad_token_id is None:
            # Which id pads does not change results (padding is masked out), but generate() needs one.
            pad_id = self.model.generation_config.pad_token_id
            if isinstance(pad_id, list):
                pad_id = pad_id[0] if pad_id else None
            if pad_id is None:
                pad_id = self.stop_token_ids[0] if self.stop_token_ids else 0
            tok.pad_token = tok.convert_ids_to_tokens(int(pad_id))
        self.pad_token_id = int(tok.pad_token_id)
        self._stop_set = set(self.stop_token_ids)
        self.generation_config = self._generation_config()
        self._last_logit_only: dict[str, int] = {}
        self._split_prefill = self._split_prefill_supported()

    # -- loading -----------------------------------------------------------------------------------

    def _load(self) -> tuple[Any, Any]:
        src = self.source
        adapter = src.get("adapter_path")
        key = (_files_key(src["path"], src["gguf_file"]), _files_key(adapter) if adapter else None, str(self.dtype),
               self.device)
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = _Loaded(*self._load_files())
            _LOADED[key] = loaded
        self._loaded = loaded  # holds the shared model alive as long as this runner lives
        return loaded.tokenizer, loaded.model

    def _load_files(self) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = self.source
        kwargs: dict[str, Any] = {"local_files_only": True}
        if src["gguf_file"]:
            kwargs["gguf_file"] = src["gguf_file"]
        try:
            with _quiet_transformers(), quiet_library_progress(not self.options.progress):
                tokenizer = AutoTokenizer.from_pretrained(src["path"], **kwargs)
                model = AutoModelForCausalLM.from_pretrained(src["path"], torch_dtype=self.dtype, **kwargs)
                if src.get("adapter_path"):
                    model = _with_adapter(model, src["adapter_path"])
        except EvalkitError:
            raise
        except ValueError as exc:
            if "Unrecognized configuration class" in str(exc):
                raise UsageError(f"'{self.target}' is not a causal language model (AutoModelForCausalLM "
                                 f"cannot load it): {_first_line(exc)}") from None
            raise self._load_error(exc) from None
        except Exception as exc:  # hub/IO errors: one line for the terminal, not a hub stack trace
            raise self._load_error(exc) from None
        model.to(self.device)
        model.eval()
        return tokenizer, model

    def _load_error(self, exc: Exception) -> EvalkitError:
        where = self.source["path"] + (f"/{self.source['gguf_file']}" if self.source["gguf_file"] else "")
        return ResourceMissingError(f"could not load model from {where}: {_first_line(exc)}")

    def _stop_token_ids(self) -> list[int]:
        tok = self.tokenizer
        ids: set[int] = set()
        eos = self.model.generation_config.eos_token_id
        for value in eos if isinstance(eos, list) else [eos]:
            if value is not None:
                ids.add(int(value))
        if tok.eos_token_id is not None:
            ids.add(int(tok.eos_token_id))
        if self.uses_chat_template:
            vocab = tok.get_vocab()
            template = tok.chat_template if isinstance(tok.chat_template, str) else str(tok.chat_template)
            ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in template and t in vocab)
        return sorted(ids)

    def _generation_config(self) -> Any:
        """Greedy and nothing else: a fresh config (:func:`evalkit.lm.greedy_generation_config`), so a
        ``repetition_penalty`` or n-gram ban in the model's own generation config cannot change outputs."""
        from evalkit.lm import greedy_generation_config

        return greedy_generation_config(self.model, self.options.max_new_tokens,
                                        eos_token_id=list(self.stop_token_ids) or None, pad_token_id=self.pad_token_id)

    # -- prompts -----------------------------------------------------------------------------------

    def render_prompt(self, prompt: str) -> str:
        """The exact text the model is given for ``prompt``: a chat-templated single user turn ending in
        the assistant header, or the prompt itself (the tokenizer then adds its usual special tokens)."""
        if not self.uses_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )

    def prompt_token_ids(self, prompt: str) -> list[int]:
        """Token ids fed to the model for ``prompt``. Templated text already carries its special tokens,
        so it is tokenized without adding them again (no doubled BOS)."""
        ids = self.tokenizer(self.render_prompt(prompt), add_special_tokens=not self.uses_chat_template)
        ids = list(ids["input_ids"])
        if not ids:
            start = self.tokenizer.bos_token_id
            if start is None:
                raise UsageError("empty prompt and the tokenizer has no BOS token to start generation from")
            ids = [int(start)]
        return ids

    # -- context window ----------------------------------------------------------------------------

    def prompt_token_budget(self) -> int | None:
        from evalkit.lm import context_limit

        limit = context_limit(self.model, self.tokenizer)
        return None if limit is None else limit - self.options.max_new_tokens

    def count_prompt_tokens(self, prompt: str) -> int:
        return len(self.prompt_token_ids(prompt))

    def text_token_prefix(self, text: str, n_tokens: int) -> tuple[str, int]:
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoding["offset_mapping"]
        if n_tokens >= len(offsets):
            return text, len(offsets)
        if n_tokens <= 0:
            return "", len(offsets)
        return text[: offsets[n_tokens - 1][1]], len(offsets)

    # -- generation --------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Completions for ``prompts`` (no context check: the caller's prompts are sent as they are)."""
        return [self._decode(ids) for ids in self._generate_ids([self.prompt_token_ids(p) for p in prompts])]

    def call_batch(self, requests: Sequence[Request]) -> list[Result]:
        """One result per request: over-context prompts become errors (or are cut with ``truncate``), the
        rest are generated together, with finish reason and token counts."""
        from evalkit.runners.context import fit_request

        budget = self.prompt_token_budget()
        results: list[Result] = []
        ready: list[tuple[Result, list[int]]] = []
        for request in requests:
            prompt, fitted = fit_request(self, request, budget)
            result = fitted or Result(id=request.id)
            results.append(result)
            if result.error is None:
                ready.append((result, self.prompt_token_ids(prompt)))
        for (result, ids), new_ids in zip(ready, self._generate_ids([ids for _, ids in ready]), strict=True):
            stopped = any(t in self._stop_set for t in new_ids)
            result.text = self._decode(new_ids)
            result.finish_reason = "stop" if stopped else "length"
            result.usage = {"input_tokens": len(ids), "output_tokens": self._n_generated(new_ids)}
        return results

    def _n_generated(self, new_ids: list[int]) -> int:
        """New tokens up to and including the first stop token (padding after it is not generated text)."""
        for position, token in enumerate(new_ids):
            if token in self._stop_set:
                return position + 1
        return len(new_ids)

    def _generate_ids(self, encoded: list[list[int]]) -> list[list[int]]:
        """New token ids for every encoded prompt, in order, generated in length-sorted batches."""
        if not encoded:
            return []
        # Longest first: similar lengths share a batch, and a batch too large for memory fails early.
        order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
        results: list[list[int]] = [[] for _ in encoded]
        batch_size = self.options.batch_size
        bar = progress_counter(len(encoded), desc=f"generating ({self.target})", enabled=self.options.progress)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for index, ids in zip(chunk, self._generate_batch([encoded[i] for i in chunk]), strict=True):
                results[index] = ids
            bar.update(len(chunk))
        bar.close()
        return results

    def _generate_batch(self, batch: list[list[int]]) -> list[list[int]]:
        with torch.inference_mode():
            prepared = self._prefill(batch) if self._split_prefill and len(batch) > 1 else None
            if prepared is not None:
                input_ids, attention_mask, cache = prepared
                extra: dict[str, Any] = {"past_key_values": cache}
            else:
                width = max(len(ids) for ids in batch)
                input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, ids in enumerate(batch):  # left padding: every prompt ends where generation starts
                    input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, width - len(ids):] = 1
                extra = {}
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                generation_config=self.generation_config,
                **extra,
            )
        return [row.tolist() for row in output[:, input_ids.shape[1]:].cpu()]

    def _split_prefill_supported(self) -> bool:
        """Whether prompts can be prefilled in groups into one DynamicCache (see ``_prefill``)."""
        import inspect

        try:
            params = inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover
            return False
        self._last_logit_only = {"num_logits_to_keep": 1} if "num_logits_to_keep" in params else {}
        return (
            not getattr(self.model.config, "is_encoder_decoder", False)
            and all(name in params for name in ("attention_mask", "position_ids", "past_key_values"))
            and bool(getattr(self.model, "_supports_cache_class", False))
            and not getattr(self.model, "_is_stateful", False)
            # models asking for a special cache (e.g. Gemma 2's hybrid sliding-window one) keep plain generate
            and getattr(self.model.generation_config, "cache_implementation", None) is None
        )

    def _prefill(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, Any] | None:
        """Inputs and KV cache for ``generate`` with every prompt's tokens but the last already cached.

        A plain left-padded batch spends prefill compute on padding and recomputes what all prompts
        share (chat template header, task instruction). Here the batch's common token prefix is run
        once; the rest of each prompt runs in groups of consecutive prompts whose lengths are within
        ~1/8 of each other (batches arrive sorted by length), on top of that prefix. The caches are then
        laid out as ``[prefix][padding][rest of prompt]`` per row with the padding masked out; positions
        come from the attention mask, so every token keeps the position it has in its own prompt.
        ``generate`` then feeds each prompt's last token and decodes the whole batch together.

        Returns ``(input_ids, attention_mask, cache)``, or None (plain ``generate``) where the model
        does not produce a DynamicCache.
        """
        from transformers import DynamicCache

        shortest = min(len(ids) for ids in batch)
        prefix = 0  # common prefix, leaving every prompt at least its last token for generate()
        while prefix < shortest - 1 and all(ids[prefix] == batch[0][prefix] for ids in batch):
            prefix += 1
        rests = [ids[prefix:-1] for ids in batch]  # per prompt: what to prefill after the prefix
        lengths = [len(rest) for rest in rests]
        span = max(lengths)
        if prefix + span == 0:
            return None

        prefix_kv = None
        if prefix:
            ids = torch.tensor([batch[0][:prefix]], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=DynamicCache(),
                             use_cache=True, **self._last_logit_only)
            if not isinstance(out.past_key_values, DynamicCache):
                return None
            prefix_kv = out.past_key_values.to_legacy_cache()

        groups: list[list[int]] = []
        for row in range(len(batch)):
            if groups:
                members = groups[-1] + [row]
                longest = max(lengths[i] for i in members)
                if (longest * len(members) - sum(lengths[i] for i in members)) * 8 <= longest * len(members):
                    groups[-1] = members
                    continue
            groups.append([row])

        parts: list[tuple[list[int], Any]] = []  # (rows, legacy cache of their rests, or None: nothing)
        for group in groups:
            width = max(lengths[i] for i in group)
            if width == 0:
                parts.append((group, None))
                continue
            ids = torch.full((len(group), width), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(group), prefix + width), dtype=torch.long)
            mask[:, :prefix] = 1
            for r, i in enumerate(group):
                if lengths[i]:
                    ids[r, width - lengths[i]:] = torch.tensor(rests[i], dtype=torch.long)
                    mask[r, prefix + width - lengths[i]:] = 1
            position_ids = mask.cumsum(-1)[:, prefix:] - 1
            position_ids.masked_fill_(mask[:, prefix:] == 0, 1)  # what generate() does for padding
            past = DynamicCache()
            if prefix_kv is not None:
                past = DynamicCache.from_legacy_cache(tuple(
                    (k.expand(len(group), -1, -1, -1).contiguous(), v.expand(len(group), -1, -1, -1).contiguous())
                    for k, v in prefix_kv
                ))
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=position_ids.to(self.device), past_key_values=past, use_cache=True,
                             **self._last_logit_only)
            if not isinstance(out.past_key_values, DynamicCache):
                return None
            parts.append((group, [(k[:, :, prefix:], v[:, :, prefix:])
                                  for k, v in out.past_key_values.to_legacy_cache()]))

        reference = prefix_kv or next(cache for _, cache in parts if cache is not None)
        layers = []
        for layer, (ref_k, ref_v) in enumerate(reference):
            keys, values = [], []
            for group, cache in parts:
                if cache is None:
                    k = ref_k.new_zeros((len(group), ref_k.shape[1], span, ref_k.shape[3]))
                    v = ref_v.new_zeros((len(group), ref_v.shape[1], span, ref_v.shape[3]))
                else:
                    k, v = cache[layer]
                    pad = (0, 0, span - k.shape[2], 0)  # left-pad the sequence dimension to the span
                    k, v = torch.nn.functional.pad(k, pad), torch.nn.functional.pad(v, pad)
                if prefix_kv is not None:
                    pk, pv = prefix_kv[layer]
                    k = torch.cat([pk.expand(len(group), -1, -1, -1), k], dim=2)
                    v = torch.cat([pv.expand(len(group), -1, -1, -1), v], dim=2)
                keys.append(k)
                values.append(v)
            layers.append((torch.cat(keys), torch.cat(values)))
        cache = DynamicCache.from_legacy_cache(tuple(layers))

        width = prefix + span + 1
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, :prefix] = torch.tensor(ids[:prefix], dtype=torch.long)
            input_ids[row, width - len(ids) + prefix:] = torch.tensor(ids[prefix:], dtype=torch.long)
            attention_mask[row, :prefix] = 1
            attention_mask[row, width - len(ids) + prefix:] = 1
        return input_ids, attention_mask, cache

    def _decode(self, new_ids: list[int]) -> str:
        stops = self._stop_set
        for position, token in enumerate(new_ids):
            if token in stops:
                new_ids = new_ids[:position]
                break
        return self.tokenizer.decode(new_ids, skip_special_tokens=True).strip()

    # -- identity ----------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """What decides this model's output: the sha256 of its files (weights, config, tokenizer, chat template;
        see :mod:`evalkit.runners.identity`), the resolved dtype and device, and the library versions."""
        if self._identity is None:
            import transformers

            from evalkit.runners.identity import files_fingerprint, model_files

            files = model_files(self.source["path"], self.source["gguf_file"])
            adapter = self.source.get("adapter_path")
            self._identity = {"runner": "hf", "files": files_fingerprint(files, self.source["path"]),
                              **({"adapter": files_fingerprint(model_files(adapter), adapter)} if adapter else {}),
                              "dtype": str(self.dtype).removeprefix("torch."),
                              "device": torch.device(self.device).type,
                              "torch": torch.__version__, "transformers": transformers.__version__}
        return self._identity

    def params(self) -> dict[str, Any]:
        return {"decoding": "greedy", "max_new_tokens": self.options.max_new_tokens,
                "chat_template": self.uses_chat_template, "truncate": self.options.truncate}

    # -- metadata ----------------------------------------------------------------------------------

    @property
    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def describe(self) -> dict[str, Any]:
        import transformers

        tok = self.tokenizer
        return {
            "spec": self.spec,
            "runner": "hf",
            "identity": self.identity(),
            "source": self.source["kind"],
            "alias": self.source["alias"],
            "path": self.source["path"],
            "gguf_file": self.source["gguf_file"],
            "adapter_path": self.source.get("adapter_path"),
            "model_type": getattr(self.model.config, "model_type", None),
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "chat_template": self.uses_chat_template,
            "max_new_tokens": self.options.max_new_tokens,
            "batch_size": self.options.batch_size,
            "decoding": "greedy",
            "generation_config": self.generation_config.to_dict(),
            "context_limit": None if self.prompt_token_budget() is None
            else self.prompt_token_budget() + self.options.max_new_tokens,
            "seed": self.options.seed,
            "stop_token_ids": list(self.stop_token_ids),
            "stop_tokens": tok.convert_ids_to_tokens(list(self.stop_token_ids)),
            "pad_token_id": self.pad_token_id,
            "num_parameters": self.num_parameters,
            "load_seconds": round(self.load_seconds, 3),
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
        }


def _with_adapter(model: Any, adapter_path: str) -> Any:
    """The base model with a PEFT adapter (LoRA, ...) applied and merged into its weights (decoding then costs
    what the base model's does)."""
    from evalkit.extras import require

    require(("peft",), "hf", "PEFT adapter directories")
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter_path, is_trainable=False).merge_and_unload()


@RUNNERS.register("hf")
def create_hf_runner(target: str, options: RunnerOptions) -> HFRunner:
    return HFRunner(target, options)
