"""The cluster fixture: one multi-node Ray cluster in network namespaces per test module.

Skipped (with the reason) only where namespaces cannot be made: not root, or no working
``ip netns``. CI runs as root, so there these tests run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.netns import unavailable_reason
from tests.cluster.stack import Stack, running_stack


@pytest.fixture(scope="module")
def cluster() -> Iterator[Stack]:
    """PostgreSQL, a 3-node Ray cluster (head, node1, node2 with 1 GPU), API and worker."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with running_stack() as stack:
        yield stack
