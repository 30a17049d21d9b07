"""The drop-in example in docs/modified-backprop.md runs as written and trains."""

from __future__ import annotations

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "modified-backprop.md"


def example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/modified-backprop.md has one python example"
    return blocks[0]


def test_example_is_at_most_ten_lines_of_code() -> None:
    code = [line for line in example().splitlines() if line.strip()]
    assert len(code) <= 10, code


def test_example_runs_and_makes_the_network_idempotent() -> None:
    namespace: dict[str, object] = {}
    with torch.random.fork_rng(devices=[]):
        exec(compile(example(), str(DOC), "exec"), namespace)
        net = namespace["net"]
        assert isinstance(net, torch.nn.Module)
        torch.manual_seed(0)
        fresh = torch.nn.Sequential(torch.nn.Linear(5, 10), torch.nn.Tanh(), torch.nn.Linear(10, 5))
        x = torch.randn(1000, 5)
    with torch.no_grad():
        before = float(((fresh(fresh(x)) - fresh(x)) ** 2).mean())
        after = float(((net(net(x)) - net(x)) ** 2).mean())
    assert after < before / 10, (before, after)
