package daemon

import (
	"errors"
	"flag"
	"fmt"
	"github.com/corralhq/corral/daemon/placement"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/corralhq/corral/daemon/controller"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/daemon/membership"
	"github.com/corralhq/corral/hwmon"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftstore"
)

// DefaultConfigFile is where corrald looks for its configuration.
const DefaultConfigFile = "/etc/corral/corral.toml"

// Config is corrald's configuration. Every field with a toml tag is a key of
// the config file and a command-line flag of the same name with dashes
// (data_dir -> --data-dir). Flags override the file; the file overrides the
// defaults.
type Config struct {
	Name            string        `toml:"name" help:"host name in the cluster (default: the hostname)"`
	DataDir         string        `toml:"data_dir" help:"directory for Raft state and local data"`
	BindAddr        string        `toml:"bind_addr" help:"IP address to listen on for gossip, Raft and cluster RPC"`
	AdvertiseAddr   string        `toml:"advertise_addr" help:"IP address peers use to reach this host (default: bind_addr, or the first global unicast address when bind_addr is 0.0.0.0)"`
	GossipPort      int           `toml:"gossip_port" help:"gossip port, TCP and UDP"`
	RaftPort        int           `toml:"raft_port" help:"Raft port"`
	RPCPort         int           `toml:"rpc_port" help:"cluster RPC port"`
	Seeds           []string      `toml:"seeds" help:"hosts to join through, host or host:port (comma-separated as a flag)"`
	BootstrapExpect int           `toml:"bootstrap_expect" help:"number of hosts that form the Raft cluster together; 1 for a single host"`
	RaftVoters      int           `toml:"raft_voters" help:"Raft voters to keep, 3 or 5; other hosts are non-voters"`
	DeadVoterAfter  time.Duration `toml:"dead_voter_timeout" help:"how long a voter may be gone before a non-voter takes its seat"`
	ReconnectAfter  time.Duration `toml:"reconnect_timeout" help:"how long a dead or departed host is remembered by gossip and retried; then gossip forgets it (cluster state keeps it until corralctl host rm)"`
	Socket          string        `toml:"socket" help:"path of the admin API Unix socket"`
	SocketGroup     string        `toml:"socket_group" help:"group whose members are admins on the socket (as root is), when it exists"`
	SocketReadGroup string        `toml:"socket_read_group" help:"group whose members may read (viewer role) through the socket, which then accepts any user's connection and refuses everything to users in neither group; empty: none"`
	APIRateLimit    float64       `toml:"api_rate_limit" help:"requests a second each API client (a uid on the socket, a token on the HTTPS API) may send, bursts of twice that; beyond, 429 with Retry-After (0: no limit)"`
	APIAddr         string        `toml:"api_addr" help:"address:port of the HTTPS API, the socket's routes for remote clients with API tokens (corralctl token create, corralctl remote add)"`
	TLSCert         string        `toml:"tls_cert" help:"PEM certificate (chain) the HTTPS API presents, with tls_key; empty: corrald makes a self-signed one in data_dir and logs its fingerprint"`
	TLSKey          string        `toml:"tls_key" help:"PEM private key of tls_cert"`
	LogLevel        string        `toml:"log_level" help:"debug, info, warn or error"`
	LogFormat       string        `toml:"log_format" help:"text or json"`
	JoinToken       string        `toml:"join_token" secret:"true" help:"join token from a member (corralctl cluster token create); with no cluster identity in data_dir/identity, this host joins with it at start (a secret: config file only, never a flag)"`
	Insecure        bool          `toml:"insecure" help:"run without a cluster identity on an address other than loopback: Raft, RPC and gossip then accept anyone who reaches them (warned about at start, every hour and in status)"`

	LibvirtURI        string        `toml:"libvirt_uri" help:"libvirt connection URI"`
	LibvirtSocket     string        `toml:"libvirt_socket" help:"libvirtd's Unix socket"`
	KernelDir         string        `toml:"kernel_dir" help:"directory holding the kernels and initrds VMs may boot directly; any other path is refused (on shared storage, like storage_pool)"`
	StoragePool       string        `toml:"storage_pool" help:"directory of the storage pool for images and VM disks; shared by all hosts (e.g. NFS) so that VMs can move. Changing it moves libvirt's pool once no domain uses a disk in the old directory (the files stay there)"`
	DomainType        string        `toml:"domain_type" help:"kvm, qemu (software emulation) or auto (kvm when it works and this host is not itself a VM)"`
	ShutdownTimeout   time.Duration `toml:"guest_shutdown_timeout" help:"how long a guest gets to power off (ACPI) before it is destroyed"`
	PlacementStrategy string        `toml:"placement_strategy" help:"spread (least loaded host first) or pack (fill hosts one by one)"`
	CPUOvercommit     float64       `toml:"cpu_overcommit" help:"vCPUs placed per physical CPU"`
	MemoryOvercommit  float64       `toml:"memory_overcommit" help:"guest memory placed per MiB of host memory"`
	ReservedVCPUs     int           `toml:"reserved_vcpus" help:"CPUs kept for the host itself"`
	ReservedMemoryMiB int64         `toml:"reserved_memory_mib" help:"memory (MiB) kept for the host itself"`

	HeartbeatInterval time.Duration `toml:"heartbeat_interval" help:"how often a host renews its lease with the leader (every host at the multiples of it on the wall clock, so that the leader commits the renewals together)"`
	LeaseTTL          time.Duration `toml:"lease_ttl" help:"a lease lasts this long from when its renewal was sent; a host whose lease expires destroys its guests"`
	FenceMargin       time.Duration `toml:"fence_margin" help:"the leader declares a host dead only when its last renewal is lease_ttl + fence_margin old"`
	FenceCommand      string        `toml:"fence_command" help:"command the leader runs with a late host's name and address to power it off (exit 0 = off); then its guests are recovered at once"`
	FenceAfter        time.Duration `toml:"fence_after" help:"how late a host's renewals must be before fence_command runs"`
	FenceTimeout      time.Duration `toml:"fence_timeout" help:"how long fence_command may take"`
	WatchdogDevice    string        `toml:"watchdog_device" help:"watchdog device fed only while this host holds its lease (e.g. /dev/watchdog); empty for none"`
	FencerSocket      string        `toml:"fencer_socket" help:"socket of this host's fencer (corral-fencer), which kills the guests when the lease ends even if corrald is dead; with one set, guests start only while it holds the deadline; empty for none (guests then outlive a crashed corrald)"`
	FenceKillBudget   time.Duration `toml:"fence_kill_budget" help:"a host kills its guests this long before its lease ends, so that they are dead when it does (measured: see README)"`
	SharedStorage     bool          `toml:"shared_storage" help:"VM disks are on storage all hosts reach, so VMs can be recovered and migrated"`
	DrainParallel     int           `toml:"drain_parallel" help:"live migrations at once when draining a host"`
	PowerIdleWatts    float64       `toml:"power_idle_watts" help:"power draw at rest, for the estimate used where no sensor or RAPL counter measures it (0: 20 W + 2 W per logical CPU)"`
	PowerMaxWatts     float64       `toml:"power_max_watts" help:"power draw at full CPU use, for the same estimate (0: 20 W + 8 W per logical CPU)"`
	PowerOnCommand    string        `toml:"power_on_command" help:"command the leader runs with a standby host's name and address to power it on (IPMI, Redfish, Wake-on-LAN), when capacity runs short or a host failed"`
	PowerOffCommand   string        `toml:"power_off_command" help:"command the leader runs with a host's name and address to power it off once the balancer's consolidation emptied it (it goes to standby; Raft voters are never emptied then)"`
	PowerTimeout      time.Duration `toml:"power_timeout" help:"how long a power command may take"`
	Balance           string        `toml:"balance" help:"what the leader's balancer works toward with live migrations: off, spread (even memory use) or consolidate (empty the least used hosts, keeping N+1)"`
	BalanceInterval   time.Duration `toml:"balance_interval" help:"time between the balancer's rounds (each starts at most 2 migrations; at most 20 an hour, 2 per VM a day)"`
	BalanceMinGain    float64       `toml:"balance_min_gain" help:"the gap between the most and least used hosts' memory share (0.10: 10 points) from which spread moves VMs, and below which it stops"`
	MigrationURI      string        `toml:"migration_uri" help:"libvirt URI of a target host's libvirtd for live migration; %s is its address"`
	MigrationDataURI  string        `toml:"migration_data_uri" help:"where QEMU streams guest memory during live migration; %s is the target's address"`
	ManageNetworks    bool          `toml:"manage_networks" help:"build corral networks (bridges, VLAN, VXLAN) on this host"`

	SampleInterval  time.Duration `toml:"hw_sample_interval" help:"how often the hardware is sampled"`
	Uplink          string        `toml:"uplink" help:"interface whose link and errors count for health (default: the one with advertise_addr)"`
	AutoEvacuate    bool          `toml:"auto_evacuate" help:"drain a host by live migration when its health turns failing"`
	MemDegradedPct  float64       `toml:"health_mem_degraded_pct" help:"degraded when available memory falls below this percentage (0 = off)"`
	MemFailingPct   float64       `toml:"health_mem_failing_pct" help:"failing when available memory falls below this percentage"`
	DiskDegradedPct float64       `toml:"health_disk_degraded_pct" help:"degraded when data_dir or the storage pool is fuller than this percentage"`
	DiskFailingPct  float64       `toml:"health_disk_failing_pct" help:"failing when data_dir or the storage pool is fuller than this percentage"`
	TempDegradedC   float64       `toml:"health_temp_degraded_c" help:"degraded when a sensor is hotter (°C)"`
	TempFailingC    float64       `toml:"health_temp_failing_c" help:"failing when a sensor is hotter (°C)"`
	LoadDegraded    float64       `toml:"health_load_per_cpu_degraded" help:"degraded when the 1-minute load per CPU is above this"`
	NICErrDegraded  int64         `toml:"health_nic_errors_degraded" help:"degraded when the uplink shows more new errors and drops per sample"`
	HealthRise      int           `toml:"health_rise" help:"consecutive samples before health gets worse"`
	HealthFall      int           `toml:"health_fall" help:"consecutive samples before health gets better"`
	MetricsAddr     string        `toml:"metrics_addr" help:"address:port for Prometheus metrics on /metrics (empty: off)"`

	// Tuning holds timers that tests shrink; it is not part of the file.
	Tuning Tuning `toml:"-"`
}

