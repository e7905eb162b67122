// etcd, built from the published go.etcd.io/etcd/server/v3 module at the
// version this Kubernetes release uses (see go.mod), for when Debian's
// etcd-server is not wanted or not available: control-plane.sh build-etcd.
// Same as upstream server/main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
