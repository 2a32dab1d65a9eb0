"""The report site: every chapter's executed notebook as a page that renders offline, an index, and the README's
chapter table, all generated from what the pipeline committed.

* ``reports/site/<chapter>.html``: the executed notebook ``reports/notebooks/<chapter>.ipynb`` rendered with
  nbconvert's ``lab`` template, with MathJax served from a copy of the installed ``jupyter_server_mathjax`` package
  (``reports/site/mathjax/``) instead of a CDN, and without require.js and mermaid (no chapter uses widgets or
  diagrams), so that no page requests anything off the machine.
* ``reports/site/plots/index.html``: ``dvc plots show`` (its template inlines vega; see ``.dvc/plots``).
* ``reports/index.html``: a card per chapter with its title, its headline numbers from ``reports/results.csv``, each
  beside its paper's number (:mod:`metalearn.study.papers`; "n.c." where the paper measured under another protocol),
  and one of its figures, linking the chapter page and the plots page. The summary chapter's card counts the deck's
  claims by verdict, as the chapter does (:func:`metalearn.study.claims.count_verdicts` over
  :func:`~metalearn.study.claims.judge_all` on the results and the chapters' per-unit scores, ``reports/episodes``).
* The README's chapter table, between ``<!-- chapters:start -->`` and ``<!-- chapters:end -->``, is the same headline
  numbers as markdown (``python -m metalearn.study.site --readme README.md``); a test fails when the two disagree.

Run as the DVC stage ``site``: ``python -m metalearn.study.site``.
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from metalearn.core.files import atomic_path
from metalearn.study import claims, papers
from metalearn.study.chapters import BY_NOTEBOOK

ROOT = Path(__file__).resolve().parents[3]
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
# the parts of MathJax 2.7 the pages load: the combined TeX configuration, HTML-CSS output in the STIX-Web fonts the
# package ships (its other web fonts are switched off in the page's MathJax configuration, see _TEMPLATE), the menu
# and zoom extensions; no a11y, no SVG output, no localisation (English is built in)
MATHJAX_PARTS = ("MathJax.js", "LICENSE", "config", "extensions", "jax/input/TeX", "jax/element", "jax/output/HTML-CSS",
                 "fonts")
MODELS_BUDGET_MB = 80  # what the committed study-scale models may take in the working tree
# the metrics a headline may show, in order of preference
HEADLINE_METRICS = ("accuracy", "delta_auprc", "roc_auc", "instance_accuracy", "mse")

# nbconvert's lab page with the offline MathJax configured for TeX input and SVG output, without the require.js and
# mermaid scripts that the lab template loads from CDNs, and with an empty icon (no favicon request)
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<link rel="icon" href="data:,">
<script type="text/x-mathjax-config">
// no web fonts but STIX-Web, which the package ships: empty the rules of a blank font probed at about:blank (a
// cross-origin load Chromium refuses) and of the native-MathML TeX fonts the package does not have
var local = {src: "local('MathJax_None')"}, noFonts = {};
for (var i = 1; i <= 6; i++) noFonts["@font-face /*" + i + "*/"] = local;
MathJax.Hub.Config({MMLorHTML: {prefer: "HTML"}, NativeMML: {styles: noFonts},
                    "HTML-CSS": {availableFonts: [], imageFont: null, preferredFont: null, webFont: "STIX-Web",
                                 styles: {"@font-face": local}}});
</script>
{{ super() }}
{%- endblock html_head_js_mathjax -%}
"""


def chapters(reports: Path) -> list[str]:
    """The chapters with an executed notebook in ``reports/notebooks``, in order."""
    return sorted(p.stem for p in (reports / "notebooks").glob("[0-9][0-9]_*.ipynb") if "." not in p.stem)


def title(notebook: Path) -> str:
    """The first markdown heading of a notebook, without the ``#``."""
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    raise ValueError(f"{notebook} has no markdown heading: give its first markdown cell a '# NN · title' line")


