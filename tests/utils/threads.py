"""One torch intra-op thread for a block of test code.

Test tensors are small, where a second thread only adds synchronisation; on a machine
shared with other test processes that synchronisation dominates (a 0.5 ms step took 13 ms
with two threads under load). Bitwise comparisons with a trial also need the thread count
the trial ran with (one, on CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``; restore the count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
