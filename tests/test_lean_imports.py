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


BERTSCORE_PAIRS = """
    from evalkit.scoring.bertscore import BertScore
    outputs = ["The cat sat on the mat.", "Stocks fell sharply on Monday."]
    references = [["A cat was sitting on the mat."], ["Markets dropped steeply at the start of the week."]]
    scores = {"plain": BertScore().score(outputs, references),
              "rescaled": BertScore(rescale_with_baseline=True, baseline_path=BASELINE).score(outputs, references)}
"""


def test_a_scoring_process_loads_bertscore_without_what_it_never_uses(tmp_path):
    baseline = tmp_path / "baseline.tsv"  # bert-score's format: one row per layer, P R F columns
    baseline.write_text("LAYER,P,R,F\n" + "".join(f"{i},0.{i}1,0.{i}2,0.{i}3\n" for i in range(7)))
    unused = ("pandas", "matplotlib.pyplot", "matplotlib.axes", "mpl_toolkits.axes_grid1", "accelerate", "sympy",
              "torch.distributed.tensor")

    def scores_in(setup: str) -> dict:
        return _python(f"""
            import json, sys
            BASELINE = {str(baseline)!r}
            {setup}
            {textwrap.indent(textwrap.dedent(BERTSCORE_PAIRS), "            ").strip()}
            loaded = [name for name in {unused!r} if name in sys.modules]
            import bert_score.scorer, pandas, torch.distributed
            from transformers.utils import is_accelerate_available
            print(json.dumps({{"scores": scores, "loaded": loaded, "accelerate": is_accelerate_available(),
                              "pandas_is_real": bert_score.scorer.pd.DataFrame is pandas.DataFrame,
                              "distributed": torch.distributed.is_available()}}))
        """)

    lean = scores_in("from evalkit.leanimports import enable; enable(scoring_process=True)")
    cli = scores_in("from evalkit.leanimports import enable; enable()")
    plain = scores_in("")
    # the rescaled scores read the baseline through bert-score's pandas: imported on that first use
    assert lean["loaded"] == ["pandas"]
    assert "accelerate" in cli["loaded"] and "matplotlib.pyplot" not in cli["loaded"]
    assert "matplotlib.pyplot" in plain["loaded"] and "sympy" in plain["loaded"]
    assert lean["accelerate"] is False and cli["accelerate"] is plain["accelerate"] is True
    assert lean["pandas_is_real"] and lean["distributed"] is plain["distributed"]
    assert lean["scores"] == plain["scores"] == cli["scores"]
    assert lean["scores"]["rescaled"] != lean["scores"]["plain"]


def test_deferred_modules_import_on_first_use_and_leave_sys_modules():
    done = _python("""
        import json, sys
        from evalkit.leanimports import deferred
        with deferred(["wave", "evalkit_no_such_module_xyz"]):
            import wave
            from wave import Error
            inside = {"standin": type(wave).__name__, "no_such": "evalkit_no_such_module_xyz" in sys.modules,
                      "found": __import__("importlib.util").util.find_spec("wave").name}
        after = {"in_sys_modules": "wave" in sys.modules}
        error_class = wave.Error  # first use: the real module
        import wave as real
        print(json.dumps({"inside": inside, "after": after, "same": error_class is real.Error,
                          "forwarded": Error("x").args == ("x",), "real_type": type(real).__name__}))
    """)
    assert done["inside"] == {"standin": "_Deferred", "no_such": False, "found": "wave"}
    assert done["after"] == {"in_sys_modules": False}
    assert done["same"] and done["forwarded"] and done["real_type"] == "module"
