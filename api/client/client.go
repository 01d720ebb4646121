// Package client is the Go client of corral's admin API over the daemon's
// Unix socket. corralctl and corral-lab use it. Every call takes a context
// first; the zero Client talks to DefaultSocket. Failed calls return
// *api.Error, so callers can use errors.Is(err, api.ErrNotFound).
package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corralhq/corral/api"
)

// DefaultSocket is where corrald listens unless configured otherwise.
const DefaultSocket = "/run/corral/corral.sock"

// Client talks to one corrald. The zero value is ready to use.
type Client struct {
	// Socket is the path of the admin socket; empty means DefaultSocket.
	Socket string
	// URL, when set, is a corrald's HTTPS API (https://host:port), used
	// instead of the socket: Token goes with every request as its bearer,
	// and the server must present the certificate whose SHA-256 is
	// Fingerprint (hex; empty: one the system's roots verify).
	URL, Token, Fingerprint string
	// Certificate, when set, is presented to the HTTPS API: a client
	// certificate from the cluster CA (corralctl cert create), a way in
	// without a token.
	Certificate *tls.Certificate

	once sync.Once
	hc   *http.Client
}

// New returns a client for the socket at path.
func New(path string) *Client { return &Client{Socket: path} }

// NewRemote returns a client of the HTTPS API at url.
func NewRemote(url, token, fingerprint string) *Client {
	return &Client{URL: strings.TrimRight(url, "/"), Token: token, Fingerprint: fingerprint}
}

func (c *Client) socket() string {
	if c.Socket == "" {
		return DefaultSocket
	}
	return c.Socket
}

// where names the corrald this client talks to, for messages.
func (c *Client) where() string {
	if c.URL != "" {
		return c.URL
	}
	return c.socket()
}

func (c *Client) base() string {
	if c.URL != "" {
		return c.URL
	}
	return "http://corrald"
}

func (c *Client) http() *http.Client {
	c.once.Do(func() {
		// A client that is dropped (a program making one per call) must
		// not hold its connection, and the daemon's, for good.
		tr := &http.Transport{IdleConnTimeout: 30 * time.Second}
		if c.URL == "" {
			path := c.socket()
			tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			}
		} else {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			if c.Certificate != nil {
				tr.TLSClientConfig.Certificates = []tls.Certificate{*c.Certificate}
			}
			tr.ForceAttemptHTTP2 = true
			tr.Proxy = http.ProxyFromEnvironment
			if c.Fingerprint != "" {
				want := NormalizeFingerprint(c.Fingerprint)
				// The pin replaces the name check: the certificate is
				// the one the operator accepted, whatever it names.
				tr.TLSClientConfig.InsecureSkipVerify = true
				tr.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return errors.New("the server presented no certificate")
					}
					if got := Fingerprint(cs.PeerCertificates[0]); got != want {
						return fmt.Errorf("the server's certificate has fingerprint %s, not the pinned %s: "+
							"if its certificate was replaced on purpose, add the remote again", got, want)
					}
					return nil
				}
			}
		}
		c.hc = &http.Client{Transport: tr}
	})
	return c.hc
}

// Fingerprint is the SHA-256 of a certificate, as corrald prints it and
// remotes pin it: 64 lower-case hex digits.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// NormalizeFingerprint accepts a fingerprint with colons or in upper case.
func NormalizeFingerprint(fp string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(fp), ":", ""))
}

// FetchFingerprint connects to an HTTPS API without trusting it yet and
// returns the fingerprint of the certificate it presents (trust on first
// use: the caller shows it and pins it once accepted).
func FetchFingerprint(ctx context.Context, rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("%q: want https://HOST:PORT", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", host, err)
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", fmt.Errorf("%s presented no certificate", host)
	}
	return Fingerprint(certs[0]), nil
}

