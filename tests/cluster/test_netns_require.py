"""Namespace tests skip with their reason where they cannot run, unless CI demands them."""

from __future__ import annotations

import pytest

from shoal.testing import netns


def test_missing_prerequisites_skip_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "available", lambda: "iptables: command not found")
    monkeypatch.delenv(netns.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="iptables: command not found"):
        netns.require()


def test_ci_turns_the_skip_into_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "available", lambda: "network namespaces need root")
    monkeypatch.setenv(netns.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="need root"):
        netns.require()


def test_nothing_happens_when_everything_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "available", lambda: None)
    monkeypatch.setenv(netns.REQUIRE_ENV, "1")
    netns.require()
