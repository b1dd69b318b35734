"""--aggregate's live view while tracing: the hottest call paths, redrawn once a second.

What to show is render/top.py's; which paths are hot, tracer/model/aggregate.py's.
"""

from __future__ import annotations

from typing import Any


class LiveTop:
    """--aggregate's live view: the hottest call paths of the last second, redrawn.

    On a terminal a rich Live table; elsewhere (a log, the lab's console) the
    few hottest paths as lines every LOG_SECONDS.  At the end, the hottest
    paths of the whole trace stay on screen.
    """

    LOG_SECONDS = 5.0

    def __init__(self, console: Any, funcs: Any) -> None:
        self.console = console
        self.funcs = funcs
        self.before: list[Any] = []
        self.when = 0.0
        self.logged = 0.0
        self.last: tuple[list[Any], float, int] | None = None
        self.live: Any = None

    def __enter__(self) -> LiveTop:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, auto_refresh=False, transient=True)
            self.live.start()
        return self

    def show(self, rows: list[Any], elapsed: float, lost: int) -> None:
        """One reading of the kernel's counters (cumulative), ``elapsed`` s into the trace."""
        from skbpath.render.top import top_lines, top_table
        from skbpath.tracer.model.aggregate import hottest

        hot = hottest(self.before, rows, elapsed - self.when)
        self.before, self.when, self.last = rows, elapsed, (rows, elapsed, lost)
        if self.live is not None:
            height = max(self.console.height - 8, 5)
            self.live.update(top_table(self.funcs, hot[:height], elapsed, lost, len(rows)),
                             refresh=True)
        elif elapsed - self.logged >= self.LOG_SECONDS:
            self.logged = elapsed
            for line in top_lines(self.funcs, hot, elapsed, limit=3):
                self.console.print(line, highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()
        if self.last is not None and exc[0] is None:
            from skbpath.render.top import top_table
            from skbpath.tracer.model.aggregate import hottest

            rows, elapsed, lost = self.last
            whole = hottest([], rows, elapsed, limit=10)
            self.console.print(top_table(self.funcs, whole, elapsed, lost, len(rows)))
