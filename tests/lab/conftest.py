"""The lab session: the collected lab modules' LAB_RUNS, one boot per (kernel, NIC, topology)."""

from __future__ import annotations

import contextlib

import pytest

from tests.lab.labrun import LabRun, LabSession, boot_report, collect_runs

_RUNS: list[LabRun] = []
_SESSIONS: list[LabSession] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Gather the runs of the lab modules that will run (selection included)."""
    modules = []
    for item in items:
        mod = getattr(item, "module", None)
        if mod is not None and mod not in modules and item.get_closest_marker("lab"):
            modules.append(mod)
    _RUNS[:] = collect_runs(modules)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> LabSession:
    """The session's lab: ``lab.replay(kernel, run_name)``."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def report(line: str) -> None:
        # Past pytest's capture, which would hold the line until a failure.
        if reporter is None:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(line)
            reporter.flush()

    session = LabSession(tmp_path_factory, _RUNS, report)
    _SESSIONS.append(session)
    return session


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long each boot took, and what it ran: the lab's share of the test time."""
    for session in _SESSIONS:
        for key, boot in session.boots.items():
            terminalreporter.write_line(boot_report(key, boot)[0])
