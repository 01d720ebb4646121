package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Latency without netem. This machine's kernel has no netem qdisc and no
// nftables queue expression, but it has NFQUEUE as an xtables target
// (CONFIG_NETFILTER_XT_TARGET_NFQUEUE) and the netlink queue: an iptables
// rule hands each packet the host sends to the lab's subnet to a queue,
// and this process hands it back (an ACCEPT verdict) after the delay. The
// queue is read here, over nfnetlink, so a delay lasts while the process
// that set it runs; the rule has --queue-bypass, so if nothing reads the
// queue packets pass at once instead of piling up.

// delayChain is the iptables chain (table mangle) of Delay in a host's
// network namespace.
const delayChain = "corrallab-delay"

// delayQueue is the NFQUEUE number Delay uses (one per namespace).
const delayQueue = 7

// Delay holds every packet the host sends to the other lab hosts for
// delay ± jitter (uniform) before it leaves, so each round trip with the
// host takes delay longer: latency on the host's link. A second call
// replaces the first. The delay lasts until ClearDelay or until this
// process exits.
func (h *Host) Delay(ctx context.Context, delay, jitter time.Duration) error {
	if delay <= 0 || jitter < 0 || jitter > delay {
		return fmt.Errorf("delay %s: %v ± %v: want a delay > 0 and 0 <= jitter <= delay", h.Name, delay, jitter)
	}
	if err := h.ClearDelay(ctx); err != nil {
		return err
	}
	d, err := startDelayer("/var/run/netns/"+h.Netns, delayQueue, delay, jitter)
	if err != nil {
		return fmt.Errorf("delay %s: %w", h.Name, err)
	}
	script := fmt.Sprintf(`set -e
iptables -w -t mangle -N %[1]s
iptables -w -t mangle -A %[1]s -d %[2]s -j NFQUEUE --queue-num %[3]d --queue-bypass
iptables -w -t mangle -A OUTPUT -j %[1]s`, delayChain, h.lab.Subnet, delayQueue)
	if err := run(ctx, "ip", "netns", "exec", h.Netns, "sh", "-c", script); err != nil {
		d.stop()
		return fmt.Errorf("delay %s: %w", h.Name, err)
	}
	delayersMu.Lock()
	delayers[h.Netns] = d
	delayersMu.Unlock()
	return nil
}

// ClearDelay ends Delay: no packet is queued any more, and those held are
// sent when their time comes. It is not an error if there is none.
func (h *Host) ClearDelay(ctx context.Context) error {
	if _, err := exec.LookPath("iptables"); err != nil {
		return fmt.Errorf("delay %s: needs iptables (Debian package iptables): %w", h.Name, err)
	}
	// Each step may find nothing to undo.
	script := fmt.Sprintf(`while iptables -w -t mangle -D OUTPUT -j %[1]s 2>/dev/null; do :; done
if iptables -w -t mangle -L %[1]s -n >/dev/null 2>&1; then iptables -w -t mangle -F %[1]s && iptables -w -t mangle -X %[1]s; fi`, delayChain)
	if err := run(ctx, "ip", "netns", "exec", h.Netns, "sh", "-c", script); err != nil {
		return fmt.Errorf("clear delay %s: %w", h.Name, err)
	}
	delayersMu.Lock()
	d := delayers[h.Netns]
	delete(delayers, h.Netns)
	delayersMu.Unlock()
	if d != nil {
		d.stop()
	}
	return nil
}

var (
	delayersMu sync.Mutex
	delayers   = map[string]*delayer{} // by network namespace
)

// delayer reads one NFQUEUE and gives each packet its verdict later.
type delayer struct {
	fd            int
	queue         uint16
	delay, jitter time.Duration
	wmu           sync.Mutex // verdicts share the socket
	held          sync.WaitGroup
	quit          chan struct{}
	done          chan struct{}
}

// Netlink constants of nfnetlink_queue (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue  = 3
	nfqnlMsgPacket   = 0
	nfqnlMsgVerdict  = 1
	nfqnlMsgConfig   = 2
	nfqaCfgCmd       = 1
	nfqaCfgParams    = 2
	nfqaCfgQueueLen  = 3
	nfqaCfgMask      = 4
	nfqaCfgFlags     = 5
	nfqaPacketHdr    = 1
	nfqaVerdictHdr   = 2
	nfqnlCfgCmdBind  = 1
	nfqnlCopyMeta    = 1
	nfqaCfgFFailOpen = 1
	nfAccept         = 1
)

