#!/usr/bin/env bash
# Smoke test of control-plane.sh: up, a namespace, a CRD and an object of it, RBAC enforced for
# the `tabby` token until a ClusterRoleBinding grants it, compaction and 410 Gone, down.
#   tests/k8s/smoke.sh [DIR]     (default DIR: /tmp/tabby-k8s-smoke-$$; always torn down)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CP="$HERE/control-plane.sh"
DIR="${1:-/tmp/tabby-k8s-smoke-$$}"

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
trap '"$CP" down "$DIR" >/dev/null 2>&1 || true' EXIT

step "up $DIR"
"$CP" up "$DIR" >/dev/null
# shellcheck disable=SC1091
. "$DIR/env"
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
kt() { "$KUBECTL" --kubeconfig "$KUBECONFIG_TABBY" "$@"; }
api() { # TOKEN METHOD PATH [BODY]: prints the HTTP status, body in $DIR/last.json
	curl -sS --cacert "$K8S_CA" -H "Authorization: Bearer $1" -X "$2" -o "$DIR/last.json" \
		-w '%{http_code}' -H 'Content-Type: application/json' ${4:+--data "$4"} "$K8S_SERVER$3"
}

step "version"
k version

step "idempotent up"
out="$("$CP" up "$DIR" 2>&1)"
grep -q "already up" <<<"$out" || fail "second up did not say 'already up': $out"

step "namespace + CRD + custom object"
k create namespace tabby-smoke
k apply -f - <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: ippools.crd.projectcalico.org
spec:
  group: crd.projectcalico.org
  names: {kind: IPPool, listKind: IPPoolList, plural: ippools, singular: ippool}
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              cidr: {type: string}
              ipipMode: {type: string, enum: [Never, Always, CrossSubnet]}
EOF
k wait --for=condition=Established --timeout=60s crd/ippools.crd.projectcalico.org
k apply -f - <<'EOF'
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv4}
spec: {cidr: 10.244.0.0/16, ipipMode: Never}
EOF
k get ippools -o wide
step "server-side dry run rejects a bad enum"
if out="$(k apply --dry-run=server -f - 2>&1 <<'EOF'
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: bad}
spec: {cidr: 10.245.0.0/16, ipipMode: Sometimes}
EOF
)"; then fail "bad enum accepted: $out"; else echo "rejected as expected: $out"; fi

step "RBAC: tabby may not list pods"
if out="$(kt get pods -A 2>&1)"; then fail "tabby could list pods: $out"; fi
echo "$out"
grep -q Forbidden <<<"$out" || fail "expected Forbidden"
[[ "$(api "$K8S_TABBY_TOKEN" GET /api/v1/pods)" == 403 ]] || fail "curl: expected 403"

step "RBAC: grant, then tabby may list pods"
k create clusterrole tabby-smoke --verb=get,list,watch --resource=pods
k create clusterrolebinding tabby-smoke --clusterrole=tabby-smoke --user=tabby
for i in $(seq 50); do kt get pods -A >/dev/null 2>&1 && break; sleep 0.2; done
kt get pods -A
kt auth can-i list pods --all-namespaces
[[ "$(kt auth can-i create pods 2>/dev/null || true)" == no ]] || fail "tabby may create pods"

step "a pod is stored as written (no scheduler, no ServiceAccount admission)"
k -n tabby-smoke apply -f - <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: p1, labels: {app: smoke}}
spec:
  nodeName: node-1
  containers: [{name: c, image: example.invalid/none}]
EOF
k -n tabby-smoke get pod p1 -o jsonpath='{.spec.nodeName}{"\n"}'

step "compaction: a watch from a compacted resourceVersion"
api "$K8S_ADMIN_TOKEN" GET /api/v1/namespaces/tabby-smoke/configmaps >/dev/null
rv0="$(grep -o '"resourceVersion": *"[0-9]*"' "$DIR/last.json" | head -1 | grep -o '[0-9][0-9]*')"
[[ -n "$rv0" ]] || fail "no resourceVersion in $(cat "$DIR/last.json")"
for i in 1 2 3; do k -n tabby-smoke create configmap "cm$i" --from-literal=i="$i" >/dev/null; done
rev="$("$CP" compact "$DIR")"
echo "rv0=$rv0 compacted at $rev"
api "$K8S_ADMIN_TOKEN" GET \
	"/api/v1/namespaces/tabby-smoke/configmaps?watch=1&resourceVersion=$rv0&timeoutSeconds=2" >/dev/null
echo "watch from rv0 answered: $(head -c 400 "$DIR/last.json")"
if grep -q '"code": *410' "$DIR/last.json"; then echo "410 Gone (watch)"
elif [[ "${TABBY_K8S_APISERVER_ARGS:-}" == *--watch-cache=false* ]]; then
	fail "no 410 from a watch at a compacted resourceVersion without the watch cache"
else echo "no 410 from this watch (the watch cache still holds rv0; see README)"; fi
code="$(api "$K8S_ADMIN_TOKEN" GET "/api/v1/namespaces/tabby-smoke/configmaps?resourceVersion=$rv0&resourceVersionMatch=Exact")"
echo "list at exact rv0: HTTP $code $(head -c 300 "$DIR/last.json")"

step "down"
"$CP" down "$DIR"
[[ ! -e "$DIR" ]] || fail "$DIR still exists"
trap - EXIT
echo; echo "smoke test passed"