// Tuning holds internal timers.
type Tuning struct {
	Raft              raftstore.Timing
	Gossip            membership.Timing
	ReconcileInterval time.Duration
	BootstrapSettle   time.Duration
	ForwardTimeout    time.Duration
	// HostResync is the period of the host loop's full comparison.
	HostResync time.Duration
	// Driver replaces the libvirt driver (tests use hypervisor/fake).
	Driver GuestDriver
	// Networker replaces netsetup (tests that must not touch the host's
	// network namespace).
	Networker controller.Networker
	// HWSource replaces the gopsutil sampler (tests inject samples).
	HWSource hwmon.Source
	// Backups replaces the backup engine (tests over the fake driver,
	// whose volumes are no files to copy).
	Backups controller.BackupEngine
	// CertCheck is how often the host certificate's expiry is checked.
	CertCheck time.Duration
	// Protocol replaces raftlog.Protocol, the cluster protocol this
	// corrald speaks (tests play an older or newer one); 0: raftlog's.
	Protocol int
	// AutoscaleInterval is how often the leader samples the members of
	// autoscaled groups.
	AutoscaleInterval time.Duration
	// RenewalGather is how long the leader holds the first lease renewal
	// of a batch for the others sent at the same instant
	// (controller.LivenessConfig).
	RenewalGather time.Duration
}

