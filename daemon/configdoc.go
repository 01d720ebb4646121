package daemon

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// configSections opens a section of the example file before the named key.
var configSections = map[string]string{
	"name":               "Cluster: identity, addresses, membership and Raft",
	"libvirt_uri":        "Guests: libvirt, storage and placement",
	"heartbeat_interval": "Leases, fencing and maintenance",
	"hw_sample_interval": "Hardware health and metrics",
}

// configExamples are shown, commented out, for keys whose default is empty
// or depends on the machine; the comment says what the default is.
var configExamples = map[string]struct{ value, dflt string }{
	"name":            {`"host1"`, "this machine's hostname"},
	"advertise_addr":  {`"192.0.2.11"`, "bind_addr, or the first global unicast address when bind_addr is 0.0.0.0"},
	"seeds":           {`["192.0.2.11", "192.0.2.12", "192.0.2.13"]`, "none: a host alone"},
	"join_token":      {`"corral1.<CA fingerprint>.<id>.<secret>"`, "none: this host does not join; see `corrald init`"},
	"fence_command":   {`"/usr/local/sbin/corral-fence-ipmi"`, "none: lease-only fencing; the command gets \"--\", the host's name and its address as its last three arguments, and CORRAL_FENCE_HOST and CORRAL_FENCE_ADDR in its environment"},
	"watchdog_device": {`"/dev/watchdog"`, "none"},
	"uplink":          {`"eth0"`, "the interface holding advertise_addr"},
	"metrics_addr":    {`"127.0.0.1:9480"`, "none: no metrics listener"},
	"api_addr":        {`"192.0.2.11:8443"`, "none: no HTTPS API, the socket only"},
	"tls_cert":        {`"/etc/corral/api.crt"`, "none: a self-signed certificate in data_dir"},
	"tls_key":         {`"/etc/corral/api.key"`, "none"},
}

// ExampleConfig returns a config file that documents every key: its help
// text and its default, commented out, so that a key left alone keeps the
// default of the corrald that reads it. Packages install it as
// /etc/corral/corral.toml; `corrald example-config` prints it.
func ExampleConfig() string {
	var b strings.Builder
	b.WriteString(`# corrald's configuration (` + DefaultConfigFile + `).
#
# Every key is shown with its default, commented out: a key left commented
# keeps its default. Every key but join_token (a secret) is also a corrald
# flag (data_dir -> --data-dir); flags win over this file. With join_token
# set, this file must not be readable by others (0600 or 0640). "corrald example-config" prints this
# file for the corrald you run; "corrald --help" lists the flags.
#
# To form a cluster, run "corrald init" on the first host (it creates the
# cluster identity and prints a join token), set join_token on the others,
# set seeds (the same list on every host), bootstrap_expect (how many hosts
# start the cluster together) and, when this host has several addresses,
# bind_addr or advertise_addr. The hosts need storage_pool on
# shared storage (e.g. NFS) for guests to be recovered and migrated.
`)
	for _, k := range configKeys(reflect.ValueOf(DefaultConfig())) {
		key := k.key
		if s, ok := configSections[key]; ok {
			fmt.Fprintf(&b, "\n# ---- %s ----\n", s)
		}
		help := k.help
		ex, hasExample := configExamples[key]
		if hasExample {
			help, _, _ = strings.Cut(help, " (default: ")
			help += ". Default: " + ex.dflt + "."
		}
		b.WriteString("\n" + comment(help))
		if hasExample {
			fmt.Fprintf(&b, "#%s = %s\n", key, ex.value)
			continue
		}
		fmt.Fprintf(&b, "#%s = %s\n", key, tomlValue(k.value.Interface()))
	}
	return b.String()
}

// comment wraps text into "# " lines of at most 78 characters.
func comment(text string) string {
	var b, line strings.Builder
	for _, w := range strings.Fields(text) {
		if line.Len() > 0 && line.Len()+1+len(w) > 76 {
			b.WriteString("# " + line.String() + "\n")
			line.Reset()
		}
		if line.Len() > 0 {
			line.WriteByte(' ')
		}
		line.WriteString(w)
	}
	b.WriteString("# " + line.String() + "\n")
	return b.String()
}

// tomlValue writes a default in TOML syntax.
func tomlValue(x any) string {
	switch x := x.(type) {
	case string:
		return strconv.Quote(x)
	case time.Duration:
		return strconv.Quote(x.String())
	case float64:
		s := strconv.FormatFloat(x, 'f', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return s
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	default: // int, int64, bool
		return fmt.Sprint(x)
	}
}
