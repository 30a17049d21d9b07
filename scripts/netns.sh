#!/usr/bin/env bash
# A throwaway multi-node network on one Linux machine: network namespaces joined by a bridge.
#
#   source scripts/netns.sh
#   netns_up                      # bridge NETNS_SUBNET.1/24 + namespaces head, node1, node2
#   netns_exec head CMD...        # run CMD inside a namespace (Ray env set, see below)
#   netns_ray_head                # ray start --head in "head"
#   netns_ray_node node1 --resources '{"node1": 1}'
#   netns_kill node1              # kill every process in a namespace, by pid
#   netns_down                    # kill everything in every namespace, delete them (idempotent)
#
# Needs root and iproute2. Every address lives on the private NETNS_SUBNET.0/24: the
# namespaces get no default route, so their traffic stays on the bridge and loopback.
# Nothing here runs `ray stop` (it would kill every Ray on the machine): processes are
# found with `ip netns pids`, which lists exactly the processes started in a namespace.
#
# Settings (environment, with defaults):
#   NETNS_PREFIX=idem-     namespace names are ${NETNS_PREFIX}head, ...node1, ...node2
#   NETNS_SUBNET=10.231.7  the /24; the bridge is .1, head .2, node1 .3, node2 .4
#   NETNS_TMP=/tmp/idc7    per-node Ray temp dirs live under it (short: unix socket paths)

NETNS_PREFIX=${NETNS_PREFIX:-idem-}
NETNS_SUBNET=${NETNS_SUBNET:-10.231.7}
NETNS_TMP=${NETNS_TMP:-/tmp/idc${NETNS_SUBNET##*.}}
NETNS_NODES=(head node1 node2)
NETNS_RAY=${NETNS_RAY:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/ray}

# Name of the bridge and of a node's host-side veth (IFNAMSIZ: at most 15 characters).
_netns_tag() { echo "${NETNS_SUBNET##*.}"; }
netns_bridge() { echo "idbr$(_netns_tag)"; }
netns_name() { echo "${NETNS_PREFIX}$1"; }
_netns_veth() { echo "idv$(_netns_tag)$1"; }

# netns_ip NODE: the node's address (bridge for "bridge").
netns_ip() {
  case $1 in
    bridge) echo "$NETNS_SUBNET.1" ;;
    head) echo "$NETNS_SUBNET.2" ;;
    node1) echo "$NETNS_SUBNET.3" ;;
    node2) echo "$NETNS_SUBNET.4" ;;
    *) echo "netns_ip: unknown node $1" >&2; return 2 ;;
  esac
}

# netns_up: bridge with an address in the root namespace; each node a namespace with lo up
# and a veth pair onto the bridge. Fails (after cleaning up) if anything is left over.
netns_up() {
  local br node ns veth
  br=$(netns_bridge)
  if ip link show "$br" >/dev/null 2>&1; then
    echo "netns_up: bridge $br exists (another run? netns_down cleans up)" >&2
    return 1
  fi
  ip link add "$br" type bridge || return 1
  ip addr add "$(netns_ip bridge)/24" dev "$br" || { netns_down; return 1; }
  ip link set "$br" up || { netns_down; return 1; }
  for node in "${NETNS_NODES[@]}"; do
    ns=$(netns_name "$node")
    veth=$(_netns_veth "$node")
    {
      ip netns add "$ns" &&
        ip -n "$ns" link set lo up &&
        ip link add "$veth" type veth peer name eth0 netns "$ns" &&
        ip link set "$veth" master "$br" &&
        ip link set "$veth" up &&
        ip -n "$ns" addr add "$(netns_ip "$node")/24" dev eth0 &&
        ip -n "$ns" link set eth0 up
    } || { echo "netns_up: failed on $node" >&2; netns_down; return 1; }
  done
  mkdir -p "$NETNS_TMP"
  echo "netns: bridge $br $(netns_ip bridge); $(for n in "${NETNS_NODES[@]}"; do
    printf '%s %s; ' "$(netns_name "$n")" "$(netns_ip "$n")"; done)"
}

