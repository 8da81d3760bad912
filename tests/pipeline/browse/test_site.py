"""`pipeline browse` end to end: a real tiny store and two runs, the site opened in headless Chromium."""

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

from fit.config import SAEConfig, TrainConfig
from fit.trainer import fit
from harvest.config import HarvestConfig
from harvest.runner import harvest
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.runner import evaluate

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
MULTIBYTE = "café 😀 中文"
BASELINE, HIER = "baseline-l0.04-s0", "hier-K4-g1.5-l0.04-s0"


@pytest.fixture(scope="module")
def built(tiny_model_dir, kjv_file, tmp_path_factory):
    """A store harvested from text full of markup and multi-byte characters, two runs, one evaluated, the site."""
    root = tmp_path_factory.mktemp("browse")
    corpus = root / "corpus.jsonl"
    lines = [json.loads(line)["text"] for line in kjv_file.read_text().splitlines()[:200]]
    # Short documents (~50 tokens) in 63-token contexts: most contexts hold a whole payload.
    docs = [f"{SCRIPT if i % 2 else IMG} {MULTIBYTE} {t[:30]}" for i, t in enumerate(lines)]
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    store = str(root / "s.zarr")
    harvest(HarvestConfig(store=store, model=str(tiny_model_dir), dataset=str(corpus), layers=(2,), tokens=4000,
                          context_length=64, batch_size=8, chunk_rows=1024))
    runs = root / "runs"
    fit(TrainConfig(store=store, out=str(runs), batch_size=128, tokens=128 * 30, holdout=0.1, log_every=10),
        [SAEConfig(variant="baseline"), SAEConfig(variant="hier", groups=4)])
    evaluate(EvaluateConfig(runs=(str(runs / BASELINE),), kl=False))  # the hierarchical run stays unevaluated
    return root, runs


@pytest.fixture(scope="module")
def site(built, tiny_model_dir, tmp_path_factory):
    _, runs = built
    out = tmp_path_factory.mktemp("site") / "site"
    from pipeline.browse.builder import build_site
    from pipeline.browse.config import BrowseConfig

    # The whole context (63 rows) fits in the window, so every example shows its full context.
    index = build_site(BrowseConfig(runs=(str(runs),), out=str(out), model=str(tiny_model_dir), before=63,
                                    after=63))
    assert index == out / "index.html"
    return out


def read_data(site: Path, rel: str):
    text = (site / rel).read_text()
    prefix = f"BROWSE.put({json.dumps(rel)},"
    assert text.startswith(prefix) and text.endswith(");\n")
    return json.loads(text[len(prefix) : -3])


def example_text(site: Path, store: dict, ex: list) -> str:
    row, _, before, shade = ex
    c, off = divmod(row, store["rpc"])
    ctx = read_data(site, f"data/stores/{store['key']}/ctx/{c // store['contexts_per_shard']:05d}.js")["contexts"]
    tokens = ctx[str(c)]
    return "".join(tokens[off - before : off - before + len(shade)])


def find_feature(site: Path, run: str, *needles: str) -> tuple[int, list[str]]:
    """A feature of `run` whose top examples show every needle; returns it and its examples' texts."""
    meta = read_data(site, "data/site.js")
    (store,) = meta["stores"]
    n = next(r["n"] for r in meta["runs"] if r["key"] == run)
    for first in range(0, n, meta["features_per_shard"]):
        shard = read_data(site, f"data/runs/{run}/f/{first // meta['features_per_shard']:05d}.js")
        for i, feat in enumerate(shard["features"]):
            texts = [example_text(site, store, ex) for ex in feat["top"]]
            if all(any(needle in t for t in texts) for needle in needles):
                return first + i, texts
    pytest.fail(f"no feature of {run} shows {needles} in its top examples")


def test_site_files_and_data(site):
    meta = read_data(site, "data/site.js")
    assert [r["key"] for r in meta["runs"]] == [BASELINE, HIER]
    base, hier = meta["runs"]
    assert base["eval"]["explained_variance"] is not None and hier["eval"] is None
    assert [len(r["groups"]) for r in meta["runs"]] == [1, 4]
    # each SAE named by its architecture and sparsity setting, for the list and its pages
    assert base["label"] == f"baseline λ={base['sae']['l1']:g}"
    assert hier["label"] == f"hier K=4 γ={hier['sae']['gamma']:g} λ={hier['sae']['l1']:g}"
    assert base["lens"] and hier["lens"]
    # the decoded contexts are the text itself, multi-byte characters and markup included
    (store,) = meta["stores"]
    texts = ["".join(tokens) for path in sorted(site.glob(f"data/stores/{store['key']}/ctx/*.js"))
             for tokens in read_data(site, str(path.relative_to(site)))["contexts"].values()]
    for needle in (SCRIPT, IMG, MULTIBYTE):
        assert any(needle in t for t in texts), needle
    assert not any("\ufffd" in t[1:-1] for t in texts)  # only where a context cuts a character
    # bounded size: a few hundred kB for 2 x 64 features
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert size < 1_000_000, size


def chromium(playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium) to "
                    "run the browser tests")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture
