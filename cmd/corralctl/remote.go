package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api/client"
	"github.com/corralhq/corral/internal/atomicfile"
)

// Remotes: corrald HTTPS APIs this user talks to instead of the local
// socket, kept in $XDG_CONFIG_HOME/corral/remotes.json (~/.config/...),
// mode 0600 since it holds tokens. "local" is the socket.

// remote is one HTTPS API, its pinned certificate and the token to send.
type remote struct {
	URL         string `json:"url"`
	Fingerprint string `json:"fingerprint"`
	Token       string `json:"token,omitempty"`
	// Cert and Key name a client certificate's files (corralctl cert
	// create), used instead of a token.
	Cert string `json:"cert,omitempty"`
	Key  string `json:"key,omitempty"`
}

// client returns a client of r, with token (when set) replacing r's.
func (r remote) client(token string) (*client.Client, error) {
	if token == "" {
		token = r.Token
	}
	cl := client.NewRemote(r.URL, token, r.Fingerprint)
	if r.Cert != "" {
		cert, err := tls.LoadX509KeyPair(r.Cert, r.Key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cl.Certificate = &cert
	}
	return cl, nil
}

type remoteConfig struct {
	Current string            `json:"current,omitempty"` // "" or "local": the socket
	Remotes map[string]remote `json:"remotes"`
}

const localRemote = "local"

func remotesPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no $XDG_CONFIG_HOME and no home directory for the remotes: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "corral", "remotes.json"), nil
}

func loadRemotes() (remoteConfig, string, error) {
	rc := remoteConfig{Remotes: map[string]remote{}}
	path, err := remotesPath()
	if err != nil {
		return rc, "", err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return rc, path, nil
	}
	if err != nil {
		return rc, path, err
	}
	if err := json.Unmarshal(data, &rc); err != nil {
		return rc, path, fmt.Errorf("%s: %w", path, err)
	}
	if rc.Remotes == nil {
		rc.Remotes = map[string]remote{}
	}
	return rc, path, nil
}

func saveRemotes(rc remoteConfig, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(rc, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o600)
}

// pickClient chooses what corralctl talks to: --socket or $CORRAL_SOCKET
// when given, else the remote named by --remote, $CORRAL_REMOTE or `remote
// switch`, else the local socket. $CORRAL_TOKEN replaces a remote's token.
func (c *cli) pickClient(cmd *cobra.Command) (*client.Client, error) {
	name := c.remote
	if name == "" && !cmd.Flags().Changed("socket") && os.Getenv("CORRAL_SOCKET") == "" {
		name = os.Getenv("CORRAL_REMOTE")
		if name == "" {
			// The default remote, if any: a user without a home or a
			// readable remotes file still has the socket.
			if rc, _, err := loadRemotes(); err == nil {
				name = rc.Current
			}
		}
	}
	if name == "" || name == localRemote {
		return client.New(c.socket), nil
	}
	rc, path, err := loadRemotes()
	if err != nil {
		return nil, err
	}
	r, ok := rc.Remotes[name]
	if !ok {
		return nil, fmt.Errorf("no remote %q in %s (corralctl remote ls)", name, path)
	}
	return r.client(os.Getenv("CORRAL_TOKEN"))
}

// readToken reads a token from a file ("-": standard input): its first
// line, trimmed.
func readToken(path string) (string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	if line = strings.TrimSpace(line); line == "" {
		return "", fmt.Errorf("no token in %s", path)
	}
	return line, nil
}

