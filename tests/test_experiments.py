"""Every script in experiments/ runs end to end on a tiny budget and prints its table and
writes its JSON, so a refactor cannot silently break a README command. Real data (from
$GPO_DATA_DIR), the lexical embedder, a step or two of training, one split."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import needs_smollm2, needs_torch

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
TINY = ["--embedder", "lexical", "--steps", "1", "--seeds", "0"]


@pytest.fixture(scope="session")
def shared(tmp_path_factory, data_root):
    """One run folder and embedding cache for the scripts that share heads.py's runs (one a
    test worker: tests that read another's runs share an xdist group). A session's, not the
    module's: a worker may run other modules' tests between two of a group's, and a module
    fixture would be made anew, its runs gone."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    tmp = tmp_path_factory.mktemp("experiments")
    return {"data": str(data_root), "runs": str(tmp / "runs"), "cache": str(tmp / "cache"),
            "tmp": tmp}


def run_script(name: str, args: list[str], capsys) -> str:
    argv = sys.argv
    sys.argv = [str(EXPERIMENTS / name), *args]
    try:
        runpy.run_path(str(EXPERIMENTS / name), run_name="__main__")
    finally:
        sys.argv = argv
    return capsys.readouterr().out


def table_row(out: str, method: str) -> list[str]:
    """The cells of a printed table's row for `method` (last such row)."""
    rows = [line for line in out.splitlines() if line.startswith(method + "  ")]
    assert rows, f"no row {method!r} in:\n{out}"
    return rows[-1][len(method):].split()


def common(shared, name: str) -> list[str]:
    return ["--cache-dir", shared["cache"], "--runs", shared["runs"],
            "--out", str(shared["tmp"] / f"{name}.json")]


def report(shared, name: str) -> dict:
    return json.loads((shared["tmp"] / f"{name}.json").read_text())


def test_heads(shared, capsys):
    # a table of another setting is kept in the report, one of no known setting is dropped
    (shared["tmp"] / "heads.json").write_text(json.dumps({"tables": {
        "opinionqa_A/minilm": {"kept": True}, "retired_setting/lexical": {}}}))
    out = run_script("heads.py", ["--data-dir", shared["data"], "--settings", "persona",
                                  "--heads", "REFERENCE", "GPO", "PAL", "--pal-k", "2",
                                  "--embedders", "lexical", "--steps", "1", "--seeds", "0",
                                  *common(shared, "heads")], capsys)
    for method in ("GPO", "PAL best (K=2)", "PAL K=2", "group regression"):
        assert len(table_row(out, method)) == 6    # k = 1 ... 50, one split: no std
    assert "PAL: best K by validation groups' score: K=2" in out and "weights [" in out
    table = report(shared, "heads")["tables"]["persona/lexical"]
    assert table["best_pal"] == "PAL K=2" and set(table["rows"]["GPO"]) == {
        f"k={k}" for k in (1, 2, 5, 10, 20, 50)}
    # one evaluation holds every head and each baseline once
    assert set(table["evaluation"]["splits"][0]["scores"]) >= {"GPO", "PAL K=2",
                                                               "group regression"}
    tables = report(shared, "heads")["tables"]
    assert tables["opinionqa_A/minilm"] == {"kept": True}
    assert "retired_setting/lexical" not in tables
    import heads  # the docs' generated block, from the JSON alone, as main printed it
    assert heads.render_heads_table(table) in out
    # each other learned head against the reference head, paired over the same groups
    for head in ("GPO", "PAL best (K=2)"):
        assert f"{head} - REFERENCE, paired over" in out
    # embedders side by side: each head both tables hold, and its paired difference
    with pytest.raises(ValueError, match="persona for .'lexical'. only"):
        heads.render_markdown(report(shared, "heads"), "persona/embedders")
    tables["persona/copy"] = table
    side_by_side = heads.render_markdown({"tables": tables, "seeds": [0]}, "persona/embedders")
    assert table_row(side_by_side, "GPO, lexical") == table_row(side_by_side, "GPO, copy")
    assert "PAL K=2, copy - lexical, paired over" in side_by_side
    assert "k=1: +0.0000 [+0.0000, +0.0000]" in side_by_side


