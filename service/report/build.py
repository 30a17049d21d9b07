"""Assemble the report: analysis, figures and the page; write it to a directory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.report.analysis import SettingAnalysis, analyse
from service.report.claims import claim_rows
from service.report.figures import STRIPS, curves_figure, kinds_figure, strip_figure
from service.report.model import ReportData
from service.report.page import render_page
from service.schemas import ClaimRowPublic


@dataclass(frozen=True)
class Report:
    """The finished report: the HTML page (figures embedded), each figure's PNG, and the
    answer table's rows (what ``GET /sweeps/{id}/claims`` returns)."""

    html: str
    figures: Mapping[str, bytes]
    settings: tuple[SettingAnalysis, ...]
    claims: tuple[ClaimRowPublic, ...]


def build_report(data: ReportData) -> Report:
    """Analyse the sweep, draw every figure and render the page."""
    settings = analyse(data)
    rows = claim_rows(settings, data.threshold)
    public = tuple(ClaimRowPublic.from_row(r) for r in rows)
    images: dict[str, bytes] = {}
    if settings:
        images["kinds.png"] = kinds_figure(settings)
        for name, strip in STRIPS.items():
            images[name] = strip_figure(settings, strip, data.threshold)
        for sa in settings:
            images[f"curves-{sa.setting.slug}.png"] = curves_figure(data, sa)
    html = render_page(data, settings, images, public)
    return Report(html, images, tuple(settings), public)


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``index.html`` and every figure as a PNG file into ``out_dir``; return the page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in report.figures.items():
        (out / name).write_bytes(data)
    page = out / "index.html"
    page.write_text(report.html, encoding="utf-8")
    return page