def server(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    httpd.shutdown()
    thread.join()


def open_page(browser, url: str, ready: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.goto(url)
    wait_ready(page, ready)
    return page, problems


def wait_ready(page, ready: str) -> None:
    page.wait_for_function("want => document.body.dataset.ready === want", arg=ready, timeout=10_000)


def assert_text_not_markup(page) -> None:
    main = page.inner_text("main")
    assert SCRIPT in main  # shown as text ...
    assert page.locator("main script, main img").count() == 0  # ... never parsed as markup


def test_overview_list_and_feature_page_over_http(site, server, tmp_path):
    from playwright.sync_api import sync_playwright

    feature, _ = find_feature(site, HIER, SCRIPT)
    with sync_playwright() as p:
        browser = chromium(p)
        try:
            page, problems = open_page(browser, server, "overview")
            main = page.inner_text("main")
            assert BASELINE in main and HIER in main and "Comparison: 2 runs on this store" in main
            assert "Not evaluated: " + HIER in main
            assert page.locator(f"[id='run-{HIER}'] table.groups tr").first.locator("th").count() == 1 + 4
            assert page.locator(f"[id='run-{BASELINE}'] table.groups tr").first.locator("th").count() == 1 + 1
            assert page.locator("svg").count() >= 1 + 1 + 4  # comparison + one histogram per group
            page.screenshot(path=str(tmp_path / "overview.png"))

            # the feature list: every feature, sortable by density, searchable by id and by token
            page.locator("table.metrics th a", has_text=HIER).first.click()
            wait_ready(page, f"run/{HIER}")
            rows = page.locator("table.features tbody tr")
            assert rows.count() == 64
            page.click("th[data-key=density]")
            densities = [float(t.rstrip("%")) for t in page.locator("table.features tbody tr td:nth-child(3)")
                         .all_inner_texts()]
            assert densities == sorted(densities, reverse=True)
            page.fill("input[type=search]", str(feature))
            assert rows.first.locator("td").first.inner_text() == f"#{feature}"
            token = next(t.strip() for t in read_data(site, f"data/runs/{HIER}/features.js")["tokens"][feature]
                         if t.strip())
            page.fill("input[type=search]", token)
            ids = [t.lstrip("#") for t in page.locator("table.features tbody tr td:first-child").all_inner_texts()]
            assert str(feature) in ids

            # the feature page
            page.fill("input[type=search]", str(feature))
            rows.first.locator("a").click()
            wait_ready(page, f"run/{HIER}/feature/{feature}")
            examples = page.locator(".example")
            assert examples.count() >= 10
            assert page.locator(".example .tok.hit").count() == examples.count()
            assert page.locator(".example .tok[style*=background]").count() > 0  # shaded by activation
            assert_text_not_markup(page)
            assert page.locator("text=Promoted tokens").count() == 1
            assert page.locator("text=Activation histogram").count() == 1
            assert page.locator(f"a[href^='#/run/{BASELINE}/feature/']").count() == 1  # closest baseline feature
            shot = tmp_path / "feature.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert problems == []
        finally:
            browser.close()


def test_feature_page_from_file_url(site):
    from playwright.sync_api import sync_playwright

    feature, _ = find_feature(site, BASELINE, SCRIPT, MULTIBYTE)
    with sync_playwright() as p:
        browser = chromium(p)
        try:
            url = (site / "index.html").as_uri() + f"#/run/{BASELINE}/feature/{feature}"
            page, problems = open_page(browser, url, f"run/{BASELINE}/feature/{feature}")
            assert page.locator(".example").count() >= 10
            assert_text_not_markup(page)
            assert MULTIBYTE in page.inner_text("main")
            page.click("text=feature list")
            wait_ready(page, f"run/{BASELINE}")
            assert problems == []
        finally:
            browser.close()


def test_cli_builds_and_refuses_bad_input(built, tmp_path, capsys):
    _, runs = built
    out = tmp_path / "cli-site"
    result = run_cli(capsys, "browse", str(runs / HIER), "--out", str(out), "--k", "5")
    assert result.code == 0, result.stderr
    assert str(out / "index.html") in result.stderr
    assert read_data(out, "data/site.js")["k"] == 5
    result = run_cli(capsys, "browse", str(runs / HIER), "--out", str(out))  # a rebuild replaces the site
    assert result.code == 0 and read_data(out, "data/site.js")["k"] == 20
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert_one_line_error(run_cli(capsys, "browse", str(runs), "--out", str(tmp_path / "other")),
                          "is not a feature browser site")
    assert_one_line_error(run_cli(capsys, "browse", str(tmp_path / "nothing"), "--out", str(out)),
                          "neither a run directory")
    assert_one_line_error(run_cli(capsys, "browse", str(runs), "--out", str(out), "--model", str(tmp_path)),
                          "cannot load")


def test_topk_family_runs_are_browsed_with_their_architecture(built, tiny_model_dir, tmp_path):
    """TopK and Matryoshka runs (a learned threshold at inference) browse like the L1 ones: labelled by k and
    prefix ends, one group per prefix segment, and features with examples."""
    from pipeline.browse.builder import build_site
    from pipeline.browse.config import BrowseConfig

    root, _ = built
    runs = tmp_path / "runs"
    fit(TrainConfig(store=str(root / "s.zarr"), out=str(runs), batch_size=128, tokens=128 * 30, holdout=0.1,
                    log_every=10),
        [SAEConfig(variant="topk", k=4), SAEConfig(variant="matryoshka", k=4, groups=2)])
    out = tmp_path / "site"
    build_site(BrowseConfig(runs=(str(runs),), out=str(out), model=str(tiny_model_dir)))
    meta = read_data(out, "data/site.js")
    by_variant = {r["sae"]["variant"]: r for r in meta["runs"]}
    assert set(by_variant) == {"topk", "matryoshka"}
    assert "k=4" in by_variant["topk"]["label"] and "k=4" in by_variant["matryoshka"]["label"]
    assert len(by_variant["topk"]["groups"]) == 1 and len(by_variant["matryoshka"]["groups"]) == 2
    for run in meta["runs"]:
        shard = read_data(out, f"data/runs/{run['key']}/f/00000.js")
        assert any(feat["top"] for feat in shard["features"]), run["key"]
