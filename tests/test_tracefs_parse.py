"""tracefs mode, pure: trace_pipe lines (captured on a 6.18 host) to hits, events and journeys."""
# ruff: noqa: E501  (real trace_pipe lines are kept whole)

from __future__ import annotations

import io
from pathlib import Path

import pytest
from skbpath.tracer.kernel.info import KernelInfo
from skbpath.tracer.model.core import Model
from skbpath.tracer.record.tracefs.backend import Instance, available_tracepoints, instance_lost
from skbpath.tracer.record.tracefs.parse import (
    TRACEPOINTS,
    Hit,
    StackIds,
    TracefsParser,
    UserFilter,
    drop_reason_codes,
    function_table,
    hits_to_calls,
)
from skbpath.tracer.traces.events import FLAG_POINT
from skbpath.tracer.traces.tracefile import TraceReader, TraceWriter

ALL = [tp.name for tp in TRACEPOINTS]

# Real trace_pipe output of this project's host (veth pair between two netns),
# trimmed: TX on sbpv0, forwarded by veth to sbpv1, received, delivered, freed.
PIPE = """\
     kworker/1:1-23034   (  23034) [001] b....  4227.120157: net_dev_queue: dev=sbpv0 skbaddr=00000000014c68fe len=90
     kworker/1:1-23034   (  23034) [001] b....  4227.120174: net_dev_start_xmit: dev=sbpv0 queue_mapping=0 skbaddr=00000000014c68fe vlan_tagged=0 vlan_proto=0x0000 vlan_tci=0x0000 protocol=0x86dd ip_summed=0 len=90 data_len=0 network_offset=14 transport_offset_valid=1 transport_offset=62 tx_flags=0 gso_size=0 gso_segs=0 gso_type=0x0
     kworker/1:1-23034   (  23034) [001] b....  4227.120187: netif_rx: dev=sbpv1 skbaddr=00000000014c68fe len=76
     kworker/1:1-23034   (  23034) [001] b....  4227.120188: net_dev_xmit: dev=sbpv0 skbaddr=00000000014c68fe len=90 rc=0
     kworker/1:1-23034   (  23034) [001] b....  4227.123396: <stack trace>
 => trace_event_raw_event_net_dev_xmit+0xcf/0x140
 => dev_hard_start_xmit+0x16e/0x1d0
 => __dev_queue_xmit+0x924/0xf30
 => ip6_finish_output+0x228/0x420
     kworker/1:1-23034   (  23034) [001] ..s1.  4227.123400: netif_receive_skb: dev=sbpv1 skbaddr=00000000014c68fe len=76
     kworker/1:1-23034   (  23034) [001] ..s1.  4227.123427: <stack trace>
 => trace_event_raw_event_net_dev_template+0xbe/0x120
 => __netif_receive_skb_core.constprop.0+0x333/0x1350
 => __netif_receive_skb_one_core+0x39/0xa0
 => process_backlog+0x83/0x130
     kworker/1:1-23034   (  23034) [001] ..s1.  4227.123444: kfree_skb: skbaddr=00000000014c68fe rx_sk=0000000000000000 protocol=34525 location=ip6_pkt_discard+0x11/0x20 reason: IP_INNOROUTES
     kworker/1:1-23034   (  23034) [001] ..s1.  4227.123499: <stack trace>
 => trace_event_raw_event_kfree_skb+0x6c/0xc0
 => sk_skb_reason_drop+0x90/0x130
 => ip6_pkt_discard+0x11/0x20
     kworker/1:1-23034   (  23034) [001] ..s1.  4227.123501: napi_poll: napi poll on napi struct 000000008d4e700a for device (no_device) work 1 budget 64
"""
TCP_LINES = """\
         python3-25779   (  25779) [001] .....  4227.771279: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=5201 dport=0 saddr=198.18.1.2 daddr=0.0.0.0 saddrv6=::ffff:198.18.1.2 daddrv6=::ffff:0.0.0.0 oldstate=TCP_CLOSE newstate=TCP_LISTEN
         python3-25821   (  25821) [001] .Ns2.  4228.090881: tcp_probe: family=AF_INET src=198.18.1.2:5201 dest=198.18.1.1:58834 mark=0x0 data_len=7240 snd_nxt=0x10dffb6a snd_una=0x10dffb6a snd_cwnd=10 ssthresh=2147483647 snd_wnd=64512 srtt=121 rcv_wnd=65160 sock_cookie=1 skbaddr=00000000b32b9007 skaddr=000000009468c25d
         python3-25779   (  25779) [001] .....  4228.094022: skb_copy_datagram_iovec: skbaddr=00000000b32b9007 len=7240
              ip-25767   (  25767) [001] .....  4227.089321: consume_skb: skbaddr=00000000b32b9007 location=netlink_recvmsg+0x143/0x2b0
"""
KFREE_FORMAT = """name: kfree_skb
ID: 1234
print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 70, "IP_INNOROUTES" })
"""


