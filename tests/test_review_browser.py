"""The review page in a real browser: headless system Chromium driven by Selenium (Debian's chromium and
chromium-driver packages; .ci/run installs them as root). Skipped, with the reason, when either is missing.

1. A page made from hostile ids: every image loads, no script error, no injected markup, keys decide, the CSV.
2. A tiny workflow run (LynxTiny, baseline + WildFusion): its page is clicked through, the downloaded CSV is
   enrolled (snakemake enroll), the next start of the workflow reads the new gallery version, and enroll_undo goes
   back. With REVIEW_SCREENSHOT=PATH the page is saved as a PNG there (docs/review.png).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from workflow_helpers import make_workdir, snakemake

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver") or next(
    (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if Path(p).is_file()), None
)
try:
    import selenium  # noqa: F401

    SELENIUM = True
except ImportError:
    SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER and SELENIUM),
    reason=f"needs a system Chromium ({CHROMIUM}), its chromedriver ({DRIVER}) and selenium ({SELENIUM}): "
    "apt-get install chromium chromium-driver; pip install selenium",
)

HOSTILE = '</script><img src=x onerror="window.__pwned=1">&amp;'
CSV_HEADER = "dataset image_id decision identity predicted decided_by fused priority reviewer decided_at run_id".split()
CSV_HEADER.append("gallery_version")


@contextmanager
def chromium(download_dir: Path):
    """A headless system Chromium (explicit binary and driver paths: Selenium downloads nothing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, page: Path) -> None:
    """Open ``page`` from disk; wait until every image finished loading, then check images and the console."""
    driver.get(page.resolve().as_uri())
    deadline = time.time() + 30
    while not driver.execute_script("return Array.from(document.images).every(i => i.complete)"):
        assert time.time() < deadline, "images still loading after 30 s"
        time.sleep(0.2)
    sizes = driver.execute_script("return Array.from(document.images).map(i => [i.alt, i.naturalWidth])")
    assert sizes and all(width > 0 for _, width in sizes), [alt for alt, width in sizes if width == 0]
    severe = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], severe


def press(driver, keys: str) -> None:
    from selenium.webdriver.common.by import By

    body = driver.find_element(By.TAG_NAME, "body")
    for key in keys:
        body.send_keys(key)


def within(driver, script: str, want, *args, seconds: float = 5):
    """The value of ``script`` once it is ``want``, or after ``seconds`` (a photo loads, then lines are drawn)."""
    deadline = time.time() + seconds
    while (got := driver.execute_script(script, *args)) != want and time.time() < deadline:
        time.sleep(0.05)
    return got


LINES = "return document.querySelectorAll('svg line').length"


