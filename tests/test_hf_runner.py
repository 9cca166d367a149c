"""The local transformers runner, on real transformers (no mocks).

Mechanics run on a tiny random-init Llama saved with a word-level tokenizer into a temp dir; the
``slow`` tests load the real SmolLM2-135M-Instruct GGUF once per module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from evalkit.errors import ResourceMissingError, UsageError  # noqa: E402
from evalkit.resources import models  # noqa: E402
from evalkit.runners import RunnerOptions, create_runner  # noqa: E402
from evalkit.runners.hf import HFRunner  # noqa: E402

WORDS = (
    "the a of to in and is was for on that with by it at as from be this are have has were city council "
    "voted bike lanes new park school river storm rain flood bank rates market team won game season player "
    "coach mayor report said today year people local police fire road bridge water power price food farm "
    "summarize sentence one news story write short user assistant system"
).split()
SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PROMPTS = [
    "rain",
    "summarize the news story the city council voted on new bike lanes in the river park today and the "
    "mayor said that the road and the bridge were a price the people of the city have to pay for power",
    "the team won the game",
    "write one short sentence",
    "the bank said rates were",
    "storm",
    "local police said the fire on the road by the school was in the news today and the mayor said the "
    "water",
]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Generation runs on one intra-op thread here. On a shared 2-core box, two-thread torch ops stall
    at their barriers whenever another process holds a core (tiny-model tests went from 0.2 s to 10 s);
    one thread makes the runtime depend on load only linearly. Results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tokenizer(chat: bool):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tk_models
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(tk_models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # Like SmolLM2's GGUF tokenizer: <|im_start|> is BOS, prepended to raw text, and there is no pad token.
    backend.post_processor = TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  unk_token="<unk>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """{"plain": dir, "chat": dir}: the same random Llama, with and without a chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=len(SPECIALS) + len(WORDS), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.5,  # large weights: well separated logits, so argmax is immune to float noise
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # special tokens get logit exactly 0 and never win: runs reach max_new_tokens
        model.lm_head.weight[: len(SPECIALS)] = 0.0
    dirs = {}
    for name, chat in (("plain", False), ("chat", True)):
        path = tmp_path_factory.mktemp(f"tiny-{name}")
        model.save_pretrained(path)
        _tokenizer(chat).save_pretrained(path)
        dirs[name] = path
    return dirs


def _runner(path, **overrides) -> HFRunner:
    options = {"batch_size": 3, "max_new_tokens": 10, "progress": False, **overrides}
    return create_runner(f"hf:{path}", RunnerOptions(**options))


def _naive(runner: HFRunner, prompt: str, max_new_tokens: int) -> list[int]:
    """Unpadded one-prompt greedy generate straight on the model: the reference for batching."""
    ids = torch.tensor([runner.prompt_token_ids(prompt)])
    with torch.inference_mode():
        out = runner.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=runner.stop_token_ids, pad_token_id=runner.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.fixture(scope="module")
def plain(tiny_dirs):
    return _runner(tiny_dirs["plain"])


