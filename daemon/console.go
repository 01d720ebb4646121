package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/corralhq/corral/internal/wsconsole"
	"github.com/corralhq/corral/model"
)

// Interactive serial consoles (daemon/console shares them on the guest's
// host): a client reaches one through any corrald, which relays to the
// guest's host when it runs elsewhere.

// AttachConsole attaches to a VM's serial console: here when its guest
// runs here, else through the corrald of its host.
func (b backend) AttachConsole(ctx context.Context, name string, write bool) (wsconsole.Session, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return nil, err
	}
	v, err := b.d.store.VM(name)
	if err != nil {
		return nil, err
	}
	switch {
	case v.Host == "":
		return nil, fmt.Errorf("vm %q is not placed on any host: %w", name, model.ErrConflict)
	case v.Actual.State != model.StateRunning && v.Actual.State != model.StateMigrating:
		return nil, fmt.Errorf("vm %q is %s: its console is there only while it runs: %w", name, vmView(v).State, model.ErrConflict)
	case v.Host == b.d.cfg.Name:
		return b.d.consoles.Attach(ctx, name, write)
	}
	h, err := b.d.store.Host(v.Host)
	if err != nil {
		return nil, err
	}
	q := url.Values{"vm": {name}, "write": {strconv.FormatBool(write)}}
	return wsconsole.Dial(ctx, b.d.rpcCli.HTTPClient(), b.d.rpcCli.StreamURL(h.RPCAddr, "console", q), nil)
}

// serveConsoleRPC answers another host's relay of a console session: the
// VM must be placed here.
func (d *Daemon) serveConsoleRPC(ctx context.Context, q url.Values) (http.Handler, error) {
	name := q.Get("vm")
	if err := d.placedHere(ctx, name); err != nil {
		return nil, err
	}
	write, _ := strconv.ParseBool(q.Get("write"))
	sess, err := d.consoles.Attach(ctx, name, write)
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { wsconsole.Serve(w, r, sess, d.log) }), nil
}
