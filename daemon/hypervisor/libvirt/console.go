package libvirt

import (
	"context"
	"fmt"
	"io"
	"sync"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/corralhq/corral/daemon/hypervisor"
)

// OpenConsole attaches to the serial console of a running domain through
// a libvirt stream (virDomainOpenConsole, forcing out any other session).
// What the guest writes is read from the console; what is written to it
// goes to the guest. go-libvirt hands stream data to a writer on the
// goroutine that reads the whole connection, so that writer never blocks:
// it queues chunks, and a reader that falls behind by consoleQueue chunks
// loses the stream (Read returns hypervisor.ErrConsoleOverrun).
func (d *Driver) OpenConsole(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	l, dom, err := d.running(name)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	c := &console{in: pw, out: make(chan []byte, consoleQueue), done: make(chan struct{})}
	go func() {
		err := l.DomainOpenConsoleBidirectional(dom, golibvirt.OptString{}, pr, (*consoleSink)(c), uint32(golibvirt.DomainConsoleForce))
		if err == nil {
			err = io.EOF
		} else {
			err = wrap("console of "+name, err)
		}
		c.finish(err)
		pr.CloseWithError(err)
	}()
	return c, nil
}

// consoleQueue is how many chunks of guest output wait for the reader.
const consoleQueue = 1024

type console struct {
	in   *io.PipeWriter
	out  chan []byte
	pend []byte

	mu      sync.Mutex
	err     error // why the stream ended
	done    chan struct{}
	overrun bool
}

// consoleSink receives the stream's data on go-libvirt's reading goroutine.
type consoleSink console

func (s *consoleSink) Write(p []byte) (int, error) {
	c := (*console)(s)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.overrun {
		return len(p), nil
	}
	select {
	case c.out <- append([]byte(nil), p...):
	default:
		c.overrun = true
	}
	return len(p), nil
}

func (c *console) finish(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		close(c.done)
	}
}

func (c *console) Read(p []byte) (int, error) {
	if len(c.pend) == 0 {
		select {
		case b := <-c.out:
			c.pend = b
		default:
			c.mu.Lock()
			over := c.overrun
			c.mu.Unlock()
			if over {
				return 0, hypervisor.ErrConsoleOverrun
			}
			select {
			case b := <-c.out:
				c.pend = b
			case <-c.done:
				select {
				case b := <-c.out:
					c.pend = b
				default:
					return 0, c.err
				}
			}
		}
	}
	n := copy(p, c.pend)
	c.pend = c.pend[n:]
	return n, nil
}

func (c *console) Write(p []byte) (int, error) { return c.in.Write(p) }

// Close ends the session: libvirt finishes the stream once its input ends.
func (c *console) Close() error {
	c.in.Close()
	c.finish(io.EOF)
	return nil
}

// running looks a domain up and checks that it runs a guest.
func (d *Driver) running(name string) (*golibvirt.Libvirt, golibvirt.Domain, error) {
	l, dom, err := d.lookup(name)
	if err != nil {
		return nil, dom, err
	}
	st, _, err := l.DomainGetState(dom, 0)
	if err != nil {
		return nil, dom, wrap("state of "+name, err)
	}
	if s, _ := stateOf(st, 0); !s.Active() {
		return nil, dom, fmt.Errorf("%s is %s: %w", name, s, hypervisor.ErrNotRunning)
	}
	return l, dom, nil
}
