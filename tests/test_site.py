"""The report site: pages render offline (unit), the README's chapter table matches the results, and every page
passes in a real headless Chromium: it loads, no request fails or leaves the machine, no console error, no raw TeX
left in the rendered markdown, every image loads."""

import functools
import json
import os
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from metalearn.study import claims, site

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _remote_assets(page: str) -> list[str]:
    """Script, stylesheet and image addresses of a page that point off the machine."""
    found = re.findall(r'<(?:script|img|iframe)[^>]*\ssrc="([^"]+)"', page)
    found += re.findall(r'<link[^>]*\shref="([^"]+)"', page)
    return [u for u in found if re.match(r"(https?:)?//", u)]


def test_chapter_page_loads_nothing_remote(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 99 · A test\n\n$$\\theta' = \\theta - "
                                                                      "\\alpha \\nabla_\\theta L$$ and \\(x\\)."),
                                         nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, tmp_path / "99_test.ipynb")
    site.render_chapter(tmp_path / "99_test.ipynb", tmp_path / "99_test.html")
    page = (tmp_path / "99_test.html").read_text()
    assert site.MATHJAX_URL in page
    assert _remote_assets(page) == []
    assert "require.js" not in page and "mermaid.esm" not in page


def test_copy_mathjax_has_what_the_page_loads(tmp_path: Path) -> None:
    site.copy_mathjax(tmp_path / "mathjax")
    for part in ("MathJax.js", "config/TeX-AMS-MML_HTMLorMML-full.js", "config/Safe.js", "jax/output/HTML-CSS/autoload",
                 "jax/output/HTML-CSS/fonts/STIX-Web/fontdata.js", "fonts/HTML-CSS/STIX-Web/woff", "extensions/MathMenu.js"):
        assert (tmp_path / "mathjax" / part).exists(), part
    assert not (tmp_path / "mathjax" / "extensions" / "a11y").exists()


def test_update_readme_refuses_a_readme_without_markers(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# no table here\n")
    with pytest.raises(ValueError, match="chapters:start"):
        site.update_readme(tmp_path / "README.md", "| a |")


def _readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0].strip()


def test_readme_chapter_table_matches_the_results() -> None:
    expected = site.readme_table(pd.read_csv(REPORTS / "results.csv"), REPORTS)
    assert _readme_block("chapters") == expected, \
        "README's chapter table is stale: run python -m metalearn.study.site --readme README.md"


def test_readme_model_sizes_are_generated_from_the_models(tmp_path: Path) -> None:
    assert _readme_block("model-sizes") == site.model_sizes_table(ROOT / "models"), \
        "README's model sizes are stale: run python -m metalearn.study.site --readme README.md"
    (tmp_path / "01_x").mkdir()
    (tmp_path / "01_x" / "a.pt").write_bytes(b"0" * 2_000_000)
    (tmp_path / "01_x" / "b.pt").write_bytes(b"0" * 500_000)
    table = site.model_sizes_table(tmp_path, budget_mb=80)
    assert "| 01_x | 2 | 2.5 | a (2.0 MB) |" in table and table.endswith("| all | 2 | 2.5 | budget 80 MB |")


def _reports(tmp_path: Path, chapters: dict[str, str]) -> Path:
    """A reports folder with an executed notebook (just its title) for each of ``chapters``."""
    (tmp_path / "notebooks").mkdir()
    for chapter, heading in chapters.items():
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {heading}")]),
                       tmp_path / "notebooks" / f"{chapter}.ipynb")
    return tmp_path


def _result(notebook: str, method: str, dataset: str, ways: int | None, shots: int | None, value: float,
            metric: str = "accuracy", **extra: object) -> dict[str, object]:
    row: dict[str, object] = {"notebook": notebook, "method": method, "variant": None, "trained_on": None,
                              "dataset": dataset, "ways": ways, "shots": shots, "adapt_steps": None, "instance": None,
                              "metric": metric, "value": value, "ci95": 0.4, "n_test": 600, "scale": "study"}
    return row | extra


def test_index_sets_each_headline_beside_its_papers_number(tmp_path: Path) -> None:
    reports = _reports(tmp_path, {"02_relation_network": "02 · Relation Networks", "04_prototypical_networks":
                                  "04 · Prototypical Networks", "06_mann": "06 · MANN", "08_hypernetworks": "08 · H"})
    results = pd.DataFrame([_result("04_prototypical_networks", "protonet", "omniglot", 5, 1, 97.52),
                            _result("04_prototypical_networks", "protonet", "cifar_fs", 5, 5, 73.91),
                            _result("02_relation_network", "relation_net", "omniglot", 20, 1, 92.5),
                            _result("06_mann", "mann", "omniglot", 5, None, 75.6, "instance_accuracy", instance=2),
                            _result("08_hypernetworks", "hypernet", "omniglot", 5, 1, 96.7)])
    index = site.index_page(results, reports)
    # the chapter's own entry (papers.lookup): Snell et al.'s 98.8, Bertinetto et al.'s 72.0, Santoro's 2nd instance
    assert "<td>omniglot 5w1s</td><td>97.5 ± 0.4</td><td>98.8</td>" in index
    assert "<td>cifar_fs 5w5s</td><td>73.9 ± 0.4</td><td>72</td>" in index
    assert "<td>omniglot 5-way instance 2</td><td>75.6 ± 0.4</td><td>82.8</td>" in index
    # a plain row whose paper measured transductively: beside it, not comparable (papers.reference_for)
    assert "<td>omniglot 20w1s</td><td>92.5 ± 0.4</td><td>97.6 n.c.</td>" in index
    # no paper reports few-shot hypernetworks
    assert "<td>omniglot 5w1s</td><td>96.7 ± 0.4</td><td>–</td>" in index
    assert "<th>setting</th><th>ours</th><th>paper</th>" in index


