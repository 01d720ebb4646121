package libvirt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/corralhq/corral/daemon/hypervisor"
	"github.com/corralhq/corral/model"
)

// Guest agent: every domain has the org.qemu.guest_agent.0 channel, and
// libvirt speaks the agent's protocol on it (qemu-agent-command). A guest
// without an agent answers nothing: ErrNoAgent.

// agentChannel is the virtio port the QEMU guest agent listens on.
const agentChannel = "org.qemu.guest_agent.0"

// agent runs one agent command and decodes its "return" into out. The
// call waits at most timeout for the agent (libvirt counts whole seconds).
func (d *Driver) agent(name string, cmd any, out any, timeout time.Duration) error {
	l, dom, err := d.lookup(name)
	if err != nil {
		return err
	}
	req, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	secs := int32(max(1, math.Ceil(timeout.Seconds())))
	res, err := l.QEMUDomainAgentCommand(dom, string(req), secs, 0)
	switch {
	case isCode(err, golibvirt.ErrAgentUnresponsive), isCode(err, golibvirt.ErrAgentUnsynced), isCode(err, golibvirt.ErrAgentCommandTimeout):
		return fmt.Errorf("%s: %v: %w", name, err, hypervisor.ErrNoAgent)
	case isCode(err, golibvirt.ErrOperationInvalid):
		return fmt.Errorf("%s: %w", name, hypervisor.ErrNoDomain) // not running
	case err != nil:
		return wrap("guest agent of "+name, err)
	case len(res) == 0:
		return fmt.Errorf("guest agent of %s: empty answer", name)
	}
	var env struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal([]byte(res[0]), &env); err != nil {
		return fmt.Errorf("guest agent of %s: %w", name, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(env.Return, out); err != nil {
		return fmt.Errorf("guest agent of %s: %w", name, err)
	}
	return nil
}

// agentPoll is how often AgentExec asks whether its command has ended.
const agentPoll = 100 * time.Millisecond

// AgentExec runs argv in the guest through its agent and waits for it to
// end, at most timeout. A command still running then is left to the guest
// (the agent of QEMU 7.2 cannot kill it) and reported as timed out.
func (d *Driver) AgentExec(ctx context.Context, name string, argv []string, timeout time.Duration) (hypervisor.ExecResult, error) {
	if len(argv) == 0 {
		return hypervisor.ExecResult{}, fmt.Errorf("empty command: %w", model.ErrInvalid)
	}
	deadline := time.Now().Add(timeout)
	var started struct {
		PID int `json:"pid"`
	}
	exec := map[string]any{"execute": "guest-exec", "arguments": map[string]any{
		"path": argv[0], "arg": argv[1:], "capture-output": true,
	}}
	if err := d.agent(name, exec, &started, timeout); err != nil {
		return hypervisor.ExecResult{}, err
	}
	status := map[string]any{"execute": "guest-exec-status", "arguments": map[string]any{"pid": started.PID}}
	tick := time.NewTicker(agentPoll)
	defer tick.Stop()
	for {
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode int    `json:"exitcode"`
			Signal   int    `json:"signal"`
			Out      string `json:"out-data"`
			Err      string `json:"err-data"`
		}
		if err := d.agent(name, status, &st, max(time.Until(deadline), time.Second)); err != nil {
			return hypervisor.ExecResult{}, err
		}
		if st.Exited {
			out, _ := base64.StdEncoding.DecodeString(st.Out)
			errOut, _ := base64.StdEncoding.DecodeString(st.Err)
			all := append(out, errOut...)
			return hypervisor.ExecResult{ExitCode: st.ExitCode, Signal: st.Signal, Output: model.Clip(string(all), hypervisor.MaxExecOutput)}, nil
		}
		select {
		case <-ctx.Done():
			return hypervisor.ExecResult{}, ctx.Err()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return hypervisor.ExecResult{}, fmt.Errorf("%s: command still running after %v", name, timeout)
		}
	}
}

// GuestAddrs returns the guest's addresses as its agent reports them,
// loopback and link-local ones left out.
func (d *Driver) GuestAddrs(ctx context.Context, name string) ([]netip.Addr, error) {
	l, dom, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	ifs, err := l.DomainInterfaceAddresses(dom, uint32(golibvirt.DomainInterfaceAddressesSrcAgent), 0)
	switch {
	case isCode(err, golibvirt.ErrAgentUnresponsive), isCode(err, golibvirt.ErrAgentUnsynced), isCode(err, golibvirt.ErrAgentCommandTimeout):
		return nil, fmt.Errorf("%s: %v: %w", name, err, hypervisor.ErrNoAgent)
	case err != nil:
		return nil, wrap("addresses of "+name, err)
	}
	var out []netip.Addr
	for _, i := range ifs {
		for _, a := range i.Addrs {
			ip, err := netip.ParseAddr(a.Addr)
			if err != nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() {
				continue
			}
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}
