"""Assertions shared by the end-to-end tests."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_FIELDS = {"type", "title", "status", "detail", "correlationId"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem document with our fields, its correlation id echoed in the header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = response.json()
    assert set(doc) >= PROBLEM_FIELDS
    assert doc["status"] == status
    assert doc["correlationId"] == response.headers["x-correlation-id"]
    assert "Traceback" not in response.text
    return doc
