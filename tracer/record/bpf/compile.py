"""Compiling the BPF C with bcc, also where the kernel's headers are newer than bcc.

bcc compiles against the running kernel's headers but replaces their
``uapi/linux/bpf.h`` with its own bundled copy.  When the kernel's
``include/linux/bpf.h`` uses a type that copy predates (``struct bpf_wq``,
``bpf_rb_root``, ``bpf_rb_node``, ``bpf_refcount`` on 6.12 with bcc 0.26;
``bpf_task_work`` on 6.18 with newer bcc), clang stops with "incomplete
type 'struct bpf_wq'".  Then the types named in those errors are defined
before the program's includes, as the kernel defines them: from the uapi
header in the kernel's headers when it has them, else from the kernel's BTF
(its size; opaque words, aligned to the largest power of two up to 8 that
divides it, as the kernel's opaque BPF types are), and the program is
compiled again.  Which types are needed is read from the compiler's errors,
never from a list.  A compile that still fails is one line (kernel, header,
first error) with the full log in a file: :class:`CompileError`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.btf import Btf

# clang: "include/linux/bpf.h:368:10: error: invalid application of 'sizeof'
# to an incomplete type 'struct bpf_wq'" (also "field has incomplete type ...").
INCOMPLETE_RE = re.compile(r"incomplete (?:result )?type '(?:const )?struct (\w+)'")
ERROR_RE = re.compile(
    r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: (?P<msg>.*)$", re.MULTILINE)
UAPI_BPF = os.path.join("include", "uapi", "linux", "bpf.h")
# A compile that keeps failing on new types gives up after this many rounds.
MAX_ROUNDS = 3


def missing_types(log: str) -> list[str]:
    """The structs that clang's *errors* in ``log`` call incomplete, in order of first mention."""
    names: list[str] = []
    for m in ERROR_RE.finditer(log):
        for name in INCOMPLETE_RE.findall(m.group("msg")):
            if name not in names:
                names.append(name)
    return names


def first_error(log: str) -> tuple[str, str] | None:
    """(file, ``file:line: error: message``) of the first compiler error in ``log``, if any."""
    m = ERROR_RE.search(log)
    if m is None:
        return None
    return m.group("file"), f"{m.group('file')}:{m.group('line')}: error: {m.group('msg').strip()}"


def uapi_definition(header: str, name: str) -> str | None:
    """``struct name {...} [attributes];`` as written in a uapi header's text, or None."""
    m = re.search(r"^struct " + re.escape(name) + r" \{\n(?:[^}]*\n)?\}[^;{}]*;", header,
                  re.MULTILINE)
    return m.group(0) if m else None


def btf_definition(name: str, size: int) -> str:
    """An opaque definition of ``struct name`` of ``size`` bytes (BTF gives sizes, not alignment).

    The kernel's opaque BPF types are arrays of their alignment's words, so
    the alignment is the largest power of two up to 8 dividing the size.
    """
    align = next(a for a in (8, 4, 2, 1) if size % a == 0)
    word = {8: "__u64", 4: "__u32", 2: "__u16", 1: "__u8"}[align]
    return (f"struct {name} {{\n\t{word} __opaque[{max(1, size // align)}];\n}} "
            f"__attribute__((aligned({align})));")


def prelude(definitions: list[str], source_path: str) -> str:
    """Text placed before the program: the definitions, then a #line so errors keep their lines."""
    body = "\n".join(definitions)
    return f"#include <linux/types.h>\n{body}\n#line 1 \"{source_path}\"\n"


def header_dirs(release: str, env: Mapping[str, str] | None = None) -> list[str]:
    """Where bcc looks for ``release``'s headers: $BCC_KERNEL_SOURCE, else /lib/modules' links."""
    source = (os.environ if env is None else env).get("BCC_KERNEL_SOURCE")
    if source:
        return [source]
    # Debian splits them: build/ has the arch's files, source/ the common ones (uapi).
    return [os.path.join("/lib/modules", release, d) for d in ("build", "source")]


@dataclass
class Supplied:
    """Definitions found for missing types: C text and where each came from."""

    text: dict[str, str] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)


def find_definitions(names: list[str], dirs: list[str],
                     btf: Callable[[], Btf | None]) -> Supplied:
    """Definitions of ``names``: the first uapi bpf.h under ``dirs`` that has each, else BTF."""
    found = Supplied()
    for d in dirs:
        path = os.path.join(d, UAPI_BPF)
        try:
            with open(path, errors="replace") as fh:
                header = fh.read()
        except OSError:
            continue
        for name in names:
            text = uapi_definition(header, name) if name not in found.text else None
            if text:
                found.text[name], found.origin[name] = text, path
    rest = [n for n in names if n not in found.text]
    vmlinux = btf() if rest else None
    for name in rest:
        size = vmlinux.struct_size(name) if vmlinux is not None else None
        if size:
            found.text[name], found.origin[name] = btf_definition(name, size), "the kernel's BTF"
    return found