// DefaultTuning is what production runs with.
func DefaultTuning() Tuning {
	return Tuning{
		Raft:              raftstore.DefaultTiming(),
		Gossip:            membership.DefaultTiming(),
		ReconcileInterval: 5 * time.Second,
		BootstrapSettle:   2 * time.Second,
		ForwardTimeout:    15 * time.Second,
		HostResync:        5 * time.Second,
		AutoscaleInterval: 15 * time.Second,
		CertCheck:         time.Hour,
		RenewalGather:     2 * time.Millisecond,
	}
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Name:            host,
		DataDir:         "/var/lib/corral",
		BindAddr:        "0.0.0.0",
		GossipPort:      7946,
		RaftPort:        7947,
		RPCPort:         7948,
		BootstrapExpect: 3,
		RaftVoters:      3,
		DeadVoterAfter:  time.Minute,
		ReconnectAfter:  72 * time.Hour,
		Socket:          "/run/corral/corral.sock",
		SocketGroup:     "corral",
		APIRateLimit:    200,
		LogLevel:        "info",
		LogFormat:       "text",

		LibvirtURI:        "qemu:///system",
		LibvirtSocket:     "/var/run/libvirt/libvirt-sock",
		StoragePool:       "/var/lib/corral/pool",
		KernelDir:         "/var/lib/corral/kernels",
		DomainType:        "auto",
		ShutdownTimeout:   time.Minute,
		PlacementStrategy: "spread",
		CPUOvercommit:     4,
		MemoryOvercommit:  1,
		ReservedMemoryMiB: 1024,

		HeartbeatInterval: 200 * time.Millisecond,
		LeaseTTL:          3600 * time.Millisecond,
		FenceMargin:       200 * time.Millisecond,
		FencerSocket:      "/run/corral-fencer/fencer.sock",
		FenceKillBudget:   250 * time.Millisecond,
		FenceAfter:        900 * time.Millisecond,
		FenceTimeout:      30 * time.Second,
		SharedStorage:     true,
		DrainParallel:     2,
		PowerTimeout:      2 * time.Minute,
		Balance:           "off",
		BalanceInterval:   5 * time.Minute,
		BalanceMinGain:    0.10,
		MigrationURI:      "qemu+tcp://%s/system",
		MigrationDataURI:  "tcp://%s",
		ManageNetworks:    true,

		SampleInterval:  10 * time.Second,
		MemDegradedPct:  10,
		MemFailingPct:   3,
		DiskDegradedPct: 85,
		DiskFailingPct:  95,
		TempDegradedC:   85,
		TempFailingC:    95,
		LoadDegraded:    4,
		NICErrDegraded:  100,
		HealthRise:      3,
		HealthFall:      3,

		Tuning: DefaultTuning(),
	}
}

