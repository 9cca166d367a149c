"""A user who evaluates AWS models or gates finished runs needs no torch.

``pip install 'evalkit[aws]'`` resolves without torch or transformers (pip's own resolver, dry run against the
registry), and evalkit runs with torch, transformers and bert-score made unimportable: a Bedrock run scored
with ROUGE and METEOR, the gate on it; what does need them says which extra to install, in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws_server import AWSServer, aws_environment
from tests.helpers import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "bert-score", "bert_score", "accelerate", "sentence-transformers")
# As if these were not installed: an import finder that refuses them (importing one raises ImportError, and
# importlib.util.find_spec says it is not there).
WITHOUT_TORCH = """
import sys
BLOCKED = {"torch", "transformers", "bert_score", "sentence_transformers", "accelerate"}
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NotInstalled())
from evalkit.cli import main
code = main(sys.argv[1:])
assert not BLOCKED & set(sys.modules)
sys.exit(code)
"""


def test_the_aws_extra_resolves_without_torch(tmp_path):
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), "-c", str(ROOT / "constraints.txt"), f"{ROOT}[aws]"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"evalkit", "boto3", "scipy", "statsmodels", "rouge-score", "nltk"} <= {n.replace("_", "-") for n in names}
    assert not names & set(HEAVY), names & set(HEAVY)


def _without_torch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_evalkit_runs_and_gates_without_torch(tmp_path, news_records):
    data = write_jsonl(tmp_path / "d.jsonl", news_records[:6])
    out = tmp_path / "run"
    with AWSServer() as server:
        env = {**os.environ, **aws_environment(server.url), "HF_HUB_OFFLINE": "1"}
        run = _without_torch(env, "run", "summarization", "--model", "bedrock:anthropic.claude-3-haiku-20240307-v1:0",
                             "--dataset", data, "--output-dir", out, "--metrics", "rouge,meteor", "--no-progress")
        assert run.returncode == 0, run.stderr
        assert "rouge2" in run.stdout and "bertscore" not in run.stdout
        gate = _without_torch(env, "gate", "--candidate", out, "--baseline", out, "--max-regression", "rouge2=0.01",
                              "--threshold", "meteor>=0.0")
        assert gate.returncode == 0, gate.stderr
        needs = [(["run", "summarization", "--model", "bedrock:anthropic.claude-3-haiku-20240307-v1:0",
                   "--dataset", data, "--output-dir", tmp_path / "o2"],
                  "BERTScore needs torch, transformers, bert_score: pip install 'evalkit[hf]' (or choose --metrics "
                  "rouge,meteor)"),
                 (["run", "summarization", "--model", "hf:smollm2", "--dataset", data, "--metrics", "rouge"],
                  "the hf: runner (local models) needs torch, transformers: pip install 'evalkit[hf]'"),
                 (["acr", "run", "--model", "hf:smollm2", "--targets", ROOT / "datasets" / "famous_quotes.json",
                   "--output-dir", tmp_path / "acr"], "ACR needs torch, transformers: pip install 'evalkit[hf]'")]
        for args, message in needs:
            proc = _without_torch(env, *args)
            assert proc.returncode == 2 and message in proc.stderr, proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("extra", ["hf", "aws", "fmeval", "ray", "dev"])
def test_every_extra_is_declared(extra):
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert extra in project["optional-dependencies"]
    core = " ".join(project["dependencies"]).lower()
    assert not any(name in core for name in ("torch", "transformers", "bert-score", "boto3", "ray"))