// newRequest builds a request to the daemon, with the bearer token when
// the client has one.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base()+path, body)
	if err != nil {
		return nil, err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

// Do sends a request with in as the JSON body (nil for none; an io.Reader
// is sent as it is) and decodes the response into out (nil to discard).
// A request refused by the rate limit (429) is sent again after the
// Retry-After the daemon names, up to 5 times while ctx lasts, unless its
// body was a stream.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var stream io.Reader
	var data []byte
	if r, ok := in.(io.Reader); ok {
		stream = r
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		data = b
	}
	for attempt := 0; ; attempt++ {
		body := stream
		if stream == nil && data != nil {
			body = bytes.NewReader(data)
		}
		req, err := c.newRequest(ctx, method, path, body)
		if err != nil {
			return err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http().Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("corrald at %s: %v", c.where(), ctx.Err())}
			}
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err
			}
			return &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("cannot reach corrald at %s (is it running?): %v", c.where(), err)}
		}
		if wait, ok := retryAfter(resp); ok && stream == nil && attempt < 5 {
			resp.Body.Close()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return &api.Error{Code: api.CodeRateLimited, Message: fmt.Sprintf("corrald at %s: rate limited: %v", c.where(), ctx.Err())}
			}
		}
		defer resp.Body.Close()
		return decodeResponse(resp, out)
	}
}

// retryAfter says how long a 429 answer asks to wait (at most 10 s).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || secs < 0 || secs > 10 {
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}

func decodeResponse(resp *http.Response, out any) error {
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("corrald answered %s: %s", resp.Status, bytes.TrimSpace(data))}
		}
		return &e
	}
	if out == nil {
		_, err := io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// Status returns this host's view of the cluster.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Hosts lists every host.
func (c *Client) Hosts(ctx context.Context) ([]api.Host, error) {
	var hs []api.Host
	err := c.Do(ctx, http.MethodGet, "/v1/hosts", nil, &hs)
	return hs, err
}

// Host returns one host.
func (c *Client) Host(ctx context.Context, name string) (api.Host, error) {
	var h api.Host
	err := c.Do(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(name), nil, &h)
	return h, err
}

// SetHostLabels sets and removes labels of a host.
func (c *Client) SetHostLabels(ctx context.Context, name string, req api.HostLabelsRequest) (api.Host, error) {
	var h api.Host
	err := c.Do(ctx, http.MethodPut, "/v1/hosts/"+url.PathEscape(name)+"/labels", req, &h)
	return h, err
}

// DrainHost puts a host in maintenance and live-migrates its VMs away; it
// returns at once (follow progress with VMs).
func (c *Client) DrainHost(ctx context.Context, name string) (api.Host, error) {
	var h api.Host
	err := c.Do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/drain", nil, &h)
	return h, err
}

// RemoveHost forgets a stopped, empty host and revokes its certificate.
// With force, the VMs of a dead (fenced) host move to other hosts, stopped.
func (c *Client) RemoveHost(ctx context.Context, name string, force bool) error {
	path := "/v1/hosts/" + url.PathEscape(name)
	if force {
		path += "?force=true"
	}
	return c.Do(ctx, http.MethodDelete, path, nil, nil)
}

// RestoreHost returns a host to service; with failback its former VMs
// migrate back.
func (c *Client) RestoreHost(ctx context.Context, name string, failback bool) (api.Host, error) {
	var h api.Host
	err := c.Do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/restore", api.HostRestoreRequest{Failback: failback}, &h)
	return h, err
}

// SetHA arms or disarms fencing and recovery cluster-wide.
func (c *Client) SetHA(ctx context.Context, armed bool) (api.Status, error) {
	var s api.Status
	err := c.Do(ctx, http.MethodPut, "/v1/cluster/ha", api.HARequest{Armed: armed}, &s)
	return s, err
}

// Balance runs a round of the leader's balancer: a plan, or with apply
// its first moves started.
func (c *Client) Balance(ctx context.Context, req api.BalanceRequest) (api.BalanceResult, error) {
	var out api.BalanceResult
	err := c.Do(ctx, http.MethodPost, "/v1/cluster/balance", req, &out)
	return out, err
}

// JoinTokens lists the cluster's join tokens.
func (c *Client) JoinTokens(ctx context.Context) ([]api.JoinToken, error) {
	var out []api.JoinToken
	err := c.Do(ctx, http.MethodGet, "/v1/cluster/tokens", nil, &out)
	return out, err
}

// CreateJoinToken makes a join token for one or more new hosts.
func (c *Client) CreateJoinToken(ctx context.Context, req api.JoinTokenCreateRequest) (api.JoinTokenCreated, error) {
	var out api.JoinTokenCreated
	err := c.Do(ctx, http.MethodPost, "/v1/cluster/tokens", req, &out)
	return out, err
}

// RevokeJoinToken makes a join token admit no more hosts.
func (c *Client) RevokeJoinToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/cluster/tokens/"+url.PathEscape(id), nil, nil)
}

