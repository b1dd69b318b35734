#!/bin/bash
# Runs inside the lab guest (see tracer/lab/vm.py).  $1 is the env file the host
# wrote: SKBPATH_PY, SKBPATH_ROOT, SKBPATH_OUT (the shared directory), SKBPATH_LOG,
# SKBPATH_SCENARIOS (what to trace), SKBPATH_TRAFFIC and SKBPATH_TRACE_ARGS
# (bench modes), SKBPATH_TOPOLOGY (pair|forward), SKBPATH_NIC_DRIVER (the guest
# module of the NICs), PEER_ADDR, SKBPATH_PROGRESS (the lines the host shows),
# SKBPATH_PIN (1: the NICs' interrupts on CPU 0, the traffic on the others),
# SKBPATH_PROFILE (non-empty: profile the tracer).
set -u
# shellcheck disable=SC1090
. "$1"
# Everything, with the shell trace, goes to the full log (skbpath lab -v shows
# it); the lines a user wants go to the progress file too, which the host shows.
exec >"$SKBPATH_LOG" 2>&1
say() { echo "$*" | tee -a "$SKBPATH_PROGRESS"; }
set -x
export PS4="+ lab: "
cd "$SKBPATH_ROOT" || exit 1

modprobe "$SKBPATH_NIC_DRIVER"
# The two NICs, in PCI order: no interface name is assumed.
nics=()
for _ in $(seq 50); do
    nics=()
    for dev in /sys/class/net/*; do
        drv=$(readlink "$dev/device/driver" 2>/dev/null) || continue
        [ "$(basename "$drv")" = "$SKBPATH_NIC_DRIVER" ] && nics+=("$(basename "$dev")")
    done
    [ ${#nics[@]} -ge 2 ] && break
    sleep 0.2
done
if [ ${#nics[@]} -lt 2 ]; then
    say "lab: expected two $SKBPATH_NIC_DRIVER NICs, found ${#nics[@]}"
    exit 1
fi
A=${nics[0]}
B=${nics[1]}
# Their devices in sysfs, which every namespace sees (B moves to skbpeer).
nic_devs=("$(readlink -f "/sys/class/net/$A/device")" "$(readlink -f "/sys/class/net/$B/device")")

ip link set lo up
ip netns add skbpeer
ip -n skbpeer link set lo up
run_traffic=(bash -c)
case "$SKBPATH_TOPOLOGY" in
pair)
    # A in the root namespace, B in skbpeer; traffic from the root namespace.
    ip link set "$B" netns skbpeer
    ip addr add 198.18.0.1/24 dev "$A"
    ip link set "$A" up
    ip -n skbpeer addr add "$PEER_ADDR/24" dev "$B"
    ip -n skbpeer link set "$B" up
    ;;
forward)
    # The root namespace routes: client (A, skbclient) -> B ... veth -> skbpeer.
    ip netns add skbclient
    ip -n skbclient link set lo up
    ip link set "$A" netns skbclient
    ip -n skbclient addr add 198.18.0.2/25 dev "$A"
    ip -n skbclient link set "$A" up
    ip -n skbclient route add default via 198.18.0.1
    ip addr add 198.18.0.1/25 dev "$B"
    ip link set "$B" up
    ip link add skbfwd0 type veth peer name skbfwd1 netns skbpeer
    ip addr add 198.18.0.129/25 dev skbfwd0
    ip link set skbfwd0 up
    ip -n skbpeer addr add "$PEER_ADDR/25" dev skbfwd1
    ip -n skbpeer link set skbfwd1 up
    ip -n skbpeer route add default via 198.18.0.129
    sysctl -qw net.ipv4.ip_forward=1
    run_traffic=(ip netns exec skbclient bash -c)
    ;;
*)
    say "lab: unknown topology $SKBPATH_TOPOLOGY"
    exit 1
    ;;
esac

# Wait for the path to the peer (e1000 autonegotiation takes a moment).
{ set +x; } 2>/dev/null
for _ in $(seq 100); do
    "${run_traffic[@]}" "ping -c 1 -W 1 $PEER_ADDR" >/dev/null 2>&1 && break
    sleep 0.2
done
set -x
"${run_traffic[@]}" "ping -c 1 -W 2 $PEER_ADDR" || { say "lab: peer $PEER_ADDR unreachable"; exit 1; }
say "lab: guest up: $A and $B ($SKBPATH_NIC_DRIVER), topology $SKBPATH_TOPOLOGY, peer $PEER_ADDR"

# The NICs' interrupts on CPU 0, the traffic's processes on the other CPUs
# (SKBPATH_PIN=1, the default).  The kernel runs one BPF program at a time per
# CPU: a softirq that interrupts a task inside the program of a function and
# calls that function again has its call skipped (bpf_missed, kprobe_missed).
# Under TCG a program is slow enough for that to happen a few times a
# transfer.  Apart, the NICs' softirqs never run inside the syscalls'
# programs; only a timer's softirq still can.
pin=()
placement=""  # for the trace's recorded_with
if [ "${SKBPATH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    irqs=()
    for dev in "${nic_devs[@]}"; do
        # MSI or MSI-X vectors (virtio's sit on its PCI parent), else the line.
        for d in "$dev" "$dev/.."; do
            if [ -d "$d/msi_irqs" ] && [ -n "$(ls "$d/msi_irqs")" ]; then
                mapfile -t -O ${#irqs[@]} irqs < <(ls "$d/msi_irqs")
                break
            elif [ -s "$d/irq" ] && [ "$(cat "$d/irq")" != 0 ]; then
                irqs+=("$(cat "$d/irq")")
                break
            fi
        done
    done
    for irq in "${irqs[@]}"; do
        echo 0 >"/proc/irq/$irq/smp_affinity_list" || say "lab: IRQ $irq cannot move to CPU 0"
    done
    pin=(taskset -c "1-$(($(nproc) - 1))")
    placement=", NIC interrupts on CPU 0, traffic on CPUs 1-$(($(nproc) - 1))"
    run_traffic=("${pin[@]}" "${run_traffic[@]}")
    say "lab: the NICs' interrupts (${irqs[*]}) on CPU 0, the traffic on CPUs 1-$(($(nproc) - 1))"
fi

"${pin[@]}" ip netns exec skbpeer iperf3 -s -D
"${pin[@]}" ip netns exec skbpeer "$SKBPATH_PY" -m skbpath.tracer.lab.rr server "$PEER_ADDR" &
sleep 1

outdir="$SKBPATH_OUT"
export PEER="$PEER_ADDR" SKBPATH_PY SKBPATH_ROOT

# start_tracer OUTPUT TRAFFIC [trace options...]: returns once probes are attached
# (status 1 if the tracer did not start).
start_tracer() {
    local out=$1 traffic=$2
    shift 2
    ready="$outdir/tracer.ready"
    rm -f "$ready"
    # SKBPATH_PROFILE=1 on the host: the tracer runs under cProfile, its
    # profile written beside the trace (NAME.skbtrace.prof).
    local profile=()
    [ -n "${SKBPATH_PROFILE:-}" ] && profile=(-m cProfile -o "$out.prof")
    "$SKBPATH_PY" "${profile[@]}" -m skbpath.tracer.cli.main trace -o "$out" --ready-file "$ready" --duration 300 \
        --recorded-with "skbpath lab, kernel $(uname -r) ($(cat /proc/sys/kernel/version)), topology $SKBPATH_TOPOLOGY, $SKBPATH_NIC_DRIVER NICs$placement, traffic: $traffic" "$@" \
        2> >(tee -a "$SKBPATH_PROGRESS" >&2) &
    tracer=$!
    # Compiling and attaching a hundred probes under TCG takes two to four
    # minutes (more on a loaded host): the wait is bounded by time, not by a
    # count of polls, and is the host's limit per scenario (SCENARIO_SECONDS in
    # vm.py), so that a tracer that hangs fails its own scenario, not the boot.
    { set +x; } 2>/dev/null  # the wait is not worth a log line per poll
    local deadline=$((SECONDS + ${SKBPATH_READY_TIMEOUT:-600}))
    while [ $SECONDS -lt $deadline ]; do
        [ -s "$ready" ] && break
        kill -0 "$tracer" 2>/dev/null || break
        sleep 0.5
    done
    set -x
    if [ ! -s "$ready" ]; then
        say "lab: the tracer did not start"
        kill -INT "$tracer" 2>/dev/null
        wait "$tracer"
        return 1
    fi
}

# nic_stats PHASE FILE: append "PHASE NETNS IFACE DRIVER RX_PACKETS TX_PACKETS" for
# every NIC with a driver (not lo, not veth) in every namespace, from sysfs.
nic_stats() {
    { set +x; } 2>/dev/null
    local phase=$1 out=$2 ns d drv
    for ns in root $(ip netns list | cut -d' ' -f1); do
        local in=()
        [ "$ns" = root ] || in=(ip netns exec "$ns")
        for d in $("${in[@]}" ls /sys/class/net); do
            drv=$("${in[@]}" readlink "/sys/class/net/$d/device/driver" 2>/dev/null) || continue
            echo "$phase $ns $d ${drv##*/}" \
                "$("${in[@]}" cat "/sys/class/net/$d/statistics/rx_packets")" \
                "$("${in[@]}" cat "/sys/class/net/$d/statistics/tx_packets")"
        done
    done >>"$out"
    set -x
}

