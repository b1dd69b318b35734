"""probes/pcap_filter.h's interpreter, compiled with gcc for this host, agrees with the
reference interpreter on every crafted packet (Ethernet, raw IP, made-up headers).

The BPF build is the host and lab tests' job; this one checks the C semantics
in a second, on user memory (PCAP_READ is memcpy here).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from skbpath.probes.catalog import bpf_source
from skbpath.tracer.errors import SkbpathError
from skbpath.tracer.record.pcap import compile_filter, insn_list

from tests.pcap_ref import L3, frame, run
from tests.test_pcap import _made_up

HARNESS = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef uint8_t u8; typedef uint16_t u16; typedef uint32_t u32; typedef uint64_t u64;
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#define PCAP_HOST_TEST 1
#define PCAP_READ(dst, size, addr) (memcpy((dst), (void *)(uintptr_t)(addr), (size)), 0)
#include "pcap_filter.h"

/* argv: pairs of a kind (e: Ethernet, r: raw IP, p: made-up header) and hex bytes. */
int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        static u8 buf[2048];
        size_t n = strlen(argv[i + 1]) / 2;
        for (size_t j = 0; j < n; j++)
            sscanf(argv[i + 1] + 2 * j, "%2hhx", &buf[j]);
        struct pcap_pkt p = {.base = (u64)(uintptr_t)buf, .caplen = n, .wirelen = n,
                             .partial = argv[i][0] == 'p'};
        printf("%d\n", argv[i][0] == 'e' ? pcap_run_eth(&p) : pcap_run_raw(&p));
    }
    return 0;
}
"""
VERDICTS = {-1: "accept", -2: "reject", -3: "unknown"}
EXPRS = ["tcp port 443 and host 198.18.0.2", "ip6 or icmp", "tcp[tcpflags] & tcp-syn != 0",
         "greater 200", "host 2001:db8:5b::2 and udp", "portrange 5000-5400 and not arp",
         "ip[8] > 32 and (ip[6:2] & 0x1fff) == 0"]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    src = tmp_path_factory.mktemp("pcap-c") / "harness.c"
    src.write_text(HARNESS)
    return src


@pytest.mark.parametrize("expr", EXPRS)
def test_c_interpreter_agrees_with_the_reference(harness: Path, expr: str) -> None:
    flt = compile_filter(expr)
    assert flt.raw is not None
    exe = harness.with_name(f"h{EXPRS.index(expr)}")
    include = Path(bpf_source()).parent
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-Wno-unused-function", f"-I{include}",
                    f"-DPCAP_ETH_PROG={insn_list(flt.eth)}",
                    f"-DPCAP_RAW_PROG={insn_list(flt.raw)}", "-o", str(exe), str(harness)],
                   check=True)
    cases = [("e", frame(n)) for n in L3] + [("r", l3) for _, l3 in L3.values()]
    cases += [("e", frame(n)[:k]) for n in ("tcp443", "udp6") for k in (13, 30, 54)]
    cases += [("p", _made_up(6, 40000, 443, v6)) for v6 in (False, True)]
    args = [a for kind, pkt in cases for a in (kind, pkt.hex())]
    out = subprocess.run([str(exe), *args], capture_output=True, text=True, check=True).stdout
    got = [VERDICTS[int(v)] for v in out.split()]
    want = [run(flt.eth if kind == "e" else flt.raw, pkt, partial=kind == "p")
            for kind, pkt in cases]
    assert got == want
    assert "accept" in want and "reject" in want


def test_every_expression_here_compiles() -> None:
    for expr in EXPRS:
        try:
            compile_filter(expr)
        except SkbpathError as exc:  # pragma: no cover - shows which one
            pytest.fail(str(exc))