// Whoami says who the daemon takes this client for, and its role.
func (c *Client) Whoami(ctx context.Context) (api.Whoami, error) {
	var out api.Whoami
	err := c.Do(ctx, http.MethodGet, "/v1/whoami", nil, &out)
	return out, err
}

// Projects lists the projects the client may see.
func (c *Client) Projects(ctx context.Context) ([]api.Project, error) {
	var out []api.Project
	err := c.Do(ctx, http.MethodGet, "/v1/projects", nil, &out)
	return out, err
}

// Project returns one project with its quota and use.
func (c *Client) Project(ctx context.Context, name string) (api.Project, error) {
	var out api.Project
	err := c.Do(ctx, http.MethodGet, "/v1/projects/"+url.PathEscape(name), nil, &out)
	return out, err
}

// CreateProject makes a project.
func (c *Client) CreateProject(ctx context.Context, req api.ProjectCreateRequest) (api.Project, error) {
	var out api.Project
	err := c.Do(ctx, http.MethodPost, "/v1/projects", req, &out)
	return out, err
}

// SetProjectQuota replaces a project's quota.
func (c *Client) SetProjectQuota(ctx context.Context, name string, q api.Quota) (api.Project, error) {
	var out api.Project
	err := c.Do(ctx, http.MethodPut, "/v1/projects/"+url.PathEscape(name)+"/quota", q, &out)
	return out, err
}

// DeleteProject removes a project that holds nothing.
func (c *Client) DeleteProject(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/projects/"+url.PathEscape(name), nil, nil)
}

// APITokens lists the cluster's API tokens (never their secrets).
func (c *Client) APITokens(ctx context.Context) ([]api.APIToken, error) {
	var out []api.APIToken
	err := c.Do(ctx, http.MethodGet, "/v1/tokens", nil, &out)
	return out, err
}

// CreateAPIToken makes an API token; the answer holds its secret.
func (c *Client) CreateAPIToken(ctx context.Context, req api.APITokenCreateRequest) (api.APITokenCreated, error) {
	var out api.APITokenCreated
	err := c.Do(ctx, http.MethodPost, "/v1/tokens", req, &out)
	return out, err
}

// CreateCertificate has the cluster CA sign a client certificate.
func (c *Client) CreateCertificate(ctx context.Context, req api.CertificateCreateRequest) (api.CertificateCreated, error) {
	var out api.CertificateCreated
	err := c.Do(ctx, http.MethodPost, "/v1/certificates", req, &out)
	return out, err
}

// RevokeAPIToken makes every host refuse an API token.
func (c *Client) RevokeAPIToken(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(name), nil, nil)
}

// RotateGossipKey replaces the cluster's gossip key on every live host.
func (c *Client) RotateGossipKey(ctx context.Context) (api.GossipKeyRotation, error) {
	var out api.GossipKeyRotation
	err := c.Do(ctx, http.MethodPost, "/v1/cluster/gossip-key/rotate", nil, &out)
	return out, err
}

// Networks lists networks.
func (c *Client) Networks(ctx context.Context) ([]api.Network, error) {
	var out []api.Network
	err := c.Do(ctx, http.MethodGet, "/v1/networks", nil, &out)
	return out, err
}

