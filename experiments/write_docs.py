"""Write docs/'s generated tables from the JSON reports the experiments wrote, so that no
figure in them is typed by hand.

    python experiments/write_docs.py [--reports reports]

A generated block of README or a docs page sits between `<!-- generated from NAME.json -->`
(or `<!-- generated from NAME.json: PART -->`, a part of the report) and
`<!-- end of generated block -->`; this script copies reports/NAME.json to docs/reports/ and
rewrites the block from it with the experiment's own renderer; a figure the page shows
(`![...](NAME.png)`) is copied from reports/NAME.png beside it (tests/test_readme.py checks
that every block matches its committed JSON).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from common import fenced, main_guard

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FIGURE = re.compile(r"!\[[^\]]*\]\(([\w.-]+\.png)\)")  # a figure shown beside the page
BLOCK = re.compile(r"(<!-- generated from (\S+?)\.json(?:: (\S+))? -->\n)(.*?)"
                   r"(<!-- end of generated block -->)", re.S)


def renderers() -> dict:
    """{report name: function(report JSON, part or None) -> Markdown}."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import baselines
    import bench_all
    import bench_predict
    import bench_train
    import calibration
    import ceilings
    import globalopinionqa
    import gpo_context_check
    import gpo_recipes
    import heads
    import paper_comparison
    import question_selection
    import reference_head
    import sample_efficiency
    import score_runs
    return {"baselines": baselines.render_markdown,
            "bench_all": as_block(bench_all.render),
            "bench_predict": as_block(bench_predict.render),
            "bench_train": as_block(bench_train.render),
            "calibration": calibration.render_markdown,
            "ceilings": ceilings.render_markdown,
            "globalopinionqa": globalopinionqa.render_markdown,
            "gpo_context_check": gpo_context_check.render_markdown,
            "gpo_recipes": gpo_recipes.render_markdown,
            "heads": heads.render_markdown,
            "paper_comparison": paper_comparison.render_markdown,
            "question_selection": question_selection.render_markdown,
            "reference_head": reference_head.render_markdown,
            "sample_efficiency": sample_efficiency.render_markdown,
            "score_runs": score_runs.render_markdown}


def as_block(render) -> Callable[[dict, str | None], str]:
    """A renderer for a report printed as one text (the benchmarks'): its text as a code
    block, whatever the part."""
    return lambda report, part: fenced(render(report))


def generated(page_text: str, reports: Path) -> str:
    """The page with every generated block rendered again from reports/NAME.json."""
    import json
    render = renderers()

    def fill(match: re.Match) -> str:
        name, part = match.group(2), match.group(3)
        # NAME is an experiment's report (calibration) or another of its reports
        # (calibration_splits5-9): the experiment is the longest name it starts with
        experiments = [key for key in render if name == key or name.startswith(key + "_")]
        if not experiments:
            raise ValueError(f"a block is generated from {name}.json, which no experiment "
                             f"writes (known: {', '.join(sorted(render))}; a report is named "
                             "after its experiment)")
        path = reports / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"a block is generated from {name}.json, which is not in "
                                    f"{reports}: run its experiment first")
        renderer = render[max(experiments, key=len)]
        return f"{match.group(1)}{renderer(json.loads(path.read_text()), part)}\n{match.group(5)}"

    return BLOCK.sub(fill, page_text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", default="reports",
                        help="where the experiments wrote their JSON (default: reports)")
    args = parser.parse_args()
    (DOCS / "reports").mkdir(exist_ok=True)
    for page in PAGES:
        text = page.read_text()
        names = [m.group(2) for m in BLOCK.finditer(text)]
        # the reports and figures a rerun wrote; one not rerun keeps its committed copy
        copies = ([(f"{name}.json", DOCS / "reports") for name in set(names)]
                  + [(figure, page.parent) for figure in set(FIGURE.findall(text))])
        for file, folder in sorted(copies):
            if (Path(args.reports) / file).is_file():
                shutil.copyfile(Path(args.reports) / file, folder / file)
        if names:
            page.write_text(generated(text, DOCS / "reports"))
            print(f"{page.relative_to(ROOT)}: {len(names)} generated block(s) from {names}")


if __name__ == "__main__":
    main_guard(main)