def parse(text: str, available: list[str] | None = None) -> tuple[TracefsParser, list[Hit]]:
    _funcs, used, _ = function_table(available or ALL)
    p = TracefsParser(used, drop_reason_codes(KFREE_FORMAT))
    p.feed(text)
    p.release()
    return p, p.take()


def names(hits: list[Hit], available: list[str] | None = None) -> list[str]:
    funcs, _, _ = function_table(available or ALL)
    return [funcs.name_of(h.func) for h in hits]


def test_function_table_mapping() -> None:
    funcs, used, skipped = function_table(["net:net_dev_xmit", "skb:kfree_skb",
                                           "skb:consume_skb", "napi:napi_poll"])
    assert [f.name for f in funcs.funcs] == ["net:net_dev_xmit", "napi:napi_poll",
                                             "skb:kfree_skb", "skb:consume_skb"]
    assert [f.id for f in funcs.funcs] == [0, 1, 2, 3]
    xmit, napi, kfree, consume = funcs.funcs
    assert (xmit.path, xmit.layer, xmit.skb_arg, xmit.stack) == ("tx", "device", 1, True)
    assert (napi.path, napi.layer, napi.skb_arg) == ("rx", "softirq", 0)
    assert kfree.frees and kfree.drop and kfree.path == "free"
    assert consume.frees and not consume.drop
    assert len(skipped) == len(TRACEPOINTS) - 4
    assert all(s.reason == "no such tracepoint on this kernel" for s in skipped)
    assert len(used) == 4


def test_available_by_directory(tmp_path: Path) -> None:
    (tmp_path / "events/net/net_dev_xmit").mkdir(parents=True)
    (tmp_path / "events/skb/kfree_skb").mkdir(parents=True)
    assert available_tracepoints(str(tmp_path)) == ["net:net_dev_xmit", "skb:kfree_skb"]


def test_parse_each_event_and_stacks() -> None:
    p, hits = parse(PIPE)
    assert names(hits) == ["net:net_dev_queue", "net:net_dev_start_xmit", "net:netif_rx",
                           "net:net_dev_xmit", "net:netif_receive_skb", "skb:kfree_skb",
                           "napi:napi_poll"]
    q = hits[0]
    assert (q.ts, q.tid, q.tgid, q.cpu, q.comm) == (4227_120157_000, 23034, 23034, 1,
                                                    "kworker/1:1")
    assert q.skb == 0x14C68FE and q.dev == "sbpv0"
    assert hits[2].dev == "sbpv1"
    assert all(h.skb == 0x14C68FE for h in hits[:6])
    assert hits[6].skb == 0 and hits[6].dev == "(no_device)"
    assert hits[3].frames == ["trace_event_raw_event_net_dev_xmit+0xcf",
                              "dev_hard_start_xmit+0x16e", "__dev_queue_xmit+0x924",
                              "ip6_finish_output+0x228"]
    assert hits[4].frames is not None and hits[4].frames[1].startswith("__netif_receive")
    assert hits[0].frames is None
    assert hits[5].aux == 70  # IP_INNOROUTES, by the format file's code
    assert p.unparsed == 0 and p.orphan_stacks == 0


def test_tcp_sock_and_copy_lines() -> None:
    _, hits = parse(TCP_LINES)
    assert names(hits) == ["sock:inet_sock_set_state", "tcp:tcp_probe",
                           "skb:skb_copy_datagram_iovec", "skb:consume_skb"]
    assert hits[0].skb == 0
    assert hits[1].skb == hits[2].skb == hits[3].skb == 0xB32B9007


