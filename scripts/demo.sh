#!/usr/bin/env bash
# The main job until `tabby lab` exists: two "nodes" in network namespaces, one running a
# tabby BGP speaker and one running BIRD 2, joined by a veth link. They peer over eBGP with
# IPv4 and IPv6, each originates a block, BIRD installs what it learns into its node's
# kernel, and a ping crosses the BGP-learned route into tabby's block.
# Needs root. Cleans up everything it made when it ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-deps.sh
echo "==> building tabby"
cargo build -p tabby --quiet
TABBY="$PWD/target/debug/tabby"

A=tabby-demo-a B=tabby-demo-b
WORK=$(mktemp -d /tmp/tabby-demo.XXXXXX)
cleanup() {
  for ns in $A $B; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.3
  for ns in $A $B; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cleanup_stale() { for ns in $A $B; do ip netns del "$ns" 2>/dev/null || true; done; }
cleanup_stale

echo "==> node A ($A): tabby, AS 65001, 10.99.0.1 fd99::1, block 10.98.1.0/24 fd98:1::/64"
echo "==> node B ($B): BIRD 2, AS 65002, 10.99.0.2 fd99::2, block 10.98.2.0/24 fd98:2::/64"
ip netns add $A
ip netns add $B
ip link add tdemo-a netns $A type veth peer name tdemo-b netns $B
ip -n $A link set lo up
ip -n $B link set lo up
ip -n $A link set tdemo-a up
ip -n $B link set tdemo-b up
ip -n $A addr add 10.99.0.1/24 dev tdemo-a
ip -n $B addr add 10.99.0.2/24 dev tdemo-b
ip -n $A addr add fd99::1/64 dev tdemo-a nodad
ip -n $B addr add fd99::2/64 dev tdemo-b nodad
# A "pod" address inside each block, on the node's loopback.
ip -n $A addr add 10.98.1.10/32 dev lo
ip -n $A addr add fd98:1::10/128 dev lo
ip -n $B addr add 10.98.2.10/32 dev lo
ip -n $B addr add fd98:2::10/128 dev lo

cat > "$WORK/bird.conf" <<BIRD
router id 10.99.0.2;
log "$WORK/bird.log" all;
protocol device {}
protocol kernel k4 { ipv4 { export where source = RTS_BGP; }; }
protocol kernel k6 { ipv6 { export where source = RTS_BGP; }; }
protocol static s4 { ipv4; route 10.98.2.0/24 blackhole; }
protocol static s6 { ipv6; route fd98:2::/64 blackhole; }
protocol bgp tabby4 {
  local 10.99.0.2 as 65002;
  neighbor 10.99.0.1 as 65001;
  hold time 9; connect retry time 1; error wait time 1, 5;
  ipv4 { import all; export where source = RTS_STATIC; };
}
protocol bgp tabby6 {
  local fd99::2 as 65002;
  neighbor fd99::1 as 65001;
  hold time 9; connect retry time 1; error wait time 1, 5;
  ipv6 { import all; export where source = RTS_STATIC; };
}
BIRD

echo "==> starting BIRD in $B"
ip netns exec $B bird -c "$WORK/bird.conf" -s "$WORK/bird.ctl" -P "$WORK/bird.pid"
echo "==> starting tabby speaker in $A (log: $WORK/tabby.log)"
ip netns exec $A "$TABBY" speaker --router-id 10.99.0.1 --asn 65001 \
  --peer 10.99.0.2:65002 --peer "[fd99::2]:65002" \
  --originate 10.98.1.0/24 --originate fd98:1::/64 \
  --hold-time 9 --http-listen 127.0.0.1:9099 >"$WORK/tabby.log" 2>&1 &

birdc() { ip netns exec $B birdc -s "$WORK/bird.ctl" "$@"; }
echo -n "==> waiting for BGP to converge "
for _ in $(seq 1 60); do
  if birdc show route 10.98.1.0/24 2>/dev/null | grep -q 10.99.0.1 &&
     birdc show route fd98:1::/64 2>/dev/null | grep -q fd99::1 &&
     ip netns exec $A "$TABBY" routes --http 127.0.0.1:9099 2>/dev/null | grep -q '10.98.2.0/24'; then
    echo " converged"
    break
  fi
  echo -n .
  sleep 0.5
done

echo
echo "==> tabby status (node A)"
ip netns exec $A "$TABBY" status --http 127.0.0.1:9099
echo
echo "==> routes tabby received from BIRD (node A)"
ip netns exec $A "$TABBY" routes --http 127.0.0.1:9099
echo
echo "==> BIRD's view (node B): protocols and the routes it learned from tabby"
birdc show protocols
birdc show route protocol tabby4
birdc show route protocol tabby6
echo
echo "==> node B's kernel routes to tabby's blocks (installed by BIRD from BGP)"
ip -n $B route show 10.98.1.0/24
ip -n $B -6 route show fd98:1::/64
echo
echo "==> ping from node B into tabby's block over the BGP-learned routes"
ip netns exec $B ping -c 3 -W 1 10.98.1.10
ip netns exec $B ping -6 -c 3 -W 1 fd98:1::10
echo
echo "==> demo done; tearing down"