def render_chapter(notebook: Path, out: Path) -> None:
    """Render an executed notebook to ``out`` (an HTML page that loads MathJax from ``mathjax/`` beside it)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"site.html.j2": _TEMPLATE})],
                            template_file="site.html.j2", mathjax_url=MATHJAX_URL)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    with atomic_path(out) as tmp:
        tmp.write_text(body)


def copy_mathjax(dest: Path) -> None:
    """Copy the parts of the installed MathJax (``jupyter_server_mathjax``) that the pages load into ``dest``."""
    try:
        import jupyter_server_mathjax
    except ImportError:
        raise RuntimeError("the report site needs MathJax from the package jupyter-server-mathjax: "
                           "pip install -e '.[dev]' (or make setup)") from None
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in MATHJAX_PARTS:
        src = static / part
        if src.is_dir():
            shutil.copytree(src, tmp / part, ignore=shutil.ignore_patterns("a11y"))
        else:
            (tmp / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, tmp / part)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _setting(row: pd.Series) -> str:
    parts = [str(row["dataset"])]
    if pd.notna(row["ways"]) and pd.notna(row["shots"]) and row["metric"] not in ("delta_auprc", "roc_auc"):
        parts.append(f"{int(row['ways'])}w{int(row['shots'])}s")
    elif pd.notna(row["ways"]):
        parts.append(f"{int(row['ways'])}-way")
    if pd.notna(row["shots"]) and row["metric"] in ("delta_auprc", "roc_auc"):
        parts.append(f"k={int(row['shots'])}")
    if pd.notna(row.get("instance")):
        parts.append(f"instance {int(row['instance'])}")
    if pd.notna(row.get("adapt_steps")):
        parts.append(f"{int(row['adapt_steps'])} steps")
    return " ".join(parts)


def headline_rows(results: pd.DataFrame, notebook: str, limit: int = 6) -> tuple[str, pd.DataFrame, int]:
    """A chapter's headline: its main method and metric (:mod:`metalearn.study.chapters`'s table) at study scale, up to
    ``limit`` of its rows (one per setting) and the digits its numbers are written with; ``("", <no rows>, 1)`` for a
    chapter without rows."""
    rows = results[(results["notebook"] == notebook) & (results["scale"] == "study")
                   & results["metric"].isin(HEADLINE_METRICS) & results["variant"].isna()
                   & results["trained_on"].isna()]
    if rows.empty:
        return "", rows, 1
    entry = BY_NOTEBOOK.get(notebook)
    method, metric = (entry.method, entry.metric) if entry and entry.method else (rows["method"].iloc[0], None)
    rows = rows[rows["method"] == method]
    metric = metric or next(m for m in HEADLINE_METRICS if (rows["metric"] == m).any())
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        raise ValueError(f"{notebook} has no study rows of {method!r} in {metric!r}: update the chapter table "
                         "(metalearn.study.chapters)")
    rows = rows.drop_duplicates(["dataset", "ways", "shots", "instance"])
    return f"{method} ({metric})", rows.head(limit), 3 if metric in ("delta_auprc", "mse") else 1


def headline(results: pd.DataFrame, notebook: str, limit: int = 6) -> tuple[str, list[str]]:
    """A chapter's headline (:func:`headline_rows`) as ``"<setting>: <value> ± <ci95>"``, one per setting."""
    method, rows, digits = headline_rows(results, notebook, limit)
    return method, [f"{_setting(r)}: {r['value']:.{digits}f} ± {r['ci95']:.{digits}f}" for _, r in rows.iterrows()]


def _int(value: object) -> int | None:
    return None if pd.isna(value) else int(value)  # type: ignore[call-overload]


