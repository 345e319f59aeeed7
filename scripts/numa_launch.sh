#!/usr/bin/env bash
# Start `athens serve` with NUMA-local memory allocation.
#
# The supervisor pins each shard worker to the CPUs of one NUMA node; under
# `numactl --localalloc` (inherited by every child) each worker's memory is
# then allocated on its own node. Without numactl, or on a single-node
# machine, this is a plain `athens serve`. Arguments are passed through.
set -euo pipefail

nodes=$(ls -d /sys/devices/system/node/node[0-9]* 2>/dev/null | wc -l)
if command -v numactl >/dev/null 2>&1 && [ "$nodes" -gt 1 ]; then
  echo "numa_launch: $nodes NUMA nodes; starting athens under numactl --localalloc" >&2
  exec numactl --localalloc athens serve "$@"
fi
echo "numa_launch: ${nodes:-0} NUMA node(s)$(command -v numactl >/dev/null 2>&1 || echo ', no numactl'); plain start" >&2
exec athens serve "$@"
