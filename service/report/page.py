"""The report as one self-contained HTML page (figures embedded as PNG data URIs).

No scripts and no external resources: the page renders offline, from a file or from the
API, and a browser has nothing to fetch (the empty data-URI icon stops a favicon request).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from html import escape

from service.report.analysis import Comparison, SettingAnalysis
from service.report.claims import ERROR, HOLDS, MATCH_FACTOR, REL_TOL, Outcome
from service.report.kinds import KIND_ORDER, Kind, count_kinds
from service.report.model import ReportData

NULL_MAP_WARNING = (
    "A tiny idempotent error from the null map is not a success. The null (or constant) "
    "map n(x) = 0 is trivially idempotent, and the note itself observes that the recurrence "
    "3A² − 2A³ sends every eigenvalue below 1/2 to 0; with PyTorch's default initialization "
    "most eigenvalues start there. A run counts as a real success only when it reaches the "
    "threshold at a real projection (0 < image dimension < d)."
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1250px;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.holds{background:#e3f4e3}.fails{background:#f8e0e0}.mixed{background:#fbf3d9}
.nullmaps{background:#e8e8e8}.na{color:#888}
.warn{border-left:5px solid #d62728;background:#fff4f4;padding:.6em 1em;margin:1em 0}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}pre{background:#f6f6f6;padding:1em;overflow:auto;
font-size:.8em}small{color:#666}
"""

MODES = ("equal lr", "best lr", "matched step")


def _cls(verdict: str) -> str:
    if verdict.startswith("holds only"):
        return "nullmaps"
    return {"holds": "holds", "fails": "fails", "mixed": "mixed"}.get(verdict, "na")


def verdict_cell(outcome: Outcome | None) -> str:
    """A table cell: the verdict, and how many decided pairs support the claim."""
    if outcome is None:
        return '<td class="na">n/a</td>'
    detail = f"{outcome.support}/{outcome.decided} pairs" if outcome.decided else "no pairs"
    return (
        f'<td class="l {_cls(outcome.verdict)}">{escape(outcome.verdict)}'
        f"<br><small>{detail}</small></td>"
    )


def _num(value: float | None, fmt: str = ".3g") -> str:
    return "–" if value is None else format(value, fmt)


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole}" if whole else "–"


def figure(name: str, images: Mapping[str, bytes], caption: str) -> str:
    """An <img> with the PNG embedded, and a caption naming the file written beside it."""
    data = base64.b64encode(images[name]).decode()
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)} <small>({escape(name)})</small></figcaption></figure>"
    )


def verdict_table(settings: Sequence[SettingAnalysis]) -> str:
    """The answer in one table: each claim in each mode, per setting and comparison."""
    head = (
        '<tr><th class="l" rowspan="2">setting</th><th class="l" rowspan="2">a vs b</th>'
        '<th colspan="3">(a) as good or better idempotent error</th>'
        '<th colspan="3">(b) fewer epochs to the threshold</th>'
        '<th colspan="3">a / b runs ending at</th></tr><tr>'
        + "".join(f"<th>{m}</th>" for m in MODES) * 2
        + "<th>null map</th><th>real projection ✓</th><th>diverged</th></tr>"
    )
    rows = []
    for sa in settings:
        for comp in sa.comparisons:
            ka, kb = sa.kinds_by_algorithm[comp.a], sa.kinds_by_algorithm[comp.b]
            cells = [verdict_cell(comp.headline(ERROR.name, m)) for m in MODES]
            cells += [verdict_cell(comp.headline("epochs_to_threshold", m)) for m in MODES]
            cells.append(
                f"<td>{_pct(ka.counts.get(Kind.null, 0), ka.n)} / "
                f"{_pct(kb.counts.get(Kind.null, 0), kb.n)}</td>"
            )
            cells.append(
                f"<td>{_pct(ka.real_successes, ka.n)} / {_pct(kb.real_successes, kb.n)}</td>"
            )
            cells.append(
                f"<td>{_pct(ka.counts.get(Kind.diverged, 0), ka.n)} / "
                f"{_pct(kb.counts.get(Kind.diverged, 0), kb.n)}</td>"
            )
            rows.append(
                f'<tr><td class="l"><a href="#{sa.setting.slug}">{escape(sa.setting.title())}</a>'
                f'</td><td class="l">{escape(comp.a)} vs {escape(comp.b)}</td>{"".join(cells)}</tr>'
            )
    if not rows:
        return "<p>No setting has two algorithms to compare.</p>"
    return f"<table>{head}{''.join(rows)}</table>"


