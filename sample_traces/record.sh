#!/bin/bash
# Record sample traces again, in the lab: bash sample_traces/record.sh [NAME...]
# (as root, after 'make setup').  Samples that share a boot (the same kernel and
# lab options) are recorded in one boot, one scenario each (skbpath lab
# --scenario); with no NAME, all of them.  The table below is what
# sample_traces/README.md lists.
set -euo pipefail
cd "$(dirname "$0")/.."
SKBPATH=${SKBPATH:-.venv/bin/skbpath}

# name | boot: skbpath lab options | traffic | skbpath trace options
SAMPLES='
tcp_bulk          | --kernel 6.1                   | bulk     | --attach kprobe
tcp_rr            | --kernel 6.1                   | rr       | --attach kprobe
udp_stream        | --kernel 6.1                   | udp      | --attach kprobe
closed_ports      | --kernel 6.1                   | closed   | --attach kprobe
fentry_rr         | --kernel 6.1                   | rr       | --attach fentry
tracepoint_closed | --kernel 6.1                   | closed   | --attach tracepoint
arp_ping          | --kernel 6.1                   | arp      |
loopback_rr       | --kernel 6.1                   | loopback |
firewall_drop     | --kernel 6.1                   | firewall |
forward_rr        | --kernel 6.1 --topology forward | rr     |
virtio_rr         | --kernel 6.1 --nic virtio      | rr       |
tcp_rr_612        | --kernel 6.12                  | rr       | --attach kprobe
closed_ports_612  | --kernel 6.12                  | closed   |
'

want=("$@")
declare -A boots=()   # boot options -> --scenario arguments (shell-quoted)
order=()
while IFS='|' read -r name boot traffic opts; do
    name=$(echo "$name" | xargs)
    [ -n "$name" ] || continue
    if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
    boot=$(echo "$boot" | xargs)
    traffic=$(echo "$traffic" | xargs)
    opts=$(echo "$opts" | xargs)
    spec="$name:$traffic${opts:+:$opts}"
    [ -n "${boots[$boot]+x}" ] || order+=("$boot")
    boots[$boot]+=" --scenario $(printf '%q' "$spec")"
done <<<"$SAMPLES"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for boot in "${order[@]}"; do
    echo "== skbpath lab $boot${boots[$boot]}"
    # shellcheck disable=SC2086
    eval "\"\$SKBPATH\" lab $boot -o \"\$out\" ${boots[$boot]}"
done
shopt -s nullglob
for f in "$out"/*.skbtrace; do
    mv "$f" sample_traces/
    echo "recorded sample_traces/$(basename "$f")"
done