def download_csv(driver, folder: Path) -> Path:
    """Click the page's download button; the CSV it saves, once complete."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "export").click()
    deadline = time.time() + 20
    while True:
        done = [p for p in folder.glob("*.csv")]
        if done and not list(folder.glob("*.crdownload")):
            return done[0]
        assert time.time() < deadline, f"no CSV downloaded into {folder}: {list(folder.iterdir())}"
        time.sleep(0.2)


def rows_of(text: str) -> list[dict]:
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == CSV_HEADER
    return [dict(zip(table[0], row)) for row in table[1:]]


def test_page_with_hostile_ids(tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    from workflow.review.page import page_data
    from workflow.review.render import render_page

    ids = ["g1", "g2", "q1", HOSTILE, "g3"]  # g3: another photo of ann, in no shortlist
    meta = pd.DataFrame({"image_id": ids, "identity": ["ann", HOSTILE + "id", "", "", "ann"],
                         "split": ["database", "database", "query", "query", "database"]})  # fmt: skip
    for i in range(len(ids)):
        Image.new("RGB", (40, 30), (40 * i, 90, 150)).save(tmp_path / f"{i}.png")
    meta["abspath"] = [str(tmp_path / f"{i}.png") for i in range(len(ids))]
    pairs = pd.DataFrame({"query": ["q1", "q1", HOSTILE, HOSTILE], "candidate": ["g1", "g2", "g1", "g2"],
                          "kind": "query", "fused": [0.9, 0.2, 0.45, 0.4]})  # fmt: skip
    decision = pd.DataFrame({"image_id": ["q1", HOSTILE], "identity": ["ann", "new_individual"],
                             "decided_by": ["wildfusion:label", "wildfusion:new"]})  # fmt: skip
    lines = {
        (HOSTILE, "g1"): {"matcher": "m", "candidate": "g1", "total": 1, "lines": [[0.1, 0.2, 0.8, 0.9, 0.7]]},
        (HOSTILE, "g2"): {"matcher": "m", "candidate": "g2", "total": 9, "lines": [[0.1, 0.2, 0.3, 0.4, 0.5]] * 2},
    }
    data, _ = page_data("D", "wildfusion", meta, pairs, 0.5, decision, {}, None, lambda p: lines, {})
    page = tmp_path / "D.html"
    page.write_text(render_page(data, HOSTILE), encoding="utf-8")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with chromium(downloads) as driver:
        open_page(driver, page)
        assert driver.execute_script("return window.__pwned === undefined && !document.querySelector('img[src=x]')")
        text = driver.execute_script("return document.getElementById('cards').textContent")
        assert HOSTILE in text and HOSTILE + "id" in text  # shown as text, never parsed as markup
        assert driver.execute_script("return document.querySelectorAll('svg line').length") == 1
        # every candidate with match lines can be compared (m, or its button): only a look, nothing is decided
        press(driver, "m")
        assert within(driver, LINES, 2) == 2
        assert driver.execute_script("return document.querySelector('.card.current img.match').alt") == "g2"
        caption = driver.find_element(By.CSS_SELECTOR, ".card.current .paircap").text
        assert "candidate 2 g2 (" + HOSTILE + "id)" in caption
        assert "9 (lines: best 2)" in driver.find_element(By.CSS_SELECTOR, ".card.current .facts").text
        driver.find_elements(By.CSS_SELECTOR, ".card.current .cand .look")[0].click()
        assert within(driver, LINES, 1) == 1
        # "more" shows the individual's other gallery photos, from their files; a click on one zooms it
        driver.find_element(By.CSS_SELECTOR, ".card.current .cand .more").click()
        more = driver.find_element(By.CSS_SELECTOR, ".card.current .morebox img")
        assert more.get_attribute("alt") == "g3" and "ann: 1 more gallery photo" in more.find_element(
            By.XPATH, "../..").text  # fmt: skip
        assert within(driver, "return arguments[0].complete && arguments[0].naturalWidth", 40, more) == 40
        more.click()
        assert driver.execute_script("return document.getElementById('zoom-img').alt") == "g3"
        press(driver, "\ue00c")  # Escape
        press(driver, "o")  # o hides them again (the candidate beside the query: ann)
        assert not driver.find_element(By.CSS_SELECTOR, ".card.current .morebox").is_displayed()
        assert rows_of(driver.execute_script("return window.reviewDecisionsCSV()")) == []
        press(driver, "2")  # the first card (the hostile id, nearest the threshold): candidate 2 (g2)
        press(driver, "n")  # the page moved on to the next card (q1): a new individual
        rows = rows_of(driver.execute_script("return window.reviewDecisionsCSV()"))
        assert [(r["image_id"], r["decision"], r["identity"]) for r in rows] == [
            (HOSTILE, "pick", HOSTILE + "id"),
            ("q1", "new", ""),
        ]
        saved = download_csv(driver, downloads)
        assert rows_of(saved.read_text(encoding="utf-8")) == rows


def small_page(folder: Path, shade: int) -> tuple[Path, dict]:
    """A page of dataset D (three queries, two candidates each, every query in discovered cluster Spotty) whose
    photos differ with ``shade``: two data folders with a dataset of the same name."""
    from PIL import Image

    from workflow.review.page import page_data
    from workflow.review.render import render_page

    folder.mkdir()
    ids = ["g1", "g2", "q1", "q2", "q3"]
    meta = pd.DataFrame({"image_id": ids, "identity": ["ann", "bob", "", "", ""],
                         "split": ["database"] * 2 + ["query"] * 3, "sha1": [f"{shade}{i}" for i in ids]})  # fmt: skip
    for i in range(len(ids)):
        Image.new("RGB", (60, 40), (shade, 30 * i, 120)).save(folder / f"{i}.png")
    meta["abspath"] = [str(folder / f"{i}.png") for i in range(len(ids))]
    pairs = pd.DataFrame({"query": [q for q in ids[2:] for _ in range(2)], "candidate": ["g1", "g2"] * 3,
                          "kind": "query", "fused": [0.9, 0.2, 0.45, 0.4, 0.1, 0.05]})  # fmt: skip
    decision = pd.DataFrame({"image_id": ids[2:], "identity": ["ann", "ann", "new_individual"],
                             "decided_by": ["wildfusion:label", "wildfusion:label", "wildfusion:new"]})  # fmt: skip
    clusters = pd.DataFrame({"image_id": ids[2:], "cluster": "Spotty"})
    data, _ = page_data("D", "wildfusion", meta, pairs, 0.5, decision, {}, clusters, lambda p: {}, {})
    page = folder / "D.html"
    page.write_text(render_page(data, "D"), encoding="utf-8")
    return page, data


def test_page_decisions_zoom_not_sure_advance_and_run_scope(tmp_path):
    from selenium.webdriver.common.by import By

    page, data = small_page(tmp_path / "one", 10)
    other, other_data = small_page(tmp_path / "two", 200)
    assert data["run_id"] != other_data["run_id"]  # same dataset name, other photos: another run
    order = [c["image_id"] for c in data["cards"]]
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    def current():
        return driver.execute_script("return Number(document.querySelector('.card.current').dataset.index)")

    with chromium(downloads) as driver:
        open_page(driver, page)
        driver.find_element(By.ID, "reviewer").send_keys("Ana Ruiz")
        driver.find_element(By.TAG_NAME, "h1").click()
        assert current() == 0
        # sizes follow review.thumbnail (160 px: the query 160 px high, candidates 120 px); full-resolution links
        heights = driver.execute_script("return ['.pair img.query', '.cand img'].map(s => "
                                        "document.querySelector(s).getBoundingClientRect().height)")  # fmt: skip
        assert [round(h) for h in heights] == [160 + 2, 120]  # the query's 1 px border on each side
        link = driver.find_element(By.CSS_SELECTOR, ".card.current .paircap a").get_attribute("href")
        assert link == data["files"][order[0]] and link.startswith("file:///")
        # a click on a candidate's photo only looks: it opens the zoom, and nothing is decided
        driver.find_elements(By.CSS_SELECTOR, ".card.current .cand img")[1].click()
        assert driver.execute_script("return document.getElementById('zoom').classList.contains('open')")
        assert driver.execute_script("return document.getElementById('zoom-img').naturalWidth") == 60
        press(driver, "\ue00c")  # Escape
        assert not driver.execute_script("return document.getElementById('zoom').classList.contains('open')")
        assert rows_of(driver.execute_script("return window.reviewDecisionsCSV()")) == []
        press(driver, "9")  # two candidates only: the page says so, and decides nothing
        assert "has 2 candidate(s): key 9 picks none" in driver.find_element(By.ID, "note").text
        press(driver, "s")  # not sure; the page moves on to the next card
        assert current() == 1
        press(driver, "e")  # the name field's prefilled "Spotty" is selected: typing replaces it
        driver.switch_to.active_element.send_keys("Rex\n")
        press(driver, "n")
        assert current() == 2
        rows = rows_of(driver.execute_script("return window.reviewDecisionsCSV()"))
        assert [(r["image_id"], r["decision"], r["identity"]) for r in rows] == [
            (order[0], "unsure", ""), (order[1], "new", "Rex")]  # fmt: skip
        assert {(r["reviewer"], r["run_id"], r["gallery_version"]) for r in rows} == {("Ana Ruiz", data["run_id"], "0")}
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["decided_at"]) for r in rows)
        # the page of the other data folder (same dataset name) shares none of these decisions, nor they its
        open_page(driver, other)
        assert rows_of(driver.execute_script("return window.reviewDecisionsCSV()")) == []
        press(driver, "1")
        # Chromium commits localStorage writes to disk in batches: on a loaded machine the first reload can come
        # before the commit, so reload until the decisions are back (10 s at most)
        deadline = time.time() + 10
        while True:
            open_page(driver, page)
            kept = rows_of(driver.execute_script("return window.reviewDecisionsCSV()"))
            if kept or time.time() > deadline:
                break
            time.sleep(0.5)
        assert [r["image_id"] for r in kept] == order[:2]


def test_a_large_page_builds_cards_in_parts_and_decodes_photos_near_the_screen(tmp_path):
    from PIL import Image

    from workflow.review.page import page_data
    from workflow.review.render import render_page

    n = 150
    ids = ["g1", "g2", *(f"q{i:03d}" for i in range(n))]
    meta = pd.DataFrame({"image_id": ids, "identity": ["ann", "bob", *[""] * n],
                         "split": ["database"] * 2 + ["query"] * n})  # fmt: skip
    Image.new("RGB", (16, 12), (90, 120, 150)).save(tmp_path / "x.png")
    meta["abspath"] = str(tmp_path / "x.png")
    pairs = pd.DataFrame({"query": [q for q in ids[2:] for _ in range(2)], "candidate": ["g1", "g2"] * n,
                          "kind": "query", "fused": np.linspace(0.1, 0.9, 2 * n)})  # fmt: skip
    decision = pd.DataFrame({"image_id": ids[2:], "identity": "ann"})
    data, _ = page_data("D", "wildfusion", meta, pairs, 0.5, decision, {}, None, lambda p: {}, {})
    page = tmp_path / "D.html"
    page.write_text(render_page(data, "D"), encoding="utf-8")
    with chromium(tmp_path) as driver:
        driver.get(page.resolve().as_uri())
        deadline = time.time() + 30
        while driver.execute_script("return document.body.dataset.built") != "all":
            assert time.time() < deadline, "cards still being built after 30 s"
            time.sleep(0.1)
        assert driver.execute_script("return document.querySelectorAll('.card').length") == n
        last = f"return document.querySelectorAll('.card')[{n - 1}].querySelector('img.query').getAttribute('src')"
        assert driver.execute_script(last) is None  # far below the screen: not decoded yet
        press(driver, "j" * (n - 1))
        time.sleep(0.5)
        assert driver.execute_script(last).startswith("data:image/jpeg")
        press(driver, "r")
        rows = rows_of(driver.execute_script("return window.reviewDecisionsCSV()"))
        assert [(r["image_id"], r["decision"]) for r in rows] == [(data["cards"][-1]["image_id"], "reject")]


TINY = REPO / "tests" / "configs" / "tiny.yaml"
LYNX_ONLY = """\
stages: [baseline, wildfusion]
submission: {stage: wildfusion}
demo:
  datasets:
    - {name: LynxTiny, species: lynx, pattern: spots, known_individuals: 6, new_individuals: 2,
       gallery_images: 30, query_images: 9, distribution: longtail, orientations: [left, right], date_range: null}
