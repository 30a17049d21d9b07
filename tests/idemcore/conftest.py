"""idemcore tests run on one intra-op thread (why: tests/utils/threads.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.utils.threads import one_torch_thread


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield
