package daemon

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func writeConf(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "corral.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecretsStayPrivate: a join token only in a file others cannot read,
// never as a flag (it would show in ps).
func TestSecretsStayPrivate(t *testing.T) {
	tok := "corral1.abababababababababababababababababababababababababababababababab.0123456789ab.cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
	p := writeConf(t, `join_token = "`+tok+`"`)
	if _, err := LoadConfig([]string{"--config", p}); err != nil {
		t.Fatalf("0600 config with join_token: %v", err)
	}
	os.Chmod(p, 0o644)
	var ce *ConfigError
	if _, err := LoadConfig([]string{"--config", p}); !errors.As(err, &ce) || ce.Key != "join_token" || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("world-readable config with join_token: %v", err)
	}
	if _, err := LoadConfig([]string{"--config", writeConf(t, ""), "--join-token", tok}); err == nil {
		t.Fatal("--join-token accepted as a flag")
	}
}

func TestLoadConfigFileAndFlags(t *testing.T) {
	p := writeConf(t, `
name = "node-a"
bind_addr = "127.0.0.5"
seeds = ["10.0.0.1", "10.0.0.2:8000"]
bootstrap_expect = 1
raft_voters = 5
dead_voter_timeout = "90s"
`)
	cfg, err := LoadConfig([]string{"--config", p, "--raft-port", "9000", "--seeds", "a,b:1"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "node-a" || cfg.BindAddr != "127.0.0.5" || cfg.AdvertiseAddr != "127.0.0.5" {
		t.Errorf("file values: %+v", cfg)
	}
	if cfg.RaftPort != 9000 || cfg.GossipPort != 7946 {
		t.Errorf("flag must win over default: raft %d gossip %d", cfg.RaftPort, cfg.GossipPort)
	}
	if !reflect.DeepEqual(cfg.Seeds, []string{"a", "b:1"}) {
		t.Errorf("flag must win over file: seeds %v", cfg.Seeds)
	}
	if cfg.RaftVoters != 5 || cfg.BootstrapExpect != 1 || cfg.DeadVoterAfter != 90*time.Second {
		t.Errorf("cfg: %+v", cfg)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		file string
		args []string
		key  string
	}{
		{file: `raft_voters = 4`, key: "raft_voters"},
		{file: `bind_addr = "nope"`, key: "bind_addr"},
		{file: `gossip_port = 70000`, key: "gossip_port"},
		{file: `rpc_port = 7946`, key: "rpc_port"},
		{file: `seeds = ["a:b"]`, key: "seeds"},
		{file: `bootstrap_expect = 0`, key: "bootstrap_expect"},
		{file: `name = "bad name"`, key: "name"},
		{file: `log_level = "loud"`, key: "log_level"},
		{file: `socket = "relative.sock"`, key: "socket"},
		{file: `join_token = "secret"`, key: "join_token"},
		{file: `gossip_key = "c2hvcnQ="`, key: "gossip_key"},
		{file: `nonsense = 1`, key: "nonsense"},
		{file: ``, args: []string{"--raft-port", "x"}, key: "raft_port"},
		{file: ``, args: []string{"--dead-voter-timeout", "soon"}, key: "dead_voter_timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			args := append([]string{"--config", writeConf(t, tc.file)}, tc.args...)
			_, err := LoadConfig(args)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tc.key {
				t.Fatalf("err = %v, want a ConfigError for %s", err, tc.key)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("message %q does not name %s", err, tc.key)
			}
		})
	}
}

func TestConfigSyntaxErrorHasPosition(t *testing.T) {
	_, err := LoadConfig([]string{"--config", writeConf(t, "name = \"a\"\nseeds = [\n")})
	if err == nil || !strings.Contains(err.Error(), "line") {
		t.Fatalf("err = %v", err)
	}
}

// The example file documents every key, and its commented defaults are the
// defaults: uncommented, it parses to DefaultConfig (apart from the keys
// shown with an example value), and left commented it changes nothing.
func TestExampleConfigMatchesDefaults(t *testing.T) {
	ex := ExampleConfig()
	if _, err := LoadConfig([]string{"--config", writeConf(t, ex), "--bind-addr", "127.0.0.1"}); err != nil {
		t.Fatalf("the example as shipped: %v", err)
	}
	var lines []string
	for _, l := range strings.Split(ex, "\n") {
		if k, _, ok := strings.Cut(l, " = "); ok && strings.HasPrefix(k, "#") && !strings.Contains(k, " ") {
			l = strings.TrimPrefix(l, "#")
		}
		lines = append(lines, l)
	}
	var got Config
	md, err := toml.Decode(strings.Join(lines, "\n"), &got)
	if err != nil {
		t.Fatalf("uncommented example: %v", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		t.Fatalf("unknown keys in the example: %v", und)
	}
	wantKeys := configKeys(reflect.ValueOf(DefaultConfig()))
	for i, k := range configKeys(reflect.ValueOf(got)) {
		key, g, w := k.key, k.value.Interface(), wantKeys[i].value.Interface()
		if !md.IsDefined(key) {
			t.Errorf("key %s is missing from the example", key)
			continue
		}
		if _, ok := configExamples[key]; ok {
			continue
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: example says %v, default is %v", key, g, w)
		}
	}
}

// FuzzLoadConfig: any config file is either loaded into a valid config or
// refused with an error naming a key; it never panics.
func FuzzLoadConfig(f *testing.F) {
	f.Add("name = \"h1\"\nseeds = [\"10.0.0.1\"]\nbootstrap_expect = 1\n")
	f.Add("lease_ttl = \"1ns\"\n")
	f.Add("fence_kill_budget = \"-5s\"\nkernel_dir = \"/\"\n")
	f.Add("[tuning]\nx = 1\n")
	// One file per fuzz process, rewritten each time: a temporary directory
	// per input made each run slow enough for the fuzzer to overrun its
	// time budget ("context deadline exceeded").
	p := filepath.Join(f.TempDir(), "corral.toml")
	f.Fuzz(func(t *testing.T, body string) {
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig([]string{"--config", p})
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("loaded a config that does not validate: %v", verr)
			}
		}
	})
}

// TestNoIdentityOnlyOnLoopback: without a cluster identity corrald runs
// on loopback (saying that local users can reach it) or with insecure =
// true (saying that anyone can); anywhere else it refuses to start.
func TestNoIdentityOnlyOnLoopback(t *testing.T) {
	c := DefaultConfig()
	c.Name, c.DataDir, c.BindAddr, c.AdvertiseAddr = "h1", t.TempDir(), "0.0.0.0", "192.0.2.1"
	var ce *ConfigError
	if _, err := New(c, slog.New(slog.DiscardHandler)); !errors.As(err, &ce) || ce.Key != "insecure" || !strings.Contains(err.Error(), "corrald init") {
		t.Fatalf("no identity on 0.0.0.0: %v", err)
	}
	c.Insecure = true
	d, err := New(c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if ex := d.exposures(); len(ex) != 1 || !strings.Contains(ex[0], "accept anyone") {
		t.Fatalf("insecure: %q", ex)
	}
	c.Insecure, c.BindAddr, c.AdvertiseAddr = false, "127.0.0.2", ""
	if d, err = New(c, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if ex := d.exposures(); len(ex) != 1 || !strings.Contains(ex[0], "local user") {
		t.Fatalf("loopback: %q", ex)
	}
	if _, err := Init(c); err != nil {
		t.Fatal(err)
	}
	c.BindAddr, c.AdvertiseAddr = "0.0.0.0", "192.0.2.1"
	if d, err = New(c, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if ex := d.exposures(); len(ex) != 0 {
		t.Fatalf("with an identity: %q", ex)
	}
}
