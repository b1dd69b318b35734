"""pcap-filter expressions: libpcap's programs, run by the reference interpreter on
crafted packets, as Ethernet frames and as raw IP; the cflags; the errors."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from click.testing import CliRunner
from skbpath.tracer.cli.main import main
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.record.cflags import Filters, build_cflags
from skbpath.tracer.record.pcap import (
    DLT_EN10MB,
    DLT_RAW,
    compile_expr,
    compile_filter,
    insn_list,
    pcap_cflags,
)

from tests.pcap_ref import ACCEPT, L3, REJECT, UNKNOWN, frame, run
from tests.synth import demo_table

try:
    compile_expr("ip", DLT_RAW)
except SkbpathError:  # pragma: no cover - libpcap missing
    pytest.skip("libpcap is not installed (apt-get install libpcap0.8)", allow_module_level=True)

ALL = set(L3)
# expression -> the packets it must match (every other one must not).
CASES = {
    "tcp port 443 and host 198.18.0.2": {"tcp443", "tcp443-syn"},
    "tcp": {"tcp443", "tcp443-syn", "tcp5202-rev", "tcp6-443"},
    "udp": {"udp53", "udp6"},
    "icmp": {"icmp"},
    "ip6": {"udp6", "tcp6-443", "icmp6"},
    "icmp6": {"icmp6"},
    "ip6 and udp": {"udp6"},
    "port 443": {"tcp443", "tcp443-syn", "tcp6-443"},
    "src host 198.18.0.2": {"tcp5202-rev"},
    "dst port 53": {"udp53", "udp6"},
    "host 2001:db8:5b::2": {"udp6", "tcp6-443", "icmp6"},
    # "net" matches ARP's addresses too.
    "net 198.18.0.0/24 and not icmp": {"tcp443", "tcp443-syn", "tcp5202-rev", "udp53", "arp"},
    "tcp[tcpflags] & tcp-syn != 0": {"tcp443-syn"},
    "ip6 or icmp": {"icmp", "udp6", "tcp6-443", "icmp6"},
    "greater 200": {"udp53"},
    "portrange 5000-5400": {"tcp5202-rev", "udp53", "udp6"},
    "not ip and not ip6": {"arp"},
}


@pytest.mark.parametrize("expr", sorted(CASES))
def test_ethernet_program_matches_exactly(expr: str) -> None:
    prog = compile_filter(expr).eth
    got = {name for name in L3 if run(prog, frame(name)) == ACCEPT}
    assert got == CASES[expr]


@pytest.mark.parametrize("expr", sorted(CASES))
def test_raw_program_matches_the_same_ip_packets(expr: str) -> None:
    flt = compile_filter(expr)
    assert flt.raw is not None
    ip_packets = {name for name, (ethertype, _) in L3.items() if ethertype != 0x0806}
    got = {name for name in ip_packets if run(flt.raw, L3[name][1]) == ACCEPT}
    want = CASES[expr] & ip_packets
    # "greater" counts the link layer's 14 bytes on Ethernet, not on raw IP.
    if expr == "greater 200":
        want = {n for n in ip_packets if len(L3[n][1]) >= 200}
    assert got == want


def _made_up(proto: int, sport: int, dport: int, v6: bool = False) -> bytes:
    """What pcap_classify_sock builds from a socket: the IP header and the ports, no more."""
    a, b = ("2001:db8:5b::1", "2001:db8:5b::2") if v6 else ("198.18.0.1", "198.18.0.2")
    ports = struct.pack("!HH", sport, dport)
    if v6:
        return (bytes([0x60, 0, 0, 0, 0, 0, proto, 64]) + ipaddress.IPv6Address(a).packed
                + ipaddress.IPv6Address(b).packed + ports)
    return (bytes([0x45]) + bytes(8) + bytes([proto]) + bytes(2)
            + ipaddress.IPv4Address(a).packed + ipaddress.IPv4Address(b).packed + ports)


@pytest.mark.parametrize(
    ("expr", "v6", "verdict"),
    [
        ("tcp port 443 and host 198.18.0.2", False, ACCEPT),
        ("udp", False, REJECT),
        ("tcp port 443", True, ACCEPT),
        ("ip6 and host 2001:db8:5b::1", True, ACCEPT),
        ("icmp", False, REJECT),
        # The flags are past the made-up header: not known yet, so not a no.
        ("tcp[tcpflags] & tcp-syn != 0", False, UNKNOWN),
        ("greater 100", False, UNKNOWN),
    ],
)
def test_a_header_made_up_from_the_socket(expr: str, v6: bool, verdict: str) -> None:
    raw = compile_filter(expr).raw
    assert raw is not None
    assert run(raw, _made_up(6, 40000, 443, v6), partial=True) == verdict


def test_link_layer_expressions_have_no_raw_program() -> None:
    flt = compile_filter("ether src 02:00:00:00:00:01")
    assert flt.raw is None
    assert run(flt.eth, frame("tcp443")) == ACCEPT
    assert "-DPCAP_RAW_PROG" not in " ".join(pcap_cflags(flt))


def test_a_short_packet_is_rejected_not_read_past() -> None:
    prog = compile_filter("tcp port 443").eth
    assert run(prog, frame("tcp443")[:30]) == REJECT


def test_cflags_carry_both_programs_as_x_macros() -> None:
    flt = compile_filter("tcp port 443")
    eth = compile_expr("tcp port 443", DLT_EN10MB)
    assert list(flt.eth) == eth
    listed = insn_list(flt.eth).split(" ")
    assert len(listed) == len(eth)
    assert listed[0] == "I(0,{},{},{},{}U)".format(*eth[0])
    flags = build_cflags(demo_table(), Filters(expr="tcp port 443"))
    assert "-DFILTER_PCAP=1" in flags
    assert f"-DPCAP_ETH_PROG={insn_list(flt.eth)}" in flags
    assert any(f.startswith("-I") and f.endswith("probes") for f in flags)
    assert Filters(expr="tcp").active() == {"expr": "tcp"}


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("tcp prt 443", "can't parse filter expression: syntax error"),
        ("host 999.1.1.1", "999.1.1.1"),
        ("", "the expression is empty"),
    ],
)
def test_bad_expressions_give_libpcaps_message(expr: str, message: str) -> None:
    with pytest.raises(SkbpathError, match="filter") as exc:
        compile_filter(expr)
    assert message in str(exc.value)


@pytest.mark.parametrize("args", [["trace", "tcp", "prt", "443"], ["trace", "-f", "tcp prt 443"],
                                  ["lab", "--filter", "tcp prt 443"]])
def test_cli_bad_expression_is_one_line_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["skbpath: error: filter 'tcp prt 443': can't parse filter expression: "
                     "syntax error"]


def test_cli_expression_twice_is_an_error() -> None:
    result = CliRunner().invoke(main, ["trace", "-f", "tcp", "udp"])
    assert result.exit_code == 2
    assert "either as arguments or with --filter" in result.output