def test_paper_number_needs_the_chapters_own_entry_or_its_home_rows() -> None:
    row = pd.Series(_result("13_drug_discovery", "maml", "fsmol", None, 16, 0.151, "delta_auprc"))
    assert site.paper_number(row, "13_drug_discovery").value == 0.165
    assert site.paper_number(row.copy().replace({"fsmol": "tox21"}), "13_drug_discovery") is None
    plain = pd.Series(_result("13_drug_discovery", "maml", "omniglot", 5, 1, 90.0))
    assert site.paper_number(plain, "13_drug_discovery") is None  # maml's home rows are 09's, not 13's
    assert site.paper_number(plain, "09_maml").comparable is False  # Finn et al. measured transductively


def test_the_summary_card_counts_the_claims_by_verdict(tmp_path: Path) -> None:
    reports = _reports(tmp_path, {"14_summary": "14 · Summary"})
    results = pd.read_csv(REPORTS / "results.csv")
    counts = claims.count_verdicts(claims.judge_all(claims.Results(results, reports / "episodes")))
    assert sum(counts.values()) == len(claims.CLAIMS) and site.claim_counts(results, reports) == counts
    index = site.index_page(results, reports)
    card = index.split('href="site/14_summary.html"', 1)[1].split("</section>", 1)[0]
    assert "<th>verdict</th><th>claims</th>" in card
    assert re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td></tr>", card) == [(k, str(n)) for k, n in counts.items()]


def test_index_links_every_chapter_and_the_plots_page() -> None:
    index = (REPORTS / "index.html").read_text()
    for chapter in site.chapters(REPORTS):
        assert f'href="site/{chapter}.html"' in index
        assert (REPORTS / "site" / f"{chapter}.html").is_file(), f"run dvc repro -s site: {chapter} has no page"
    assert 'href="site/plots/index.html"' in index and (REPORTS / "site" / "plots" / "index.html").is_file()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(REPORTS)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("METALEARN_REQUIRE_BROWSER"):
            pytest.fail("the browser test needs Debian's chromium and chromium-driver (apt-get install chromium "
                        "chromium-driver)")
        pytest.skip("no chromium/chromedriver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    driver.get("about:blank")  # leave the start page, whose internal chrome:// loads are not the site's
    yield driver
    driver.quit()


_WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
if (window.MathJax && MathJax.Hub) { MathJax.Hub.Queue(() => done(true)); } else { done(false); }
"""
_RAW_TEX = """
return Array.from(document.querySelectorAll('.jp-RenderedMarkdown')).map(e => e.innerText)
  .filter(t => t.includes('$$') || t.includes('\\\\(')).map(t => t.slice(0, 200));
"""
_BROKEN_IMAGES = "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);"


def _visit(driver, url: str, origin: str) -> dict[str, list]:
    driver.get_log("performance")  # drop what earlier pages left
    driver.get_log("browser")
    driver.get(url)
    typeset = driver.execute_async_script(_WAIT_FOR_MATH)
    problems: dict[str, list] = {"failed": [], "remote": [], "console": [], "raw_tex": [], "images": []}
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        params = msg.get("params", {})
        if msg["method"] == "Network.requestWillBeSent":
            address = params["request"]["url"]
            if re.match(r"(https?|wss?|ftp):", address) and not address.startswith(origin):
                problems["remote"].append(address)
        elif msg["method"] == "Network.loadingFailed":
            problems["failed"].append(params.get("errorText"))
        elif msg["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems["failed"].append(f"{params['response']['status']} {params['response']['url']}")
    problems["console"] = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    problems["raw_tex"] = driver.execute_script(_RAW_TEX) if typeset else []
    problems["images"] = driver.execute_script(_BROKEN_IMAGES)
    return {k: v for k, v in problems.items() if v}


@pytest.mark.slow
def test_every_page_in_a_real_browser(browser, server: str) -> None:
    pages = ["index.html", *(f"site/{c}.html" for c in site.chapters(REPORTS)), "site/plots/index.html"]
    bad = {}
    for page in pages:
        problems = _visit(browser, f"{server}/{page}", server)
        if problems:
            bad[page] = problems
        if page == "index.html":
            browser.save_screenshot(str(_shots() / "site_index.png"))
        elif page == "site/09_maml.html":
            browser.save_screenshot(str(_shots() / "site_09_maml.png"))
    assert not bad, json.dumps(bad, indent=1)[:4000]


@pytest.mark.slow
def test_chapter_math_is_typeset(browser, server: str) -> None:
    browser.get(f"{server}/site/09_maml.html")
    assert browser.execute_async_script(_WAIT_FOR_MATH), "MathJax did not load"
    assert browser.execute_script("return document.querySelectorAll('.MathJax, .MathJax_Display').length") > 10


def _shots() -> Path:
    out = ROOT / "scratch"
    out.mkdir(exist_ok=True)
    return out