# lab_mark LABEL, from a scenario's traffic: the NICs' counters now, as phase
# mark:LABEL:NS with NS the CLOCK_MONOTONIC time (the trace's clock), so that
# a test can check the traffic before the mark and after it apart.  The second
# before it lets the packets of what came before settle.
lab_mark() {
    sleep 1
    (nic_stats "mark:$1:$("$SKBPATH_PY" -c 'import time; print(time.monotonic_ns())')" \
        "$SKBPATH_NICS") 2>/dev/null
}
export -f nic_stats lab_mark

stop_tracer() {
    sleep 1
    kill -INT "$tracer"
    wait "$tracer"
    say "lab: tracer exited with $?"
}

# shellcheck disable=SC2086
eval "set -- $SKBPATH_TRACE_ARGS"
if [ "${SKBPATH_MODE:-trace}" = bench ]; then
    # Rounds of the same transfer: untraced, then under each of
    # SKBPATH_BENCH_MODES in turn (events: skbpath trace -> traced-N.*;
    # aggregate: skbpath trace --aggregate -> aggregate-N.*; bpftrace: kprobe
    # latency histograms on the functions the first events trace attached ->
    # bpftrace-N.*), so that drift in the emulator hits every mode alike.
    # NAME-N.cpu holds the tracer's utime+stime ticks (all threads) once its
    # probes are attached and again just before it is stopped: its own cost
    # while tracing, not bcc's compile nor the replay after detaching.
    bench_iperf() { "${run_traffic[@]}" "iperf3 -c $PEER -t $SKBPATH_BENCH_SECONDS -J" >"$1"; }
    # cpu_ticks PID: "COMM TICKS CLK_TCK" (fields 14 and 15 of stat, after the comm).
    cpu_ticks() {
        local f
        read -r -a f < <(sed 's/.*) //' "/proc/$1/stat")
        echo "$(cat "/proc/$1/comm") $((f[11] + f[12])) $(getconf CLK_TCK)"
    }
    # bench_stop PID CPUFILE: the CPU reading, then SIGINT and wait.
    bench_stop() {
        sleep 1
        cpu_ticks "$1" >>"$2"
        kill -INT "$1"
        wait "$1"
        say "lab: tracer exited with $?"
    }
    # bench_bpftrace ROUND: the transfer under bpftrace (kprobe + kretprobe
    # per symbol, one hist per function; script from bench/lab_throughput.py).
    bench_bpftrace() {
        local i=$1 bt="$outdir/bench.bt" out="$outdir/bpftrace-$i.txt"
        if [ ! -s "$bt" ]; then
            "$SKBPATH_PY" "$SKBPATH_ROOT/bench/lab_throughput.py" --bpftrace-script \
                "$outdir/traced-1.skbtrace" >"$bt" || { say "lab: no bpftrace script"; return 1; }
        fi
        local want
        want=$((2 * $(grep -c '^kprobe:' "$bt")))
        bpftrace "$bt" >"$out" 2>"$outdir/bpftrace-$i.err" &
        local bt_pid=$!
        # Attached once every kprobe and kretprobe has its fd (perf event or
        # BPF link): bpftrace prints nothing when it is done attaching.
        { set +x; } 2>/dev/null
        local deadline=$((SECONDS + ${SKBPATH_READY_TIMEOUT:-600})) n=0
        while [ $SECONDS -lt $deadline ] && kill -0 "$bt_pid" 2>/dev/null; do
            n=$(find "/proc/$bt_pid/fd" -lname 'anon_inode:*perf_event*' 2>/dev/null | wc -l)
            [ "$n" -ge "$want" ] && break
            sleep 0.5
        done
        # Its output buffers have perf event fds too: wait until the count settles.
        local last=-1
        while [ "$n" != "$last" ] && kill -0 "$bt_pid" 2>/dev/null; do
            last=$n
            sleep 1
            n=$(find "/proc/$bt_pid/fd" -lname 'anon_inode:*perf_event*' 2>/dev/null | wc -l)
        done
        set -x
        if [ "$n" -lt "$want" ]; then
            say "lab: bpftrace did not attach ($n of $want probes): $(tail -3 "$outdir/bpftrace-$i.err")"
            kill -INT "$bt_pid" 2>/dev/null
            wait "$bt_pid"
            return 1
        fi
        say "lab: bpftrace attached $n probes"
        cpu_ticks "$bt_pid" >"$outdir/bpftrace-$i.cpu"
        bench_iperf "$outdir/bpftrace-$i.json"
        bench_stop "$bt_pid" "$outdir/bpftrace-$i.cpu"
    }
    # A mode whose tracer does not start is dropped from the later rounds (the
    # others go on: one failing mode costs one compile, not the boot); the
    # host reports it as not run.
    read -r -a modes <<<"${SKBPATH_BENCH_MODES:-events}"
    for i in $(seq "$SKBPATH_BENCH_RUNS"); do
        say "lab: bench round $i of $SKBPATH_BENCH_RUNS: ${modes[*]}"
        bench_iperf "$outdir/plain-$i.json"
        kept=()
        for mode in "${modes[@]}"; do
            case $mode in
            events) name=traced extra=() ;;
            aggregate) name=aggregate extra=(--aggregate) ;;
            bpftrace) name=bpftrace ;;
            *) say "lab: unknown bench mode $mode"; exit 1 ;;
            esac
            if [ "$mode" = bpftrace ]; then
                bench_bpftrace "$i" || { say "lab: bench mode $mode failed: dropped"; continue; }
            else
                if ! start_tracer "$outdir/$name-$i.skbtrace" "$SKBPATH_TRAFFIC" "${extra[@]}" "$@"; then
                    say "lab: bench mode $mode failed: dropped"
                    continue
                fi
                cpu_ticks "$tracer" >"$outdir/$name-$i.cpu"
                bench_iperf "$outdir/$name-$i.json"
                bench_stop "$tracer" "$outdir/$name-$i.cpu"
            fi
            kept+=("$mode")
        done
        modes=("${kept[@]}")
    done
    for f in traced-1 aggregate-1; do
        [ -s "$outdir/$f.skbtrace" ] && { cp "$outdir/$f.skbtrace" "$outdir/trace.skbtrace"; break; }
    done