class CompileError(SkbpathError):
    """bcc could not compile (or create the maps of) the BPF program; the message is one line."""

    def __init__(self, message: str, log_path: str | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Capture file descriptor 2 (clang writes diagnostics from C++); the text is added at exit."""
    out: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def _try(bpf_class: Any, source_path: str, text: str | None,
         cflags: list[str]) -> tuple[Any | None, str, str]:
    """One compile: (BPF object or None, compiler log, bcc's exception text)."""
    with captured_stderr() as log:
        try:
            if text is None:
                return bpf_class(src_file=source_path.encode(), cflags=cflags), "", ""
            return bpf_class(text=text.encode(), cflags=cflags), "", ""
        except Exception as exc:  # bcc raises bare Exception
            failure = str(exc)
    return None, "".join(log), failure


def cached_types(cache: str | None) -> list[str]:
    """The type names a cache file lists (one a line, C identifiers only), or none."""
    if not cache:
        return []
    try:
        with open(cache) as fh:
            return [n for n in fh.read().split() if re.fullmatch(r"\w+", n)]
    except OSError:
        return []


def default_cache(release: str, root: str = "/run/skbpath") -> str | None:
    """Where the types ``release`` needed are remembered until reboot (root only), or None.

    /run is a root-owned tmpfs: the names stay as long as this kernel runs,
    so later traces (the lab's next scenario) compile once instead of twice.
    """
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        st = os.lstat(root)
    except OSError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o077 or not os.path.isdir(root):
        return None
    return os.path.join(root, f"bcc-missing-types-{release}")


def compile_bpf(bpf_class: Any, source_path: str, cflags: list[str], release: str,
                btf: Callable[[], Btf | None], log_path: str,
                note: Callable[[str], None] | None = None, cache: str | None = None) -> Any:
    """Compile ``source_path`` with bcc's ``bpf_class``; define types bcc's headers lack, retrying.

    ``btf`` loads the running kernel's BTF (only called if needed); ``note``
    hears one line when definitions were supplied.  ``cache`` names a file
    remembering which types this kernel needed: they are defined from the
    start, and if that fails the compile starts over without them.  Raises
    :class:`CompileError` (full log in ``log_path``) when it cannot compile.
    """
    dirs = header_dirs(release)
    with open(source_path) as fh:
        source = fh.read()
    remembered = cached_types(cache)
    if remembered:
        found = find_definitions(remembered, dirs, btf)
        with contextlib.suppress(CompileError):
            return _compile_rounds(bpf_class, source_path, source, cflags, release, dirs, btf,
                                   log_path, note, cache, found, rounds=1)
    return _compile_rounds(bpf_class, source_path, source, cflags, release, dirs, btf, log_path,
                           note, cache, Supplied(), MAX_ROUNDS)


def _compile_rounds(bpf_class: Any, source_path: str, source: str, cflags: list[str],
                    release: str, dirs: list[str], btf: Callable[[], Btf | None], log_path: str,
                    note: Callable[[str], None] | None, cache: str | None, supplied: Supplied,
                    rounds: int) -> Any:
    """Compile up to ``rounds`` times, each with the types the last one missed defined."""
    logs: list[str] = []
    failure = ""
    for _ in range(rounds):
        text = None
        if supplied.text:
            text = prelude(list(supplied.text.values()), source_path) + source
        bpf, log, failure = _try(bpf_class, source_path, text, cflags)
        if bpf is not None:
            if supplied.text and note:
                origins = sorted(set(supplied.origin.values()))
                note(f"skbpath: bcc's headers lack struct {', '.join(supplied.text)}: "
                     f"defined from {' and '.join(origins)}")
            if cache and supplied.text:
                with contextlib.suppress(OSError), open(cache, "w") as fh:
                    fh.write("\n".join(supplied.text) + "\n")
            return bpf
        logs.append(log or failure)
        new = [n for n in missing_types(log) if n not in supplied.text]
        found = find_definitions(new, dirs, btf) if new else Supplied()
        if not found.text:
            break
        supplied.text.update(found.text)
        supplied.origin.update(found.origin)
    raise _failure(release, dirs, logs, failure, log_path, supplied)


def _failure(release: str, dirs: list[str], logs: list[str], failure: str, log_path: str,
             supplied: Supplied) -> CompileError:
    """The one-line error for a compile that failed for good, its full log written out.

    The first error is the last round's: what still fails once the missing
    types were defined.
    """
    try:
        with open(log_path, "w") as fh:
            if supplied.text:
                fh.write("// defined before the program:\n" + "\n".join(supplied.text.values())
                         + "\n\n")
            fh.write("\n".join(logs) or failure)
        where = f"full log: {log_path}"
    except OSError as exc:
        where = f"log not written ({exc.strerror})"
    err = first_error(logs[-1] if logs else "")
    if err is None:
        return CompileError(f"bcc could not build the BPF program for {release}: "
                            f"{failure or 'no compiler output'} ({where})", log_path)
    header, line = err
    headers = dirs[0] if dirs else "?"
    tail = f"; defined {', '.join(supplied.text)} and still failed" if supplied.text else ""
    return CompileError(f"bcc could not compile the BPF program against {release}'s headers "
                        f"({headers}), in {header}: {line}{tail} ({where})", log_path)
