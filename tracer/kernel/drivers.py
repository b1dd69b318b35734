"""Find an interface's driver functions without naming any driver.

The driver is found from what the kernel says about the interface, first
that answers:

1. ``/sys/class/net/<iface>/device/driver`` (and its ``module`` link): a
   device on a bus (e1000, virtio_net);
2. the ethtool driver-info ioctl: virtual devices with no bus device (veth);
3. the ``IFF_LOOPBACK`` flag: the loopback device, which is always built in
   and answers neither, takes the name ``loopback``.

Its functions are the kernel's traceable functions tagged with that module;
for a built-in driver, the untagged ones named ``<driver>_...``.  Among them,
by role:

``xmit``      ndo_start_xmit: BTF signature ``(struct sk_buff *, struct net_device *)``
``poll``      the NAPI poll: BTF signature ``(struct napi_struct *, int)`` returning int
``rx_clean``  the RX ring cleaner, by name (``clean_rx``, ``rx_irq``, ``receive``)
``tx_clean``  the TX completion, by name (``clean_tx``, ``tx_irq``, ``free_old_xmit``)

Choosing among candidates:

* A BTF signature match is exact, so every function matching it is kept
  (a driver may have several NAPI polls, e.g. one for RX and one for TX).
* Name matches are guesses, so only the best single one is kept: the one
  matching the earliest pattern in the role's list, then one whose name does
  not suggest setup or teardown (a ``_``-separated part ``ring``, ``rings``,
  ``all``, ``alloc``, ``setup``, ``init`` or ``configure``), then the
  shortest name, then the alphabetically first.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
from collections.abc import Callable

from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.kernel.btf import Btf
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.kernel.symbols import clone_of

# Name patterns per role, best first.  A pattern starting with "_" is a
# suffix of "_" + name (so "start_xmit" matches "_start_xmit"); others are
# substrings.
NAME_PATTERNS: dict[str, tuple[str, ...]] = {
    "xmit": ("_xmit_frame", "_start_xmit", "_xmit"),
    "poll": ("_poll", "_clean"),
    "rx_clean": ("clean_rx_irq", "rx_irq", "clean_rx", "receive"),
    "tx_clean": ("clean_tx_irq", "tx_irq", "clean_tx", "free_old_xmit"),
}
# Names that look like a role but are something else.
EXCLUDE: dict[str, tuple[str, ...]] = {
    "xmit": ("free_old_xmit", "netpoll"),
    "poll": ("netpoll", "poll_controller"),
    # Ring setup and teardown (e1000_clean_tx_ring) never run per packet.
    "rx_clean": ("_ring", "alloc", "setup", "init", "configure"),
    "tx_clean": ("_ring", "alloc", "setup", "init", "configure"),
}
# Name parts that suggest a ring setup/teardown function rather than the hot path.
COLD_WORDS = frozenset({"ring", "rings", "all", "alloc", "setup", "init", "configure"})

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003
DRVINFO_SIZE = 196  # struct ethtool_drvinfo
IFF_LOOPBACK = 0x8
LOOPBACK_DRIVER = "loopback"

XMIT_PARAMS = ["struct sk_buff *", "struct net_device *"]
POLL_PARAMS = ["struct napi_struct *", "int"]


def ethtool_driver(iface: str) -> str | None:
    """The driver name the ethtool driver-info ioctl reports for ``iface``, or None."""
    buf = array.array("B", struct.pack("I", ETHTOOL_GDRVINFO) + bytes(DRVINFO_SIZE - 4))
    addr, _ = buf.buffer_info()
    ifreq = struct.pack("16sP", iface.encode()[:15], addr)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError:
        return None  # lo and a few others have no driver info
    name = buf.tobytes()[4:36].split(b"\0", 1)[0].decode(errors="replace")
    return name or None


def interface_module(
    iface: str, root: str = "/", drvinfo: Callable[[str], str | None] = ethtool_driver
) -> str | None:
    """The driver of ``iface``: its kernel module's name, else the driver's; None if unknown.

    See the module docstring for the order of the sources.  A built-in
    driver's name finds its functions by prefix (:func:`find_driver_functions`).
    ``drvinfo`` asks the kernel for the driver name (injectable for tests).
    Raises :class:`SkbpathError` if the interface does not exist.
    """
    netdir = os.path.join(root, "sys/class/net", iface)
    if not os.path.exists(netdir):
        raise SkbpathError(f"no such network interface: {iface}")
    driver = os.path.join(netdir, "device/driver")
    for link in (os.path.join(driver, "module"), driver):
        try:
            # Only the link's last component matters; it may point outside a fake root.
            return os.path.basename(os.readlink(link).rstrip("/"))
        except OSError:
            continue
    name = drvinfo(iface)
    if name:
        return name
    try:
        with open(os.path.join(netdir, "flags")) as fh:
            flags = int(fh.read().strip(), 16)
    except (OSError, ValueError):
        return None
    return LOOPBACK_DRIVER if flags & IFF_LOOPBACK else None


def _name_rank(role: str, name: str) -> int | None:
    """Index of the first pattern of ``role`` that ``name`` matches, or None."""
    if any(x in name for x in EXCLUDE[role]):
        return None
    for i, pat in enumerate(NAME_PATTERNS[role]):
        if (("_" + name).endswith(pat)) if pat.startswith("_") else (pat in name):
            return i
    return None


def _best_by_name(role: str, names: set[str], exclude: set[str]) -> list[str]:
    """The single best name match for ``role`` (see the module docstring)."""
    scored = []
    for name in names - exclude:
        rank = _name_rank(role, name)
        if rank is not None:
            cold = not COLD_WORDS.isdisjoint(name.split("_"))
            scored.append((rank, cold, len(name), name))
    return [min(scored)[3]] if scored else []


def _by_signature(btf: Btf, names: set[str], params: list[str], returns: str | None) -> list[str]:
    out = []
    for name in sorted(names):
        sig = btf.func_signature(name)
        if sig and sig[1] == params and (returns is None or sig[0] == returns):
            out.append(name)
    return out


def driver_candidates(driver: str, kernel: KernelInfo) -> set[str]:
    """The functions that may be ``driver``'s: its module's, else built-in ``driver_*`` ones.

    Base names only (:func:`clone_of`); split-off parts (``.cold``) are not
    functions of their own.
    """
    names = kernel.module_functions(driver)
    if not names:
        # A built-in driver's functions carry no module tag: take its prefix
        # (module names use "_" where driver names may use "-").
        prefix = driver.replace("-", "_") + "_"
        names = {n for n, m in kernel.traceable.items() if m is None and n.startswith(prefix)}
    return {b for b in map(clone_of, names) if b is not None}


def find_driver_functions(driver: str, kernel: KernelInfo, btf: Btf | None) -> dict[str, list[str]]:
    """Role -> traceable functions of ``driver`` (see :func:`driver_candidates`).

    Names are clone-free base names (``foo``, not ``foo.isra.0``); resolution
    attaches to the clones.  Roles with nothing found are left out.
    """
    names = driver_candidates(driver, kernel)
    if not names:
        return {}
    found: dict[str, list[str]] = {}
    signatures = {"xmit": (XMIT_PARAMS, None), "poll": (POLL_PARAMS, "int")}
    for role, (params, returns) in signatures.items():
        hits = _by_signature(btf, names, params, returns) if btf else []
        found[role] = hits or _best_by_name(role, names, set())
    taken = set(found["xmit"]) | set(found["poll"])
    for role in ("rx_clean", "tx_clean"):
        found[role] = _best_by_name(role, names, taken)
        taken |= set(found[role])
    return {role: sorted(fs) for role, fs in found.items() if fs}
