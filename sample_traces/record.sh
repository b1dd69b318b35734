#!/bin/bash
# Record sample traces again, in the lab: bash sample_traces/record.sh [NAME...]
# (as root, after 'make setup').  Each is one lab boot of 2-4 minutes; with no
# NAME, all of them.  The table below is what sample_traces/README.md lists.
set -euo pipefail
cd "$(dirname "$0")/.."
SKBPATH=${SKBPATH:-.venv/bin/skbpath}

# name | skbpath lab arguments
SAMPLES='
tcp_bulk          | --traffic bulk --trace-opt=--attach --trace-opt=kprobe
tcp_rr            | --traffic rr --trace-opt=--attach --trace-opt=kprobe
udp_stream        | --traffic udp --trace-opt=--attach --trace-opt=kprobe
closed_ports      | --traffic closed --trace-opt=--attach --trace-opt=kprobe
fentry_rr         | --traffic rr --trace-opt=--attach --trace-opt=fentry
tracepoint_closed | --traffic closed --trace-opt=--attach --trace-opt=tracepoint
forward_rr        | --topology forward --traffic rr
arp_ping          | --traffic arp
loopback_rr       | --traffic loopback
firewall_drop     | --traffic firewall
virtio_rr         | --nic virtio --traffic rr
'

want=("$@")
while IFS='|' read -r name args; do
    name=$(echo "$name" | xargs)
    [ -n "$name" ] || continue
    if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
    echo "== $name: skbpath lab $args"
    # shellcheck disable=SC2086
    "$SKBPATH" lab $args -o "sample_traces/$name.skbtrace"
done <<<"$SAMPLES"