def test_lines_cut_across_reads() -> None:
    p1, whole = parse(PIPE)
    _, used, _ = function_table(ALL)
    p2 = TracefsParser(used)
    for i in range(0, len(PIPE), 37):
        p2.feed(PIPE[i : i + 37])
    p2.release()
    cut = p2.take()
    assert [(h.func, h.ts, h.frames) for h in cut] == [(h.func, h.ts, h.frames) for h in whole]


def test_unknown_and_odd_lines_ignored() -> None:
    text = (
        "# tracer: nop\n"
        "\n"
        "CPU:1 [LOST 12 EVENTS]\n"
        "          <idle>-0       (-------) [000] ..s2.   100.000001: sched_switch: prev=x\n"
        "garbage that is not a trace line\n"
        "          <idle>-0       (-------) [000] ..s2.   100.000002: netif_rx: dev=lo "
        "skbaddr=00000000deadbeef len=84\n"
    )
    p, hits = parse(text)
    assert names(hits) == ["net:netif_rx"]
    assert hits[0].tid == 0 and hits[0].tgid == 0 and hits[0].comm == "<idle>"
    assert p.unparsed == 2  # the LOST line and the garbage; sched_switch is parsed, not ours


def test_stack_waits_for_interleaved_cpu() -> None:
    # Another CPU's line comes between an event and its stack: order is kept.
    text = (
        "  a-1 (1) [001] ..... 10.000001: net_dev_xmit: dev=v skbaddr=0000000000000001 len=1 rc=0\n"
        "  b-2 (2) [000] ..... 10.000002: netif_rx: dev=v skbaddr=0000000000000002 len=1\n"
        "  a-1 (1) [001] ..... 10.000003: <stack trace>\n"
        " => trace_event_raw_event_net_dev_xmit+0xcf/0x140\n"
        " => dev_hard_start_xmit+0x16e/0x1d0\n"
    )
    _, used, _ = function_table(ALL)
    p = TracefsParser(used)
    p.feed(text)
    assert p.take() == []  # the xmit still waits: its stack block may go on
    p.feed("  a-1 (1) [001] ..... 10.000004: netif_rx: dev=v skbaddr=0000000000000003 len=1\n")
    hits = p.take()
    assert names(hits) == ["net:net_dev_xmit", "net:netif_rx", "net:netif_rx"]
    assert [h.cpu for h in hits] == [1, 0, 1]
    assert hits[0].frames == ["trace_event_raw_event_net_dev_xmit+0xcf",
                              "dev_hard_start_xmit+0x16e"]
    p.release()
    assert p.take() == []


def test_hits_to_point_calls_and_stack_ids() -> None:
    _, hits = parse(PIPE)
    stacks = StackIds()
    calls = hits_to_calls(hits, stacks)
    assert len(calls) == len(hits)
    for h, c in zip(hits, calls, strict=True):
        assert (c.entry, c.duration, c.flags, c.depth) == (h.ts, 0, FLAG_POINT, 0)
        assert (c.skb, c.func, c.tid, c.tgid, c.cpu) == (h.skb, h.func, h.tid, h.tgid, h.cpu)
    assert calls[0].stack_id == -1  # net_dev_queue: no stack
    xmit_sid = calls[3].stack_id
    new = stacks.take_new()
    # Tracing frames are dropped: the stack starts at the traced code.
    assert new[xmit_sid][0] == "dev_hard_start_xmit+0x16e"
    assert new[calls[5].stack_id][:2] == ["sk_skb_reason_drop+0x90", "ip6_pkt_discard+0x11"]
    assert calls[5].aux == 70
    assert stacks.get(["trace_event_x+0x1", "dev_hard_start_xmit+0x16e",
                       "__dev_queue_xmit+0x924", "ip6_finish_output+0x228"]) == xmit_sid


def test_journey_from_tracepoints() -> None:
    funcs, _, _ = function_table(ALL)
    _, hits = parse(PIPE + TCP_LINES)
    model = Model(funcs)
    model.feed_calls(hits_to_calls(hits, StackIds()))
    model.finish()
    first = model.journey_list[0]
    assert first.path == "TX" and first.end == "freed"
    assert first.functions() == ["net:net_dev_queue", "net:net_dev_start_xmit", "net:netif_rx",
                                 "net:net_dev_xmit", "net:netif_receive_skb", "skb:kfree_skb"]
    assert model.drops.counts and next(iter(model.drops.counts)).reason == 70


