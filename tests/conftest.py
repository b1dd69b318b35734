"""Shared pytest setup: lab and browser tests may skip locally, never under SKBPATH_REQUIRE_LAB."""

from __future__ import annotations

import os

import pytest


def lab_unavailable(reason: str) -> None:
    """Skip a lab test, or fail it where the lab is required (CI, make test)."""
    if os.environ.get("SKBPATH_REQUIRE_LAB"):
        pytest.fail(f"the lab is required here but cannot run: {reason}")
    pytest.skip(reason)


def browser_unavailable(reason: str) -> None:
    """Skip a browser test, or fail it where everything is required (CI, make test)."""
    if os.environ.get("SKBPATH_REQUIRE_LAB"):
        pytest.fail(f"the browser is required here but cannot run: {reason}")
    pytest.skip(reason)
