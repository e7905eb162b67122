#!/usr/bin/env bash
# The main job until `tabby lab` exists: a small cluster in network namespaces on this
# machine. Two nodes run `tabby node` against one file datastore (Calico resources: a
# BGPConfiguration, IPv4 and IPv6 IPPools, the Nodes, the Pods, and a BGPPeer to a top-of-rack
# router); each node has two pods wired as Calico's CNI plugin wires them; BIRD 2 plays the
# top-of-rack router. The nodes mesh over iBGP and peer with BIRD over eBGP, IPv4 and IPv6;
# then every pod pings every other pod.
# Needs root. Removes everything it made when it ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-deps.sh
echo "==> building tabby"
cargo build -p tabby --quiet
TABBY="$PWD/target/debug/tabby"

P=tdemo
SW=$P-sw N1=$P-node1 N2=$P-node2 TOR=$P-tor
PODS=()
WORK=$(mktemp -d /tmp/tabby-demo.XXXXXX)
all_ns() { echo "$SW $N1 $N2 $TOR ${PODS[*]:-}"; }
cleanup() {
  for ns in $(all_ns); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.5
  for ns in $(all_ns); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
for ns in $SW $N1 $N2 $TOR $P-p1a $P-p1b $P-p2a $P-p2b; do ip netns del "$ns" 2>/dev/null || true; done

echo "==> one L2 segment (a bridge) with node1 10.0.0.1, node2 10.0.0.2, tor 10.0.0.254 (and fd00::)"
ip netns add $SW
ip -n $SW link add br0 type bridge
ip -n $SW link set br0 up
attach() { # ns, index, v4, v6
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip link add "$P-$2" netns $SW type veth peer name eth0 netns "$1"
  ip -n $SW link set "$P-$2" master br0 up
  ip -n "$1" addr add "$3/24" dev eth0
  ip -n "$1" addr add "$4/64" dev eth0 nodad
  ip -n "$1" link set eth0 up
}
attach $N1 1 10.0.0.1 fd00::1
attach $N2 2 10.0.0.2 fd00::2
attach $TOR 3 10.0.0.254 fd00::fe
for n in $N1 $N2; do
  ip -n $n route add default via 10.0.0.254
  ip -n $n -6 route add default via fd00::fe
done

host_if() { printf 'cali%s' "$(printf '%s' "$1.$2" | sha1sum | cut -c1-11)"; }
mkdir -p "$WORK/datastore"
pod() { # node-ns node-name pod-name v4 v6
  local ns="$P-${3}" hif
  hif=$(host_if default "$3")
  PODS+=("$ns")
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$hif" netns "$1" type veth peer name eth0 netns "$ns"
  ip -n "$1" link set "$hif" address ee:ee:ee:ee:ee:ee up
  ip -n "$ns" link set eth0 up
  ip -n "$ns" addr add "$4/32" dev eth0
  ip -n "$ns" addr add "$5/128" dev eth0 nodad
  ip -n "$ns" route add 169.254.1.1 dev eth0 scope link
  ip -n "$ns" route add default via 169.254.1.1 dev eth0
  ip -n "$ns" -6 route add default via fe80::ecee:eeff:feee:eeee dev eth0
  cat >> "$WORK/datastore/pods.yaml" <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: $3, namespace: default, labels: {app: $3}}
spec: {nodeName: $2, containers: [{name: c, image: none}]}
status: {podIP: "$4", podIPs: [{ip: "$4"}, {ip: "$5"}]}
YAML
  echo "    pod default/$3 on $2: $4 $5 (host side $hif)"
}
echo "==> pods, wired as Calico's CNI plugin does"
pod $N1 node1 p1a 10.244.1.10 fd10:0:0:1::10
pod $N1 node1 p1b 10.244.1.11 fd10:0:0:1::11
pod $N2 node2 p2a 10.244.2.10 fd10:0:0:2::10
pod $N2 node2 p2b 10.244.2.11 fd10:0:0:2::11

cat > "$WORK/datastore/cluster.yaml" <<'YAML'
apiVersion: crd.projectcalico.org/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: true}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.244.0.0/16, ipipMode: Never, blockSize: 24}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv6-ippool}
spec: {cidr: "fd10::/48", blockSize: 64}
---
apiVersion: crd.projectcalico.org/v1
kind: BGPPeer
metadata: {name: tor-v4}
spec: {peerIP: 10.0.0.254, asNumber: 65000}
---
apiVersion: crd.projectcalico.org/v1
kind: BGPPeer
metadata: {name: tor-v6}
spec: {peerIP: "fd00::fe", asNumber: 65000}
---
apiVersion: v1
kind: Node
metadata:
  name: node1
  annotations: {projectcalico.org/IPv4Address: 10.0.0.1/24, projectcalico.org/IPv6Address: "fd00::1/64"}
