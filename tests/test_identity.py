"""Which credential the settings give, and that production never falls back to another."""

from __future__ import annotations

import pytest
from azure.identity import AzureCliCredential, ManagedIdentityCredential

from shared.identity import make_credential
from shared.problems import Failure, Problem
from shared.settings import load_settings


def ignore(status: int) -> None:
    pass


def test_managed_identity_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "h")
    assert isinstance(make_credential(load_settings({}), ignore), ManagedIdentityCredential)


def test_without_the_platform_endpoint_it_refuses_rather_than_guessing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    monkeypatch.delenv("IDENTITY_HEADER", raising=False)
    with pytest.raises(Problem) as caught:
        make_credential(load_settings({}), ignore)
    assert caught.value.failure is Failure.IDENTITY_MISCONFIGURED
    assert "IDENTITY_ENDPOINT" in caught.value.detail


def test_the_workstation_credential_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    settings = load_settings({"GRAPH_CREDENTIAL": "azure_cli"})
    assert isinstance(make_credential(settings, ignore), AzureCliCredential)
