"""The docs tell the truth: the README's runnable blocks run as written, its links lead
somewhere, it stays short, and docs/spec.md's field table is the spec model's own.

``.venv/bin/python -m tests.docs.test_docs`` rewrites the field table in docs/spec.md from
``service.spec.SweepSpec`` (the one home of the fields' descriptions and defaults).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SPEC_DOC = REPO / "docs" / "spec.md"
RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```(?:bash|sh)\n(.*?)```", re.S)
TABLE_START = "<!-- fields: generated from service.spec.SweepSpec -->\n"
TABLE_END = "<!-- end of fields -->\n"


def runnable_blocks() -> list[str]:
    """The README's fenced bash blocks preceded by ``<!-- runnable -->``."""
    return RUNNABLE.findall(README.read_text())


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.split()[1])
def test_readme_runnable_blocks_run_as_written(block: str, tmp_path: Path) -> None:
    """Each block runs in bash (errexit, pipefail) from the repository root with the
    project's .venv on PATH, as a reader who ran `make run` would; exit 0, and a block
    that asks for ``--json`` ends with a JSON line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["IDEM_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (block, done.stdout[-2000:], done.stderr[-2000:])
    if "--json" in block:
        json.loads(done.stdout.strip().splitlines()[-1])


def test_readme_is_short_starts_with_the_two_commands_and_marks_blocks() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert re.search(r"\A# idemsweep\n\n```\nmake run\nmake test\n```\n", text)
    assert len(runnable_blocks()) >= 2


def test_readme_and_docs_links_lead_to_files() -> None:
    for page in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)


def spec_field_table() -> str:
    """A Markdown table of SweepSpec's fields: name, default (or required), description."""
    from service.spec import SweepSpec

    rows = ["| field | default | what it is |", "| --- | --- | --- |"]
    for name, field in SweepSpec.model_fields.items():
        default: Any = field.default
        if default is PydanticUndefined:
            shown = "required"
        else:
            value = default.model_dump() if isinstance(default, BaseModel) else default
            shown = f"`{json.dumps(value)}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {shown} | {description} |")
    return "\n".join(rows) + "\n"


def _with_table(text: str) -> str:
    start = text.index(TABLE_START) + len(TABLE_START)
    end = text.index(TABLE_END)
    return text[:start] + spec_field_table() + text[end:]


def test_spec_doc_field_table_is_the_models() -> None:
    text = SPEC_DOC.read_text()
    assert text == _with_table(text), "run: .venv/bin/python -m tests.docs.test_docs"


if __name__ == "__main__":
    SPEC_DOC.write_text(_with_table(SPEC_DOC.read_text()))
    print(f"wrote the field table in {SPEC_DOC}")