def paper_number(row: pd.Series, notebook: str) -> papers.PaperNumber | None:
    """The published number a headline row stands beside: the chapter's own entry for exactly the row's method,
    setting, metric and qualifiers (:func:`metalearn.study.papers.lookup`), else, for a catalogued method's plain
    accuracy row in its home chapter, :func:`~metalearn.study.papers.reference_for`'s (its transductive entry, marked
    not comparable); ``None`` where no paper reports the setting."""
    method, dataset, ways, shots = str(row["method"]), str(row["dataset"]), _int(row["ways"]), _int(row["shots"])
    instance, steps = _int(row.get("instance")), _int(row.get("adapt_steps"))
    own = papers.lookup(method, dataset, ways, shots, str(row["metric"]), notebook=notebook, instance=instance,
                        adapt_steps=steps)
    if own is not None or instance is not None or steps is not None or ways is None or shots is None:
        return own
    home = papers.METHODS.get(method)
    if home is None or home.notebook != notebook:
        return None
    return papers.reference_for(method, dataset, ways, shots, str(row["metric"]))


def _paper_cell(p: papers.PaperNumber | None) -> str:
    """A paper's number as its table prints it, "n.c." where it is not comparable, "–" where there is none."""
    return "–" if p is None else f"{p.value:g}" + ("" if p.comparable else " n.c.")


def claim_counts(results: pd.DataFrame, reports: Path) -> dict[str, int]:
    """The deck's claims judged on ``results`` and the chapters' per-unit scores (``reports/episodes``), counted by
    verdict: the numbers the summary chapter renders (:func:`metalearn.study.claims.count_verdicts`)."""
    return claims.count_verdicts(claims.judge_all(claims.Results(results, reports / "episodes")))


def readme_table(results: pd.DataFrame, reports: Path) -> str:
    """The README's chapter table (markdown), from the executed notebooks' titles and ``results``."""
    lines = ["| # | chapter | main method (metric) | headline numbers, study scale (± 95% CI) |", "|---|---|---|---|"]
    for chapter in chapters(reports):
        name = title(reports / "notebooks" / f"{chapter}.ipynb").split("·", 1)[-1].strip()
        method, items = headline(results, chapter)
        lines.append(f"| {chapter[:2]} | [`{chapter}`](notebooks/{chapter}.ipynb): {name} | {method or '–'} | "
                     f"{'; '.join(items) or 'no rows: reads the others'} |")
    return "\n".join(lines)


def model_sizes_table(models: Path, budget_mb: float = MODELS_BUDGET_MB) -> str:
    """The README's table of the committed models' sizes (markdown): per chapter the number of models, their size
    on disk and the largest one; the total against ``budget_mb``."""
    lines = ["| chapter | models | MB | largest |", "|---|---|---|---|"]
    total = 0.0
    for folder in sorted(p for p in models.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        files = sorted(folder.glob("*.pt"), key=lambda p: (-p.stat().st_size, p.name))
        if not files:
            continue
        size = sum(p.stat().st_size for p in files) / 1e6
        total += size
        lines.append(f"| {folder.name} | {len(files)} | {size:.1f} | {files[0].stem} "
                     f"({files[0].stat().st_size / 1e6:.1f} MB) |")
    lines.append(f"| all | {sum(1 for _ in models.glob('[0-9]*/*.pt'))} | {total:.1f} | budget {budget_mb:g} MB |")
    return "\n".join(lines)


def update_readme(readme: Path, table: str, block: str = "chapters") -> bool:
    """Write ``table`` between the README's ``<!-- block:start -->`` and ``<!-- block:end -->`` markers; return
    whether the README changed."""
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} block to hold the {block} table")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{table}\n{end}{tail}"
    if new != text:
        with atomic_path(readme) as tmp:
            tmp.write_text(new)
    return new != text


def _figure(reports: Path, chapter: str) -> str | None:
    folder = reports / "figures" / chapter
    entry = BY_NOTEBOOK.get(chapter)
    wanted = folder / f"{entry.figure if entry and entry.figure else ''}.png"
    if wanted.is_file():
        return wanted.relative_to(reports).as_posix()
    found = sorted(folder.glob("*.png"))
    return found[0].relative_to(reports).as_posix() if found else None