func (c *cli) remoteCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "remote", Short: "corrald HTTPS APIs to use instead of the local socket (--remote NAME, $CORRAL_REMOTE)"}
	var tokenFile, fingerprint, certFile, keyFile string
	var yes bool
	add := &cobra.Command{
		Use:   "add NAME https://HOST:PORT",
		Short: "Add a remote: pin its certificate's fingerprint and check the token",
		Long: `Add a remote. corralctl connects, shows the fingerprint of the certificate the
server presents, and pins it: --fingerprint FP must match it (corrald logs it
at start, "corralctl status" shows it on that host), or you accept it at the
prompt, or --yes accepts it unseen (trust on first use). The token comes
from --token-file (- for standard input) or $CORRAL_TOKEN; it is checked
before anything is saved.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, raw := args[0], strings.TrimRight(args[1], "/")
			if name == localRemote || !validRemoteName(name) {
				return fmt.Errorf("remote name %q: use a-z, 0-9, - and _ (and not %q)", name, localRemote)
			}
			if u, err := url.Parse(raw); err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "" {
				return fmt.Errorf("%q: want https://HOST:PORT", raw)
			}
			token := os.Getenv("CORRAL_TOKEN")
			if tokenFile != "" {
				var err error
				if token, err = readToken(tokenFile); err != nil {
					return fmt.Errorf("--token-file: %w", err)
				}
			}
			if (certFile == "") != (keyFile == "") {
				return errors.New("--cert and --key go together")
			}
			if token == "" && certFile == "" {
				return errors.New("no credential: pass --token-file FILE, set $CORRAL_TOKEN (corralctl token create, on a host), or --cert and --key (corralctl cert create)")
			}
			if certFile != "" {
				var err error
				if certFile, err = filepath.Abs(certFile); err != nil {
					return err
				}
				if keyFile, err = filepath.Abs(keyFile); err != nil {
					return err
				}
			}
			ctx, cancel := c.ctx()
			defer cancel()
			got, err := client.FetchFingerprint(ctx, raw)
			if err != nil {
				return err
			}
			switch {
			case fingerprint != "":
				if client.NormalizeFingerprint(fingerprint) != got {
					return fmt.Errorf("%s presents certificate %s, not the %s you expect: not added", raw, got, client.NormalizeFingerprint(fingerprint))
				}
			case yes:
				fmt.Fprintf(cmd.ErrOrStderr(), "accepting %s's certificate %s unseen (--yes)\n", raw, got)
			default:
				if !isTerminal(os.Stdin) {
					return fmt.Errorf("%s presents certificate %s: pass --fingerprint %s once you have checked it (corralctl status on that host shows it), or --yes", raw, got, got)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s presents a certificate with SHA-256 fingerprint\n  %s\nDoes it match what corralctl status shows on that host? [y/N] ", raw, got)
				answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
					return errors.New("not added")
				}
			}
			r := remote{URL: raw, Fingerprint: got, Token: token, Cert: certFile, Key: keyFile}
			cl, err := r.client("")
			if err != nil {
				return err
			}
			who, err := cl.Whoami(ctx)
			if err != nil {
				return fmt.Errorf("%s refuses the credential: %w", raw, err)
			}
			rc, path, err := loadRemotes()
			if err != nil {
				return err
			}
			rc.Remotes[name] = r
			if err := saveRemotes(rc, path); err != nil {
				return err
			}
			return c.print(map[string]string{"remote": name, "url": raw, "fingerprint": got, "actor": who.Actor, "role": who.Role}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "remote %s added: %s as %s (%s)\n", name, raw, who.Actor, who.Role)
				fmt.Fprintf(w, "use it with --remote %s, or make it the default: corralctl remote switch %s\n", name, name)
			})
		},
	}
	add.Flags().StringVar(&tokenFile, "token-file", "", "file holding the API token (- for standard input)")
	add.Flags().StringVar(&fingerprint, "fingerprint", "", "the certificate fingerprint you expect (hex SHA-256)")
	add.Flags().BoolVar(&yes, "yes", false, "accept the certificate the server presents without asking")
	add.Flags().StringVar(&certFile, "cert", "", "client certificate file (corralctl cert create), instead of a token")
	add.Flags().StringVar(&keyFile, "key", "", "its private key file")
	ls := &cobra.Command{
		Use: "ls", Short: "List remotes (never their tokens)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, _, err := loadRemotes()
			if err != nil {
				return err
			}
			type row struct {
				Name        string `json:"name"`
				URL         string `json:"url"`
				Fingerprint string `json:"fingerprint,omitempty"`
				Current     bool   `json:"current"`
			}
			rows := []row{{Name: localRemote, URL: "unix://" + c.socket, Current: rc.Current == "" || rc.Current == localRemote}}
			names := make([]string, 0, len(rc.Remotes))
			for n := range rc.Remotes {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				r := rc.Remotes[n]
				rows = append(rows, row{Name: n, URL: r.URL, Fingerprint: r.Fingerprint, Current: rc.Current == n})
			}
			return c.print(rows, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tURL\tFINGERPRINT\tCURRENT")
				for _, r := range rows {
					cur := ""
					if r.Current {
						cur = "*"
					}
					fp := r.Fingerprint
					if len(fp) > 16 {
						fp = fp[:16] + "…"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Name, r.URL, orDash(fp), cur)
				}
			})
		},
	}
	switchCmd := &cobra.Command{
		Use: "switch NAME", Short: "Make a remote (or local, the socket) the default", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, path, err := loadRemotes()
			if err != nil {
				return err
			}
			if _, ok := rc.Remotes[args[0]]; !ok && args[0] != localRemote {
				return fmt.Errorf("no remote %q (corralctl remote ls)", args[0])
			}
			rc.Current = args[0]
			if err := saveRemotes(rc, path); err != nil {
				return err
			}
			return c.print(struct{}{}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "default remote: %s\n", args[0]) })
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Forget a remote and its token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, path, err := loadRemotes()
			if err != nil {
				return err
			}
			if _, ok := rc.Remotes[args[0]]; !ok {
				return fmt.Errorf("no remote %q (corralctl remote ls)", args[0])
			}
			delete(rc.Remotes, args[0])
			if rc.Current == args[0] {
				rc.Current = ""
			}
			if err := saveRemotes(rc, path); err != nil {
				return err
			}
			return c.print(struct{}{}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "remote %s removed\n", args[0]) })
		},
	}
	cmd.AddCommand(add, ls, switchCmd, rm)
	return cmd
}

func validRemoteName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
