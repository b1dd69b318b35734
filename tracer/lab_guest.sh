#!/bin/bash
# Runs inside the lab guest (see tracer/lab.py).  $1 is the env file the host
# wrote: SKBPATH_PY, SKBPATH_ROOT, SKBPATH_OUT, SKBPATH_LOG, SKBPATH_TRAFFIC,
# SKBPATH_TRACE_ARGS, SKBPATH_TOPOLOGY (pair|forward), SKBPATH_NIC_DRIVER
# (the guest module of the NICs), PEER_ADDR.
set -u
# shellcheck disable=SC1090
. "$1"
exec >"$SKBPATH_LOG" 2>&1
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
    echo "lab: expected two $SKBPATH_NIC_DRIVER NICs, found ${#nics[@]}"
    exit 1
fi
A=${nics[0]}
B=${nics[1]}

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
    echo "lab: unknown topology $SKBPATH_TOPOLOGY"
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
"${run_traffic[@]}" "ping -c 1 -W 2 $PEER_ADDR" || { echo "lab: peer $PEER_ADDR unreachable"; exit 1; }

ip netns exec skbpeer iperf3 -s -D
ip netns exec skbpeer "$SKBPATH_PY" -m tracer.rr server "$PEER_ADDR" &
sleep 1

outdir="$(dirname "$SKBPATH_OUT")"
export PEER="$PEER_ADDR" SKBPATH_PY SKBPATH_ROOT

# start_tracer OUTPUT [trace options...]: returns once probes are attached.
start_tracer() {
    local out=$1
    shift
    ready="$outdir/tracer.ready"
    rm -f "$ready"
    "$SKBPATH_PY" -m tracer.cli trace -o "$out" --ready-file "$ready" --duration 300 \
        --recorded-with "skbpath lab, topology $SKBPATH_TOPOLOGY, $SKBPATH_NIC_DRIVER NICs, traffic: $SKBPATH_TRAFFIC" "$@" &
    tracer=$!
    for _ in $(seq 600); do
        [ -s "$ready" ] && break
        kill -0 "$tracer" 2>/dev/null || break
        sleep 0.5
    done
    if [ ! -s "$ready" ]; then echo "lab: the tracer did not start"; wait "$tracer"; exit 1; fi
}

stop_tracer() {
    sleep 1
    kill -INT "$tracer"
    wait "$tracer"
    echo "lab: tracer exited with $?"
}

# shellcheck disable=SC2086
eval "set -- $SKBPATH_TRACE_ARGS"
if [ "${SKBPATH_MODE:-trace}" = bench ]; then
    # Alternate untraced and traced runs of the same transfer.
    for i in $(seq "$SKBPATH_BENCH_RUNS"); do
        "${run_traffic[@]}" "iperf3 -c $PEER -t $SKBPATH_BENCH_SECONDS -J" >"$outdir/plain-$i.json"
        start_tracer "$outdir/traced-$i.skbtrace" "$@"
        "${run_traffic[@]}" "iperf3 -c $PEER -t $SKBPATH_BENCH_SECONDS -J" >"$outdir/traced-$i.json"
        stop_tracer
    done
    cp "$outdir/traced-1.skbtrace" "$SKBPATH_OUT"
elif [ "${SKBPATH_MODE:-trace}" = attach-bench ]; then
    # The same rr exchanges untraced and under each attach mode, in turn.
    rr_client="\"\$SKBPATH_PY\" -m tracer.rr client $PEER $SKBPATH_BENCH_EXCHANGES"
    for i in $(seq "$SKBPATH_BENCH_RUNS"); do
        "${run_traffic[@]}" "$rr_client" >"$outdir/plain-$i.txt"
        for mode in kprobe fentry; do
            start_tracer "$outdir/$mode-$i.skbtrace" --attach "$mode" "$@"
            "${run_traffic[@]}" "$rr_client" >"$outdir/$mode-$i.txt"
            stop_tracer
        done
    done
    cp "$outdir/fentry-1.skbtrace" "$SKBPATH_OUT"
else
    start_tracer "$SKBPATH_OUT" "$@"
    "${run_traffic[@]}" "$SKBPATH_TRAFFIC"
    echo "lab: traffic exited with $?"
    stop_tracer
fi
sync