// ConfigError names the key that is wrong and why.
type ConfigError struct {
	Key    string
	Reason string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("config: %s: %s", e.Key, e.Reason) }

func bad(key, format string, args ...any) error {
	return &ConfigError{Key: key, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks the configuration and fills in derived defaults
// (advertise_addr). It returns a *ConfigError naming the first bad key.
func (c *Config) Validate() error {
	if err := model.ValidateHostName(c.Name); err != nil {
		return bad("name", "%v", err)
	}
	if c.DataDir == "" {
		return bad("data_dir", "must be set")
	}
	bind := net.ParseIP(c.BindAddr)
	if bind == nil {
		return bad("bind_addr", "%q is not an IP address", c.BindAddr)
	}
	if c.AdvertiseAddr == "" {
		if !bind.IsUnspecified() {
			c.AdvertiseAddr = c.BindAddr
		} else if ip, err := firstUnicastIP(); err == nil {
			c.AdvertiseAddr = ip
		} else {
			return bad("advertise_addr", "not set, and no address to guess it from: %v", err)
		}
	}
	if ip := net.ParseIP(c.AdvertiseAddr); ip == nil || ip.IsUnspecified() {
		return bad("advertise_addr", "%q is not a routable IP address", c.AdvertiseAddr)
	}
	ports := map[string]int{"gossip_port": c.GossipPort, "raft_port": c.RaftPort, "rpc_port": c.RPCPort}
	seen := map[int]string{}
	for _, k := range []string{"gossip_port", "raft_port", "rpc_port"} {
		p := ports[k]
		if p < 1 || p > 65535 {
			return bad(k, "%d is not a port (1-65535)", p)
		}
		if other, dup := seen[p]; dup {
			return bad(k, "port %d is also %s", p, other)
		}
		seen[p] = k
	}
	for _, s := range c.Seeds {
		host := s
		if h, p, err := net.SplitHostPort(s); err == nil {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return bad("seeds", "%q: bad port", s)
			}
			host = h
		}
		if host == "" {
			return bad("seeds", "%q: empty host", s)
		}
	}
	if c.BootstrapExpect < 1 {
		return bad("bootstrap_expect", "%d: must be at least 1", c.BootstrapExpect)
	}
	if c.RaftVoters != 3 && c.RaftVoters != 5 {
		return bad("raft_voters", "%d: must be 3 or 5", c.RaftVoters)
	}
	if c.BootstrapExpect > c.RaftVoters {
		return bad("bootstrap_expect", "%d is more than raft_voters (%d)", c.BootstrapExpect, c.RaftVoters)
	}
	if c.ReconnectAfter <= c.DeadVoterAfter {
		return bad("reconnect_timeout", "%v must be longer than dead_voter_timeout (%v): a voter gossip forgets would keep its Raft seat", c.ReconnectAfter, c.DeadVoterAfter)
	}
	if c.DeadVoterAfter <= 0 {
		return bad("dead_voter_timeout", "must be positive")
	}
	if c.Socket == "" || !strings.HasPrefix(c.Socket, "/") {
		return bad("socket", "%q: must be an absolute path", c.Socket)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log_level", "%q: use debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("log_format", "%q: use text or json", c.LogFormat)
	}
	if c.JoinToken != "" {
		if _, err := identity.ParseToken(c.JoinToken); err != nil {
			return bad("join_token", "%v", err)
		}
	}
	if !strings.Contains(c.LibvirtURI, "://") {
		return bad("libvirt_uri", "%q is not a libvirt URI (e.g. qemu:///system)", c.LibvirtURI)
	}
	for _, p := range []struct{ key, val string }{{"libvirt_socket", c.LibvirtSocket}, {"storage_pool", c.StoragePool}} {
		if !strings.HasPrefix(p.val, "/") {
			return bad(p.key, "%q: must be an absolute path", p.val)
		}
	}
	switch c.DomainType {
	case "auto", "kvm", "qemu":
	default:
		return bad("domain_type", "%q: use auto, kvm or qemu", c.DomainType)
	}
	if c.ShutdownTimeout <= 0 {
		return bad("guest_shutdown_timeout", "must be positive")
	}
	if c.PlacementStrategy != "spread" && c.PlacementStrategy != "pack" {
		return bad("placement_strategy", "%q: use spread or pack", c.PlacementStrategy)
	}
	if c.CPUOvercommit < 0.1 || c.CPUOvercommit > 64 {
		return bad("cpu_overcommit", "%g: must be within 0.1..64", c.CPUOvercommit)
	}
	if c.MemoryOvercommit < 0.1 || c.MemoryOvercommit > 4 {
		return bad("memory_overcommit", "%g: must be within 0.1..4", c.MemoryOvercommit)
	}
	if c.ReservedVCPUs < 0 || c.ReservedMemoryMiB < 0 {
		return bad("reserved_memory_mib", "reserves cannot be negative")
	}
	if c.HeartbeatInterval < 50*time.Millisecond {
		return bad("heartbeat_interval", "%v: at least 50ms", c.HeartbeatInterval)
	}
	if c.LeaseTTL < 4*c.HeartbeatInterval {
		return bad("lease_ttl", "%v: must be at least 4 heartbeat intervals (%v)", c.LeaseTTL, 4*c.HeartbeatInterval)
	}
	if minTTL := 2 * c.Tuning.Raft.ElectionTimeout; c.LeaseTTL <= minTTL {
		return bad("lease_ttl", "%v: must exceed the worst leader election (about %v), or a leader change would fence healthy hosts", c.LeaseTTL, minTTL)
	}
	if c.FenceMargin < c.HeartbeatInterval/2 {
		return bad("fence_margin", "%v: at least half a heartbeat interval; it covers clock drift and the time a host takes to destroy its guests", c.FenceMargin)
	}
	if c.FenceKillBudget < 0 || c.FenceKillBudget > c.LeaseTTL/4 || c.FenceKillBudget > 5*time.Second {
		return bad("fence_kill_budget", "%v: must be within 0..min(lease_ttl/4, 5s)", c.FenceKillBudget)
	}
	if !filepath.IsAbs(c.KernelDir) || filepath.Clean(c.KernelDir) == "/" {
		return bad("kernel_dir", "%q: must be an absolute directory other than /", c.KernelDir)
	}
	if c.FencerSocket != "" && !filepath.IsAbs(c.FencerSocket) {
		return bad("fencer_socket", "%q: must be an absolute path", c.FencerSocket)
	}
	if c.FenceAfter < 2*c.HeartbeatInterval {
		return bad("fence_after", "%v: at least 2 heartbeat intervals", c.FenceAfter)
	}
	if c.FenceTimeout <= 0 {
		return bad("fence_timeout", "must be positive")
	}
	if c.DrainParallel < 1 || c.DrainParallel > 64 {
		return bad("drain_parallel", "%d: 1..64", c.DrainParallel)
	}
	if c.PowerIdleWatts < 0 || c.PowerMaxWatts < 0 || c.PowerMaxWatts > 0 && c.PowerMaxWatts < c.PowerIdleWatts {
		return bad("power_max_watts", "%v: not negative, and at least power_idle_watts (%v)", c.PowerMaxWatts, c.PowerIdleWatts)
	}
	if c.PowerTimeout <= 0 {
		return bad("power_timeout", "must be positive")
	}
	if _, err := placement.ParseGoal(c.Balance); err != nil {
		return bad("balance", "%q: off, spread or consolidate", c.Balance)
	}
	if c.BalanceInterval < time.Minute {
		return bad("balance_interval", "%v: at least 1m", c.BalanceInterval)
	}
	if c.BalanceMinGain <= 0 || c.BalanceMinGain >= 1 {
		return bad("balance_min_gain", "%v: between 0 and 1", c.BalanceMinGain)
	}
	if c.SampleInterval < 100*time.Millisecond {
		return bad("hw_sample_interval", "%v: at least 100ms", c.SampleInterval)
	}
	if c.HealthRise < 1 || c.HealthFall < 1 {
		return bad("health_rise", "health_rise and health_fall must be at least 1")
	}
	for _, p := range []struct {
		key      string
		val, max float64
	}{{"health_mem_degraded_pct", c.MemDegradedPct, 100}, {"health_mem_failing_pct", c.MemFailingPct, 100},
		{"health_disk_degraded_pct", c.DiskDegradedPct, 100}, {"health_disk_failing_pct", c.DiskFailingPct, 100},
		{"health_temp_degraded_c", c.TempDegradedC, 200}, {"health_temp_failing_c", c.TempFailingC, 200}} {
		if p.val < 0 || p.val > p.max {
			return bad(p.key, "%g: must be within 0..%g", p.val, p.max)
		}
	}
	if c.APIRateLimit < 0 {
		return fmt.Errorf("api_rate_limit %g: want 0 (no limit) or more", c.APIRateLimit)
	}
	if c.APIAddr != "" {
		if _, _, err := net.SplitHostPort(c.APIAddr); err != nil {
			return bad("api_addr", "%q: %v", c.APIAddr, err)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return bad("tls_cert", "tls_cert and tls_key go together: set both or neither")
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			return bad("metrics_addr", "%q: %v", c.MetricsAddr, err)
		}
	}
	for _, u := range []struct{ key, val string }{{"migration_uri", c.MigrationURI}, {"migration_data_uri", c.MigrationDataURI}} {
		if strings.Count(u.val, "%s") != 1 || !strings.Contains(u.val, "://") {
			return bad(u.key, "%q: a URI with one %%s for the target's address", u.val)
		}
	}
	return nil
}

func firstUnicastIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() && n.IP.To4() != nil {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("no global unicast IPv4 address on any interface")
}

// LoadConfig builds the configuration from the defaults, the config file
// and the command-line flags, in that order of increasing precedence, and
// validates it. The file is --config if given, else DefaultConfigFile when
// it exists.
func LoadConfig(args []string) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("corrald", flag.ContinueOnError)
	configPath := fs.String("config", "", "config file (default "+DefaultConfigFile+" when it exists)")
	setters := bindFlags(fs, &cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	path := *configPath
	if path == "" {
		if _, err := os.Stat(DefaultConfigFile); err == nil {
			path = DefaultConfigFile
		}
	}
	if path != "" {
		if err := loadFile(path, &cfg); err != nil {
			return cfg, err
		}
		if cfg.JoinToken != "" {
			if err := private(path, "the config file holds join_token"); err != nil {
				return cfg, bad("join_token", "%v", err)
			}
		}
	}
	// Flags win over the file: apply the ones given on the command line.
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		if set, ok := setters[f.Name]; ok && ferr == nil {
			ferr = set(f.Value.String())
		}
	})
	if ferr != nil {
		return cfg, ferr
	}
	return cfg, cfg.Validate()
}

