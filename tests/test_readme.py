"""README is a manual whose every example runs: the set-up commands are the ones CI runs, the
Python and `gpo` examples run against a demo run, the example config loads, the headline
table is the one docs/results.md holds, and every link resolves."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def fenced(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    out, language, body = [], None, []
    for line in text.split("\n"):
        if line.startswith("```"):
            if language is None:
                language, body = line[3:].strip(), []
            else:
                out.append((language, "\n".join(body)))
                language = None
        elif language is not None:
            body.append(line)
    return out


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in fenced(path.read_text()) if lang == language]


def readme_commands() -> list[str]:
    return blocks(README, "bash")


def test_ci_runs_readme_test_command():
    commands = readme_commands()
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_is_a_manual_not_a_results_dump():
    assert len(README.read_bytes()) <= 12_000


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#([^)]+))?\)", page.read_text()):
        path, anchor = target
        if path.startswith("http"):
            continue
        linked = (page.parent / path).resolve()
        assert linked.exists(), f"{page.name} links to missing {path}"
        if anchor and linked.suffix == ".md":
            headings = [re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                        for h in re.findall(r"^#+ (.+)$", linked.read_text(), re.M)]
            assert anchor in headings, f"{page.name}: no heading #{anchor} in {path}"


def test_example_config_loads():
    from gpo.config import RunConfig
    (example,) = blocks(README, "json")
    config = RunConfig.from_dict(json.loads(example))
    assert (config.head, config.data.dataset, config.train.steps) == ("reference", "opinionqa",
                                                                      300)


@pytest.fixture(scope="module")
def demo_run(data_root, tmp_path_factory):
    """A demo run as README's examples expect it (lexical embedder, a few steps)."""
    from gpo.demo import run_demo
    out = tmp_path_factory.mktemp("readme") / "demo"
    with contextlib.redirect_stdout(io.StringIO()):
        run_demo(data_dir=str(data_root / "opinionqa"), out=str(out), steps=5,
                 embedder="lexical")
    return out / "run"


def test_python_examples_run(demo_run, capsys):
    for code in blocks(README, "python"):
        exec(compile(code.replace("runs/demo/run", str(demo_run)), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Questions to ask, best first" in out and "90% interval" in out


def test_gpo_examples_run(demo_run, tmp_path, monkeypatch, capsys):
    """The `gpo predict` example, with the context and questions files README shows."""
    from gpo.cli import main
    (files,) = [b for b in blocks(README, "") if b.startswith("ctx.json:")]
    context, questions = files[len("ctx.json:"):].split("qs.json:")
    monkeypatch.chdir(tmp_path)
    Path("ctx.json").write_text(context)
    Path("qs.json").write_text(questions)
    commands = [c for c in readme_commands() if c.startswith("gpo ")]
    assert commands
    for command in commands:
        main(shlex.split(command.replace("runs/demo/run", str(demo_run)))[1:])
    out = capsys.readouterr().out
    assert "Is tea good?" in out and "%" in out


def write_docs():
    """experiments/write_docs.py as a module."""
    import sys
    sys.path.insert(0, str(ROOT / "experiments"))
    import write_docs
    return write_docs


def test_generated_docs_match_their_reports():
    """docs/ blocks generated from a committed JSON report (experiments/write_docs.py) are
    what the report renders to: a figure there is never edited by hand."""
    docs = write_docs()
    found = 0
    for page in docs.PAGES:
        text = page.read_text()
        found += len(docs.BLOCK.findall(text))
        assert docs.generated(text, ROOT / "docs" / "reports") == text, (
            f"{page.name}: a generated block differs from its report; run "
            "python experiments/write_docs.py")
    assert found


def test_a_block_from_an_unknown_report_is_named():
    generated = write_docs().generated
    page = "<!-- generated from nosuch.json -->\n```\n```\n<!-- end of generated block -->\n"
    with pytest.raises(ValueError, match="nosuch.json, which no experiment writes"):
        generated(page, ROOT / "docs" / "reports")
    page = page.replace("nosuch", "ceilings_missing")
    with pytest.raises(FileNotFoundError, match="ceilings_missing.json, which is not in"):
        generated(page, ROOT / "docs" / "reports")


# docs/results.md sections whose tables no committed report holds yet, with why: the known
# gaps, each closed by rerunning its experiment and generating the block; never a new table.
NOT_YET_GENERATED = {
    "GPO training recipes at the CPU budget": "gpo_recipes.py (~2.5 CPU hours)",
    "GPO at the paper's scale on one GPU (H200)":
        "score_runs.py on runs trained on a GPU (experiments/gpu_opinionqa.sh)",
    "Training on one H100":
        "bench_train.py --platform gpu --out reports/bench_train_gpu.json on a GPU",
}
# a figure of a results table (mean ± std) or a benchmark's measurement
FIGURE = re.compile(r"\d\.\d{3,4} ± \d\.\d{3,4}|\b(?:steps|texts)/s\b|\bpeak MB\b")


def hand_copied_sections(text: str) -> set[str]:
    """Sections of a page holding a code block with figures (mean ± std, or a benchmark's
    measurements) outside any generated block."""
    found, section, inside = set(), None, False
    for line in write_docs().BLOCK.sub("", text).split("\n"):
        if line.startswith("```"):
            inside = not inside
        elif line.startswith("#") and not inside:
            section = line.lstrip("# ")
        elif inside and FIGURE.search(line):
            found.add(section)
    return found


def test_results_tables_are_generated():
    """Every table of figures in README and docs/ is generated from a report, but for the
    listed gaps; a gap closed leaves the list."""
    sections = set()
    for page in [README, *DOCS]:
        sections |= hand_copied_sections(page.read_text())
    gaps = set(NOT_YET_GENERATED)
    assert sections <= gaps, (f"tables typed into the docs instead of generated: "
                              f"{sorted(sections - gaps)}; wrap them in a generated block "
                              "(experiments/write_docs.py)")
    assert gaps <= sections, f"generated now, drop from the gaps: {sorted(gaps - sections)}"
