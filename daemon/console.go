package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/corralhq/corral/internal/wsconsole"
	"github.com/corralhq/corral/model"
)

// Interactive consoles: the serial console (daemon/console shares one
// session per guest on the guest's host) and the graphical display (one
// VNC connection per client). A client reaches either through any
// corrald, which relays to the guest's host when it runs elsewhere.

// AttachConsole attaches to a VM's serial console: here when its guest
// runs here, else through the corrald of its host.
func (b backend) AttachConsole(ctx context.Context, name string, write bool) (wsconsole.Session, error) {
	v, err := b.runningVM(ctx, name, "console")
	if err != nil {
		return nil, err
	}
	if v.Host == b.d.cfg.Name {
		return b.d.consoles.Attach(ctx, name, write)
	}
	url, err := b.streamURL(v.Host, "console", url.Values{"vm": {name}, "write": {strconv.FormatBool(write)}})
	if err != nil {
		return nil, err
	}
	return wsconsole.Dial(ctx, b.d.rpcCli.HTTPClient(), url, nil)
}

// AttachDisplay opens a VM's graphical display (the RFB stream of its VNC
// server): here when its guest runs here, else through the corrald of its
// host.
func (b backend) AttachDisplay(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	v, err := b.runningVM(ctx, name, "display")
	if err != nil {
		return nil, err
	}
	if v.Host == b.d.cfg.Name {
		return b.d.displays.openDisplay(ctx, b.d.driver, name)
	}
	url, err := b.streamURL(v.Host, "display", url.Values{"vm": {name}})
	if err != nil {
		return nil, err
	}
	return wsconsole.DialDisplay(ctx, b.d.rpcCli.HTTPClient(), url, nil)
}

// runningVM is a VM the caller may see whose guest runs (what is there to
// attach to).
func (b backend) runningVM(ctx context.Context, name, what string) (model.VM, error) {
	if err := b.scopedVM(ctx, name); err != nil {
		return model.VM{}, err
	}
	v, err := b.d.store.VM(name)
	if err != nil {
		return model.VM{}, err
	}
	switch {
	case v.Host == "":
		return model.VM{}, fmt.Errorf("vm %q is not placed on any host: %w", name, model.ErrConflict)
	case v.Actual.State != model.StateRunning && v.Actual.State != model.StateMigrating:
		return model.VM{}, fmt.Errorf("vm %q is %s: its %s is there only while it runs: %w", name, vmView(v).State, what, model.ErrConflict)
	}
	return v, nil
}

// streamURL is the address of a stream of host's cluster RPC.
func (b backend) streamURL(host, stream string, q url.Values) (string, error) {
	h, err := b.d.store.Host(host)
	if err != nil {
		return "", err
	}
	return b.d.rpcCli.StreamURL(h.RPCAddr, stream, q), nil
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

// serveDisplayRPC answers another host's relay of a display session.
func (d *Daemon) serveDisplayRPC(ctx context.Context, q url.Values) (http.Handler, error) {
	name := q.Get("vm")
	if err := d.placedHere(ctx, name); err != nil {
		return nil, err
	}
	conn, err := d.displays.openDisplay(ctx, d.driver, name)
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { wsconsole.ServeDisplay(w, r, conn, d.log) }), nil
}

// maxDisplayClients bounds the display sessions open to one guest on its
// host: each is a connection to its VNC server, which renders for each.
const maxDisplayClients = 8

// displayOpener opens a running guest's display (the hypervisor driver).
type displayOpener interface {
	OpenDisplay(ctx context.Context, name string) (io.ReadWriteCloser, error)
}

// displays counts the display sessions open on this host, by VM.
type displays struct {
	mu   sync.Mutex
	open map[string]int
}

func (ds *displays) openDisplay(ctx context.Context, drv displayOpener, name string) (io.ReadWriteCloser, error) {
	ds.mu.Lock()
	if ds.open == nil {
		ds.open = map[string]int{}
	}
	if ds.open[name] >= maxDisplayClients {
		ds.mu.Unlock()
		return nil, fmt.Errorf("vm %q: %d display sessions are open already, the most there may be: %w", name, maxDisplayClients, model.ErrConflict)
	}
	ds.open[name]++
	ds.mu.Unlock()
	conn, err := drv.OpenDisplay(ctx, name)
	if err != nil {
		ds.done(name)
		return nil, err
	}
	return &displayConn{ReadWriteCloser: conn, end: func() { ds.done(name) }}, nil
}

func (ds *displays) done(name string) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.open[name]--; ds.open[name] <= 0 {
		delete(ds.open, name)
	}
}

// displayConn gives its slot back once, when closed.
type displayConn struct {
	io.ReadWriteCloser
	once sync.Once
	end  func()
}

func (c *displayConn) Close() error {
	err := c.ReadWriteCloser.Close()
	c.once.Do(c.end)
	return err
}
