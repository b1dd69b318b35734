"""Shared pytest setup: lab tests may skip locally, never when SKBPATH_REQUIRE_LAB is set."""

from __future__ import annotations

import os

import pytest


def lab_unavailable(reason: str) -> None:
    """Skip a lab test, or fail it where the lab is required (CI, make test)."""
    if os.environ.get("SKBPATH_REQUIRE_LAB"):
        pytest.fail(f"the lab is required here but cannot run: {reason}")
    pytest.skip(reason)
