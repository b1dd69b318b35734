"""A reference interpreter for classic BPF with the semantics of probes/pcap_filter.h,
and crafted packets to run it on (tests only)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

ACCEPT, REJECT, UNKNOWN = "accept", "reject", "unknown"
MASK = 0xFFFFFFFF


def run(prog: Sequence[tuple[int, int, int, int]], pkt: bytes, wirelen: int | None = None,
        partial: bool = False) -> str:
    """Run ``prog`` on ``pkt``: ACCEPT, REJECT, or UNKNOWN (a made-up header read past)."""
    wire = len(pkt) if wirelen is None else wirelen
    a = x = 0
    mem = [0] * 16
    pc = 0

    def load(off: int, size: int) -> int | str:
        if off > len(pkt) or size > len(pkt) - off:
            return UNKNOWN if partial else REJECT
        return int.from_bytes(pkt[off:off + size], "big")

    while pc < len(prog):
        code, jt, jf, k = prog[pc]
        cls = code & 0x07
        if cls in (0x00, 0x01):  # LD, LDX
            size = {0x00: 4, 0x08: 2, 0x10: 1}[code & 0x18]
            mode = code & 0xE0
            v: int | str
            if mode == 0x00:
                v = k
            elif mode == 0x20:
                v = load(k, size)
            elif mode == 0x40:
                v = load((x + k) & MASK, size)
            elif mode == 0x60:
                v = mem[k & 15]
            elif mode == 0x80:
                if partial:
                    return UNKNOWN
                v = wire
            elif mode == 0xA0:
                v = load(k, 1)
                if isinstance(v, int):
                    v = (v & 0xF) << 2
            else:
                return REJECT
            if isinstance(v, str):
                return v
            if cls == 0x00:
                a = v
            else:
                x = v
        elif cls == 0x02:
            mem[k & 15] = a
        elif cls == 0x03:
            mem[k & 15] = x
        elif cls == 0x04:  # ALU
            op, v = code & 0xF0, x if code & 0x08 else k
            if op in (0x30, 0x90) and v == 0:
                return REJECT
            a = _alu(op, a, v) & MASK
        elif cls == 0x05:  # JMP
            op, v = code & 0xF0, x if code & 0x08 else k
            if op == 0x00:
                pc += 1 + k
                continue
            taken = {0x10: a == v, 0x20: a > v, 0x30: a >= v, 0x40: (a & v) != 0}[op]
            pc += 1 + (jt if taken else jf)
            continue
        elif cls == 0x06:  # RET
            return ACCEPT if (a if code & 0x18 == 0x10 else k) else REJECT
        else:  # MISC
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
        pc += 1
    return REJECT


def _alu(op: int, a: int, v: int) -> int:
    if op == 0x00:
        return a + v
    if op == 0x10:
        return a - v
    if op == 0x20:
        return a * v
    if op == 0x30:
        return a // v
    if op == 0x40:
        return a | v
    if op == 0x50:
        return a & v
    if op == 0x60:
        return a << (v & 31)
    if op == 0x70:
        return a >> (v & 31)
    if op == 0x80:
        return -a
    if op == 0x90:
        return a % v
    return a ^ v  # 0xA0, BPF_XOR


# ---------------------------------------------------------------- packets
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
V4_A, V4_B = "198.18.0.1", "198.18.0.2"
V6_A, V6_B = "2001:db8:5b::1", "2001:db8:5b::2"


def eth(payload: bytes, ethertype: int, src: bytes = MAC_A, dst: bytes = MAC_B) -> bytes:
    """An Ethernet frame around ``payload``."""
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, l4: bytes, src: str = V4_A, dst: str = V4_B) -> bytes:
    """An IPv4 header (no options, not a fragment) and ``l4``."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0,
                       ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed) + l4


def ipv6(nxt: int, l4: bytes, src: str = V6_A, dst: str = V6_B) -> bytes:
    """An IPv6 header and ``l4``."""
    return struct.pack("!IHBB16s16s", 0x60000000, len(l4), nxt, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + l4


def tcp(sport: int, dport: int, flags: int = 0x10, payload: bytes = b"") -> bytes:
    """A TCP header (data offset 5) with ``flags``."""
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A UDP header and ``payload``."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp_echo() -> bytes:
    """An ICMP (or ICMPv6 with type 128) echo request's first bytes."""
    return struct.pack("!BBHHH", 8, 0, 0, 1, 1)


def arp() -> bytes:
    """An ARP request from V4_A for V4_B."""
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, MAC_A,
                       ipaddress.IPv4Address(V4_A).packed, bytes(6),
                       ipaddress.IPv4Address(V4_B).packed)


# The network-layer packets by name; the Ethernet frame adds the ethertype.
L3 = {
    "tcp443": (0x0800, ipv4(6, tcp(40000, 443))),
    "tcp443-syn": (0x0800, ipv4(6, tcp(40000, 443, flags=0x02))),
    "tcp5202-rev": (0x0800, ipv4(6, tcp(5202, 40000), src=V4_B, dst=V4_A)),
    "udp53": (0x0800, ipv4(17, udp(5353, 53, b"x" * 200))),
    "icmp": (0x0800, ipv4(1, icmp_echo())),
    "udp6": (0x86DD, ipv6(17, udp(5353, 53))),
    "tcp6-443": (0x86DD, ipv6(6, tcp(40000, 443))),
    "icmp6": (0x86DD, ipv6(58, struct.pack("!BBHHH", 128, 0, 0, 1, 1))),
    "arp": (0x0806, arp()),
}


def frame(name: str) -> bytes:
    """The Ethernet frame of packet ``name``."""
    ethertype, l3 = L3[name]
    return eth(l3, ethertype)
