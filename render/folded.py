"""FlameGraph "folded" stacks: one line per call path, frames joined by ';', then a value.

This is the format of Brendan Gregg's ``stackcollapse`` tools, so the output
also feeds flamegraph.pl, inferno or speedscope.
"""

from __future__ import annotations

from skbpath.tracer.model.calltree import CallTree, Node

from .text import printable

WEIGHTS = ("time", "count")


def _frame(name: str) -> str:
    # ';' separates frames and a newline ends the line: neither may appear in
    # a frame (kernel symbols never contain them, but a crafted trace could),
    # nor may control characters, which folded output takes to a terminal.
    return printable(name).replace(";", ":")


def _node_value(node: Node, weight: str) -> int:
    if weight == "time":
        return node.self_total
    # Calls that stopped here: this path's calls minus those that went deeper.
    return max(0, node.count - sum(c.count for c in node.children.values()))


def _check_weight(weight: str) -> None:
    if weight not in WEIGHTS:
        raise ValueError(f"unknown weight {weight!r}: expected one of {', '.join(WEIGHTS)}")


def node_paths(tree: CallTree) -> list[tuple[tuple[str, ...], Node]]:
    """Every node with its frame path (direction first), in tree.nodes() order."""
    out: list[tuple[tuple[str, ...], Node]] = []
    for root in tree.sorted_roots():
        # Iterative walk: call paths can be deep, recursion limits are not.
        work: list[tuple[tuple[str, ...], Node]] = [
            ((tree.direction(root), _frame(tree.funcs.name_of(root.func))), root)
        ]
        while work:
            path, node = work.pop()
            out.append((path, node))
            for child in reversed(node.sorted_children()):
                work.append((path + (_frame(tree.funcs.name_of(child.func)),), child))
    return out


def stack_data(tree: CallTree, weight: str = "time") -> list[tuple[list[str], int]]:
    """The folded stacks as (frames, value) pairs, sorted as :func:`folded_stacks` lines.

    Call paths that map to the same frames (e.g. two roots of one direction
    with the same name) are summed; zero values are omitted.
    """
    _check_weight(weight)
    sums: dict[tuple[str, ...], int] = {}
    for path, node in node_paths(tree):
        v = _node_value(node, weight)
        if v > 0:
            sums[path] = sums.get(path, 0) + v
    lines = sorted((";".join(p), p, v) for p, v in sums.items())
    return [(list(p), v) for _, p, v in lines]


def stack_calls(tree: CallTree) -> dict[tuple[str, ...], int]:
    """Calls per frame path (direction first), for tooltips; direction frames sum their roots."""
    calls: dict[tuple[str, ...], int] = {}
    for path, node in node_paths(tree):
        calls[path] = calls.get(path, 0) + node.count
        if len(path) == 2:
            calls[path[:1]] = calls.get(path[:1], 0) + node.count
    return calls


def folded_stacks(tree: CallTree, weight: str = "time") -> list[str]:
    """Folded lines "TX;__sys_sendto;tcp_sendmsg 1234", sorted, zero values omitted.

    ``weight`` "time" uses each path's self time in ns; "count" the calls
    that ended at that path (its calls minus its children's).
    """
    return [f"{';'.join(frames)} {value}" for frames, value in stack_data(tree, weight)]


def parse_folded(text: str) -> list[tuple[list[str], int]]:
    """Parse folded lines back into (frames, value); blank lines are skipped.

    Raises ValueError naming the line number when a line has no value, a
    non-integer or negative value, or an empty frame.
    """
    out: list[tuple[list[str], int]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        # The value is after the last space: frames themselves may contain spaces.
        stack, sep, value = line.rpartition(" ")
        if not sep or not stack:
            raise ValueError(f"folded line {lineno}: expected 'frame;frame;... value': {raw!r}")
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"folded line {lineno}: value {value!r} is not an integer") from None
        if n < 0:
            raise ValueError(f"folded line {lineno}: negative value {n}")
        frames = stack.split(";")
        if any(not f for f in frames):
            raise ValueError(f"folded line {lineno}: empty frame in {stack!r}")
        out.append((frames, n))
    return out
