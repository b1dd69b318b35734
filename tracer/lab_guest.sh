#!/bin/bash
# Runs inside the lab guest (see tracer/lab.py).  $1 is the env file the host
# wrote: SKBPATH_PY, SKBPATH_ROOT, SKBPATH_OUT, SKBPATH_LOG, SKBPATH_TRAFFIC,
# SKBPATH_TRACE_ARGS, HOST_ADDR, PEER_ADDR.
set -u
# shellcheck disable=SC1090
. "$1"
exec >"$SKBPATH_LOG" 2>&1
set -x
export PS4="+ lab: "
cd "$SKBPATH_ROOT" || exit 1

modprobe e1000
# The two e1000 NICs, in PCI order: no interface name is assumed.
nics=()
for _ in $(seq 50); do
    nics=()
    for dev in /sys/class/net/*; do
        drv=$(readlink "$dev/device/driver" 2>/dev/null) || continue
        [ "$(basename "$drv")" = e1000 ] && nics+=("$(basename "$dev")")
    done
    [ ${#nics[@]} -ge 2 ] && break
    sleep 0.2
done
if [ ${#nics[@]} -lt 2 ]; then echo "lab: expected two e1000 NICs, found ${#nics[@]}"; exit 1; fi
A=${nics[0]}
B=${nics[1]}

ip link set lo up
ip netns add skbpeer
ip link set "$B" netns skbpeer
ip addr add "$HOST_ADDR/24" dev "$A"
ip link set "$A" up
ip -n skbpeer link set lo up
ip -n skbpeer addr add "$PEER_ADDR/24" dev "$B"
ip -n skbpeer link set "$B" up

# Wait for the link (e1000 autonegotiation takes a moment).
{ set +x; } 2>/dev/null
for _ in $(seq 100); do
    ping -c 1 -W 1 "$PEER_ADDR" >/dev/null 2>&1 && break
    sleep 0.2
done
set -x
ping -c 1 -W 2 "$PEER_ADDR" || { echo "lab: peer $PEER_ADDR unreachable"; exit 1; }

ip netns exec skbpeer iperf3 -s -D
ip netns exec skbpeer "$SKBPATH_PY" -m tracer.rr server "$PEER_ADDR" &
sleep 1

outdir="$(dirname "$SKBPATH_OUT")"
export PEER="$PEER_ADDR" SKBPATH_PY

# start_tracer OUTPUT [trace options...]: returns once probes are attached.
start_tracer() {
    local out=$1
    shift
    ready="$outdir/tracer.ready"
    rm -f "$ready"
    "$SKBPATH_PY" -m tracer.cli trace -o "$out" --ready-file "$ready" --duration 300 \
        --recorded-with "skbpath lab, traffic: $SKBPATH_TRAFFIC" "$@" &
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
        iperf3 -c "$PEER" -t "$SKBPATH_BENCH_SECONDS" -J >"$outdir/plain-$i.json"
        start_tracer "$outdir/traced-$i.skbtrace" "$@"
        iperf3 -c "$PEER" -t "$SKBPATH_BENCH_SECONDS" -J >"$outdir/traced-$i.json"
        stop_tracer
    done
    cp "$outdir/traced-1.skbtrace" "$SKBPATH_OUT"
else
    start_tracer "$SKBPATH_OUT" "$@"
    bash -c "$SKBPATH_TRAFFIC"
    echo "lab: traffic exited with $?"
    stop_tracer
fi
sync