elif [ "${SKBPATH_MODE:-trace}" = attach-bench ]; then
    # The same rr exchanges untraced and under each attach mode, in turn.
    rr_client="\"\$SKBPATH_PY\" -m skbpath.tracer.lab.rr client $PEER $SKBPATH_BENCH_EXCHANGES"
    for i in $(seq "$SKBPATH_BENCH_RUNS"); do
        "${run_traffic[@]}" "$rr_client" >"$outdir/plain-$i.txt"
        for mode in kprobe fentry; do
            start_tracer "$outdir/$mode-$i.skbtrace" "$rr_client" --attach "$mode" "$@" || exit 1
            "${run_traffic[@]}" "$rr_client" >"$outdir/$mode-$i.txt"
            stop_tracer
        done
    done
    cp "$outdir/fentry-1.skbtrace" "$outdir/trace.skbtrace"
else
    # Each scenario (NAME<tab>TRAFFIC<tab>TRACE ARGS, one a line) traced in turn
    # into $outdir/NAME.skbtrace; one that fails does not stop the others.
    while IFS=$'\t' read -r name traffic args <&3; do
        say "lab: scenario $name: start"
        # shellcheck disable=SC2086
        eval "set -- $args"
        if start_tracer "$outdir/$name.skbtrace" "$traffic" "$@"; then
            say "lab: traffic: $traffic"
            # The NICs' own counters around the traffic, for the tests to
            # check the trace against (tests/lab/test_lab_counters.py).
            export SKBPATH_NICS="$outdir/$name.nics"
            nic_stats before "$SKBPATH_NICS"
            # The traffic's own output is progress too.
            "${run_traffic[@]}" "$traffic" > >(tee -a "$SKBPATH_PROGRESS") 2>&1
            say "lab: traffic exited with $?"
            sleep 1
            nic_stats after "$outdir/$name.nics"
            stop_tracer
        fi
        say "lab: scenario $name: end"
    done 3<"$SKBPATH_SCENARIOS"
fi
cat /proc/interrupts  # for the log: where the NICs' interrupts ran
sync