// CreateNetwork creates a network.
func (c *Client) CreateNetwork(ctx context.Context, req api.NetworkCreateRequest) (api.Network, error) {
	var out api.Network
	err := c.Do(ctx, http.MethodPost, "/v1/networks", req, &out)
	return out, err
}

// DeleteNetwork deletes a network no VM uses.
func (c *Client) DeleteNetwork(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/networks/"+url.PathEscape(name), nil, nil)
}

// Groups lists the VM groups and their members.
func (c *Client) Groups(ctx context.Context) ([]api.Group, error) {
	var out []api.Group
	err := c.Do(ctx, http.MethodGet, "/v1/groups", nil, &out)
	return out, err
}

// Group returns one group and its members.
func (c *Client) Group(ctx context.Context, name string) (api.Group, error) {
	var out api.Group
	err := c.Do(ctx, http.MethodGet, "/v1/groups/"+url.PathEscape(name), nil, &out)
	return out, err
}

// CreateGroup makes a group; the leader then creates its members.
func (c *Client) CreateGroup(ctx context.Context, req api.GroupCreateRequest) (api.Group, error) {
	var out api.Group
	err := c.Do(ctx, http.MethodPost, "/v1/groups", req, &out)
	return out, err
}

// ScaleGroup sets a group's count.
func (c *Client) ScaleGroup(ctx context.Context, name string, count int) (api.Group, error) {
	var out api.Group
	err := c.Do(ctx, http.MethodPut, "/v1/groups/"+url.PathEscape(name)+"/count", api.GroupScaleRequest{Count: count}, &out)
	return out, err
}

// DeleteGroup removes a group and deletes its members, or with keepVMs
// leaves them as VMs of no group.
func (c *Client) DeleteGroup(ctx context.Context, name string, keepVMs bool) error {
	path := "/v1/groups/" + url.PathEscape(name)
	if keepVMs {
		path += "?keep_vms=true"
	}
	return c.Do(ctx, http.MethodDelete, path, nil, nil)
}

// UpdateGroup sets a group's template; the leader rolls it out.
func (c *Client) UpdateGroup(ctx context.Context, name string, req api.GroupUpdateRequest) (api.Group, error) {
	var out api.Group
	err := c.Do(ctx, http.MethodPut, "/v1/groups/"+url.PathEscape(name)+"/template", req, &out)
	return out, err
}

// RollbackGroup rolls a group's previous template out again.
func (c *Client) RollbackGroup(ctx context.Context, name string) (api.Group, error) {
	var out api.Group
	err := c.Do(ctx, http.MethodPost, "/v1/groups/"+url.PathEscape(name)+"/rollback", nil, &out)
	return out, err
}

// SetGroupAutoscale sets a group's autoscale, or with nil removes it.
func (c *Client) SetGroupAutoscale(ctx context.Context, name string, a *api.Autoscale) (api.Group, error) {
	var out api.Group
	path := "/v1/groups/" + url.PathEscape(name) + "/autoscale"
	if a == nil {
		err := c.Do(ctx, http.MethodDelete, path, nil, &out)
		return out, err
	}
	err := c.Do(ctx, http.MethodPut, path, a, &out)
	return out, err
}

// ClusterBackup returns a consistent copy of the cluster's state.
func (c *Client) ClusterBackup(ctx context.Context) (api.ClusterBackup, error) {
	var b api.ClusterBackup
	err := c.Do(ctx, http.MethodGet, "/v1/cluster/backup", nil, &b)
	return b, err
}

// Recovery returns the recovery under way, nil when there is none.
func (c *Client) Recovery(ctx context.Context) (*api.Recovery, error) {
	var r *api.Recovery
	err := c.Do(ctx, http.MethodGet, "/v1/cluster/recovery", nil, &r)
	return r, err
}

// EndRecovery ends the recovery under way.
func (c *Client) EndRecovery(ctx context.Context, force bool) error {
	return c.Do(ctx, http.MethodPost, "/v1/cluster/recovery/end", api.RecoveryEndRequest{Force: force}, nil)
}
