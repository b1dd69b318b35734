"""``skbpath render --format perfetto``: the trace as a Perfetto timeline file."""

from __future__ import annotations

import os

import click
from skbpath.tracer.cli.common import _warn
from skbpath.tracer.errors import SkbpathError


def drop_reason_names(contents: object) -> dict[int, str]:
    """Drop reason codes to names: the header's, then those tracefs met (END)."""
    header = getattr(contents, "header", {}) or {}
    end = getattr(contents, "end", None) or {}
    names = {int(k): str(v) for k, v in (header.get("drop_reasons") or {}).items()}
    names.update({int(k): str(v) for k, v in (end.get("drop_reasons") or {}).items()})
    return names


def render_perfetto(trace_file: str, output: str) -> None:
    """Replay ``trace_file`` keeping its calls, and write ``output``/trace.perfetto-trace."""
    from skbpath.render.perfetto import FILE_NAME, TimelineInput, perfetto_trace
    from skbpath.tracer.cli.view import _aggregated, _interfaces
    from skbpath.tracer.model.pairing import Call
    from skbpath.tracer.model.replay import POINT_MODES
    from skbpath.tracer.model.replay import replay as run_replay
    from skbpath.tracer.record.session import chown_to_invoker

    if output == "-":
        raise SkbpathError("-o - writes one stream: use --format folded or dot")
    roots: list[Call] = []
    rep = run_replay(trace_file, keep_journeys=True, on_root=roots.append)
    header = rep.contents.header
    if _aggregated(header, trace_file):  # a timeline needs the calls themselves
        return
    data, stats = perfetto_trace(TimelineInput(
        roots=roots,
        journeys=rep.model.journey_list,
        funcs=rep.funcs,
        tasks=rep.contents.tasks,
        drop_reasons=drop_reason_names(rep.contents),
        stacks=rep.contents.stacks,
        interfaces=_interfaces(header),
        points=header.get("attach") in POINT_MODES,
    ))
    try:
        os.makedirs(output, exist_ok=True)
        path = os.path.join(output, FILE_NAME)
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise SkbpathError(f"cannot write {output}: {exc.strerror}") from exc
    chown_to_invoker(path)
    click.echo(path)
    if stats.clamped:
        _warn(f"{stats.clamped:,d} slices were cut to nest on their track "
              "(clock order between CPUs, or a lost return)")
    if rep.contents.truncated:
        _warn(rep.contents.truncated)