# netns_exec NODE CMD...: run CMD in the node's namespace with the throwaway-Ray environment.
netns_exec() {
  local ns
  ns=$(netns_name "$1")
  shift
  ip netns exec "$ns" env RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 "$@"
}

# netns_ray_head [ARGS...]: the Ray head in "head" (GCS on HEAD:6379, 1 CPU, no dashboard).
# Faster node-death detection (1 s health checks, 3 misses) so a lost node is noticed quickly.
netns_ray_head() {
  _netns_ray_retry head env RAY_health_check_period_ms=1000 \
    RAY_health_check_failure_threshold=3 \
    "$NETNS_RAY" start --head --node-ip-address "$(netns_ip head)" --port 6379 \
    --num-cpus 1 --num-gpus 0 --include-dashboard false --disable-usage-stats \
    --object-store-memory 100000000 --temp-dir "$NETNS_TMP/head" "$@"
}

# netns_ray_node NODE [ARGS...]: a Ray worker node in NODE joining the head (1 CPU).
netns_ray_node() {
  local node=$1
  shift
  _netns_ray_retry "$node" "$NETNS_RAY" start --address "$(netns_ip head):6379" \
    --node-ip-address "$(netns_ip "$node")" --num-cpus 1 --disable-usage-stats \
    --object-store-memory 100000000 --temp-dir "$NETNS_TMP/$node" "$@"
}

# _netns_ray_retry NODE CMD...: `ray start` gives a raylet 30 s to register with the GCS;
# on a loaded machine that can pass. Then kill what the attempt left in the (otherwise
# empty) namespace, by pid, and try once more.
_netns_ray_retry() {
  local node=$1
  shift
  netns_exec "$node" "$@" && return 0
  echo "netns: ray start in $node failed; killing its processes and retrying once" >&2
  netns_kill "$node" KILL || true
  rm -rf "${NETNS_TMP:?}/$node"
  netns_exec "$node" "$@"
}

_netns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qxF -- "$1"; }

# netns_pids NODE: pids of every process in the node's namespace (one per line).
netns_pids() {
  ip netns pids "$(netns_name "$1")" 2>/dev/null || true
}

# netns_kill NODE [SIGNAL]: signal every process in the namespace (default KILL), by pid,
# until none is left (a dying parent may fork; 10 rounds at most).
netns_kill() {
  local node=$1 sig=${2:-KILL} pids i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(netns_pids "$node")
    [[ -z $pids ]] && return 0
    # shellcheck disable=SC2086
    kill -s "$sig" $pids 2>/dev/null || true # some may have exited meanwhile
    sleep 0.3
  done
  pids=$(netns_pids "$node")
  [[ -z $pids ]] || { echo "netns_kill: $node still has pids $pids" >&2; return 1; }
}

# netns_down: TERM then KILL every process in every namespace, delete the namespaces, the
# bridge and the Ray temp dirs. Safe to call twice, after a partial netns_up, and under
# `set -e` (from an EXIT trap): no step's failure stops the ones after it.
netns_down() {
  local node ns pids
  for node in "${NETNS_NODES[@]}"; do
    ns=$(netns_name "$node")
    _netns_exists "$ns" || continue
    pids=$(netns_pids "$node")
    # shellcheck disable=SC2086
    if [[ -n $pids ]]; then kill -TERM $pids 2>/dev/null || true; fi
  done
  sleep 0.5
  for node in "${NETNS_NODES[@]}"; do
    ns=$(netns_name "$node")
    _netns_exists "$ns" || continue
    netns_kill "$node" KILL || true
    ip netns del "$ns" 2>/dev/null || true
  done
  # Deleting a namespace deletes its veth pair; a half-made pair may be left in the root.
  for node in "${NETNS_NODES[@]}"; do
    ip link del "$(_netns_veth "$node")" 2>/dev/null || true
  done
  ip link del "$(netns_bridge)" 2>/dev/null || true
  if [[ -n $NETNS_TMP && $NETNS_TMP == /tmp/* ]]; then rm -rf "$NETNS_TMP"; fi
  return 0
}
