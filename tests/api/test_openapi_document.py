"""The OpenAPI document declares every status an operation can answer and the bounds of its
parameters, so clients (and schemathesis' status-code check) can rely on it."""
from app.api.openapi import openapi_document
from app.params import MAX_BIG_ID, MAX_CURSOR


def _operations():
    for path, operations in openapi_document()["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


def test_every_operation_declares_the_statuses_any_request_can_get(app):
    for method, path, operation in _operations():
        statuses = set(operation["responses"])
        assert {"401", "413", "414", "429"} <= statuses, (method, path)
        if method == "post":
            assert {"400", "415", "422"} <= statuses, (method, path)
        if "{item_id}" in path:
            assert "404" in statuses, (method, path)
        if any(p["in"] == "query" for p in operation.get("parameters", [])):
            assert "400" in statuses, (method, path)


def test_parameters_carry_their_bounds(app):
    for _method, _path, operation in _operations():
        for parameter in operation.get("parameters", []):
            schema = parameter["schema"]
            if parameter["name"] == "cursor":
                assert schema["maxLength"] == MAX_CURSOR
            if parameter["name"] == "limit":
                assert schema["minimum"] == 1 and schema["maximum"] in (200, 500)
            if parameter["name"] == "item_id":
                assert (schema["minimum"], schema["maximum"]) == (1, MAX_BIG_ID)
