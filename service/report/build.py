"""Assemble the report: analysis, figures and the page; write it to a directory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service.report.analysis import SettingAnalysis, analyse
from service.report.figures import (
    curves_figure,
    epochs_strip,
    error_strip,
    image_dim_strip,
    kinds_figure,
)
from service.report.model import ReportData
from service.report.page import render_page


@dataclass(frozen=True)
class Report:
    """The finished report: the HTML page (figures embedded) and each figure's PNG."""

    html: str
    figures: Mapping[str, bytes]
    settings: tuple[SettingAnalysis, ...]


def build_report(data: ReportData) -> Report:
    """Analyse the sweep, draw every figure and render the page."""
    settings = analyse(data)
    images: dict[str, bytes] = {}
    if settings:
        images["kinds.png"] = kinds_figure(settings)
        images["image_dim.png"] = image_dim_strip(settings, data.threshold)
        images["error_strip.png"] = error_strip(settings, data.threshold)
        images["epochs_strip.png"] = epochs_strip(settings, data.threshold)
        for sa in settings:
            images[f"curves-{sa.setting.slug}.png"] = curves_figure(data, sa)
    return Report(
        render_page(data, settings, images) if settings else _empty(data), images, tuple(settings)
    )


def _empty(data: ReportData) -> str:
    from html import escape

    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" '
        f'href="data:,"><title>idemsweep report: sweep {data.sweep.id}</title></head><body>'
        f"<h1>Sweep {data.sweep.id}: {escape(data.sweep.name)}</h1><p>No runs yet.</p>"
        "</body></html>\n"
    )


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write ``index.html`` and every figure as a PNG file into ``out_dir``; return the page."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in report.figures.items():
        (out / name).write_bytes(data)
    page = out / "index.html"
    page.write_text(report.html, encoding="utf-8")
    return page
