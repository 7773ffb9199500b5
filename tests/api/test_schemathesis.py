"""Schemathesis against the running app: the OpenAPI document is fetched from the live
server, every operation is driven with generated valid and invalid requests carrying a real
token, and every answer must be no server error and must conform to the document."""
from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import item_payload

# Bounded so the suite stays quick: 5 operations x 2 modes x this many requests.
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "20"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


@pytest.fixture
def seeded(api, make_user, make_item):
    """Items of each kind, so generated ids sometimes hit a real item."""
    make_user("appr@x.test", [api.tenant], roles=("approver", "analyst"))
    for n in range(3):
        api.post("/api/v1/items", json=item_payload(external_ref=f"S-{n}"))
    make_item(api.tenant, kind="settlement_dispute", amount="300.00")
    make_item(api.tenant, amount="100.00")
    return api


def test_every_operation_conforms_to_the_document_and_never_errs(app, seeded, live_server):
    app.config["API_RATE_LIMIT_PER_MINUTE"] = 100_000
    schema = schemathesis.openapi.from_url(f"{live_server}/api/v1/openapi.json")
    auth = {"Authorization": f"Bearer {seeded.token}"}
    base_url = f"{live_server}/api/v1"
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    for operation in operations:
        for mode, checks in ((GenerationMode.POSITIVE, CHECKS + [ignored_auth]),
                             (GenerationMode.NEGATIVE, CHECKS + [negative_data_rejection])):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def run(case):
                case.call_and_validate(base_url=base_url, headers=auth, checks=checks,
                                       timeout=30)

            run()
