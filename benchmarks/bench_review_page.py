"""First paint of a large review page in headless Chromium (docs/benchmarks.md, "Review page").

Writes a synthetic page with as many queries as DogFaceNet's query set (2,314 by default; every query gets a card,
``review.max_queries: null``) from generated photos (320 x 240 JPEGs, smooth colour fields with noise: they
compress worse than real photos, so the page is not smaller than a real one) with ``--lines`` synthetic match
lines for each shown candidate (as many as ``review.match_lines``, the default), then opens it from disk in the
system Chromium (Debian's chromium and chromium-driver, driven by Selenium) and reports, from the browser's own
performance timeline: the page size, first contentful paint, when the first screen's cards were built (mark
``review-first-cards``), the load event (the first screen's thumbnails decoded) and when every card was built.

    python benchmarks/bench_review_page.py [--queries 2314] [--gallery 1200] [--lines 40] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def synthetic(folder: Path, queries: int, gallery: int, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    """Photos, the pair table (10 candidates per query) and decisions of a synthetic dataset."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ids = [f"g{i:05d}" for i in range(gallery)] + [f"q{i:05d}" for i in range(queries)]
    identity = [f"dog_{i % max(1, gallery // 4):04d}" for i in range(gallery)] + [""] * queries
    paths = []
    for image_id in ids:
        field = rng.random((6, 8, 3))
        big = np.kron(field, np.ones((40, 40, 1))) * 200 + rng.normal(0, 12, (240, 320, 3))
        path = folder / f"{image_id}.jpg"
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=85)
        paths.append(str(path))
    meta = pd.DataFrame({"image_id": ids, "identity": identity, "split": ["database"] * gallery + ["query"] * queries,
                         "abspath": paths, "orientation": "front", "date": "2019-06-01"})  # fmt: skip
    q = np.repeat(ids[gallery:], 10)
    pairs = pd.DataFrame({"query": q, "candidate": [ids[j] for j in rng.integers(0, gallery, len(q))],
                          "kind": "query", "fused": rng.random(len(q))})  # fmt: skip
    pairs = pairs.drop_duplicates(["query", "candidate"])
    best = pairs.sort_values("fused", ascending=False).drop_duplicates("query").set_index("query")["candidate"]
    names = dict(zip(ids, identity))
    decision = pd.DataFrame({"image_id": ids[gallery:]})
    decision["identity"] = [names[best[i]] if rng.random() < 0.7 else "new_individual" for i in decision["image_id"]]
    return meta, pairs, decision


def synthetic_lines(n: int, seed: int = 0):
    """``lines_for`` of the page: ``n`` random match lines for every pair asked (what a matcher would return)."""
    rng = np.random.default_rng(seed)

    def lines_for(pairs):
        return {(q, c): {"matcher": "synthetic", "candidate": c, "total": n,
                         "lines": np.round(rng.random((n, 5)), 4).tolist()} for q, c in pairs}  # fmt: skip

    return lines_for


def measure(page: Path, runs: int) -> list[dict]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "chromedriver"), options=options)
    found = []
    try:
        for _ in range(runs):
            driver.get("about:blank")
            driver.get(page.resolve().as_uri())  # returns after the load event
            deadline = time.time() + 120
            while driver.execute_script("return document.body.dataset.built") != "all":
                assert time.time() < deadline, "cards still being built after 120 s"
                time.sleep(0.05)
            found.append(
                driver.execute_script("""
                const paint = performance.getEntriesByName('first-contentful-paint')[0];
                const nav = performance.getEntriesByType('navigation')[0];
                const first = performance.getEntriesByName('review-first-cards')[0];
                return {fcp: paint ? paint.startTime : null, dcl: nav.domContentLoadedEventEnd,
                        first: first ? first.startTime : null,
                        load: nav.loadEventEnd, built: performance.now(),
                        cards: document.querySelectorAll('.card').length};""")
            )
    finally:
        driver.quit()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2314)
    parser.add_argument("--gallery", type=int, default=1200)
    parser.add_argument("--lines", type=int, default=40, help="match lines per shown candidate (0: none)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", help="write the photos and the page here (default: a temporary folder)")
    args = parser.parse_args()
    from workflow.review.page import page_data
    from workflow.review.render import render_page

    folder = Path(args.keep or tempfile.mkdtemp(prefix="bench-review-"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    meta, pairs, decision = synthetic(folder, args.queries, args.gallery)
    made = time.perf_counter()
    data, _ = page_data("Dogs", "wildfusion", meta, pairs, 0.5, decision, {}, None, synthetic_lines(args.lines),
                        {"max_queries": None, "match_lines": args.lines}, {"threshold": 0.5})  # fmt: skip
    page = folder / "Dogs.html"
    page.write_text(render_page(data, "Dogs"), encoding="utf-8")
    written = time.perf_counter()
    print(f"{args.queries} queries, {args.gallery} gallery photos, {args.lines} lines per candidate: photos "
          f"{made - start:.1f} s, page written in "
          f"{written - made:.1f} s, {page.stat().st_size / 2**20:.1f} MiB, {len(data['cards'])} cards, "
          f"{len(data['images'])} thumbnails")  # fmt: skip
    results = measure(page, args.runs)
    for r in results:
        print(f"first contentful paint {r['fcp']:.0f} ms, first cards built {r['first']:.0f} ms, DOMContentLoaded "
              f"{r['dcl']:.0f} ms, load (first screen's images decoded) {r['load']:.0f} ms, all {r['cards']} cards "
              f"built {r['built']:.0f} ms")  # fmt: skip
    for key in ("fcp", "first", "load"):
        print(f"median {key}: {statistics.median(r[key] for r in results):.0f} ms")
    if not args.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