func loadFile(path string, cfg *Config) error {
	md, err := toml.DecodeFile(path, cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			// Not perr.ErrorWithPosition: it panics on some inputs (an
			// unterminated string at the very start, found by FuzzLoadConfig).
			if perr.Position.Line > 0 {
				return fmt.Errorf("config %s: line %d, column %d: %s", path, perr.Position.Line, perr.Position.Col, perr.Message)
			}
			return fmt.Errorf("config %s: %s", path, perr.Message)
		}
		return fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return &ConfigError{Key: und[0].String(), Reason: "unknown key in " + path}
	}
	return nil
}

// bindFlags registers one flag per config key and returns, per flag name,
// a function that stores a value into cfg. Flags are parsed into throwaway
// values first so that the file can be read in between.
func bindFlags(fs *flag.FlagSet, cfg *Config) map[string]func(string) error {
	setters := map[string]func(string) error{}
	for _, k := range configKeys(reflect.ValueOf(cfg).Elem()) {
		if k.secret {
			continue // a flag shows in ps and in shell history
		}
		key, field := k.key, k.value
		name := strings.ReplaceAll(key, "_", "-")
		def := fmt.Sprint(field.Interface())
		if field.Kind() == reflect.Slice {
			def = strings.Join(field.Interface().([]string), ",")
		}
		fs.String(name, def, k.help)
		setters[name] = func(s string) error {
			if err := setField(field, s); err != nil {
				return bad(key, "flag --%s: %v", name, err)
			}
			return nil
		}
	}
	return setters
}

