"""A lab kernel's headers as one tree, so bcc can compile against them on any host.

Debian splits a kernel's headers in two directories (the arch one and
``-common``); bcc's ``BCC_KERNEL_SOURCE`` wants one.  The host tests and
bench/drain.py compile for a lab kernel this way on a host whose own
kernel has no headers.
"""

from __future__ import annotations

import os
from pathlib import Path

from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.lab.kernels import lab_kernel, release_of


def default_release() -> str | None:
    """The release of the lab's default kernel, or None when it is not installed."""
    try:
        return release_of(lab_kernel())
    except SkbpathError:
        return None


def headers_of(release: str) -> tuple[Path, Path]:
    """Debian's two header directories for ``release``: the arch one (its files win), -common."""
    return (Path(f"/usr/src/linux-headers-{release}"),
            Path(f"/usr/src/linux-headers-{release.rsplit('-', 1)[0]}-common"))


def headers_installed(release: str | None = None) -> bool:
    """True if both halves of ``release``'s headers (default: the lab kernel's) are installed."""
    release = release or default_release()
    return release is not None and all(h.is_dir() for h in headers_of(release))


def _link_tree(src: Path, dst: Path) -> None:
    """Mirror ``src`` under ``dst`` as symlinks to its files (like ``cp -rs``)."""
    for root, _dirs, files in os.walk(src, followlinks=True):
        out = dst / Path(root).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            link = out / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.realpath(os.path.join(root, name)))


def kernel_source_tree(dst: Path, release: str | None = None) -> Path:
    """The one-tree view of ``release``'s headers (default: the lab kernel's) under ``dst``."""
    release = release or default_release()
    if release is None:
        raise SkbpathError("the lab kernel is not installed: run 'make setup'")
    for src in reversed(headers_of(release)):  # the arch directory's files last: they win
        _link_tree(src, dst)
    return dst
