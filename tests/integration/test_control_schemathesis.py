"""A property-based run over the control API's own OpenAPI document (schemathesis): no request
it describes - valid or not - gets a 5xx. Bounded examples per operation (< 60 s in all)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok

from smime_proxy.harness import Upstream
from support.control import RunningControl, Upstreamish, running_control

EXAMPLES_PER_OPERATION = 30


@pytest.fixture
def control(tmp_path: Path, upstream: Upstream) -> Iterator[RunningControl]:
    imap = Upstreamish(host=upstream.host, port=upstream.imap_port, tls="starttls",
                       ca_file=upstream.ca_file)
    with running_control(tmp_path, imap) as running:
        yield running


def test_no_server_errors_anywhere_in_the_openapi_document(control: RunningControl) -> None:
    client = control.client()
    response = client.get("/api/v1/openapi.json")
    assert response.status == 200
    document = json.loads(response.body)
    schema = schemathesis.openapi.from_dict(document)
    token = base64.b64encode(b"alice:alice-pw").decode()
    headers = {"Authorization": f"Basic {token}"}
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 11
    failures: list[str] = []
    calls = 0

    for operation in operations:
        strategy = operation.as_strategy()

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=strategy, with_auth=st.booleans())
        def check(case: schemathesis.Case[Any], with_auth: bool) -> None:
            nonlocal calls
            calls += 1
            sent = headers if with_auth else {}
            answer = case.call(base_url=control.url, headers=sent, timeout=30)
            if answer.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> "
                                f"{answer.status_code}: {answer.text[:200]}")

        check()
    assert calls >= len(operations) * 2
    assert failures == []