def test_base_module_does_not_import_torch():
    code = ("import sys, evalkit.runners.base, evalkit.resources.models; "
            "sys.exit(1 if {'torch', 'transformers'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_batched_equals_one_at_a_time_and_order_is_kept(plain):
    lengths = [len(plain.prompt_token_ids(p)) for p in PROMPTS]
    assert max(lengths) > 5 * min(lengths)  # very different lengths: batches are padded
    batched = plain.generate(PROMPTS)  # batch size 3, 7 prompts: an uneven last batch
    single = [plain.generate([p])[0] for p in PROMPTS]
    naive = [plain.tokenizer.decode(_naive(plain, p, 10), skip_special_tokens=True).strip() for p in PROMPTS]
    assert batched == single == naive
    assert all(batched) and len(set(batched)) > 3  # real, distinct outputs in the callers' order
    reversed_out = plain.generate(PROMPTS[::-1])
    assert reversed_out == batched[::-1]
    assert plain.predict(PROMPTS[2]) == (batched[2], None)
    assert plain.generate([]) == []


def test_grouped_prefill_matches_plain_padded_generate(tiny_dirs):
    """Batches prefill in nearly unpadded groups, then decode together; same results as one padded
    generate() call, including a prompt that is only the BOS token (nothing to prefill)."""
    runner = _runner(tiny_dirs["plain"], batch_size=8)
    assert runner._split_prefill
    prompts = ["", *PROMPTS]
    assert len(runner.prompt_token_ids("")) == 1
    grouped = runner.generate(prompts)
    runner._split_prefill = False
    assert runner.generate(prompts) == grouped
    assert grouped == [runner.generate([p])[0] for p in prompts]


def test_max_new_tokens_is_respected(tiny_dirs):
    for n in (1, 4):
        runner = _runner(tiny_dirs["plain"], max_new_tokens=n, batch_size=4)
        outputs = runner.generate(PROMPTS)
        # word-level vocab: one word per token; special tokens never win, so every run hits the limit
        assert [len(o.split()) for o in outputs] == [n] * len(PROMPTS)
    assert runner.describe()["max_new_tokens"] == 4


def test_generation_stops_at_eos(tiny_dirs, plain, tmp_path):
    prompt = PROMPTS[1]
    tokens = _naive(plain, prompt, 10)
    # a position k whose token did not occur before it; made the EOS, generation must end right there
    k = next(i for i in range(1, len(tokens)) if tokens[i] not in tokens[:i])
    eos_dir = tmp_path / "eos"
    shutil.copytree(tiny_dirs["plain"], eos_dir)
    gen_config = json.loads((eos_dir / "generation_config.json").read_text())
    gen_config["eos_token_id"] = tokens[k]
    (eos_dir / "generation_config.json").write_text(json.dumps(gen_config))

    runner = _runner(eos_dir, batch_size=4)
    assert tokens[k] in runner.stop_token_ids
    expected = plain.tokenizer.decode(tokens[:k]).strip()
    outputs = runner.generate(PROMPTS)
    assert outputs[1] == expected
    assert outputs == [runner.generate([p])[0] for p in PROMPTS]
    assert len(outputs[1].split()) == k < 10


def test_chat_template_wraps_once_without_doubled_bos(tiny_dirs):
    runner = _runner(tiny_dirs["chat"])
    assert runner.uses_chat_template
    rendered = runner.render_prompt("the city")
    assert rendered == "<|im_start|>user\nthe city<|im_end|>\n<|im_start|>assistant\n"
    ids = runner.prompt_token_ids("the city")
    bos = runner.tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos and ids.count(bos) == 2  # user + assistant headers only
    assert runner.tokenizer.convert_tokens_to_ids("<|im_end|>") in runner.stop_token_ids
    assert runner.generate(PROMPTS) == [runner.generate([p])[0] for p in PROMPTS]

    raw = _runner(tiny_dirs["chat"], use_chat_template=False)
    assert not raw.uses_chat_template and raw.render_prompt("the city") == "the city"
    assert raw.prompt_token_ids("the city")[0] == bos  # raw text: the tokenizer adds BOS itself
    assert raw.describe()["chat_template"] is False


def test_greedy_means_greedy_whatever_the_models_generation_config_says(tiny_dirs, plain, tmp_path):
    """A model whose generation config sets a repetition penalty, an n-gram ban, banned and suppressed
    tokens (Qwen2.5-Instruct ships repetition_penalty 1.05): the runner still emits the plain argmax at
    every step, and records the whole generation config it used."""
    prompt = PROMPTS[1]
    greedy = _naive(plain, prompt, 10)
    penalized_dir = tmp_path / "penalized"
    shutil.copytree(tiny_dirs["plain"], penalized_dir)
    config = json.loads((penalized_dir / "generation_config.json").read_text())
    config.update(repetition_penalty=5.0, no_repeat_ngram_size=1, bad_words_ids=[[greedy[0]]],
                  suppress_tokens=[greedy[1]])
    (penalized_dir / "generation_config.json").write_text(json.dumps(config))
    runner = _runner(penalized_dir)
    assert runner.model.generation_config.repetition_penalty == 5.0  # the model's own config says so
    ids = torch.tensor([runner.prompt_token_ids(prompt)])
    with torch.inference_mode():  # what generate() does with the model's own config: not greedy
        own = runner.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                    pad_token_id=runner.pad_token_id)[0, ids.shape[1]:].tolist()
    assert own != greedy
    # the argmax at every step, by hand (no generate at all)
    manual = list(runner.prompt_token_ids(prompt))
    with torch.inference_mode():
        for _ in range(10):
            manual.append(int(runner.model(torch.tensor([manual])).logits[0, -1].argmax()))
    expected = runner.tokenizer.decode(manual[-10:], skip_special_tokens=True).strip()
    assert runner.generate([prompt]) == [expected] == [plain.generate([prompt])[0]]
    recorded = runner.describe()["generation_config"]
    assert recorded["do_sample"] is False and recorded["num_beams"] == 1 and recorded["max_new_tokens"] == 10
    assert recorded.get("repetition_penalty", 1.0) == 1.0 and not recorded.get("no_repeat_ngram_size")
    assert not recorded.get("bad_words_ids") and not recorded.get("suppress_tokens")


