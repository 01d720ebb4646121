// Package membership runs gossip among corral hosts with hashicorp/memberlist:
// it joins through a seed list with retry and backoff, publishes this host's
// metadata (Raft and RPC addresses, version, capacity), tracks every peer's
// gossip state, and leaves cleanly on shutdown. Gossip is a hint: nothing
// here changes cluster state. It is the only importer of memberlist. See
// DESIGN.md.
package membership

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/corralhq/corral/internal/logadapt"
	"github.com/corralhq/corral/internal/notify"
)

// State is a member's gossip state. memberlist (v0.7.0) tells its delegates
// about joins, leaves and updates but not about suspicion, so a member is
// alive until it is declared dead or leaves; "suspect" in corral's API comes
// from the lease protocol instead (see DESIGN.md).
type State string

const (
	Alive State = "alive"
	Dead  State = "dead"
	// Left: the member announced a clean shutdown.
	Left State = "left"
)

// Meta is what a host tells its peers about itself through gossip. It must
// stay under memberlist's 512-byte limit, hence the short JSON keys.
type Meta struct {
	Version   string `json:"v"`
	RaftAddr  string `json:"r"`
	RPCAddr   string `json:"p"`
	VCPUs     int    `json:"c,omitempty"`
	MemoryMiB int64  `json:"m,omitempty"`
	// Health of the hardware: state and reasons (cut to fit), and usage:
	// CPU percent and memory available.
	Health      string `json:"h,omitempty"`
	Reasons     string `json:"hr,omitempty"`
	CPUPercent  int    `json:"u,omitempty"`
	MemAvailMiB int64  `json:"a,omitempty"`
	// PowerWatts is the power draw, PowerSource where it comes from
	// (hwmon.PowerSensor, PowerRAPL, PowerEstimate).
	PowerWatts  int    `json:"w,omitempty"`
	PowerSource string `json:"ws,omitempty"`
	// InCluster is set once the host belongs to a Raft cluster (it has Raft
	// state); bootstrap never forms a new cluster while a peer says so.
	InCluster bool `json:"i,omitempty"`
	// Leaving is set just before a clean leave, so peers record "left"
	// rather than "dead".
	Leaving bool `json:"l,omitempty"`
	// Protocol is the cluster protocol the host's corrald speaks
	// (raftlog.Protocol); absent (0) from a corrald older than protocols.
	// Peers decode metadata leniently (since the first release), so a new
	// field is safe to add; one whose meaning peers rely on still waits
	// for a raftlog.Feature.
	Protocol int `json:"pv,omitempty"`
}

// Member is one host as gossip sees it.
type Member struct {
	Name  string    `json:"name"`
	Addr  string    `json:"addr"` // gossip ip:port
	Meta  Meta      `json:"meta"`
	State State     `json:"state"`
	Since time.Time `json:"since"` // when State last changed, local clock
}

// Timing holds gossip timers. Production uses DefaultTiming (memberlist's LAN
// profile); tests shrink it.
type Timing struct {
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	TCPTimeout       time.Duration
	SuspicionMult    int
	// JoinBackoffMax caps the wait between join attempts while no seed has
	// answered.
	JoinBackoffMax time.Duration
	// RejoinInterval is how often a joined host retries seeds and dead
	// peers it cannot see, so that the two sides of a healed partition merge.
	RejoinInterval time.Duration
}

// DefaultTiming is memberlist's LAN profile plus corral's join timers.
func DefaultTiming() Timing {
	c := memberlist.DefaultLANConfig()
	return Timing{
		ProbeInterval: c.ProbeInterval, ProbeTimeout: c.ProbeTimeout, GossipInterval: c.GossipInterval,
		PushPullInterval: c.PushPullInterval, TCPTimeout: c.TCPTimeout, SuspicionMult: c.SuspicionMult,
		JoinBackoffMax: 30 * time.Second, RejoinInterval: 5 * time.Second,
	}
}

// Config is what a Membership needs.
type Config struct {
	Name          string
	BindAddr      string // IP to listen on
	AdvertiseAddr string // IP peers reach us at
	Port          int    // gossip port, TCP and UDP
	Seeds         []string
	Meta          Meta
	// Keys is the gossip keyring (16, 24 or 32 bytes each), the first the
	// one messages are encrypted with; the others are still accepted
	// (rotation). Empty: gossip is neither encrypted nor authenticated.
	Keys [][]byte
	// ReconnectTimeout is how long a dead or departed member is remembered
	// (and retried); then it is forgotten. 0: 72 hours.
	ReconnectTimeout time.Duration
	Logger           *slog.Logger
	Timing           Timing
}

// Membership is this host's view of the gossip pool.
type Membership struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring // nil: gossip in the clear
	meta    Meta
	members map[string]*Member
	joined  bool

	changes notify.Hub
}

// New returns a Membership for cfg; Run starts it.
func New(cfg Config) *Membership {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DefaultTiming()
	}
	return &Membership{cfg: cfg, log: cfg.Logger, meta: cfg.Meta, members: map[string]*Member{}}
}

