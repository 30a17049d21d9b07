"""Random (often invalid) specs through the real app: every answer is a 201 or a 422 that
names a field under ``body``, never a 500 (SQLite; the validation runs before the store).

Strategies draw only what JSON carries (no NaN or infinity: the client cannot encode them,
and a JSON body can never hold them)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.service.conftest import SMALL_SPEC

ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELD_VALUES: dict[str, Any] = {
    "architectures": st.lists(st.sampled_from(["N1", "N2", "B1", "X"]), max_size=3) | ANY_JSON,
    "algorithms": st.lists(st.sampled_from(["modified", "ordinary", "m1", "sgd"]), max_size=3),
    "learning_rates": st.lists(st.floats(-1, 1), max_size=3) | ANY_JSON,
    "batches": st.lists(
        st.fixed_dictionaries(
            {"samples": st.integers(-5, 300), "batch_size": st.integers(-5, 300)}
        ),
        max_size=2,
    )
    | ANY_JSON,
    "seeds": st.integers(-2, 5) | st.lists(st.integers(-2, 5), max_size=3) | ANY_JSON,
    "inits": st.lists(st.sampled_from(["default", "normal", "he"]), max_size=2) | ANY_JSON,
    "epochs": st.integers(-2, 2_000_000) | ANY_JSON,
    "data": st.sampled_from(["gaussian-fresh", "digits", "nope"])
    | st.fixed_dictionaries({"file": st.text(max_size=12)}),
    "resources": st.fixed_dictionaries({"cpu": st.floats(-1, 4), "gpu": st.floats(-1, 4)}),
    "pack": st.none() | st.booleans() | st.integers(-1, 9),
    "skip_invalid": st.booleans(),
}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    changes=st.dictionaries(
        st.sampled_from(sorted(FIELD_VALUES)), st.just(None), max_size=4
    ).flatmap(lambda keys: st.fixed_dictionaries({k: FIELD_VALUES[k] for k in keys}))
)
def test_random_specs_get_201_or_a_422_naming_a_field(
    sqlite_client: TestClient, changes: dict[str, Any]
) -> None:
    body = {**SMALL_SPEC, **changes}
    r = sqlite_client.post("/sweeps", json=body)
    assert r.status_code in (201, 422), (body, r.status_code, r.text)
    if r.status_code == 422:
        for item in r.json()["detail"]:
            assert item["loc"][0] == "body" and item["msg"], item