def kinds_table(settings: Sequence[SettingAnalysis], threshold: float) -> str:
    """Per setting and algorithm (all learning rates): how the runs ended."""
    head = (
        '<tr><th class="l">setting</th><th class="l">algorithm</th><th>runs</th>'
        + "".join(f"<th>{k.value}</th>" for k in KIND_ORDER)
        + "<th>median image_dim</th></tr>"
    )
    rows = []
    for sa in settings:
        for alg in sa.algorithms:
            kc = sa.kinds_by_algorithm[alg]
            cells = "".join(f"<td>{kc.counts.get(k, 0)}</td>" for k in KIND_ORDER)
            rows.append(
                f'<tr><td class="l">{escape(sa.setting.title())}</td><td class="l">'
                f"{escape(alg)}</td><td>{kc.n}</td>{cells}"
                f"<td>{_num(kc.median_image_dim)}</td></tr>"
            )
    return f"<table>{head}{''.join(rows)}</table>"


def comparison_table(comp: Comparison) -> str:
    """Every outcome of one comparison: per learning rate, pooled, best lr, matched step."""
    head = (
        '<tr><th class="l" rowspan="2">pairs by seed at</th>'
        '<th colspan="7">(a) idempotent error</th><th colspan="7">(b) epochs to threshold</th>'
        "</tr><tr>"
        + (
            "<th>pairs</th><th>a better</th><th>b better</th><th>tie</th><th>median Δ</th>"
            "<th>p</th><th>verdict</th>"
        )
        * 2
        + "</tr>"
    )
    rows = []
    for err, eps in zip(comp.error, comp.epochs, strict=True):
        label = err.label if err.label == eps.label else f"{err.label} / {eps.label}"
        cells = ""
        for o in (err, eps):
            cells += (
                f"<td>{o.pairs}</td><td>{o.a_wins}</td><td>{o.b_wins}</td><td>{o.ties}</td>"
                f"<td>{_num(o.median_diff, '+.3g')}</td><td>{_num(o.p_value, '.2g')}</td>"
                f'<td class="l {_cls(o.verdict)}">{escape(o.verdict)}</td>'
            )
        mode = "" if err.mode == "lr" else f"<b>{escape(err.mode)}</b>: "
        rows.append(f'<tr><td class="l">{mode}{escape(label)}</td>{cells}</tr>')
    return (
        f"<p><b>{escape(comp.a)}</b> (a) vs <b>{escape(comp.b)}</b> (b). Median Δ: "
        "log10(error a / error b) for (a), epochs a − epochs b for (b), over pairs where "
        "both values are finite; negative favours a.</p>"
        f"<table>{head}{''.join(rows)}</table>"
    )


