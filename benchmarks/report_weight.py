"""Page weight of the report: the whole file, its figures (inline SVG and gzip-packed), the rest,
and gzip of the whole, against issue 18's target (2 MB for the default audit's report).

    python benchmarks/report_weight.py [results/report/index.html] [--limit 2000000]

Writes benchmarks/results/report_weight.json and exits 1 when the report is over the limit.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "report_weight.json"
TARGET = 2_000_000  # bytes


def weigh(path: Path) -> dict:
    html = path.read_bytes()
    text = html.decode()
    inline = re.findall(r'<svg role="img".*?</svg>', text, flags=re.S)
    packed = re.findall(r'data-gz="([^"]*)"', text)
    figure_bytes = sum(len(s.encode()) for s in inline) + sum(len(p) for p in packed)
    return {
        "report": str(path),
        "bytes": len(html),
        "gzip_bytes": len(gzip.compress(html, compresslevel=9, mtime=0)),
        "figures_inline": len(inline),
        "figures_packed": len(packed),
        "figure_bytes": figure_bytes,
        "other_bytes": len(html) - figure_bytes,
        "base64_images": text.count("data:image/"),
        "text_as_paths": text.count('id="DejaVuSans-'),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", default="results/report/index.html")
    parser.add_argument("--limit", type=int, default=TARGET)
    args = parser.parse_args()
    weight = weigh(Path(args.report)) | {"limit": args.limit}
    weight["within_limit"] = weight["bytes"] <= args.limit
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(weight, indent=2) + "\n")
    print(json.dumps(weight, indent=2))
    raise SystemExit(0 if weight["within_limit"] else 1)


if __name__ == "__main__":
    main()