// SetKeys makes the gossip keyring hold exactly keys, the first in use:
// it installs the new ones, switches the one in use, then removes the
// others. Rotating the cluster's key is three such steps (install, use,
// remove), each taken by every host before the next (daemon).
func (m *Membership) SetKeys(keys [][]byte) error {
	m.mu.Lock()
	kr := m.keyring
	m.mu.Unlock()
	if kr == nil {
		return errors.New("gossip runs without a keyring")
	}
	if len(keys) == 0 {
		return errors.New("an empty keyring")
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("gossip key: %w", err)
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return err
	}
	for _, have := range append([][]byte(nil), kr.GetKeys()...) {
		keep := false
		for _, k := range keys {
			keep = keep || bytes.Equal(k, have)
		}
		if !keep {
			if err := kr.RemoveKey(have); err != nil {
				return err
			}
		}
	}
	return nil
}

// Keys returns the keyring, the key in use first; nil without one.
func (m *Membership) Keys() [][]byte {
	m.mu.Lock()
	kr := m.keyring
	m.mu.Unlock()
	if kr == nil {
		return nil
	}
	return append([][]byte(nil), kr.GetKeys()...)
}

// ErrNotRunning is returned by calls that need the gossip layer before Run
// has started it.
var ErrNotRunning = errors.New("membership is not running")

// Start creates the memberlist (binding its ports) so that peers can reach
// this host; the join loop runs in Run.
func (m *Membership) Start() error {
	c := memberlist.DefaultLANConfig()
	c.Name = m.cfg.Name
	c.BindAddr = m.cfg.BindAddr
	c.BindPort = m.cfg.Port
	c.AdvertiseAddr = m.cfg.AdvertiseAddr
	c.AdvertisePort = m.cfg.Port
	t := m.cfg.Timing
	c.ProbeInterval, c.ProbeTimeout, c.GossipInterval = t.ProbeInterval, t.ProbeTimeout, t.GossipInterval
	c.PushPullInterval, c.TCPTimeout, c.SuspicionMult = t.PushPullInterval, t.TCPTimeout, t.SuspicionMult
	if len(m.cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(m.cfg.Keys[1:], m.cfg.Keys[0])
		if err != nil {
			return fmt.Errorf("gossip keyring: %w", err)
		}
		c.Keyring = kr
		c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
		m.mu.Lock()
		m.keyring = kr
		m.mu.Unlock()
	}
	c.Delegate = delegate{m}
	c.Events = events{m}
	c.Logger = logadapt.Std(m.log)
	ml, err := memberlist.Create(c)
	if err != nil {
		return fmt.Errorf("gossip on %s:%d: %w", m.cfg.BindAddr, m.cfg.Port, err)
	}
	m.mu.Lock()
	m.ml = ml
	m.mu.Unlock()
	return nil
}

// Run joins the seeds, retrying with backoff until one answers, then keeps
// retrying unreachable seeds and dead peers every RejoinInterval. When ctx
// ends it announces a clean leave and shuts gossip down. Start must have
// been called.
func (m *Membership) Run(ctx context.Context) error {
	m.mu.Lock()
	ml := m.ml
	m.mu.Unlock()
	if ml == nil {
		return ErrNotRunning
	}
	defer m.leave(ml)

	backoff := 250 * time.Millisecond
	for !m.Joined() {
		if err := m.joinSeeds(ml); err != nil {
			m.log.Warn("join failed, retrying", "seeds", m.cfg.Seeds, "in", backoff, "err", err)
		} else {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, m.cfg.Timing.JoinBackoffMax)
	}
	tick := time.NewTicker(m.cfg.Timing.RejoinInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			m.forget(time.Now())
			m.rejoin(ml)
		}
	}
}

// defaultReconnectTimeout is Consul's reconnect_timeout.
const defaultReconnectTimeout = 72 * time.Hour

// forget drops members dead or gone for longer than ReconnectTimeout: the
// map keyed by names from the network stays bounded, and a host that is
// gone for good is no longer retried. Cluster state keeps its own record.
func (m *Membership) forget(now time.Time) {
	timeout := m.cfg.ReconnectTimeout
	if timeout <= 0 {
		timeout = defaultReconnectTimeout
	}
	var gone []string
	m.mu.Lock()
	for name, mem := range m.members {
		if mem.State != Alive && now.Sub(mem.Since) > timeout {
			delete(m.members, name)
			gone = append(gone, name)
		}
	}
	m.mu.Unlock()
	for _, name := range gone {
		m.log.Info("member forgotten: gone longer than reconnect_timeout", "host", name, "reconnect_timeout", timeout)
	}
	if len(gone) > 0 {
		m.changes.Signal()
	}
}

func (m *Membership) leave(ml *memberlist.Memberlist) {
	m.UpdateMeta(func(meta *Meta) { meta.Leaving = true })
	if err := ml.Leave(2 * time.Second); err != nil {
		m.log.Warn("leave", "err", err)
	}
	if err := ml.Shutdown(); err != nil {
		m.log.Warn("gossip shutdown", "err", err)
	}
	m.log.Info("left the gossip pool")
}

