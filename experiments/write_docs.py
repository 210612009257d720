"""Write docs/'s generated tables from the JSON reports the experiments wrote, so that no
figure in them is typed by hand.

    python experiments/write_docs.py [--reports reports]

A generated block of a docs page sits between `<!-- generated from NAME.json -->` and
`<!-- end of generated block -->`; this script copies reports/NAME.json to docs/reports/ and
rewrites the block from it with the experiment's own renderer (tests/test_readme.py checks
that every block matches its committed JSON).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"(<!-- generated from (\S+)\.json -->\n)(.*?)(<!-- end of generated block -->)",
                   re.S)


def renderers() -> dict:
    """{report name: function(report JSON) -> Markdown}."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import paper_comparison
    return {"paper_comparison": paper_comparison.render_markdown}


def generated(page_text: str, reports: Path) -> str:
    """The page with every generated block rendered again from reports/NAME.json."""
    import json
    render = renderers()

    def fill(match: re.Match) -> str:
        name = match.group(2)
        report = json.loads((reports / f"{name}.json").read_text())
        return f"{match.group(1)}{render[name](report)}\n{match.group(4)}"

    return BLOCK.sub(fill, page_text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", default="reports",
                        help="where the experiments wrote their JSON (default: reports)")
    args = parser.parse_args()
    (DOCS / "reports").mkdir(exist_ok=True)
    for page in sorted(DOCS.glob("*.md")):
        names = [m.group(2) for m in BLOCK.finditer(page.read_text())]
        for name in names:
            shutil.copyfile(Path(args.reports) / f"{name}.json", DOCS / "reports" / f"{name}.json")
        if names:
            page.write_text(generated(page.read_text(), DOCS / "reports"))
            print(f"{page.relative_to(ROOT)}: {len(names)} generated block(s) from {names}")


if __name__ == "__main__":
    main()
