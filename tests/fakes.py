"""Test doubles for the in-process unit tests: a clock that only moves when told to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.identity import TokenCredential
from shared.settings import Settings


@dataclass
class FakeClock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass(frozen=True)
class FakeToken:
    token: str
    expires_on: int


@dataclass
class CountingCredential:
    """Hands out numbered tokens; the real credential is exercised end to end."""

    issued: int = 0

    def get_token(self, *scopes: str) -> Any:
        self.issued += 1
        return FakeToken(f"token-{self.issued}", 4_000_000_000)


def credential_factory(credential: CountingCredential) -> Any:
    def factory(settings: Settings, on_status: Any) -> TokenCredential:
        return credential

    return factory