def sample_efficiency(shared, capsys) -> str:
    """Runs sample_efficiency.py, which trains the GPO runs that other scripts reuse."""
    return run_script("sample_efficiency.py", ["--data-dir", shared["data"], "--heads", "GPO",
                                               "--plot", str(shared["tmp"] / "se.png"),
                                               *TINY, *common(shared, "se")], capsys)


@pytest.mark.xdist_group("gpo_runs")  # shares run folders
def test_sample_efficiency(shared, capsys):
    out = sample_efficiency(shared, capsys)
    assert len(table_row(out, "GPO")) == 7  # k = 1 ... 100, one split: no std
    assert (shared["tmp"] / "se.png").stat().st_size > 10_000
    assert set(report(shared, "se")["rows"]["group regression"]) == {
        f"k={k}" for k in (1, 2, 5, 10, 20, 50, 100)}
    from common import render_table  # the docs' generated block, from the JSON alone
    assert render_table(report(shared, "se")) in out


def test_calibration_checks_the_intervals(shared, capsys):
    out = run_script("calibration.py", ["--data-dir", shared["data"], "--heads", "REFERENCE",
                                        "--k", "5", "--draws", "2",
                                        "--plot", str(shared["tmp"] / "cal.png"),
                                        *TINY, *common(shared, "cal")], capsys)
    options = out.split("\n\n")[0]  # the options' table (the question means' follows)
    *coverages, width, gaussian_coverage, gaussian_width = map(
        float, table_row(options, "REFERENCE k=5"))
    assert 0 <= coverages[0] <= coverages[1] <= coverages[2] <= coverages[3] <= 1
    assert 0 < width <= 1 and 0 <= gaussian_coverage <= 1 and 0 < gaussian_width <= 1
    saved = report(shared, "cal")
    assert saved["options"]["REFERENCE k=5"]["95%"] == [pytest.approx(coverages[3], abs=1e-4)]
    assert len(saved["question_means"]["REFERENCE k=5"]["80%"]) == 1
    assert (shared["tmp"] / "cal.png").stat().st_size > 10_000
    from calibration import render
    assert render(saved, "options") in out and render(saved, "question_means") in out


@pytest.mark.xdist_group("gpo_runs")  # shares run folders
def test_score_runs(shared, capsys):
    runs = Path(shared["runs"]) / "opinionqa_A_lexical_GPO"
    if not runs.is_dir():  # the group ran on another worker (xdist_group is a hint only)
        sample_efficiency(shared, capsys)
    out = run_script("score_runs.py", ["--runs", str(runs), "--ks", "5", "20",
                                       "--out", str(shared["tmp"] / "score.json")], capsys)
    assert "checkpoint at step 1" in out and len(table_row(out, "GPO")) == 2
    saved = json.loads((shared["tmp"] / "score.json").read_text())
    assert len(saved["runs"]) == 1
    from common import render_table  # the docs' generated block, from the JSON alone
    assert render_table(saved["table"]) in out


def test_gpo_recipes(shared, capsys):
    out = run_script("gpo_recipes.py", ["--data-dir", shared["data"], "--variants", "base",
                                        "--ks", "5", *TINY, *common(shared, "recipes")],
                     capsys)
    assert len(table_row(out, "GPO base (1 steps)")) == 2  # validation, k=5
    assert "opinionqa_A_lexical_base" in report(shared, "recipes")["protocols"]["A"]
    from gpo_recipes import render
    assert render(report(shared, "recipes"), "A") in out


def test_gpo_context_check(shared, capsys):
    out = run_script("gpo_context_check.py", ["--steps", "1", "--seeds", "0", "--variants",
                                              "kl, lr 1e-3", "--runs", shared["runs"] + "/cc",
                                              "--out", str(shared["tmp"] / "cc.json")], capsys)
    assert len(table_row(out, "GPO kl, lr 1e-3")) == 2 and table_row(out, "group mixture")
    from gpo_context_check import render  # the docs' generated block, from the JSON alone
    assert render(report(shared, "cc")) in out


