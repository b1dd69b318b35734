"""What ``skbpath lab`` prints, with a stand-in for virtme-ng (no boot): progress by
default, the whole guest log with --verbose, the log's tail and path on a failure."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from skbpath.tracer.cli.main import main as cli_main
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.lab import vm as lab
from skbpath.tracer.lab.console import FAIL_TAIL_LINES, LineEcho, follow, lab_failure
from skbpath.tracer.lab.vm import LabOptions

# Plays the guest: reads the env file named by --exec, writes the full log
# (with a shell trace) and the progress file, and a trace unless FAKE_FAIL is set.
FAKE_VNG = r"""#!/bin/bash
for a in "$@"; do last=$a; done
env_file=${last##* }
. "$env_file"
{
  echo "+ lab: modprobe e1000"
  for i in $(seq 40); do echo "+ lab: sleep 0.5"; done
} >>"$SKBPATH_LOG"
say() { echo "$*" >>"$SKBPATH_LOG"; echo "$*" >>"$SKBPATH_PROGRESS"; }
say "lab: guest up: eth0 and eth1 (e1000)"
say "lab: pin ${SKBPATH_PIN:-unset}"
say "skbpath: fentry: 120 functions resolved, 9 skipped (see --list-probes)"
say "     2.0 s         1,234 events         0 lost"
say "     4.0 s         2,345 events         0 lost"
say "[  5]   0.00-1.00   sec  1.25 MBytes  10.5 Mbits/sec"
say "skbpath: 2,345 events in 4.1 s, 17 journeys -> $SKBPATH_OUT/trace.skbtrace"
if [ -n "${FAKE_FAIL:-}" ]; then say "lab: the tracer did not start"; exit 1; fi
printf 'SKBTRACE' >"$SKBPATH_OUT/trace.skbtrace"  # the one scenario of run_lab
"""


@pytest.fixture
def fake_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    vng = tmp_path / "vng"
    vng.write_text(FAKE_VNG)
    vng.chmod(vng.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(lab, "check_lab", lambda opts: "/boot/vmlinuz-6.1.0-test-amd64")
    monkeypatch.setattr(lab, "find_vng", lambda: str(vng))
    monkeypatch.setattr(lab, "LOCK_PATH", str(tmp_path / "lab.lock"))
    return tmp_path


def test_quiet_by_default_shows_progress_without_shell_trace(
        fake_lab: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = fake_lab / "t.skbtrace"
    assert lab.run_lab(LabOptions(output=str(out))) == str(out)
    err = capsys.readouterr().err
    assert "+ lab:" not in err
    assert "lab: guest up" in err and "10.5 Mbits/sec" in err and "17 journeys" in err
    # Not a terminal: the periodic counters are left out, the totals stay.
    assert "1,234 events" not in err
    assert len(err.splitlines()) == 6
    assert out.read_bytes() == b"SKBTRACE"


def test_verbose_shows_the_whole_guest_log(fake_lab: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    lab.run_lab(LabOptions(output=str(fake_lab / "t.skbtrace"), verbose=True))
    err = capsys.readouterr().err
    assert err.count("+ lab: sleep 0.5") == 40
    assert "1,234 events" in err


def test_a_failure_shows_the_last_lines_and_where_the_log_is(
        fake_lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(SkbpathError) as exc:
        lab.run_lab(LabOptions(output=str(fake_lab / "t.skbtrace")), echo=False)
    message = str(exc.value)
    assert "the lab wrote no trace: vng exit code 1" in message
    tail = message.splitlines()[1:]
    assert len(tail) == FAIL_TAIL_LINES
    assert tail[-1].strip() == "lab: the tracer did not start"
    log = message.splitlines()[0].split(" of ", 1)[1].split(" (")[0]
    assert os.path.basename(log) == "guest.log" and os.path.exists(log)


def test_follow_passes_lines_as_they_are_written(tmp_path: Path) -> None:
    path = tmp_path / "progress.log"
    writer = (f"import time\nfor i in range(3):\n"
              f"    open({str(path)!r}, 'a').write(f'line {{i}}\\n'); time.sleep(0.6)\n"
              f"open({str(path)!r}, 'a').write('no newline')\n")
    proc = subprocess.Popen([sys.executable, "-c", writer], text=True)
    seen: list[str] = []
    assert follow(proc, str(path), seen.append, timeout=30) == 0
    assert seen == ["line 0", "line 1", "line 2", "no newline"]


def test_follow_gives_up_after_the_timeout(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        follow(proc, str(tmp_path / "none.log"), None, timeout=1)
    assert proc.poll() is not None


def test_counters_overwrite_each_other_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    echo = LineEcho(tty=True)
    for line in ("a", "     2.0 s   1 events   0 lost", "     4.0 s   2 events   0 lost", "b"):
        echo(line)
    echo.close()
    assert capsys.readouterr().err == ("a\n     2.0 s   1 events   0 lost"
                                       "\r\033[K     4.0 s   2 events   0 lost\r\033[Kb\n")


def test_failure_falls_back_to_vng_output(tmp_path: Path) -> None:
    vng_log = tmp_path / "vng.log"
    vng_log.write_text("qemu: could not open kernel\n")
    message = lab_failure("the lab wrote no trace", str(tmp_path / "guest.log"), str(vng_log))
    assert message.endswith("\n  qemu: could not open kernel")
    assert str(vng_log) in message


@pytest.mark.parametrize(("args", "pin"), [((), "1"), (("--no-pin",), "0")])
def test_the_guest_pins_interrupts_and_traffic_unless_told_not_to(
        fake_lab: Path, args: tuple[str, ...], pin: str) -> None:
    # guest.sh reads SKBPATH_PIN from the env file: 1 moves the NICs' IRQs to
    # CPU 0 and runs the traffic on the other CPUs.
    r = CliRunner().invoke(cli_main, ["lab", "-o", str(fake_lab / "t.skbtrace"), *args])
    assert r.exit_code == 0, r.output
    assert f"lab: pin {pin}" in r.output
