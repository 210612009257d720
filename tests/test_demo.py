"""The demo on the real OpinionQA subset, then `gpo eval` on its run: the same numbers, on the
same questions, without the data folder flag and without embedding anything again."""

from __future__ import annotations

import json

import numpy as np

from gpo.cli import main as cli_main
from gpo.demo import DEMO_QUESTIONS, run_demo


def test_eval_reprints_the_demos_numbers(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GPO_DATA_DIR", raising=False)
    evaluation = run_demo(data_dir=str(data_root / "opinionqa"), out=str(tmp_path / "demo"),
                          steps=2, embedder="lexical")
    demo_out = capsys.readouterr().out
    assert f"{DEMO_QUESTIONS} questions" in demo_out
    assert "predicts best" in demo_out and "Noise ceiling" in demo_out  # the closing lines
    assert "Questions to ask, best first" in demo_out and "Asking these 5 instead" in demo_out
    assert "inside their 80% intervals" in demo_out and "data.calibration_folds=4" in demo_out
    html = (tmp_path / "demo" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "group regression" in html
    assert "<caption>Questions to ask, best first" in html  # the suggestions as a table
    cache = tmp_path / "demo" / "embedding_cache"
    cached = sorted(p.stat().st_mtime for p in cache.rglob("*") if p.is_file())
    cli_main(["eval", "--run-dir", str(tmp_path / "demo" / "run"), "--k", "5", "10", "20"])
    eval_out = capsys.readouterr().out
    assert f"the run's {DEMO_QUESTIONS} questions" in eval_out
    report = json.loads((tmp_path / "demo" / "run" / "eval" / "report.json").read_text())
    assert (tmp_path / "demo" / "run" / "eval" / "report.html").stat().st_size > 20_000
    for method in evaluation.methods:
        for k in (5, 10, 20):
            again = report["splits"][0]["scores"][method][str(k)]["mean"]
            np.testing.assert_allclose(again, evaluation.per_split(method, k)[0], atol=1e-7)
    assert sorted(p.stat().st_mtime for p in cache.rglob("*") if p.is_file()) == cached
