#!/bin/bash
# Record sample_traces/tracefs_veth.skbtrace on this machine (as root, after
# 'make setup'): tracefs mode, which needs neither kprobes nor headers, on TCP
# request/response between two network namespaces joined by a veth pair.
# Only 198.18.0.201 and 198.18.0.202 (our test range, our namespaces) are used.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
A=skbpath-sa B=skbpath-sb
cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add "$A"
ip netns add "$B"
ip link add sbsa0 netns "$A" type veth peer name sbsb0 netns "$B"
ip -n "$A" addr add 198.18.0.201/24 dev sbsa0
ip -n "$B" addr add 198.18.0.202/24 dev sbsb0
for ns in "$A" "$B"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$( [ "$ns" = "$A" ] && echo sbsa0 || echo sbsb0 )" up
done
ip netns exec "$B" "$PY" -m skbpath.tracer.lab.rr server 198.18.0.202 &
server=$!
sleep 1
out=sample_traces/tracefs_veth.skbtrace
rm -f "$out.ready"
"$PY" -m skbpath.tracer.cli.main trace --attach tracefs -o "$out" --ready-file "$out.ready" --duration 30 \
    --recorded-with "sample_traces/record_host.sh: skbpath.tracer.lab.rr client over a veth pair, 200 exchanges" &
tracer=$!
for _ in $(seq 100); do [ -s "$out.ready" ] && break; sleep 0.2; done
ip netns exec "$A" "$PY" -m skbpath.tracer.lab.rr client 198.18.0.202 200
sleep 1
kill -INT "$tracer"
wait "$tracer"
rm -f "$out.ready"
kill "$server"
