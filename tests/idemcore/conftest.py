"""idemcore tests run on one intra-op thread.

Their tensors are small (10000 x 5 at most), where a second thread only adds
synchronisation, and on a machine shared with other test processes that synchronisation
dominates (a 0.5 ms step took 13 ms with two threads under load).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
