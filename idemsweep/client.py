"""A Python client for the idemsweep API, for notebooks and for the ``idem`` CLI.

>>> from idemsweep.client import Client
>>> c = Client("http://127.0.0.1:8000")            # token="..." when the API wants one
>>> created = c.submit("specs/paper-cpu.yaml")      # or a dict; retried safely (key)
>>> sweep = c.wait(created["id"])                    # polls, with a progress bar
>>> trials = c.trials(created["id"], algorithm="modified")   # pandas.DataFrame
>>> epochs = c.epochs(created["id"])                 # every epoch row, a DataFrame

Tables travel as Parquet (``format=parquet``) and arrive as DataFrames; everything else
is the API's JSON. A 4xx/5xx answer raises an :class:`ApiError` subclass chosen by status
(``NotFound``, ``Conflict``, ``Unauthorized``, ``InvalidRequest``) whose message is the
API's own; an unreachable server raises :class:`Unreachable`. pandas is imported only by
the methods that return DataFrames, so the CLI starts fast.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_URL = "http://127.0.0.1:8000"
# Sweep statuses after which nothing changes any more.
FINAL_SWEEP_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# Trial statuses still to run (the rest count as done in a progress bar).
UNFINISHED_TRIAL_STATUSES = frozenset({"pending", "running"})
SUMMARY_BY = "architecture,algorithm,learning_rate,batch_size"
Table = Literal["trials", "epochs"]
TableFormat = Literal["csv", "parquet"]


class ClientError(Exception):
    """Something the client could not do; the message says what, in one line."""


class SpecFileError(ClientError):
    """The spec file cannot be read or is not a spec (no request was sent)."""


class Unreachable(ClientError):
    """The server did not answer (refused, timed out or cut off)."""


class ApiError(ClientError):
    """The API answered with an error status; ``detail`` is its error body's detail."""

    def __init__(self, status_code: int, detail: Any, reason: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        super().__init__(f"{status_code}: {error_text(detail) or reason or 'error'}")


class Unauthorized(ApiError):
    """401: the API wants a bearer token (``Client(url, token=...)``), got none or a wrong one."""


class NotFound(ApiError):
    """404: no such sweep or trial."""


class Conflict(ApiError):
    """409: the request conflicts with the sweep's state (finished, running, reused)."""


class InvalidRequest(ApiError):
    """422: a field or parameter is invalid; ``detail`` lists each with its path."""


class ServerError(ApiError):
    """5xx: the server failed or its database is away (retry later)."""


ERRORS_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
}


def error_text(detail: Any) -> str:
    """One line from an error body's detail: the message, or each field path with its
    problem (``epochs: Input should be greater than 0``)."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if not isinstance(item, dict):
                parts.append(str(item))
                continue
            loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
            parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts)
    return "" if detail is None else str(detail)


def api_error(response: httpx.Response) -> ApiError:
    """The typed error for an error response."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    code = response.status_code
    cls = ERRORS_BY_STATUS.get(code, ServerError if code >= 500 else ApiError)
    return cls(code, detail, response.reason_phrase)


def read_specs(path: str | Path) -> list[dict[str, Any]]:
    """The spec file's sweeps as dicts (``.json``, or ``.yaml``/``.yml`` with one or more
    ``---``-separated documents, one sweep each); raises SpecFileError naming the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SpecFileError(f"{path}: not a UTF-8 text file") from None
    if p.suffix == ".json":
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise SpecFileError(f"{path}: invalid JSON: {exc}") from None
    elif p.suffix in (".yaml", ".yml"):
        import yaml

        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "cannot parse"
            raise SpecFileError(f"{path}: invalid YAML{where}: {problem}") from None
    else:
        raise SpecFileError(f"{path}: the spec must be a .json, .yaml or .yml file")
    if not docs:
        raise SpecFileError(f"{path}: the file holds no spec")
    for data in docs:
        if not isinstance(data, dict):
            raise SpecFileError(
                f"{path}: the spec must be a mapping of fields, got {type(data).__name__}"
            )
        try:  # YAML can hold what JSON cannot (recursive anchors, dates): refuse it here
            json.dumps(data)
        except (TypeError, ValueError) as exc:
            raise SpecFileError(f"{path}: the spec must be plain JSON-like data: {exc}") from None
    return docs


def trials_done(sweep: Mapping[str, Any]) -> int:
    """How many of the sweep's trials are in a final state."""
    counts = sweep.get("trials_by_status", {})
    return sum(n for s, n in counts.items() if s not in UNFINISHED_TRIAL_STATUSES)


