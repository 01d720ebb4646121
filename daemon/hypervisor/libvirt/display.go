package libvirt

import (
	"context"
	"fmt"
	"io"
	"net"

	"libvirt.org/go/libvirtxml"

	"github.com/corralhq/corral/model"
)

// Every domain has a VGA display served by QEMU's VNC server on a Unix
// socket that libvirt places in the domain's private directory: nothing
// listens on a network address, and only root on the host (corrald)
// reaches it. corrald relays it to authorized clients (daemon.AttachDisplay).

// displayDevices are the graphics and video devices of every domain.
func displayDevices(d *libvirtxml.DomainDeviceList) {
	d.Graphics = []libvirtxml.DomainGraphic{{VNC: &libvirtxml.DomainGraphicVNC{
		Listeners: []libvirtxml.DomainGraphicListener{{Socket: &libvirtxml.DomainGraphicListenerSocket{}}},
	}}}
	d.Videos = []libvirtxml.DomainVideo{{Model: libvirtxml.DomainVideoModel{Type: "vga"}}}
}

// OpenDisplay connects to the VNC server of a running domain: the
// connection carries RFB, the VNC protocol. A domain defined before
// corral gave guests a display has none until it is restarted.
func (d *Driver) OpenDisplay(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	l, dom, err := d.running(name)
	if err != nil {
		return nil, err
	}
	x, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return nil, wrap("definition of "+name, err)
	}
	path, err := displaySocket(x)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("display of %s: %v: %w", name, err, model.ErrUnavailable)
	}
	return conn, nil
}

// displaySocket finds the VNC server's socket in a running domain's XML.
func displaySocket(x string) (string, error) {
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(x); err != nil {
		return "", fmt.Errorf("domain XML: %v: %w", err, model.ErrUnavailable)
	}
	if dom.Devices != nil {
		for _, g := range dom.Devices.Graphics {
			if g.VNC == nil {
				continue
			}
			if g.VNC.Socket != "" {
				return g.VNC.Socket, nil
			}
			for _, l := range g.VNC.Listeners {
				if l.Socket != nil && l.Socket.Socket != "" {
					return l.Socket.Socket, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no graphical display: the guest was started before corral gave guests one; restart it: %w", model.ErrConflict)
}
