"""The answer at a glance, from the claim rows: the page's summary table and the plain text
printed by `idem report` and `make run`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from service.comparison import Verdict
from service.report.analysis import Setting
from service.report.claims import CLAIMS, Way
from service.schemas import ClaimRowPublic

# Short forms of the verdicts for the terminal.
SHORT = {
    Verdict.holds: "holds",
    Verdict.holds_via_null_maps: "null-maps",
    Verdict.fails: "FAILS",
    Verdict.no_difference: "n.d.",
    Verdict.no_pairs: "no pairs",
    Verdict.not_asked: "too few seeds",
}


def row_setting(row: ClaimRowPublic) -> Setting:
    """The setting a claim row belongs to."""
    return Setting(row.architecture, row.samples, row.batch_size, row.data, row.init, row.optimizer)


def comparison_label(row: ClaimRowPublic) -> str:
    """'modified vs ordinary', or for a dimension row 'data: gaussian-fresh vs
    gaussian-fixed (modified)'."""
    if row.dimension == "algorithm":
        return f"{row.a} vs {row.b}"
    return f"{row.dimension}: {row.a} vs {row.b} ({row.algorithm})"


@dataclass
class Glance:
    """One setting and comparison: the verdicts of its rows per (claim, way)."""

    setting: Setting
    a: str
    b: str
    label: str
    cells: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def verdicts(self, claim: str, way: str) -> list[str]:
        return self.cells.get((claim, way), [])


def glance(rows: Sequence[ClaimRowPublic]) -> list[Glance]:
    """The rows grouped by setting and comparison, in row order."""
    out: dict[tuple[Setting, str], Glance] = {}
    for row in rows:
        s, label = row_setting(row), comparison_label(row)
        g = out.setdefault((s, label), Glance(s, row.a, row.b, label))
        g.cells.setdefault((row.claim, row.way), []).append(row.verdict)
    return list(out.values())


def tally(verdicts: Sequence[str], short: bool = False) -> str:
    """'holds' for one row; for several (one per learning rate) 'holds 2/3 · fails 1/3'."""
    names = [SHORT.get(Verdict(v), v) if short else v for v in verdicts]
    if not names:
        return "–"
    if len(names) == 1:
        return names[0]
    counts = {v: names.count(v) for v in dict.fromkeys(names)}
    return " · ".join(f"{v} {c}/{len(names)}" for v, c in counts.items())


def verdict_lines(rows: Sequence[ClaimRowPublic]) -> list[str]:
    """One line per setting and comparison: each claim asked each way."""
    ways = [w.value for w in Way]
    header = f"{'setting':<34} {'a vs b':<20} " + " ".join(
        f"{f'({c.key}) {w}':<22}" for c in CLAIMS for w in ways
    )
    lines = [header]
    for g in glance(rows):
        s = g.setting
        batch = "full" if s.batch_size == s.samples else f"m={s.batch_size}"
        name = f"{s.architecture} {batch} {s.data} {s.init}"
        if s.optimizer != "sgd":
            name += f" {s.optimizer}"
        cells = [f"{tally(g.verdicts(c.key, w), short=True):<22}" for c in CLAIMS for w in ways]
        lines.append(f"{name:<34} {g.label:<20} {' '.join(cells)}")
    return lines