// seedAddrs returns the seeds as ip:port, without this host's own address.
func (m *Membership) seedAddrs() []string {
	self := net.JoinHostPort(m.cfg.AdvertiseAddr, strconv.Itoa(m.cfg.Port))
	var out []string
	for _, s := range m.cfg.Seeds {
		addr := s
		if _, _, err := net.SplitHostPort(s); err != nil {
			addr = net.JoinHostPort(s, strconv.Itoa(m.cfg.Port))
		}
		if addr != self {
			out = append(out, addr)
		}
	}
	return out
}

// joinSeeds tries every seed once. With no seeds other than this host, the
// host forms a pool of its own and is joined at once.
func (m *Membership) joinSeeds(ml *memberlist.Memberlist) error {
	seeds := m.seedAddrs()
	if len(seeds) > 0 {
		n, err := ml.Join(seeds)
		if n == 0 {
			if err == nil {
				err = errors.New("no seed answered")
			}
			return err
		}
		m.log.Info("joined gossip pool", "contacted", n)
	}
	m.mu.Lock()
	m.joined = true
	m.mu.Unlock()
	m.changes.Signal()
	return nil
}

// rejoin contacts seeds and dead (not left) peers that are not alive in our
// view. After a partition heals, memberlist alone may never merge the two
// sides again; this does.
func (m *Membership) rejoin(ml *memberlist.Memberlist) {
	alive := map[string]bool{}
	var targets []string
	m.mu.Lock()
	for _, mem := range m.members {
		if mem.State == Alive {
			alive[mem.Addr] = true
		}
	}
	for _, mem := range m.members {
		if mem.State == Dead && !alive[mem.Addr] {
			targets = append(targets, mem.Addr)
		}
	}
	m.mu.Unlock()
	for _, s := range m.seedAddrs() {
		if !alive[s] {
			targets = append(targets, s)
		}
	}
	if len(targets) == 0 {
		return
	}
	if n, err := ml.Join(targets); n > 0 {
		m.log.Debug("rejoin", "targets", targets, "contacted", n)
	} else if err != nil {
		m.log.Debug("rejoin failed", "targets", targets, "err", err)
	}
}

// Joined reports whether this host has joined a pool (or is alone by
// configuration).
func (m *Membership) Joined() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.joined
}

// Members returns every member this host has seen, itself included, sorted
// by name.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, *mem)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Member returns one member by name.
func (m *Membership) Member(name string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem, ok := m.members[name]
	if !ok {
		return Member{}, false
	}
	return *mem, true
}

// Changes returns a channel that receives after any member changes state or
// metadata, and a function to stop.
func (m *Membership) Changes() (<-chan struct{}, func()) { return m.changes.Subscribe() }

// UpdateMeta changes this host's metadata and gossips it.
func (m *Membership) UpdateMeta(fn func(*Meta)) {
	m.mu.Lock()
	old := m.meta
	fn(&m.meta)
	changed := m.meta != old
	ml := m.ml
	m.mu.Unlock()
	if changed && ml != nil {
		if err := ml.UpdateNode(m.cfg.Timing.TCPTimeout); err != nil {
			m.log.Debug("gossip metadata update", "err", err)
		}
	}
}

// LocalMeta returns this host's current metadata.
func (m *Membership) LocalMeta() Meta {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.meta
}

func (m *Membership) setState(n *memberlist.Node, state State) {
	var meta Meta
	if len(n.Meta) > 0 {
		if err := json.Unmarshal(n.Meta, &meta); err != nil {
			m.log.Warn("bad gossip metadata", "host", n.Name, "err", err)
		}
	}
	m.mu.Lock()
	mem, ok := m.members[n.Name]
	if !ok {
		mem = &Member{Name: n.Name}
		m.members[n.Name] = mem
	}
	if state == Dead {
		meta = mem.Meta // a leave event carries the last metadata; keep ours
	}
	// A host announces Leaving in its metadata just before it leaves; from
	// then on it is leaving, whatever order the update and the leave arrive
	// in. A restarted daemon gossips fresh metadata without the flag.
	if meta.Leaving {
		state = Left
	}
	prev := mem.State
	mem.Addr = n.Address()
	mem.Meta = meta
	if prev != state {
		mem.State = state
		mem.Since = time.Now()
	}
	m.mu.Unlock()
	if prev != state {
		m.log.Info("member "+string(state), "host", n.Name, "addr", n.Address())
	}
	m.changes.Signal()
}

type events struct{ m *Membership }

func (e events) NotifyJoin(n *memberlist.Node)   { e.m.setState(n, Alive) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.m.setState(n, Dead) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.m.setState(n, Alive) }

type delegate struct{ m *Membership }

func (d delegate) NodeMeta(limit int) []byte {
	d.m.mu.Lock()
	b, err := json.Marshal(d.m.meta)
	d.m.mu.Unlock()
	if err != nil || len(b) > limit {
		d.m.log.Error("gossip metadata too large", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}
func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}