def test_address_reuse_after_local_delivery_is_a_new_skb() -> None:
    # TCP frees pure ACKs without a tracepoint: the address comes back on a device event.
    text = (
        "  a-1 (1) [001] ..... 10.000001: netif_receive_skb: dev=v skbaddr=00000000000000aa len=1\n"
        "  a-1 (1) [001] ..... 10.000002: tcp_probe: family=AF_INET skbaddr=00000000000000aa "
        "skaddr=0000000000000001\n"
        "  a-1 (1) [001] ..... 10.000003: net_dev_queue: dev=v skbaddr=00000000000000aa len=1\n"
        "  a-1 (1) [001] ..... 10.000004: consume_skb: skbaddr=00000000000000aa location=x+0x1\n"
        "  a-1 (1) [001] ..... 10.000005: net_dev_queue: dev=v skbaddr=00000000000000aa len=1\n"
    )
    _, hits = parse(text)
    ids = [h.skb for h in hits]
    assert ids[0] == ids[1] == 0xAA
    assert ids[2] == ids[3] != 0xAA
    assert ids[4] not in (ids[0], ids[2])


def test_drop_reason_codes_and_unknown_names() -> None:
    assert drop_reason_codes(KFREE_FORMAT) == {2: "NOT_SPECIFIED", 3: "NO_SOCKET",
                                               70: "IP_INNOROUTES"}
    p, hits = parse("  a-1 (1) [000] ..... 1.000001: kfree_skb: skbaddr=0000000000000001 "
                    "rx_sk=0 protocol=0 location=x+0x1/0x2 reason: BRAND_NEW\n")
    assert hits[0].aux > 0xFFFF and p.new_reasons == {hits[0].aux: "BRAND_NEW"}


def test_user_filter_tracks_matched_skbs() -> None:
    f = UserFilter(iface="sbpv0")
    q = Hit(ts=1, tid=5, tgid=5, cpu=0, comm="p", func=0, skb=7, dev="sbpv0")
    rx = Hit(ts=2, tid=5, tgid=5, cpu=0, comm="p", func=1, skb=7, dev="sbpv1")
    free = Hit(ts=3, tid=5, tgid=5, cpu=0, comm="p", func=2, skb=7)
    other = Hit(ts=4, tid=5, tgid=5, cpu=0, comm="p", func=1, skb=8, dev="sbpv1")
    assert f.keep(q, False) and f.keep(rx, False) and f.keep(free, True)
    assert not f.keep(other, False)
    assert not f.keep(free, True)  # untracked after its free
    assert UserFilter(pid=5).keep(other, False)
    assert not UserFilter(comm="q").keep(other, False)
    assert UserFilter().keep(other, False)


def test_instance_lost_sums_cpus(tmp_path: Path) -> None:
    for cpu, (over, dropped) in enumerate([(3, 1), (4, 0)]):
        d = tmp_path / "per_cpu" / f"cpu{cpu}"
        d.mkdir(parents=True)
        (d / "stats").write_text(f"entries: 5\noverrun: {over}\ncommit overrun: 9\n"
                                 f"bytes: 100\noldest event ts:  1.0\ndropped events: {dropped}\n")
    assert instance_lost(str(tmp_path)) == {"tracefs_overrun": 7, "tracefs_dropped": 1}
    assert instance_lost(str(tmp_path / "missing")) == {"tracefs_overrun": 0,
                                                        "tracefs_dropped": 0}


def test_instance_lives_under_instances_with_our_pid(tmp_path: Path) -> None:
    _, used, _ = function_table(ALL)
    inst = Instance(str(tmp_path), used)
    assert inst.path.startswith(str(tmp_path / "instances" / "skbpath-"))
    inst.remove()  # nothing there: a no-op, never an error