def index_page(results: pd.DataFrame, reports: Path) -> str:
    """``reports/index.html``: a card per chapter and a link to the plots page; every link is relative."""
    cards = []
    for chapter in chapters(reports):
        name = html.escape(title(reports / "notebooks" / f"{chapter}.ipynb"))
        entry = BY_NOTEBOOK.get(chapter)
        if entry is not None and entry.family == "summary":
            method = "the deck's claims, by verdict (metalearn.study.claims)"
            counts = claim_counts(results, reports)
            numbers = ('<table class="numbers"><tr><th>verdict</th><th>claims</th></tr>'
                       + "".join(f"<tr><td>{html.escape(kind)}</td><td>{n}</td></tr>" for kind, n in counts.items())
                       + "</table>")
        else:
            method, rows, digits = headline_rows(results, chapter)
            numbers = "".join(
                f"<tr><td>{html.escape(_setting(r))}</td><td>{r['value']:.{digits}f} ± {r['ci95']:.{digits}f}</td>"
                f"<td>{html.escape(_paper_cell(paper_number(r, chapter)))}</td></tr>" for _, r in rows.iterrows())
            numbers = (f'<table class="numbers"><tr><th>setting</th><th>ours</th><th>paper</th></tr>{numbers}</table>'
                       if numbers else "")
        figure = _figure(reports, chapter)
        img = f'<img src="{figure}" alt="{html.escape(chapter)}: figure" loading="eager">' if figure else ""
        cards.append(f'<section class="card"><h2><a href="site/{chapter}.html">{name}</a></h2>'
                     f'<p class="method">{html.escape(method)}</p>{numbers}{img}</section>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>metalearn: the study's reports</title><link rel="icon" href="data:,">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(21em, 1fr)); gap: 1em; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 0.8em; }}
.card h2 {{ font-size: 1.05em; margin: 0 0 0.3em; }}
.numbers {{ font-size: 0.85em; border-collapse: collapse; margin: 0.4em 0; }}
.numbers th, .numbers td {{ padding: 0.1em 0.6em 0.1em 0; text-align: left; }} .numbers th {{ color: #555; }}
.card img {{ width: 100%; max-height: 16em; object-fit: contain; }} .method {{ color: #555; font-size: 0.85em; margin: 0; }}
</style></head>
<body>
<h1>metalearn: a reproducible study of meta-learning</h1>
<p>Every chapter as executed by <code>dvc repro</code> at study scale, its headline numbers from
<code>results.csv</code> (mean ± 95% CI over the test episodes or assays) beside the paper's number ("n.c.": measured
under another protocol, not comparable; "–": no paper reports it) and one of its figures.
Training and validation curves of every chapter: <a href="site/plots/index.html">the DVC plots page</a>.</p>
<div class="grid">
{chr(10).join(cards)}
</div>
</body></html>
"""


def build(reports: Path = ROOT / "reports", plots: bool = True) -> list[Path]:
    """Render every chapter page, copy MathJax, render the plots page (``dvc plots show``) and write the index."""
    site = reports / "site"
    site.mkdir(parents=True, exist_ok=True)
    results = pd.read_csv(reports / "results.csv")
    written = []
    for chapter in chapters(reports):
        render_chapter(reports / "notebooks" / f"{chapter}.ipynb", site / f"{chapter}.html")
        written.append(site / f"{chapter}.html")
    copy_mathjax(site / "mathjax")
    if plots:
        subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(site / "plots")], cwd=reports.parent,
                       check=True, stdout=subprocess.DEVNULL)
        written.append(site / "plots" / "index.html")
    with atomic_path(reports / "index.html") as tmp:
        tmp.write_text(index_page(results, reports))
    return [*written, reports / "index.html"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, default=ROOT / "reports")
    parser.add_argument("--readme", type=Path, help="only rewrite this README's chapter and model-size tables")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--no-plots", action="store_true", help="skip the DVC plots page")
    args = parser.parse_args(argv)
    if args.readme:
        changed = update_readme(args.readme, readme_table(pd.read_csv(args.reports / "results.csv"), args.reports))
        changed |= update_readme(args.readme, model_sizes_table(args.models), "model-sizes")
        print(f"{args.readme}: {'tables updated' if changed else 'tables already current'}")
        return 0
    for path in build(args.reports, plots=not args.no_plots):
        print("wrote", path.relative_to(args.reports.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
