package daemon

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/internal/origin"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// API tokens: a client of the HTTPS API (api_addr) presents one as its
// bearer. The host a token is created through makes the secret and sends
// the leader only its hash (model.APITokenHash), which Raft keeps; every
// host checks a bearer against its own replica, so a revocation holds on a
// host as soon as it has applied the entry.

// maxAPITokenLifetime bounds --expires.
const maxAPITokenLifetime = 10 * 365 * 24 * time.Hour

// APITokenAddRequest asks the leader to record a token.
type APITokenAddRequest struct {
	Token model.APIToken `json:"token"`
}

// APITokenRevokeRequest names a token to revoke.
type APITokenRevokeRequest struct {
	Name string `json:"name"`
}

// addAPIToken records a token (leader only), once the cluster's protocol
// has API tokens.
func (d *Daemon) addAPIToken(ctx context.Context, req APITokenAddRequest) (struct{}, error) {
	if !d.store.IsLeader() {
		return struct{}{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	if err := raftlog.FeatureAPITokens.Check(d.store.Cluster(), d.store.Hosts()); err != nil {
		return struct{}{}, err
	}
	t := req.Token
	if _, err := d.store.Apply(ctx, raftlog.AddAPIToken{Token: t, Time: time.Now().UTC()}); err != nil {
		return struct{}{}, err
	}
	expires := "never"
	if !t.Expires.IsZero() {
		expires = t.Expires.Format(time.RFC3339)
	}
	d.log.Info("API token created", "token", t.Name, "role", t.Role, "expires", expires)
	d.event(ctx, "api-token", "API token %s (%s) created, expires %s", t.Name, t.Role, expires)
	return struct{}{}, nil
}

// revokeAPIToken forgets a token (leader only).
func (d *Daemon) revokeAPIToken(ctx context.Context, req APITokenRevokeRequest) (struct{}, error) {
	if !d.store.IsLeader() {
		return struct{}{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	if err := model.ValidateName("token", req.Name); err != nil {
		return struct{}{}, err
	}
	if _, err := d.store.Apply(ctx, raftlog.RevokeAPIToken{Name: req.Name}); err != nil {
		return struct{}{}, err
	}
	d.log.Info("API token revoked", "token", req.Name)
	d.event(ctx, "api-token", "API token %s revoked", req.Name)
	return struct{}{}, nil
}

// newAPISecret returns a fresh secret: APITokenPrefix and 256 random bits.
func newAPISecret() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return model.APITokenPrefix + hex.EncodeToString(b[:])
}

// parseLifetime reads --expires: a Go duration or a number of days ("90d").
func parseLifetime(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return 0, fmt.Errorf("expires %q: want a duration (12h) or days (90d): %w", s, model.ErrInvalid)
		}
		d = time.Duration(n) * 24 * time.Hour
		if n > int(maxAPITokenLifetime/(24*time.Hour)) {
			d = maxAPITokenLifetime + 1
		}
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("expires %q: want a duration (12h) or days (90d): %w", s, model.ErrInvalid)
		}
	}
	if d < time.Second || d > maxAPITokenLifetime {
		return 0, fmt.Errorf("expires %q: between 1s and %dd: %w", s, maxAPITokenLifetime/(24*time.Hour), model.ErrInvalid)
	}
	return d, nil
}

func apiToken(t model.APIToken, now time.Time) api.APIToken {
	out := api.APIToken{Name: t.Name, Role: t.Role, Created: t.Created, Expires: t.Expires, Expired: t.Expired(now), CreatedBy: t.CreatedBy, Project: t.Project, Kind: t.Kind}
	if t.Kind == model.KindCertificate {
		out.Fingerprint = t.Hash // a certificate's, public; a token's hash is never shown
	}
	return out
}

func (b backend) APITokens(ctx context.Context) ([]api.APIToken, error) {
	now := time.Now()
	out := []api.APIToken{}
	for _, t := range b.d.store.Cluster().APITokens {
		out = append(out, apiToken(t, now))
	}
	return out, nil
}

func (b backend) CreateAPIToken(ctx context.Context, req api.APITokenCreateRequest) (api.APITokenCreated, error) {
	if err := model.ValidateName("token", req.Name); err != nil {
		return api.APITokenCreated{}, err
	}
	now := time.Now().UTC()
	secret := newAPISecret()
	if err := model.ValidProjectRef(req.Project); err != nil {
		return api.APITokenCreated{}, err
	}
	t := model.APIToken{Name: req.Name, Role: req.Role, Hash: model.APITokenHash(secret), Created: now, Project: req.Project}
	if req.Expires != "" {
		life, err := parseLifetime(req.Expires)
		if err != nil {
			return api.APITokenCreated{}, err
		}
		t.Expires = now.Add(life)
	}
	if o, ok := origin.From(ctx); ok {
		t.CreatedBy = o.Actor
	}
	if err := t.Validate(); err != nil {
		return api.APITokenCreated{}, err
	}
	// Refused here already when the cluster cannot have tokens yet, with
	// the hosts that hold it back: an older leader would not know the call.
	// (FeatureProjects comes with the same protocol.)
	if err := raftlog.FeatureAPITokens.Check(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
		return api.APITokenCreated{}, err
	}
	if _, err := forward(ctx, b.d, mAPITokenAdd, APITokenAddRequest{Token: t}); err != nil {
		return api.APITokenCreated{}, err
	}
	b.d.waitState(ctx, func() bool { _, ok := model.FindAPIToken(b.d.store.Cluster().APITokens, secret); return ok })
	return api.APITokenCreated{APIToken: apiToken(t, now), Token: secret}, nil
}

