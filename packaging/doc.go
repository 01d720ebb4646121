// Package packaging holds how corral ships: nfpm.yaml (the .deb and the
// .rpm), corrald.service (the systemd unit) and the maintainer scripts.
// scripts/package.sh (make package) builds both packages; the test here
// builds them and checks what an installed host would get: the files, the
// config file as a noreplace conffile, the dependencies, a unit that
// systemd-analyze accepts, and the packaged corrald and corralctl running
// with the packaged config.
package packaging