spec: {podCIDRs: [10.244.1.0/24, "fd10:0:0:1::/64"]}
---
apiVersion: v1
kind: Node
metadata:
  name: node2
  annotations: {projectcalico.org/IPv4Address: 10.0.0.2/24, projectcalico.org/IPv6Address: "fd00::2/64"}
spec: {podCIDRs: [10.244.2.0/24, "fd10:0:0:2::/64"]}
YAML

cat > "$WORK/bird.conf" <<BIRD
router id 10.0.0.254;
log "$WORK/bird.log" all;
protocol device {}
protocol kernel { ipv4 { export where source = RTS_BGP; }; merge paths on; }
protocol kernel { ipv6 { export where source = RTS_BGP; }; merge paths on; }
template bgp node4 { local 10.0.0.254 as 65000; hold time 9; connect retry time 1; error wait time 1, 5; ipv4 { import all; export none; }; }
template bgp node6 { local fd00::fe as 65000; hold time 9; connect retry time 1; error wait time 1, 5; ipv6 { import all; export none; }; }
protocol bgp node1_v4 from node4 { neighbor 10.0.0.1 as 64512; }
protocol bgp node2_v4 from node4 { neighbor 10.0.0.2 as 64512; }
protocol bgp node1_v6 from node6 { neighbor fd00::1 as 64512; }
protocol bgp node2_v6 from node6 { neighbor fd00::2 as 64512; }
BIRD
echo "==> starting BIRD 2 as the top-of-rack router (AS 65000)"
ip netns exec $TOR bird -c "$WORK/bird.conf" -s "$WORK/bird.ctl" -P "$WORK/bird.pid"
for n in 1 2; do
  echo "==> starting tabby node on node$n (log: $WORK/node$n.log)"
  RUST_LOG=info ip netns exec $P-node$n "$TABBY" node --node-name node$n \
    --datastore "file:$WORK/datastore" --hold-time 9 >"$WORK/node$n.log" 2>&1 &
done

ready() { ip netns exec "$1" "$TABBY" status --json 2>/dev/null | grep -q '"ready": true'; }
established() { [ "$(ip netns exec "$1" "$TABBY" status --json 2>/dev/null | grep -c '"Established"')" -ge 4 ]; }
echo -n "==> waiting for BGP to converge "
for _ in $(seq 1 60); do
  if ready $N1 && ready $N2 && established $N1 && established $N2; then echo " converged"; break; fi
  echo -n .; sleep 0.5
done
sleep 1

for n in 1 2; do
  echo; echo "==> tabby status (node$n)"
  ip netns exec $P-node$n "$TABBY" status
done
echo; echo "==> routes tabby programmed on node1 (ip route show proto 44)"
ip -n $N1 route show proto 44
ip -n $N1 -6 route show proto 44
echo; echo "==> what the top-of-rack BIRD learned"
ip netns exec $TOR birdc -s "$WORK/bird.ctl" show route

echo; echo "==> pod-to-pod reachability (ping, IPv4 and IPv6)"
fail=0
printf '%-6s' ""; for to in p1a p1b p2a p2b; do printf '%-10s' "$to"; done; echo
for from in p1a p1b p2a p2b; do
  printf '%-6s' "$from"
  for to in p1a p1b p2a p2b; do
    v4=$(ip netns exec $P-$to ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
    v6=$(ip netns exec $P-$to ip -6 -o addr show dev eth0 scope global | awk '{print $4}' | cut -d/ -f1)
    r4=ok; r6=ok
    ip netns exec $P-$from ping -c1 -W1 "$v4" >/dev/null 2>&1 || { r4=--; fail=1; }
    ip netns exec $P-$from ping -6 -c1 -W1 "$v6" >/dev/null 2>&1 || { r6=--; fail=1; }
    printf '%-10s' "$r4/$r6"
  done
  echo
done
echo
if [ $fail = 0 ]; then echo "==> every pod reaches every pod; tearing down"; else echo "==> some pods are unreachable (logs: $WORK)"; trap - EXIT; exit 1; fi