class Client:
    """The API at ``url`` (default ``$IDEM_URL`` or http://127.0.0.1:8000), sending
    ``token`` as a bearer token when given. One HTTP connection pool per client; use it
    as a context manager or call :meth:`close`."""

    def __init__(self, url: str | None = None, token: str | None = None, *, timeout: float = 60.0):
        self.url = (url or os.environ.get("IDEM_URL") or DEFAULT_URL).rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # One retry of a refused connection; submits carry an Idempotency-Key, so a
        # retry never creates a second sweep.
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            transport=httpx.HTTPTransport(retries=1),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # --- HTTP ------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the decoded JSON body (None for an empty one). Errors are typed."""
        response = self._send(method, path, **kwargs)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` with the query parameters that are not None."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def _table(self, path: str, params: Mapping[str, Any]) -> pd.DataFrame:
        import pandas as pd

        query = {k: v for k, v in params.items() if v is not None}
        response = self._send("GET", path, params={**query, "format": "parquet"})
        return pd.read_parquet(io.BytesIO(response.content))

    # --- sweeps ----------------------------------------------------------------------

    def submit(
        self, spec_or_path: Mapping[str, Any] | str | Path, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Submit one sweep (a spec dict, or a JSON/YAML file holding one); returns the
        API's answer (id, status, trial_count, reused_trials, skipped). A retry with the
        same ``idempotency_key`` returns the first answer instead of a second sweep."""
        if isinstance(spec_or_path, Mapping):
            spec = dict(spec_or_path)
        else:
            specs = read_specs(spec_or_path)
            if len(specs) != 1:
                raise SpecFileError(
                    f"{spec_or_path}: holds {len(specs)} sweeps; submit each document's dict"
                )
            spec = specs[0]
        key = idempotency_key or str(uuid.uuid4())
        created: dict[str, Any] = self.request(
            "POST", "/sweeps", json=spec, headers={"Idempotency-Key": key}
        )
        return created

    def sweep(self, sweep_id: int) -> dict[str, Any]:
        """One sweep: status, trial counts, progress, times, dashboard link, spec."""
        sweep: dict[str, Any] = self.get(f"/sweeps/{sweep_id}")
        return sweep

    def sweeps(self, status: str | None = None, limit: int = 500) -> pd.DataFrame:
        """The newest ``limit`` sweeps (optionally with ``status``), one row each."""
        import pandas as pd

        page = self.get("/sweeps", status=status, limit=limit)
        return pd.DataFrame(page["data"])

    def wait(
        self,
        sweep_id: int,
        progress: bool = True,
        *,
        interval: float = 1.0,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the sweep is succeeded, failed or cancelled; returns it. With
        ``progress`` a bar (trials done of all) is drawn on stderr. ``timeout`` seconds
        raise TimeoutError."""
        from tqdm import tqdm

        deadline = None if timeout is None else time.monotonic() + timeout
        sweep = self.sweep(sweep_id)
        with tqdm(
            total=sweep["trial_count"], unit="trial", file=sys.stderr, disable=not progress
        ) as bar:
            while True:
                bar.n = trials_done(sweep)
                bar.set_postfix_str(sweep["status"])
                bar.refresh()
                if sweep["status"] in FINAL_SWEEP_STATUSES:
                    return sweep
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"sweep {sweep_id} still {sweep['status']}")
                time.sleep(interval)
                sweep = self.sweep(sweep_id)

    def cancel(self, sweep_id: int) -> dict[str, Any]:
        """Ask the sweep to stop (Conflict when it has finished)."""
        answer: dict[str, Any] = self.request("POST", f"/sweeps/{sweep_id}/cancel")
        return answer

    # --- results ---------------------------------------------------------------------

    def trials(self, sweep_id: int, **filters: Any) -> pd.DataFrame:
        """Every trial of the sweep matching ``filters`` (status or any config field,
        e.g. ``algorithm="modified"``), one row each with its final metrics."""
        return self._table(f"/sweeps/{sweep_id}/trials", filters)

    def epochs(self, sweep_id: int, **filters: Any) -> pd.DataFrame:
        """Every epoch row of the sweep's trials matching ``filters``, each with its
        trial id and config columns (for curves per group: ``groupby``)."""
        return self._table(f"/sweeps/{sweep_id}/epochs", filters)

    def summary(
        self,
        sweep_id: int,
        by: str = SUMMARY_BY,
        metric: str = "idempotent_error",
        epoch: int | None = None,
    ) -> pd.DataFrame:
        """Per-group n, mean, std, min, median, max, diverged, never (computed in SQL)."""
        import pandas as pd

        body = self.get(f"/sweeps/{sweep_id}/summary", by=by, metric=metric, epoch=epoch)
        return pd.DataFrame(body["data"])

    def curves(
        self,
        sweep_id: int,
        metric: str = "idempotent_error",
        by: str = "architecture,algorithm",
        stride: int = 1,
    ) -> dict[str, Any]:
        """The aggregated curves the curves plot draws (per group: epoch, n, mean, std)."""
        body: dict[str, Any] = self.get(
            f"/sweeps/{sweep_id}/curves", metric=metric, by=by, stride=stride
        )
        return body

    def compare(
        self,
        sweep_id: int,
        a: str = "modified",
        b: str = "ordinary",
        metric: str = "idempotent_error",
        epoch: int | None = None,
    ) -> dict[str, Any]:
        """The paired comparison of algorithms ``a`` and ``b`` (the API's JSON)."""
        body: dict[str, Any] = self.get(
            f"/sweeps/{sweep_id}/compare", a=a, b=b, metric=metric, epoch=epoch
        )
        return body

    def claims(self, sweep_id: int, **params: Any) -> dict[str, Any]:
        """The note's claims checked on the sweep (``GET /sweeps/{id}/claims``)."""
        body: dict[str, Any] = self.get(f"/sweeps/{sweep_id}/claims", **params)
        return body

    def export(
        self,
        sweep_id: int,
        what: Table,
        fmt: TableFormat,
        path: str | Path,
        **filters: Any,
    ) -> int:
        """Stream the sweep's ``what`` table as ``fmt`` into ``path`` (chunk by chunk,
        so memory stays flat); returns the bytes written. Nothing is left at ``path``
        when the request fails."""
        query = {k: v for k, v in filters.items() if v is not None}
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        try:
            with self._http.stream(
                "GET", f"/sweeps/{sweep_id}/{what}", params={**query, "format": fmt}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise api_error(response)
                written = 0
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        written += out.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise Unreachable(f"cannot reach {self.url}: {exc or type(exc).__name__}") from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return written

    def delete(self, sweep_id: int) -> dict[str, Any]:
        """Delete a finished or cancelled sweep with its trials and epoch rows."""
        answer: dict[str, Any] = self.request("DELETE", f"/sweeps/{sweep_id}")
        return answer
