"""In processes evalkit owns (the CLI, a metric's child process), nltk and transformers load without the optional
scikit-learn and scipy.stats integrations no metric uses; the scores do not change, those modules still import
afterwards, and a user of the API keeps every integration."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().split("\n")[-1])


SCORE_PAIRS = """
    from evalkit.scoring.base import build_metrics
    from evalkit.scoring.rouge import Rouge
    pairs = [("The cat sat on the mat.", "A cat was sitting on the mat."),
             ("Stocks fell sharply on Monday.", "Markets dropped steeply at the start of the week.")]
    outputs, references = [o for o, _ in pairs], [[r] for _, r in pairs]
    (meteor,) = build_metrics(["meteor"], {})
    scores = {"rouge": Rouge().score(outputs, references), "meteor": meteor.score(outputs, references)}
"""


def test_owned_processes_load_nltk_and_transformers_without_unused_integrations():
    lean = _python(f"""
        import json, sys
        from evalkit.leanimports import enable
        enable()
        {textwrap.indent(textwrap.dedent(SCORE_PAIRS), "        ").strip()}
        import transformers
        from transformers.utils import is_sklearn_available
        loaded = {{name: name in sys.modules for name in ("sklearn", "scipy.stats")}}
        import nltk, scipy.stats, sklearn  # still importable afterwards
        print(json.dumps({{"loaded": loaded, "sklearn_for_transformers": is_sklearn_available(),
                          "scores": repr(scores), "loader": type(nltk.__loader__).__name__,
                          "later": [scipy.stats.norm.cdf(0.0), bool(sklearn.__version__)]}}))
    """)
    assert lean["loaded"] == {"sklearn": False, "scipy.stats": False}
    assert lean["sklearn_for_transformers"] is False and lean["later"] == [0.5, True]
    assert lean["loader"] == "SourceFileLoader"  # the module keeps its own loader
    plain = _python(f"""
        import json, sys
        {textwrap.indent(textwrap.dedent(SCORE_PAIRS), "        ").strip()}
        import evalkit.api  # what a notebook imports: nothing is hidden
        from evalkit.leanimports import _Finder
        print(json.dumps({{"loaded": {{name: name in sys.modules for name in ("sklearn", "scipy.stats")}},
                          "scores": repr(scores), "finder": any(isinstance(f, _Finder) for f in sys.meta_path)}}))
    """)
    assert plain["loaded"] == {"sklearn": True, "scipy.stats": True} and not plain["finder"]
    assert lean["scores"] == plain["scores"]


def test_absent_blocks_only_inside_and_leaves_imported_modules_alone():
    import json as already  # imported: left alone

    from evalkit.leanimports import absent

    with absent(["json", "evalkit_no_such_module_xyz", "tabnanny"]):
        assert sys.modules["json"] is already and sys.modules["tabnanny"] is None
        try:
            import tabnanny  # noqa: F401
        except ImportError:
            pass
        else:
            raise AssertionError("tabnanny imported inside the block")
    assert "tabnanny" not in sys.modules or sys.modules["tabnanny"] is not None
    import tabnanny  # noqa: F401,F811  # importable again