"""


@pytest.mark.slow
def test_review_enroll_and_rerun(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("review"))
    overlay = work / "lynx_only.yaml"
    overlay.write_text(LYNX_ONLY)
    configs = ["--configfile", str(TINY), str(overlay)]
    snakemake(work, "results/review/LynxTiny.html", "results/submission.csv", "--cores", "2", *configs)
    downloads = work / "downloads"
    downloads.mkdir()
    with chromium(downloads) as driver:
        open_page(driver, work / "results/review/LynxTiny.html")
        assert driver.execute_script("return document.querySelectorAll('svg line').length") > 0
        cards = driver.execute_script("return window.reviewDecisionsCSV().split('\\n').length")
        assert cards == 2  # the header (and the final newline's empty line): nothing decided yet
        press(driver, "a")  # the most uncertain query: accept the decision (the page moves on to the next card)
        press(driver, "n")  # the next: a new individual
        press(driver, "r")  # the next: rejected
        press(driver, "1")  # the next: its first candidate
        if os.environ.get("REVIEW_SCREENSHOT"):
            driver.execute_script("window.scrollTo(0, 0)")
            from PIL import Image  # a palette PNG: a third of the size of the browser's

            shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
            shot.quantize(colors=128).save(os.environ["REVIEW_SCREENSHOT"], optimize=True)
        saved = download_csv(driver, downloads)
    rows = rows_of(saved.read_text(encoding="utf-8"))
    assert [r["decision"] for r in rows][2] == "reject" and len(rows) == 4
    assert all(r["dataset"] == "LynxTiny" for r in rows)
    snakemake(work, "enroll", "--cores", "1", *configs, "--config", f"decisions={saved}")
    (version,) = list((work / "enrollment").glob("*/v1"))
    gallery = pd.read_csv(version / "metadata.csv", dtype=str, keep_default_na=False).set_index("image_id")
    enrolled = [r for r in rows if r["decision"] != "reject"]
    for r in enrolled:
        assert gallery.at[r["image_id"], "split"] == "database"
        assert gallery.at[r["image_id"], "identity"] == r["identity"] or (
            r["decision"] == "new" and gallery.at[r["image_id"], "identity"].startswith("new_LynxTiny_")
        )
    # the next run reads the new gallery: its start rewrites the table, and every later stage is out of date
    plan = snakemake(work, "-n", *configs).stdout
    table = pd.read_csv(work / "results/data/LynxTiny.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert set(table.loc[table["split"] == "database", "image_id"]) >= {r["image_id"] for r in enrolled}
    for rule in ("embed", "match_shard", "wildfusion", "review"):  # the job-stats table of the dry-run
        assert re.search(rf"^{rule}\s+\d+$", plan, flags=re.M), plan[-2000:]
    log = pd.read_csv(version.parent / "log.tsv", sep="\t", dtype=str)
    assert log["action"].tolist() == ["enroll"] and log["decisions"].iloc[0] == str(saved)
    snakemake(work, "enroll_undo", "--cores", "1", *configs)
    snakemake(work, "-n", *configs)
    table = pd.read_csv(work / "results/data/LynxTiny.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert set(table.loc[table["split"] == "query", "image_id"]) >= {r["image_id"] for r in enrolled}


def test_discovery_page_confirm_split_merge_and_enroll(tmp_path):
    from conftest import write_dataset
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from workflow.enrollment import enroll, enrollment_dir
    from workflow.review.discovery_page import discovery_data
    from workflow.review.render import render_page

    rows = [{"image_id": f"l{i}", "identity": "", "split": "query", "dataset": "L"} for i in range(6)]
    root = write_dataset(tmp_path / "data", rows)
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    meta["abspath"] = [str(root / p) for p in meta["path"]]
    clusters = pd.DataFrame({"image_id": [f"l{i}" for i in range(6)], "cluster": ["A", "A", "A", "B", "B", "C"],
                             "anchored": "False"})  # fmt: skip
    data = discovery_data("L", meta, clusters, {})
    assert [(c["cluster"], c["photos"]) for c in data["cards"]] == [("A", ["l0", "l1", "l2"]), ("B", ["l3", "l4"]),
                                                                     ("C", ["l5"])]  # fmt: skip
    page = tmp_path / "L.html"
    page.write_text(render_page(data, "L", "discovery.html"), encoding="utf-8")
    with chromium(tmp_path) as driver:
        open_page(driver, page)
        cards = driver.find_elements(By.CSS_SELECTOR, ".card")
        cards[0].find_elements(By.CSS_SELECTOR, "button.split")[2].click()  # l2 is not this individual
        name = cards[0].find_element(By.TAG_NAME, "input")
        name.click()
        name.send_keys("Spotty\n")  # the proposed name is selected: typing replaces it
        press(driver, "c")  # confirm A; the page moves on to B
        Select(cards[1].find_element(By.CSS_SELECTOR, "select.merge")).select_by_value("A")  # B is Spotty too
        press(driver, "c")
        press(driver, "s")  # C: not sure
        rows = rows_of(driver.execute_script("return window.reviewDecisionsCSV()"))
        saved = download_csv(driver, tmp_path)
    assert [(r["image_id"], r["decision"], r["identity"]) for r in rows] == [
        ("l0", "new", "Spotty"), ("l1", "new", "Spotty"), ("l2", "unsure", ""), ("l3", "new", "Spotty"),
        ("l4", "new", "Spotty"), ("l5", "unsure", "")]  # fmt: skip
    directory = enrollment_dir(tmp_path / "enrollment", root)
    assert enroll(root, directory, saved, discovery=True) == 1
    gallery = pd.read_csv(directory / "v1" / "metadata.csv", dtype=str, keep_default_na=False)
    assert sorted(gallery.loc[gallery["identity"] == "Spotty", "image_id"]) == ["l0", "l1", "l3", "l4"]