def test_globalopinionqa(shared, capsys):
    out = run_script("globalopinionqa.py", ["--data-dir", shared["data"], *TINY,
                                            *common(shared, "goqa")], capsys)
    for method in ("GPO", "GPO trained on OpinionQA", "population prior"):
        assert len(table_row(out, method)) == 3
    assert "GPO trained on OpinionQA" in report(shared, "goqa")["rows"]
    from common import render_table
    assert render_table(report(shared, "goqa")) in out


def test_baselines_and_ceilings(shared, capsys):
    out = run_script("baselines.py", ["--data-dir", shared["data"] + "/opinionqa", "--seeds",
                                      "0", "--out", str(shared["tmp"] / "base.json")], capsys)
    assert float(table_row(out, "group regression")[0]) > float(table_row(out, "uniform")[0])
    from baselines import render_markdown  # docs' tables are what the script printed
    rendered = render_markdown(json.loads((shared["tmp"] / "base.json").read_text()))
    assert rendered.strip("`\n") in out
    out = run_script("ceilings.py", ["--data-dir", shared["data"], "--seeds", "0",
                                     "--out", str(shared["tmp"] / "ceil.json")], capsys)
    assert len(table_row(out, "group regression (affine)")) == 4
    import ceilings
    assert ceilings.render(json.loads((shared["tmp"] / "ceil.json").read_text())) in out


@pytest.mark.slow  # a measuring harness: run by .ci/run, not the default suite
def test_matmul_dtype(shared, capsys):
    out = run_script("matmul_dtype.py", ["--data-dir", shared["data"], "--embedder", "lexical",
                                         "--steps", "1", "--seeds", "0",
                                         *common(shared, "matmul_dtype")], capsys)
    for method in ("GPO float32", "GPO bfloat16", "group regression"):
        assert len(table_row(out, method)) == 3  # k = 5, 10, 20
    assert "GPO bfloat16 - GPO float32, paired over" in out
    paired = report(shared, "matmul_dtype")["paired_bf16_minus_f32"]
    assert set(paired) == {"5", "10", "20"} and all(len(v) == 3 for v in paired.values())