// defaultCertLifetime and maxCertLifetime bound a client certificate.
const (
	defaultCertLifetime = 90 * 24 * time.Hour
	maxCertLifetime     = 365 * 24 * time.Hour
)

// CreateCertificate has this host sign a client certificate with the
// cluster CA (every member holds it) and records its fingerprint, role
// and project through the leader, as a token's hash is recorded.
func (b backend) CreateCertificate(ctx context.Context, req api.CertificateCreateRequest) (api.CertificateCreated, error) {
	if b.d.id == nil || !b.d.id.CanSign() {
		return api.CertificateCreated{}, fmt.Errorf("this host holds no cluster CA to sign with (no identity): %w", model.ErrInvalid)
	}
	if err := model.ValidateName("certificate", req.Name); err != nil {
		return api.CertificateCreated{}, err
	}
	if err := model.ValidProjectRef(req.Project); err != nil {
		return api.CertificateCreated{}, err
	}
	life := defaultCertLifetime
	if req.Expires != "" {
		var err error
		if life, err = parseLifetime(req.Expires); err != nil {
			return api.CertificateCreated{}, err
		}
		if life > maxCertLifetime {
			return api.CertificateCreated{}, fmt.Errorf("expires %q: a client certificate lives at most 365d: %w", req.Expires, model.ErrInvalid)
		}
	}
	now := time.Now().UTC()
	// The record is checked before anything is signed.
	t := model.APIToken{Name: req.Name, Role: req.Role, Kind: model.KindCertificate, Hash: strings.Repeat("0", 64), Created: now, Expires: now.Add(life), Project: req.Project}
	if o, ok := origin.From(ctx); ok {
		t.CreatedBy = o.Actor
	}
	if err := t.Validate(); err != nil {
		return api.CertificateCreated{}, err
	}
	if err := raftlog.FeatureAPITokens.Check(b.d.store.Cluster(), b.d.store.Hosts()); err != nil {
		return api.CertificateCreated{}, err
	}
	certPEM, err := b.d.id.SignUser([]byte(req.CSR), req.Name, now, t.Expires)
	if err != nil {
		return api.CertificateCreated{}, fmt.Errorf("csr: %v: %w", err, model.ErrInvalid)
	}
	leaf, err := identity.ParseCertPEM(certPEM)
	if err != nil {
		return api.CertificateCreated{}, err
	}
	t.Hash = identity.Fingerprint(leaf)
	if _, err := forward(ctx, b.d, mAPITokenAdd, APITokenAddRequest{Token: t}); err != nil {
		return api.CertificateCreated{}, err
	}
	b.d.waitState(ctx, func() bool { _, ok := model.FindAPICertificate(b.d.store.Cluster().APITokens, t.Hash); return ok })
	return api.CertificateCreated{APIToken: apiToken(t, now), Certificate: string(certPEM), CA: string(b.d.id.CAPEM)}, nil
}

func (b backend) RevokeAPIToken(ctx context.Context, name string) error {
	if _, err := forward(ctx, b.d, mAPITokenRevoke, APITokenRevokeRequest{Name: name}); err != nil {
		return err
	}
	b.d.waitState(ctx, func() bool {
		for _, t := range b.d.store.Cluster().APITokens {
			if t.Name == name {
				return false
			}
		}
		return true
	})
	return nil
}

// lookupAPIToken finds the token of a bearer secret in this host's replica.
func (d *Daemon) lookupAPIToken(secret string) (model.APIToken, bool) {
	return model.FindAPIToken(d.store.Cluster().APITokens, secret)
}

// lookupAPICertificate finds the credential of a client certificate.
func (d *Daemon) lookupAPICertificate(fp string) (model.APIToken, bool) {
	return model.FindAPICertificate(d.store.Cluster().APITokens, fp)
}

// apiURL is where clients reach the HTTPS API: api_addr, with the
// advertised address when api_addr listens on every address.
func (d *Daemon) apiURL() string {
	host, port, err := net.SplitHostPort(d.cfg.APIAddr)
	if err != nil {
		return "https://" + d.cfg.APIAddr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = d.cfg.AdvertiseAddr
	}
	return "https://" + net.JoinHostPort(host, port)
}

// listenAPI opens api_addr with TLS 1.2 or later, presenting tls_cert or
// this host's self-signed certificate, and records its fingerprint for
// the status and the log.
func (d *Daemon) listenAPI() (net.Listener, error) {
	var (
		cert tls.Certificate
		err  error
	)
	if d.cfg.TLSCert != "" {
		cert, err = identity.LoadAPICertificate(d.cfg.TLSCert, d.cfg.TLSKey)
	} else {
		host, _, _ := net.SplitHostPort(d.cfg.APIAddr)
		cert, err = identity.APICertificate(d.cfg.DataDir, d.cfg.Name, []string{host, d.cfg.AdvertiseAddr}, time.Now())
	}
	if err != nil {
		return nil, fmt.Errorf("api_addr: %w", err)
	}
	ln, err := net.Listen("tcp", d.cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("api_addr: %w", err)
	}
	d.apiFingerprint = identity.Fingerprint(cert.Leaf)
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	if d.id != nil {
		// Client certificates of the cluster CA are a second way in; which
		// of them is a credential the API decides by fingerprint.
		conf.ClientAuth, conf.ClientCAs = tls.VerifyClientCertIfGiven, d.id.ClientCAs()
	}
	return tls.NewListener(ln, conf), nil
}