// startDelayer opens an nfnetlink socket in the network namespace at
// nsPath, binds queue to it and starts reading.
func startDelayer(nsPath string, queue uint16, delay, jitter time.Duration) (*delayer, error) {
	fd, err := socketIn(nsPath)
	if err != nil {
		return nil, err
	}
	d := &delayer{fd: fd, queue: queue, delay: delay, jitter: jitter, quit: make(chan struct{}), done: make(chan struct{})}
	// Big enough that a burst of packet notices is not dropped (a dropped
	// notice would leave its packet held until the queue goes away).
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200_000})
	be16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	for _, attr := range [][]byte{
		nlAttr(nfqaCfgCmd, append([]byte{nfqnlCfgCmdBind, 0}, be16(unix.AF_INET)...)),
		nlAttr(nfqaCfgParams, append(be32(0), nfqnlCopyMeta)),
		nlAttr(nfqaCfgQueueLen, be32(16384)),
		append(nlAttr(nfqaCfgMask, be32(nfqaCfgFFailOpen)), nlAttr(nfqaCfgFlags, be32(nfqaCfgFFailOpen))...),
	} {
		if err := d.request(nfqnlMsgConfig, attr); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("nfqueue %d: %w", queue, err)
		}
	}
	go d.read()
	return d, nil
}

// socketIn opens a netfilter netlink socket in another network namespace:
// a socket stays in the namespace it was made in.
func socketIn(nsPath string) (int, error) {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	defer self.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return -1, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("enter %s: %w", nsPath, err)
	}
	fd, serr := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// This thread stays in the wrong namespace: let it die with the
		// goroutine (still locked) rather than serve others.
		if serr == nil {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("return from %s: %w", nsPath, err)
	}
	runtime.UnlockOSThread()
	if serr != nil {
		return -1, fmt.Errorf("netlink socket: %w", serr)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// nlAttr encodes a netlink attribute, padded to 4 bytes.
func nlAttr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// message encodes an nfnetlink_queue message for the queue.
func (d *delayer) message(msg uint16, flags uint16, attrs []byte) []byte {
	b := make([]byte, 16, 20+len(attrs))
	binary.NativeEndian.PutUint32(b[0:], uint32(20+len(attrs)))
	binary.NativeEndian.PutUint16(b[4:], nfnlSubsysQueue<<8|msg)
	binary.NativeEndian.PutUint16(b[6:], flags)
	b = append(b, unix.AF_UNSPEC, 0) // nfgenmsg: family, version
	b = binary.BigEndian.AppendUint16(b, d.queue)
	return append(b, attrs...)
}

// request sends a configuration message and waits for its acknowledgement.
func (d *delayer) request(msg uint16, attrs []byte) error {
	if err := unix.Sendto(d.fd, d.message(msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK, attrs), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(d.fd, buf, 0)
	if err != nil {
		return fmt.Errorf("no acknowledgement: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return unix.Errno(-code)
			}
		}
	}
	return nil
}

// read takes each packet notice and schedules its verdict.
func (d *delayer) read() {
	defer close(d.done)
	buf := make([]byte, 1<<16)
	draining := false // quit: take the notices still buffered, then end
	for {
		select {
		case <-d.quit:
			draining = true
		default:
		}
		n, _, err := unix.Recvfrom(d.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) && draining {
				return
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != nfnlSubsysQueue<<8|nfqnlMsgPacket || len(m.Data) < 4 {
				continue
			}
			id, ok := packetID(m.Data[4:]) // after nfgenmsg
			if !ok {
				continue
			}
			wait := d.delay
			if d.jitter > 0 {
				wait += time.Duration(rand.Int64N(int64(2*d.jitter)+1)) - d.jitter
			}
			d.held.Add(1)
			time.AfterFunc(wait, func() {
				defer d.held.Done()
				d.accept(id)
			})
		}
	}
}

// packetID finds NFQA_PACKET_HDR's packet id in a notice's attributes.
func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs))
		typ := binary.NativeEndian.Uint16(attrs[2:]) & 0x3fff
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(attrs[4:]), true
		}
		attrs = attrs[min((l+3)&^3, len(attrs)):]
	}
	return 0, false
}

// accept lets a held packet go.
func (d *delayer) accept(id uint32) {
	v := binary.BigEndian.AppendUint32(nil, nfAccept)
	v = binary.BigEndian.AppendUint32(v, id)
	d.wmu.Lock()
	defer d.wmu.Unlock()
	unix.Sendto(d.fd, d.message(nfqnlMsgVerdict, unix.NLM_F_REQUEST, nlAttr(nfqaVerdictHdr, v)), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// stop takes the notices still buffered, waits for the held packets to
// go, then closes the queue. Call it once no rule feeds the queue.
func (d *delayer) stop() {
	close(d.quit)
	<-d.done
	d.held.Wait()
	unix.Close(d.fd)
}
