"""A chapter's prose about its own numbers, rendered from the values it computed.

Markdown cells keep the ideas and the math; every sentence that states a measured number (a lesson, a verdict) is a
template filled by the code that computed the number and displayed as Markdown, so no re-run leaves the prose stale
(``tests/test_markdown_numbers.py`` fails on a measured-looking number typed into a markdown cell).

    show(f"ProtoNet is ahead of the centroid by {pm(d.mean, d.ci95)} points (paired, {d.n} episodes).")
"""

from __future__ import annotations

from textwrap import dedent


def show(markdown: str) -> None:
    """Display ``markdown`` (dedented) as a Markdown cell output in a notebook; print it elsewhere."""
    text = dedent(markdown).strip()
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython comes with the notebook stack
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


def pm(mean: float, half_width: float, digits: int = 1, signed: bool = False) -> str:
    """``"97.5 ± 0.4"`` (``signed``: ``"+1.6 ± 0.3"``), for an estimate and its interval's half-width."""
    return f"{mean:{'+' if signed else ''}.{digits}f} ± {half_width:.{digits}f}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 setting"``, ``"3 settings"``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