@pytest.mark.slow  # a measuring harness: run by .ci/run, not the default suite
@needs_smollm2
@needs_torch
def test_benchmarks(shared, capsys, monkeypatch):
    import bench_train
    measure, measured = bench_train.throughput, {}
    # One real training measure: 8 simulated devices run the same program in a process with
    # XLA_FLAGS set (test_train covers that path), which costs the suite a second compile.
    monkeypatch.setattr(bench_train, "throughput", lambda devices, *a: measured.setdefault(
        "one device", measure(1, *a)))
    bf16 = measure(1, 1, 4, "packed", 1, "cpu", "bfloat16")  # GPO's bf16 matmuls compile
    assert bf16["steps_per_s"] > 0 and bf16["matmul_dtype"] == "bfloat16"
    out = run_script("bench_all.py", ["--data-dir", shared["data"] + "/opinionqa",
                                      "--questions", "2", "--train-steps", "1",
                                      "--batch-size", "8", "--repeats", "2",
                                      "--out", str(shared["tmp"] / "bench.json")], capsys)
    assert "embed: ours, prefix sharing / torch" in out and "adapt + predict" in out
    bench = json.loads((shared["tmp"] / "bench.json").read_text())
    assert bench["train_steps_per_s"]["8"] > 0 and bench["latency_ms"]["median_ms"] > 0
    assert bench["embed"]["max_ours_vs_torch"] < 1e-3
    assert "predict: 100,000 / 10,000 target options" in out
    small, large = bench["predict_scaling"]
    assert (small["options"], large["options"]) == (10_000, 100_000)
    # under 1 GB (linear, chunked; ~0.5 GB measured): the child's own peak, where getrusage
    # would report this test process's, with the LLM and torch loaded
    assert large["peak_mb"] < 1024
    predict_json = shared["tmp"] / "bench_predict.json"
    out = run_script("bench_predict.py", ["--options", "400", "800", "--out",
                                          str(predict_json)], capsys)
    import bench_predict
    assert bench_predict.render(json.loads(predict_json.read_text())) in out
    assert [r["options"] for r in json.loads(predict_json.read_text())["predict"]] == [400, 800]
    out = run_script("bench_metrics.py", [], capsys)
    assert "alignment (W1)" in out
    # bench_embed's and bench_train's own mains format what bench_all just measured.
    import bench_embed
    monkeypatch.setattr(bench_embed, "measure", lambda *a, **k: bench["embed"])
    packed = {"layout": {"rows": 25, "context_length": 376, "target_length": 376},
              "capacity": "500 + 500", "unpacked_fraction": 0.0}
    monkeypatch.setattr(bench_train, "throughput", lambda devices, steps, batch, path="device",
                        *a: {"steps_per_s": bench["train_steps_per_s"][str(devices)],
                             "platform": "cpu", "compile_s": 1.0, "host_ms_per_step": 0.1,
                             "shapes": 1, "gpu_utilisation": None, "path": path,
                             **(packed if path == "packed" else {})})
    monkeypatch.setattr(bench_train, "has_torch", lambda: False)
    monkeypatch.setattr(bench_train, "latency", lambda *a: bench["latency_ms"])
    train_json = shared["tmp"] / "bench_train.json"
    for name, args in (("bench_embed.py", ["--data-dir", "unused"]),
                       ("bench_train.py", ["--out", str(train_json)])):
        monkeypatch.setattr(sys, "argv", [name, *args])
        (bench_embed if name == "bench_embed.py" else bench_train).main()
    out = capsys.readouterr().out
    assert "transformers + torch" in out and "8 simulated devices" in out
    assert "ratio device sampler (packed) / host sampler" in out
    assert "25 rows of 376 context + 376 target points" in out
    assert "PyTorch reference skipped" in out
    # docs/performance.md's blocks are rendered from the reports as main printed them
    import write_docs
    assert bench_train.render(json.loads(train_json.read_text())) in out
    assert write_docs.renderers()["bench_all"](bench, None).startswith("```\nbenchmark  ")


