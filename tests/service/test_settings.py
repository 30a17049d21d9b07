"""Settings: list values in three spellings, and one line (exit 2) for any bad value.

The bad-value test is parametrized over ``Settings.model_fields``, so a new setting is
tried automatically (and fails here until a bad value can be derived for its type).
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.settings import Settings, SettingsInvalid, env_name, load_settings

COMMANDS = ("api", "worker", "up")


def bad_value(field: str, tmp_path: Path) -> str:
    """A value the setting must refuse, derived from its declared type."""
    annotation = Settings.model_fields[field].annotation
    types = set(typing.get_args(annotation)) or {annotation}
    origin = typing.get_origin(annotation)
    if origin is list:
        return '["unclosed'
    if bool in types:
        return "maybe"
    if int in types:
        return "many"
    if float in types:
        return "soon"
    if Path in types:
        afile = tmp_path / "a-file"
        afile.write_text("not a directory")
        return str(afile)
    if str in types or SecretStr in types:
        # Every string setting refuses control characters (a pasted newline or tab).
        return "two\tparts"
    raise AssertionError(f"no bad value for {field} ({annotation}): extend bad_value()")


@pytest.mark.slow  # 3 subprocesses per setting
@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_a_bad_value_stops_every_command_in_one_line(field: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
    variable = env_name(field)
    env[variable] = bad_value(field, tmp_path)
    env["IDEM_DATA_DIR"] = env.get("IDEM_DATA_DIR") or str(tmp_path / "data")
    if field == "data_dir":
        env["IDEM_DATA_DIR"] = bad_value(field, tmp_path)
    procs = {
        cmd: subprocess.Popen(
            [sys.executable, "-m", "idemsweep", cmd],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in COMMANDS
    }
    for cmd, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (cmd, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and out == "", (cmd, out, err)
        assert lines[0].startswith(f"idem {cmd}: error: {variable}"), lines[0]
        assert f"e.g. {variable}=" in lines[0]  # an example of a good value
        assert "Traceback" not in err


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("s3cret", ["s3cret"]),
        ("one, two,three", ["one", "two", "three"]),
        ('["one", "two"]', ["one", "two"]),
        ("", []),
    ],
)
def test_api_tokens_one_comma_separated_or_json(
    raw: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDEM_API_TOKENS", raw)
    monkeypatch.setenv("IDEM_CORS_ORIGINS", raw)
    settings = load_settings()
    assert [t.get_secret_value() for t in settings.api_tokens] == expected
    assert settings.cors_origins == expected


@pytest.mark.parametrize("raw", ["a,,b ,c d", "[1, 2]", '["a", "b c"]'])
def test_bad_tokens_are_refused_without_echoing_them(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDEM_API_TOKENS", raw)
    with pytest.raises(SettingsInvalid) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("IDEM_API_TOKENS:") and "\n" not in message
    assert raw not in message and "b c" not in message


def test_every_setting_has_a_description_and_an_example() -> None:
    for name, info in Settings.model_fields.items():
        assert info.description, name
        assert info.examples, name
        Settings.model_validate({name: info.examples[0]})  # the example itself is valid


def test_docs_table_matches_the_settings() -> None:
    from service.settings import markdown_table

    docs = (Path(__file__).parents[2] / "docs" / "settings.md").read_text()
    assert markdown_table() in docs
