// Package e2e holds corral's end-to-end tests: real corrald processes on
// corral-lab hosts (network and mount namespaces, one libvirtd each), real
// QEMU guests built by scripts/build-test-guest.sh, driven through corralctl
// and the Go client as an operator would. They need root.
package e2e