def memorization_table(data: ReportData, settings: Sequence[SettingAnalysis]) -> str:
    """Train vs held-out idempotent error (fixed data): a large gap means memorizing."""
    rows = []
    for sa in settings:
        for alg in sa.algorithms:
            for lr in sa.learning_rates:
                runs = [t for t in sa.runs(alg, lr) if t.train_idempotent_error is not None]
                if not runs:
                    continue
                train = sorted(t.train_idempotent_error or 0.0 for t in runs)
                held = sorted(t.idempotent_error or 0.0 for t in runs)
                mt, mh = train[len(train) // 2], held[len(held) // 2]
                ratio = mh / mt if mt > 0 else None
                rows.append(
                    f'<tr><td class="l">{escape(sa.setting.title())}</td><td class="l">'
                    f"{escape(alg)}</td><td>{lr:g}</td><td>{len(runs)}</td><td>{_num(mt)}</td>"
                    f"<td>{_num(mh)}</td><td>{_num(ratio)}</td></tr>"
                )
    if not rows:
        return ""
    return (
        "<h2>Memorizing? Training-set vs held-out idempotent error</h2>"
        "<p>With fixed data the error is measured on the training samples and on held-out "
        "samples; a held-out error far above the training error means the network learned "
        "the training points, not an idempotent map.</p><table><tr>"
        '<th class="l">setting</th><th class="l">algorithm</th><th>lr</th><th>runs</th>'
        "<th>median train error</th><th>median held-out error</th><th>held-out / train</th>"
        f"</tr>{''.join(rows)}</table>"
    )


def null_map_summary(data: ReportData) -> str:
    """How many runs of each algorithm ended at each kind, over the whole sweep."""
    parts = []
    for alg in sorted({t.algorithm for t in data.trials}):
        kc = count_kinds([t for t in data.trials if t.algorithm == alg], data.threshold)
        parts.append(
            f"<b>{escape(alg)}</b>: {kc.counts.get(Kind.null, 0)} of {kc.n} runs ended at the "
            f"null map, {kc.counts.get(Kind.identity, 0)} at the identity, "
            f"{kc.counts.get(Kind.projection, 0)} at a real projection, "
            f"{kc.counts.get(Kind.unconverged, 0)} were not idempotent yet (error above the "
            "threshold), "
            f"{kc.counts.get(Kind.diverged, 0)} diverged"
        )
    return "<ul>" + "".join(f"<li>{p}.</li>" for p in parts) + "</ul>"


def method_notes(threshold: float) -> str:
    return f"""<h2>How the claims are answered</h2><ul>
<li><b>Pairs.</b> Two runs form a pair when they share everything but the algorithm
(architecture, batch configuration, data, initialization and seed: the same seed means the
same initial weights and the same data).</li>
<li><b>Equal learning rate</b>: pairs at the same learning rate (per rate, and pooled).
<b>Best learning rate</b>: each algorithm at the rate with its best median value (diverged
or never-reached runs count as worst). <b>Matched step</b>: the algorithms' gradients differ
in size, so equal rates are not equal steps; each rate of a is matched with the rate of b
whose median first-epoch update norm (‖Δθ‖ after epoch 1) is nearest, when within a factor
of {MATCH_FACTOR:g}.</li>
<li><b>(a) as good or better</b>: a's final idempotent error is lower, or equal within
{REL_TOL:.0%} (both below 1e-12 count as equal). A diverged run has infinite error; pairs
where both diverged decide nothing. <b>(b) fewer epochs</b>: a reached the threshold
({threshold:g}) in strictly fewer epochs; pairs where neither reached it decide nothing.</li>
<li><b>Verdict</b>: <i>holds</i> when the claim is true in at least {HOLDS:.0%} of the
decided pairs, <i>fails</i> under half, <i>mixed</i> in between; <i>holds only via null
maps</i> when most supporting pairs are runs of a that collapsed to the null map.
p is the two-sided Wilcoxon signed-rank test of the paired differences (with 5 seeds it can
not go below 0.0625: read the counts and the strip plots, not only p).</li>
<li><b>Kinds of solution</b>, for runs whose final idempotent error is below the
threshold (above it the map is <i>not idempotent</i> yet), from the final map's image
dimension (the trace of its Jacobian at points of its image): null map ≤ 0.5, identity
≥ d − 0.5, a real projection in between. Only the last is a real success.</li>
</ul>"""


def render_page(
    data: ReportData, settings: Sequence[SettingAnalysis], images: Mapping[str, bytes]
) -> str:
    """The whole report page."""
    sweep = data.sweep
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(sweep.trials_by_status.items()))
    sections = [
        f"<h1>Sweep {sweep.id}: {escape(sweep.name)}</h1>",
        f"<p>Status <b>{escape(str(sweep.status))}</b> · {sweep.trial_count} runs ({by_status})"
        f" · created {sweep.created_at:%Y-%m-%d %H:%M} · finished "
        f"{sweep.finished_at.strftime('%Y-%m-%d %H:%M') if sweep.finished_at else '–'}</p>",
        "<p>The note claims that for each network configuration modified backpropagation "
        "(a) finds as good or better solutions, in idempotent error, than ordinary "
        "backpropagation and (b) finds them in fewer epochs. Each claim is answered per "
        "architecture and batch configuration, paired by seed, three ways.</p>",
        f'<div class="warn"><b>Null maps.</b> {NULL_MAP_WARNING}</div>',
        null_map_summary(data),
        "<h2>The answer</h2>",
        verdict_table(settings),
        "<h2>What kind of solution each run found</h2>",
        figure("kinds.png", images, "Runs per kind of solution"),
        kinds_table(settings, data.threshold),
        figure("image_dim.png", images, "Image dimension of each run's final map"),
        "<h2>Every run</h2>",
        figure("error_strip.png", images, "Final idempotent error per run"),
        figure("epochs_strip.png", images, "Epochs to the threshold per run"),
        memorization_table(data, settings),
        "<h2>Per setting: curves and comparison tables</h2>",
    ]
    for sa in settings:
        sections.append(f'<h3 id="{sa.setting.slug}">{escape(sa.setting.title())}</h3>')
        sections.append(figure(f"curves-{sa.setting.slug}.png", images, "Idempotent error"))
        sections.extend(comparison_table(c) for c in sa.comparisons)
    sections.append(method_notes(data.threshold))
    sections.append("<h2>The spec that produced this sweep</h2>")
    sections.append(f"<pre>{escape(json.dumps(sweep.spec, indent=2, sort_keys=True))}</pre>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>idemsweep report: sweep {sweep.id} '
        f"{escape(sweep.name)}</title><style>{CSS}</style></head><body>"
        + "\n".join(s for s in sections if s)
        + "</body></html>\n"
    )