def test_describe_is_json_metadata(plain, tiny_dirs):
    info = json.loads(json.dumps(plain.describe()))
    assert info["spec"] == f"hf:{tiny_dirs['plain']}"
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["chat_template"] is False and info["batch_size"] == 3 and info["max_new_tokens"] == 10
    assert info["num_parameters"] == sum(p.numel() for p in plain.model.parameters()) > 0
    assert info["load_seconds"] >= 0 and info["gguf_file"] is None


def test_explicit_dtype_and_bad_options(tiny_dirs):
    bf16 = _runner(tiny_dirs["plain"], dtype="bfloat16")
    assert bf16.model.dtype == torch.bfloat16 and bf16.describe()["dtype"] == "bfloat16"
    assert bf16.generate(["rain"])[0]
    for bad in ({"dtype": "float8"}, {"device": "tpu"}, {"batch_size": 0}, {"max_new_tokens": 0}):
        with pytest.raises(UsageError):
            _runner(tiny_dirs["plain"], **bad)


def test_peft_adapter_directory_loads_its_base_and_merges(tiny_dirs, plain, tmp_path):
    """``hf:ADAPTER_DIR`` (a saved LoRA adapter) loads the base model its config names (a path relative to the
    adapter directory here) and decodes exactly as the base model with the adapter merged."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    base_dir = tmp_path / "base"
    shutil.copytree(tiny_dirs["plain"], base_dir)
    torch.manual_seed(7)
    lora = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                               peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                               init_lora_weights=False))  # random B: the adapter changes outputs
    lora.peft_config["default"].base_model_name_or_path = "../../base"
    adapter_dir = tmp_path / "adapters" / "lora"
    lora.save_pretrained(adapter_dir)
    merged = lora.merge_and_unload().eval()

    runner = _runner(adapter_dir)
    info = runner.describe()
    assert info["adapter_path"] == str(adapter_dir.resolve()) and info["path"] == str(base_dir.resolve())
    assert runner.identity()["adapter"] and runner.identity() != _runner(base_dir).identity()
    outputs = runner.generate(PROMPTS)
    for prompt, output in zip(PROMPTS, outputs, strict=True):
        ids = torch.tensor([runner.prompt_token_ids(prompt)])
        with torch.inference_mode():
            expected = merged.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                       do_sample=False, eos_token_id=runner.stop_token_ids,
                                       pad_token_id=runner.pad_token_id)[0, ids.shape[1]:]
        assert output == runner.tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert outputs != plain.generate(PROMPTS)  # the adapter really is applied

    # An adapter whose base model is not here is refused in one line before anything loads.
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "./gone"}))
    with pytest.raises(ResourceMissingError, match="gone"):
        create_runner(f"hf:{orphan}", RunnerOptions(progress=False))


def test_runners_of_the_same_files_share_one_loaded_model(tiny_dirs, tmp_path):
    """A judge and a system on the same model with other generation settings load it once; other files, dtype
    or a model saved again load their own."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dirs["plain"], copy)
    short, long = _runner(copy, max_new_tokens=3), _runner(copy, max_new_tokens=12, batch_size=1)
    assert short.model is long.model and short.load_seconds >= 0
    assert all(len(o.split()) <= 3 for o in short.generate(PROMPTS)) and short.generate(PROMPTS) != long.generate(
        PROMPTS)
    assert _runner(copy, dtype="bfloat16").model is not short.model
    assert _runner(tiny_dirs["plain"]).model is not short.model
    config = copy / "config.json"
    config.write_text(config.read_text())  # saved again: a new modification time
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    assert _runner(copy).model is not short.model


