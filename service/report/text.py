"""The answer as plain text (printed by `idem report` and `make run`)."""

from __future__ import annotations

from collections.abc import Sequence

from service.report.analysis import SettingAnalysis
from service.report.claims import EPOCHS, ERROR, Outcome
from service.report.kinds import Kind

MODES = ("equal lr", "best lr", "matched step")
SHORT = {
    "holds": "holds",
    "holds only via null maps": "null-maps",
    "mixed": "mixed",
    "fails": "FAILS",
    "n/a": "n/a",
}


def _cell(outcome: Outcome | None) -> str:
    if outcome is None or outcome.decided == 0:
        return "n/a"
    return f"{SHORT.get(outcome.verdict, outcome.verdict)} {outcome.support}/{outcome.decided}"


def verdict_lines(settings: Sequence[SettingAnalysis]) -> list[str]:
    """One line per setting and comparison: each claim in each mode, and the kinds."""
    header = (
        f"{'setting':<24} {'a vs b':<20} "
        + " ".join(f"{'(a) ' + m:<19}" for m in MODES)
        + " "
        + " ".join(f"{'(b) ' + m:<19}" for m in MODES)
        + " null maps a/b   real projections a/b"
    )
    lines = [header]
    for sa in settings:
        s = sa.setting
        batch = "full" if s.batch_size == s.samples else f"m={s.batch_size}"
        extra = "" if s.init == "default" else f" {s.init}"
        data = "" if s.data == "gaussian-fresh" else f" {s.data}"
        name = f"{s.architecture} {batch}{data}{extra}"
        for comp in sa.comparisons:
            ka, kb = sa.kinds_by_algorithm[comp.a], sa.kinds_by_algorithm[comp.b]
            cells = [f"{_cell(comp.headline(ERROR.name, m)):<19}" for m in MODES]
            cells += [f"{_cell(comp.headline(EPOCHS.name, m)):<19}" for m in MODES]
            null = f"{ka.counts.get(Kind.null, 0)}/{kb.counts.get(Kind.null, 0)} of {ka.n}"
            real = f"{ka.real_successes}/{kb.real_successes}"
            lines.append(
                f"{name:<24} {comp.a + ' vs ' + comp.b:<20} {' '.join(cells)} {null:<15} {real}"
            )
    return lines