// configKey is one key of the config file: its name, help text and the
// field holding its value.
type configKey struct {
	key, help string
	value     reflect.Value
	secret    bool // file only: never a flag
}

// loopbackOnly reports whether the cluster ports listen on loopback only.
func (c Config) loopbackOnly() bool {
	ip := net.ParseIP(c.BindAddr)
	return ip != nil && ip.IsLoopback()
}

// IdentityDir is where the cluster identity lives (package identity).
func (c Config) IdentityDir() string { return filepath.Join(c.DataDir, "identity") }

// private checks that a file holding a secret is not readable by others:
// at most 0640 (the group is root's or corral's, as packaged).
func private(path, why string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o037 != 0 {
		return fmt.Errorf("%s is mode %04o but %s: make it 0600 or 0640 (chmod 600 %s)", path, perm, why, path)
	}
	return nil
}

// configKeys lists the keys of a Config value (every field with a toml
// tag), in field order.
func configKeys(v reflect.Value) []configKey {
	var keys []configKey
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if key := f.Tag.Get("toml"); key != "" && key != "-" {
			keys = append(keys, configKey{key: key, help: f.Tag.Get("help"), value: v.Field(i), secret: f.Tag.Get("secret") == "true"})
		}
	}
	return keys
}

func setField(field reflect.Value, s string) error {
	switch field.Interface().(type) {
	case string:
		field.SetString(s)
	case int, int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		field.SetInt(n)
	case float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		field.SetFloat(f)
	case time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		field.SetInt(int64(d))
	case []string:
		var list []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		field.Set(reflect.ValueOf(list))
	case bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		field.SetBool(b)
	default:
		return fmt.Errorf("unsupported type %s", field.Type())
	}
	return nil
}

func (c *Config) thresholds() hwmon.Thresholds {
	return hwmon.Thresholds{
		MemDegradedPct: c.MemDegradedPct, MemFailingPct: c.MemFailingPct,
		DiskDegradedPct: c.DiskDegradedPct, DiskFailingPct: c.DiskFailingPct,
		TempDegradedC: c.TempDegradedC, TempFailingC: c.TempFailingC,
		LoadDegradedPerCPU: c.LoadDegraded, NICErrorsDegraded: uint64(max(c.NICErrDegraded, 0)),
		Rise: c.HealthRise, Fall: c.HealthFall,
	}
}