def test_missing_models_give_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in (f"hf:{tmp_path}/no-such-model", "hf:evalkit-test-nobody/no-such-model-xyz", f"hf:{tmp_path}"):
        with pytest.raises(ResourceMissingError) as info:
            create_runner(spec, RunnerOptions(progress=False))
        message = str(info.value)
        assert "\n" not in message and len(message) < 600
        assert "local" in message or "config.json" in message
    with pytest.raises(UsageError):
        create_runner("hf:", RunnerOptions())


def test_model_resources_are_located():
    smol = models.resolve_model_alias("smollm2")
    assert smol is not None and smol["gguf_file"].endswith(".gguf")
    assert models.resolve_model_alias("no-such-alias") is None
    assert (models.minilm_model_dir() / "config.json").is_file()
    with pytest.raises(ResourceMissingError, match="pip install"):
        models.package_dir("evalkit_no_such_package_xyz", "pip install evalkit-no-such-package")


# ---------------------------------------------------------------------------------------------------
# Real SmolLM2-135M-Instruct (GGUF)

SUMMARY_PROMPTS = [
    "Summarize in one sentence: The city council voted on Tuesday to expand the bike lane network by 40 "
    "miles over the next five years, citing rising ridership and a string of accidents on busy avenues.",
    "Summarize in one sentence: Apple released a new phone.",
    "Summarize in one sentence: Scientists in Norway reported that a newly discovered deep-sea fish can "
    "survive pressures once thought impossible for vertebrates. The team collected specimens with a "
    "remotely operated vehicle and says the finding could change how ocean ecosystems are modeled.",
    "Summarize in one sentence: Heavy rain flooded streets in the capital overnight.",
    "Summarize in one sentence: The central bank kept interest rates unchanged on Thursday, saying "
    "inflation remains above its target but is easing faster than expected.",
    "Summarize in one sentence: A family bakery won a national award for its sourdough after competing "
    "against 300 entrants.",
]


@pytest.fixture(scope="module")
def smollm2():
    return create_runner("hf:smollm2", RunnerOptions(batch_size=4, max_new_tokens=32, progress=False))


@pytest.mark.slow
def test_smollm2_batched_summaries_match_one_at_a_time(smollm2):
    info = smollm2.describe()
    assert info["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and info["chat_template"] is True
    im_end = smollm2.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in smollm2.stop_token_ids  # the GGUF tokenizer's eos_token is <|im_start|>, not this

    rendered = smollm2.render_prompt(SUMMARY_PROMPTS[1])
    assert rendered.endswith("<|im_start|>assistant\n") and SUMMARY_PROMPTS[1] in rendered
    ids = smollm2.prompt_token_ids(SUMMARY_PROMPTS[1])
    assert ids[0] == smollm2.tokenizer.convert_tokens_to_ids("<|im_start|>") != ids[1]  # no doubled BOS

    batched = smollm2.generate(SUMMARY_PROMPTS)
    single = [smollm2.generate([p])[0] for p in SUMMARY_PROMPTS]
    assert batched == single
    for text in batched:
        assert text
        assert "<|im_start|>" not in text and "<|im_end|>" not in text
        assert not text.lower().startswith(("assistant", "user", "system"))


@pytest.mark.slow
def test_smollm2_stops_at_end_of_turn(smollm2):
    prompt = SUMMARY_PROMPTS[3]
    tokens = _naive(smollm2, prompt, 32)
    im_end = smollm2.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokens[-1] == im_end and len(tokens) < 32  # the assistant turn ended before the limit
    expected = smollm2.tokenizer.decode(tokens[:-1], skip_special_tokens=True).strip()
    assert smollm2.predict(prompt) == (expected, None)