def test_events_round_trip_through_trace_file(tmp_path: Path) -> None:
    funcs, _, _ = function_table(ALL)
    _, hits = parse(PIPE)
    stacks = StackIds()
    calls = hits_to_calls(hits, stacks)
    buf = io.BytesIO()
    from skbpath.tracer.traces.events import pack_calls

    w = TraceWriter(buf, {"format": "skbpath-trace", "functions": funcs.to_json(),
                          "attach": "tracefs"})
    w.write_events(pack_calls(calls))
    path = tmp_path / "t.skbtrace"
    path.write_bytes(buf.getvalue())
    reader = TraceReader(str(path))
    assert reader.version == 2
    got = [e for batch in reader.event_batches() for e in batch]
    assert got == [tuple(c) for c in calls]


@pytest.mark.parametrize("line", [
    "  a-1 [000] 1.000001: netif_rx: dev=lo skbaddr=0000000000000001 len=1",  # no tgid, no flags
    "  a b-c-12 (  12) [000] d..1. 1.000001: netif_rx: dev=lo skbaddr=0000000000000001 len=1",
])
def test_line_variants(line: str) -> None:
    _, hits = parse(line + "\n")
    assert names(hits) == ["net:netif_rx"] and hits[0].skb == 1


# ------------------------------------------------------------ the CLI's choice
def _kernel(**kw: object) -> KernelInfo:
    base: dict[str, object] = dict(
        release="6.18.44-test", traceable={}, kallsyms=set(), has_kprobes=False,
        has_btf=True, has_headers=False, has_fentry=False, tracefs="/nonexistent",
    )
    base.update(kw)
    return KernelInfo(**base)  # type: ignore[arg-type]


def test_auto_falls_back_to_tracefs_saying_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys
    import types

    from skbpath.tracer.cli import record as cli_record
    from skbpath.tracer.record.attach import machine_features, mode_gaps

    monkeypatch.setitem(sys.modules, "bcc", types.ModuleType("bcc"))
    monkeypatch.setattr("os.geteuid", lambda: 0)

    def choose(**kw: object) -> str:
        # auto's first choice; the rest are its fallbacks if the BPF program does not compile
        modes = cli_record._choose_attach(machine_features(_kernel(**kw)))
        assert modes[-1] == "tracefs"
        return modes[0]

    assert choose() == "tracefs"
    err = capsys.readouterr().err
    assert err == ("skbpath: 6.18.44-test: no fentry: no BPF trampolines, no headers; "
                   "no kprobe: no kprobes, no headers; no tracepoint: no raw tracepoints, "
                   "no headers: using tracefs (tracepoints; coarser journeys)\n")
    assert choose(has_kprobes=True, has_headers=True) == "kprobe"
    assert capsys.readouterr().err == "skbpath: 6.18.44-test: no fentry: no BPF trampolines: " \
        "using kprobe\n"
    assert choose(has_fentry=True, has_headers=True) == "fentry"
    assert capsys.readouterr().err == ""
    monkeypatch.setitem(sys.modules, "bcc", None)
    gaps = mode_gaps(machine_features(_kernel(has_kprobes=True)), "kprobe")
    assert [g.what for g in gaps] == ["no bcc", "no headers"]
    assert "apt-get install linux-headers-6.18.44-test" in gaps[1].remedy


def test_cli_not_root_and_unsupported_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner
    from skbpath.tracer.cli import main as cli

    runner = CliRunner()
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for attach in ("auto", "tracefs", "kprobe"):
        r = runner.invoke(cli.main, ["trace", "--attach", attach, "-d", "1"])
        assert r.exit_code == 2
        assert r.output.strip() == "skbpath: error: skbpath trace needs root: run it with sudo"
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("skbpath.tracer.kernel.info.read_kernel_info", lambda: _kernel())
    r = runner.invoke(cli.main, ["trace", "--attach", "tracefs", "--proto", "tcp",
                                 "--port", "80"])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        "skbpath: error: --proto, --port: not supported with --attach tracefs (the device "
        "tracepoints carry no addresses or ports); use --iface, --pid or --comm"
    ]
    r = runner.invoke(cli.main, ["trace", "--attach", "tracefs", "--ebpf"])
    assert r.exit_code == 2 and "loads no BPF program" in r.output


def test_reuse_rules_name_catalog_tracepoints() -> None:
    # The tracepoint catalog is data now: the parser's rules must name its events.
    from skbpath.tracer.record.tracefs.parse import DELIVERED, REUSE_MARKERS

    events = {tp.event for tp in TRACEPOINTS}
    assert events >= DELIVERED | REUSE_MARKERS
