#!/usr/bin/env bash
# The main job: a cluster network in network namespaces on this machine, with `tabby lab`.
# Installs what is needed, builds tabby, and runs `tabby lab up` on the built-in topology:
# two racks of two nodes running `tabby node` against one file datastore of Calico
# resources, a BIRD 2 top-of-rack router per rack (eBGP with its nodes and with the other
# rack's router), two pods per node wired as Calico's CNI plugin wires them, IPv4 and IPv6.
# `lab up` waits for BGP to converge and pings every pod from every pod. Then this script
# shows what tabby programmed and what the routers learned.
#
# The lab keeps running so you can look around (tabby lab exec ...); DEMO_KEEP=0 removes it
# at the end, and `tabby lab down --name demo` removes it any time. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-deps.sh
echo "==> building tabby"
cargo build -p tabby --quiet
TABBY="$PWD/target/debug/tabby"

# A lab left by an earlier run is replaced.
"$TABBY" lab down --name demo >/dev/null
status=0
"$TABBY" lab up --name demo || status=$?

if [ $status = 0 ]; then
  echo
  echo "==> routes tabby programmed on node1 (tabby lab exec --name demo node1 -- ip route show proto 44)"
  "$TABBY" lab exec --name demo node1 -- ip route show proto 44
  "$TABBY" lab exec --name demo node1 -- ip -6 route show proto 44
  echo
  echo "==> what the rack1 top-of-rack router installed (BIRD, AS 65001)"
  "$TABBY" lab exec --name demo tor1 -- ip route show proto bird
  echo
  echo "==> tabby status on node3"
  "$TABBY" lab exec --name demo node3 -- "$TABBY" status
fi

if [ "${DEMO_KEEP:-1}" = 0 ]; then
  "$TABBY" lab down --name demo
else
  echo
  echo "==> the lab keeps running: try"
  echo "    $TABBY lab exec --name demo default/web-1 -- ping -c1 fd10:0:0:4::10"
  echo "    $TABBY lab status --name demo"
  echo "    $TABBY lab down --name demo"
fi
exit $status
