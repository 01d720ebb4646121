// Command corralctl is the operator's CLI for corral. It talks to the local
// corrald over its Unix socket; any host answers for the whole cluster.
//
//	corralctl [--socket PATH] [-o table|json] status
//	corralctl host ls | host show NAME | host label NAME key=value key- ...
//
// The socket defaults to $CORRAL_SOCKET, then /run/corral/corral.sock.
// One file per noun.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "corralctl:", err)
		os.Exit(1)
	}
}
