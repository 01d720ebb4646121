// Package sdnotify tells systemd about service state over $NOTIFY_SOCKET
// (sd_notify(3)) without linking libsystemd.
package sdnotify

import (
	"net"
	"os"
)

// Notify sends state (e.g. "READY=1") to systemd. It does nothing and
// returns nil when not run by systemd with Type=notify.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte(state))
	return err
}
