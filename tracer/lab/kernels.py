"""Which kernel the lab boots: a series (``6.1``, ``6.12``) or an image path.

A series means the newest Debian image of it installed in /boot, the
standard flavour (``vmlinuz-6.1.0-57-amd64``, ``vmlinuz-6.12.117+deb12-amd64``;
not ``-rt`` or ``-cloud``), so the lab follows whatever ABI ``make setup``
installed instead of pinning one the archive may drop.
"""

from __future__ import annotations

import os
import re

from skbpath.tracer.errors import SkbpathError

DEFAULT_SERIES = "6.1"
# The series the lab tests run on (make setup installs the newest of each).
TESTED_SERIES = ("6.1", "6.12")
BOOT_DIR = "/boot"
# Debian's standard flavour: 6.1.0-57-amd64, 6.12.117+deb12-amd64.
_RELEASE_RE = re.compile(r"^(\d+\.\d+)\.(\d+)(?:-(\d+))?(?:\+deb\d+)?-amd64$")


def release_of(image: str) -> str:
    """The release an image is for: ``/boot/vmlinuz-6.1.0-57-amd64`` -> ``6.1.0-57-amd64``."""
    return os.path.basename(image).removeprefix("vmlinuz-")


def _version_key(release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", release))


def series_images(series: str, names: list[str]) -> list[str]:
    """The ``vmlinuz-*`` names among ``names`` of ``series``'s standard flavour, oldest first."""
    out = []
    for name in names:
        if not name.startswith("vmlinuz-"):
            continue
        m = _RELEASE_RE.match(release_of(name))
        if m and m.group(1) == series:
            out.append(name)
    return sorted(out, key=lambda n: _version_key(release_of(n)))


def is_series(choice: str) -> bool:
    """True if ``choice`` names a series (``6.12``) rather than an image path."""
    return re.fullmatch(r"\d+\.\d+", choice) is not None


def lab_kernel(choice: str = DEFAULT_SERIES, boot_dir: str = BOOT_DIR) -> str:
    """The image to boot for ``--kernel CHOICE``; one clear error if there is none."""
    if not is_series(choice):
        if not os.path.isfile(choice):
            raise SkbpathError(f"--kernel {choice}: no such kernel image (give a series such as "
                               f"{' or '.join(TESTED_SERIES)}, or an image path)")
        return choice
    try:
        names = os.listdir(boot_dir)
    except OSError:
        names = []
    found = series_images(choice, names)
    if not found:
        hint = "run 'make setup'" if choice in TESTED_SERIES else "install one or give its path"
        raise SkbpathError(f"--kernel {choice}: no Debian {choice} kernel in {boot_dir} ({hint})")
    return os.path.join(boot_dir, found[-1])


def headers_missing(release: str, modules_dir: str = "/lib/modules") -> bool:
    """True if ``release`` has no headers (bcc in the guest compiles against them)."""
    return not os.path.isdir(os.path.join(modules_dir, release, "build"))