@pytest.mark.slow  # a measuring harness: run by .ci/run, not the default suite
def test_gpu_script(shared, tmp_path):
    """The GPU harness drives gpo_recipes.py on a precomputed embeddings file."""
    embeddings = tmp_path / "lexical.npz"
    subprocess.run([sys.executable, "-m", "gpo.cli", "embed", "--dataset", "opinionqa",
                    "--data-dir", shared["data"] + "/opinionqa", "--model", "lexical",
                    "--out", str(embeddings)], check=True, cwd=ROOT)
    env = dict(os.environ, DATA_DIR=shared["data"], EMBEDDINGS=str(embeddings),
               EMBEDDER="lexical", STEPS="1", SEEDS="0", RECIPES="A_nll_lr3e-4",
               RUNS=str(tmp_path / "runs"), LOGS=str(tmp_path / "logs"))
    done = subprocess.run(["bash", str(EXPERIMENTS / "gpu_opinionqa.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert "A_nll_lr3e-4: exit 0" in done.stdout, (done.stdout, done.stderr)
    log = (tmp_path / "logs" / "gpu_A_nll_lr3e-4.log").read_text()
    assert "GPO paper (1 steps)" in log


@pytest.mark.xdist_group("reference_runs")  # shares run folders
def test_reference_head(shared, capsys):
    out = run_script("reference_head.py", ["--data-dir", shared["data"], "--settings",
                                           "opinionqa_A", "planted", "--variants", "base", "kl",
                                           *TINY, *common(shared, "reference")], capsys)
    opinionqa, planted = out.split("\nplanted:", 1)
    for method in ("REFERENCE", "group regression", "noise ceiling"):
        assert len(table_row(opinionqa, method)) == 7  # k = 1 ... 100, one split
    assert "REFERENCE - group regression, paired over 22 test groups" in opinionqa
    assert len(table_row(planted, "REFERENCE")) == 1
    settings = report(shared, "reference")["settings"]
    assert settings["opinionqa_A"]["chosen"] in ("base", "kl")
    assert set(settings["opinionqa_A"]["rows"]) >= {"REFERENCE", "group regression",
                                                     "noise ceiling"}
    from reference_head import render_markdown, render_setting
    assert render_setting(settings["opinionqa_A"]) in opinionqa  # the JSON renders the print
    assert "REFERENCE − group regression, paired over 22" in render_markdown(
        report(shared, "reference"), "headline")
    paired = settings["opinionqa_A"]["paired_vs_group_regression"]
    assert set(paired) == {"REFERENCE", "REFERENCE without counts"}
    for method in paired.values():
        low, high = method["20"][1:]
        assert low <= high


def test_noise_ceiling(shared, capsys):
    out = run_script("noise_ceiling.py", ["--data-dir", shared["data"], "--seeds", "0",
                                          "--resamples", "1",
                                          "--out", str(shared["tmp"] / "noise.json")], capsys)
    overall = float(table_row(out, "all 36 groups, 624 questions")[0])
    assert 0.97 < overall < 0.995 and "lowest groups: RACE=Other" in out


@pytest.mark.xdist_group("reference_runs")  # shares run folders
def test_question_selection(shared, capsys):
    out = run_script("question_selection.py", ["--data-dir", shared["data"], "--settings",
                                               "opinionqa_A", "--ks", "1", "2", "--draws", "1",
                                               "--plot", str(shared["tmp"] / "qs.png"),
                                               *TINY, *common(shared, "qs")], capsys)
    for method in ("REFERENCE, random (1 draws)", "group regression, random (1 draws)",
                   "noise ceiling"):
        assert len(table_row(out, method)) == 2  # k = 1, 2; one split: no std
    assert "validation groups (reference head" in out
    assert "REFERENCE chosen (" in out and "random at 2k, paired over 22 test groups" in out
    setting = report(shared, "qs")["settings"]["opinionqa_A"]
    assert setting["default"] in ("design", "posterior", "metric")
    from question_selection import render_setting
    assert render_setting(setting) in out  # the JSON renders the print
    assert (shared["tmp"] / "qs.png").stat().st_size > 10_000


@needs_smollm2
def test_paper_comparison(shared, capsys):
    """GPO's protocol, two heads, the few-shot prompt (the one with a group prefix) on three
    scored questions: the table, the paired interval and the report."""
    out = run_script("paper_comparison.py", [
        "--data-dir", shared["data"], "--protocols", "gpo", "--heads", "gpo", "pal",
        "--llm-styles", "few-shot", "--llm-questions", "3", "--k", "2", *TINY,
        *common(shared, "paper")], capsys)
    assert "GPO's protocol: 17 groups (11 held out), 179 questions (3 fixed random scored)" in out
    for method in ("uniform", "LLM few-shot", "LLM few-shot, both orders", "GPO", "PAL K=4",
                   "population prior", "group regression", "noise ceiling"):
        assert len(table_row(out, method)) == 1, method
    assert "paired over 11 held-out groups x splits" in out and "  GPO - LLM few-shot" in out
    gpo = report(shared, "paper")["gpo"]
    first = gpo["paired"][0]
    assert len(gpo["scored_questions"]) == 3 and first["a"] == "GPO"
    assert first["low"] <= first["difference"] <= first["high"]
    assert gpo["vs_prior"]["population prior"] == 0
    # The docs' generated block renders from this JSON alone.
    from paper_comparison import render
    assert render(gpo) in out


def test_fault_catalogue(shared, capsys):
    """Every case answers as a user should be answered (the script exits 1 otherwise)."""
    out = run_script("fault_catalogue.py", ["--out", str(shared["tmp"] / "faults.json")],
                     capsys)
    assert " 0 unexpected" in out
    cases = report(shared, "faults")["cases"]
    assert len(cases) >= 50 and {outcome for outcome, _ in cases.values()} == {
        "one line", "raises", "ok"}
