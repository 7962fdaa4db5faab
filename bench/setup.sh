#!/usr/bin/env bash
# The anchors' tools for the full benchmark run (root, network):
#   hyperfine and GNU time from Debian; Debian's prometheus-node-exporter fetched with
#   `apt-get download` and UNPACKED only (never installed: its service would listen on
#   every address), into /var/cache/waagent-guard-bench/ne. bench/guest.py runs it on
#   127.0.0.1 only. Quick mode needs none of this: it records what it skipped.
set -euo pipefail
cache=${WG_BENCH_CACHE:-/var/cache/waagent-guard-bench}
export DEBIAN_FRONTEND=noninteractive
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -x "$cache/ne/usr/bin/prometheus-node-exporter" ]; then
    mkdir -p "$cache"
    (cd "$cache" && apt-get download prometheus-node-exporter)
    dpkg-deb -x "$cache"/prometheus-node-exporter_*.deb "$cache/ne"
fi
echo "bench setup: hyperfine $(hyperfine --version | cut -d' ' -f2), node_exporter $("$cache/ne/usr/bin/prometheus-node-exporter" --version 2>&1 | head -1 | cut -d' ' -f3)"
