package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/corralhq/corral/daemon/identity"
	"github.com/corralhq/corral/daemon/rpc"
	"github.com/corralhq/corral/model"
	"github.com/corralhq/corral/raftlog"
)

// Cluster identity: how a host gets one (Init on the first host, Join on
// the others) and how the cluster admits hosts. See docs/security.md.

const (
	// initTokenTTL is how long the first join token (corrald init) is
	// valid, counted from when it was written.
	initTokenTTL = 24 * time.Hour
	// maxCSRBytes bounds a join request's certificate request.
	maxCSRBytes = 4096
	// Token lifetimes an operator may ask for.
	minTokenTTL, maxTokenTTL, defaultTokenTTL = time.Minute, 30 * 24 * time.Hour, 24 * time.Hour
)

// JoinRequest is what a host without an identity sends to join.
type JoinRequest struct {
	Name    string `json:"name"`
	CSR     string `json:"csr"`
	TokenID string `json:"token_id"`
	Secret  string `json:"secret"`
}

// JoinResponse is the joining host's identity.
type JoinResponse struct {
	CA         string   `json:"ca"`
	CAKey      string   `json:"ca_key"`
	Cert       string   `json:"cert"`
	GossipKeys []string `json:"gossip_keys"`
}

// TokenCreateRequest asks the leader for a new join token.
type TokenCreateRequest struct {
	TTL         time.Duration `json:"ttl"`
	Description string        `json:"description,omitempty"`
}

// TokenCreated is a new token: its text (shown once, never stored) and
// what the cluster keeps of it.
type TokenCreated struct {
	Token  string          `json:"token"`
	Record model.JoinToken `json:"record"`
}

// Init creates a new cluster identity for the host cfg describes (corrald
// init, on the first host) and returns its first join token.
func Init(cfg Config) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	_, tok, err := identity.Init(cfg.IdentityDir(), cfg.Name, time.Now())
	if err != nil {
		return "", err
	}
	return tok.String(), nil
}

// loadIdentity loads this host's identity. Without one, corrald runs only
// on loopback or with insecure = true.
func loadIdentity(cfg Config) (*identity.Identity, error) {
	id, err := identity.Load(cfg.IdentityDir(), cfg.Name)
	switch {
	case err == nil:
		return id, nil
	case !errors.Is(err, identity.ErrNone):
		return nil, fmt.Errorf("cluster identity: %w", err)
	case cfg.JoinToken != "":
		return nil, bad("join_token", "this host has not joined yet (daemon.Join runs before New)")
	case cfg.Insecure || cfg.loopbackOnly():
		return nil, nil
	}
	return nil, bad("insecure", "no cluster identity in %s and bind_addr %s is not loopback: run `corrald init` on the first host, "+
		"set join_token on the others (from `corralctl cluster token create`), or set insecure = true to run with the cluster ports open to anyone",
		cfg.IdentityDir(), cfg.BindAddr)
}

// exposures lists what leaves this host's cluster plane open to anyone who
// reaches its ports. Empty means none.
func (d *Daemon) exposures() []string {
	if d.id != nil {
		return nil
	}
	if d.cfg.loopbackOnly() {
		return []string{fmt.Sprintf("no cluster identity: any local user can reach Raft (port %d), the cluster RPC (port %d) and gossip (port %d) on loopback",
			d.cfg.RaftPort, d.cfg.RPCPort, d.cfg.GossipPort)}
	}
	return []string{fmt.Sprintf("insecure = true and no cluster identity: Raft (port %d), the cluster RPC (port %d) and gossip (port %d) accept anyone who reaches %s",
		d.cfg.RaftPort, d.cfg.RPCPort, d.cfg.GossipPort, d.cfg.BindAddr)}
}

// Join gets this host its identity with cfg.JoinToken when it has none: it
// asks the seeds (at rpc_port) in turn, trusting only a CA whose
// fingerprint the token pins, until one answers or ctx ends. A refused
// token ends it at once. Without a join token, or with an identity, it does
// nothing.
func Join(ctx context.Context, cfg Config, log *slog.Logger) error {
	dir := cfg.IdentityDir()
	if cfg.JoinToken == "" || identity.Exists(dir) {
		return nil
	}
	tok, err := identity.ParseToken(cfg.JoinToken)
	if err != nil {
		return bad("join_token", "%v", err)
	}
	var targets []string
	for _, s := range cfg.Seeds {
		host := s
		if h, _, err := net.SplitHostPort(s); err == nil {
			host = h
		}
		targets = append(targets, net.JoinHostPort(host, strconv.Itoa(cfg.RPCPort)))
	}
	if len(targets) == 0 {
		return bad("join_token", "a joining host needs seeds to join through")
	}
	key, err := identity.NewKey()
	if err != nil {
		return err
	}
	csr, err := identity.CSR(key, cfg.Name)
	if err != nil {
		return err
	}
	cli := rpc.NewClient(identity.JoinTLS(tok.CAFingerprint, nil))
	defer cli.Close()
	req := JoinRequest{Name: cfg.Name, CSR: string(csr), TokenID: tok.ID, Secret: tok.Secret}
	backoff := 250 * time.Millisecond
	for {
		// A refusal from one seed may be a member that does not know the
		// token yet (the first token, until it is in state); the join gives
		// up only when every seed refuses in one round.
		var refused error
		refusals := 0
		for _, t := range targets {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := rpc.Call(cctx, cli, t, mClusterJoin, req)
			cancel()
			if err == nil {
				return saveJoined(cfg, tok, resp, key)
			}
			if errors.Is(err, model.ErrForbidden) || errors.Is(err, model.ErrInvalid) || errors.Is(err, model.ErrConflict) {
				refused = fmt.Errorf("join through %s refused: %w", t, err)
				refusals++
				continue
			}
			log.Warn("join: no answer yet; retrying", "seed", t, "err", err)
		}
		if refusals == len(targets) {
			return refused
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join: %w", ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func saveJoined(cfg Config, tok identity.Token, resp JoinResponse, key *ecdsa.PrivateKey) error {
	if _, err := identity.ParseCA([]byte(resp.CA), tok.CAFingerprint); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	var keys [][]byte
	for _, k := range resp.GossipKeys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return fmt.Errorf("join: gossip key: %w", err)
		}
		keys = append(keys, b)
	}
	kp, err := identity.KeyPEM(key)
	if err != nil {
		return err
	}
	if err := identity.Save(cfg.IdentityDir(), identity.Bundle{CA: []byte(resp.CA), CAKey: []byte(resp.CAKey), Cert: []byte(resp.Cert), Key: kp, GossipKeys: keys}); err != nil {
		return err
	}
	// Load checks it all: the certificate is the CA's and names this host.
	if _, err := identity.Load(cfg.IdentityDir(), cfg.Name); err != nil {
		os.RemoveAll(cfg.IdentityDir())
		return fmt.Errorf("join: the identity received does not hold: %w", err)
	}
	return nil
}

// errBadJoinToken is the one answer to every refused join: it says nothing about
// which part of a token was wrong.
var errBadJoinToken = fmt.Errorf("join token unknown, revoked or expired: %w", model.ErrForbidden)

// serveJoin answers a host that asks to join. Before the cluster has state
// only the host that ran corrald init can answer, with the token it wrote;
// afterwards the leader checks the token against state and refuses a name
// that is already a member's.
func (d *Daemon) serveJoin(ctx context.Context, req JoinRequest) (JoinResponse, error) {
	if d.id == nil || !d.id.CanSign() {
		return JoinResponse{}, fmt.Errorf("this host cannot admit hosts (no cluster identity): %w", model.ErrUnavailable)
	}
	if err := model.ValidateHostName(req.Name); err != nil {
		return JoinResponse{}, err
	}
	if len(req.CSR) > maxCSRBytes {
		return JoinResponse{}, fmt.Errorf("certificate request of %d bytes: %w", len(req.CSR), model.ErrInvalid)
	}
	if !identity.ValidTokenID(req.TokenID) {
		return JoinResponse{}, errBadJoinToken
	}
	now := time.Now()
	if tok, ok := identity.InitToken(d.id.Dir); ok && tok.ID == req.TokenID {
		// The first token, still in this host's file (corrald init ran
		// here): before the cluster has state only this host can judge
		// it, and afterwards until it is recorded in state.
		if !identity.SecretMatches(tok.Hash(), req.Secret) || !now.Before(d.initTokenExpiry()) {
			return JoinResponse{}, errBadJoinToken
		}
		if req.Name == d.cfg.Name {
			return JoinResponse{}, fmt.Errorf("host %q is this host: %w", req.Name, model.ErrConflict)
		}
		if _, err := d.store.Host(req.Name); err == nil && !d.mayRejoin(req.Name) {
			return JoinResponse{}, fmt.Errorf("host %q is already a member; a name joins once (to join it again, stop its corrald and run corralctl host rm %s on a member): %w", req.Name, req.Name, model.ErrConflict)
		}
		return d.admit(req, now)
	}
	switch {
	case !d.store.HasState():
		// A host that joined itself cannot judge tokens until the cluster
		// has state: the joiner asks the next seed.
		return JoinResponse{}, fmt.Errorf("this host admits hosts once the cluster has formed; ask the host that ran corrald init: %w", model.ErrUnavailable)
	case !d.store.IsLeader():
		addr := d.leaderRPCAddr()
		if addr == "" {
			return JoinResponse{}, errNoLeader
		}
		return rpc.Call(ctx, d.rpcCli, addr, mClusterJoin, req)
	}
	var rec *model.JoinToken
	for _, t := range d.store.Cluster().JoinTokens {
		if t.ID == req.TokenID {
			rec = &t
		}
	}
	if rec == nil || !now.Before(rec.Expires) || !identity.SecretMatches(rec.Hash, req.Secret) {
		return JoinResponse{}, errBadJoinToken
	}
	if _, err := d.store.Host(req.Name); err == nil && !d.mayRejoin(req.Name) {
		return JoinResponse{}, fmt.Errorf("host %q is already a member; a name joins once (to join it again, stop its corrald and run corralctl host rm %s on a member): %w", req.Name, req.Name, model.ErrConflict)
	}
	return d.admit(req, now)
}

// admit issues the identity of a host whose join request passed.
func (d *Daemon) admit(req JoinRequest, now time.Time) (JoinResponse, error) {
	cert, err := d.id.Sign([]byte(req.CSR), req.Name, now)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%v: %w", err, model.ErrInvalid)
	}
	caKey, err := d.id.CAKeyPEM()
	if err != nil {
		return JoinResponse{}, err
	}
	resp := JoinResponse{CA: string(d.id.CAPEM), CAKey: string(caKey), Cert: string(cert)}
	for _, k := range d.id.GossipKeys() {
		resp.GossipKeys = append(resp.GossipKeys, base64.StdEncoding.EncodeToString(k))
	}
	d.log.Info("host admitted: certificate issued", "joining", req.Name, "token", req.TokenID)
	return resp, nil
}

func (d *Daemon) initTokenExpiry() time.Time {
	fi, err := os.Stat(filepath.Join(d.id.Dir, identity.InitTokenFile))
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime().Add(initTokenTTL)
}

// identityLoop keeps this host's identity: it moves the first join token
// into state, and renews the host certificate when a third of its life is
// left. It checks every second while a first token waits, otherwise every
// Tuning.CertCheck.
func (d *Daemon) identityLoop(ctx context.Context) error {
	if d.id == nil {
		return nil
	}
	for {
		wait := d.cfg.Tuning.CertCheck
		if wait <= 0 {
			wait = time.Hour
		}
		if _, pending := identity.InitToken(d.id.Dir); pending {
			d.recordInitToken(ctx)
			wait = time.Second
		}
		if d.id.RenewDue(time.Now()) {
			if err := d.renewCert(ctx); err != nil {
				d.log.Warn("host certificate renewal failed; retrying", "expires", d.id.Leaf().NotAfter, "err", err)
				wait = min(wait, time.Minute)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// recordInitToken moves the first join token from its file into cluster
// state once this host leads a cluster with state, so that it can be
// listed and revoked like any other; it then deletes the file.
func (d *Daemon) recordInitToken(ctx context.Context) {
	tok, ok := identity.InitToken(d.id.Dir)
	if !ok || !d.store.HasState() {
		return
	}
	exp := d.initTokenExpiry()
	rec := model.JoinToken{ID: tok.ID, Hash: tok.Hash(), Description: "first token (corrald init)", Created: exp.Add(-initTokenTTL).UTC(), Expires: exp.UTC()}
	_, err := forward(ctx, d, mTokenRecord, rec)
	if err != nil && !errors.Is(err, model.ErrConflict) {
		d.log.Warn("record first join token", "err", err)
		return
	}
	if err := identity.DropInitToken(d.id.Dir); err != nil {
		d.log.Warn("remove first join token file", "err", err)
		return
	}
	d.log.Info("first join token recorded in cluster state", "token", tok.ID, "expires", rec.Expires)
}

// CertRenewRequest asks the leader to renew the caller's certificate.
type CertRenewRequest struct {
	CSR string `json:"csr"`
}

// CertRenewResponse is the renewed certificate.
type CertRenewResponse struct {
	Cert string `json:"cert"`
}

// renewCert gets this host a new certificate for its key from the leader
// (signing it itself when it leads) and installs it.
func (d *Daemon) renewCert(ctx context.Context) error {
	csr, err := d.id.RenewalRequest()
	if err != nil {
		return err
	}
	var cert []byte
	if d.store.IsLeader() {
		if cert, err = d.id.Sign(csr, d.cfg.Name, time.Now()); err != nil {
			return err
		}
	} else {
		addr := d.leaderRPCAddr()
		if addr == "" {
			return errNoLeader
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := rpc.Call(cctx, d.rpcCli, addr, mCertRenew, CertRenewRequest{CSR: string(csr)})
		cancel()
		if err != nil {
			return err
		}
		cert = []byte(resp.Cert)
	}
	if err := d.id.Renew(cert); err != nil {
		return err
	}
	d.log.Info("host certificate renewed", "expires", d.id.Leaf().NotAfter)
	return nil
}

// serveRenew signs a new certificate for the calling host: the name comes
// from the certificate it called with (a revoked one does not get here).
func (d *Daemon) serveRenew(ctx context.Context, req CertRenewRequest) (CertRenewResponse, error) {
	if !d.store.IsLeader() {
		return CertRenewResponse{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	peer, ok := rpc.Peer(ctx)
	if !ok || d.id == nil {
		return CertRenewResponse{}, fmt.Errorf("only a host with a cluster certificate renews it: %w", model.ErrForbidden)
	}
	if _, err := d.store.Host(peer); err != nil {
		return CertRenewResponse{}, fmt.Errorf("host %q is not a member: %w", peer, model.ErrForbidden)
	}
	if len(req.CSR) > maxCSRBytes {
		return CertRenewResponse{}, fmt.Errorf("certificate request of %d bytes: %w", len(req.CSR), model.ErrInvalid)
	}
	cert, err := d.id.Sign([]byte(req.CSR), peer, time.Now())
	if err != nil {
		return CertRenewResponse{}, fmt.Errorf("%v: %w", err, model.ErrInvalid)
	}
	d.log.Info("host certificate renewed", "for", peer)
	return CertRenewResponse{Cert: string(cert)}, nil
}

// createToken makes a join token (leader only).
func (d *Daemon) createToken(ctx context.Context, req TokenCreateRequest) (TokenCreated, error) {
	if !d.store.IsLeader() {
		return TokenCreated{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	if d.id == nil {
		return TokenCreated{}, fmt.Errorf("this cluster has no identity (insecure): there is nothing to join with: %w", model.ErrInvalid)
	}
	if req.TTL == 0 {
		req.TTL = defaultTokenTTL
	}
	if req.TTL < minTokenTTL || req.TTL > maxTokenTTL {
		return TokenCreated{}, fmt.Errorf("token lifetime %v: between %v and %v: %w", req.TTL, minTokenTTL, maxTokenTTL, model.ErrInvalid)
	}
	tok := identity.NewToken(d.id.Fingerprint())
	now := time.Now().UTC()
	rec := model.JoinToken{ID: tok.ID, Hash: tok.Hash(), Description: req.Description, Created: now, Expires: now.Add(req.TTL)}
	if _, err := d.store.Apply(ctx, raftlog.AddJoinToken{Token: rec, Time: time.Now().UTC()}); err != nil {
		return TokenCreated{}, err
	}
	d.log.Info("join token created", "token", tok.ID, "expires", rec.Expires)
	d.event(ctx, "join-token", "token %s created, expires %s", tok.ID, rec.Expires.Format(time.RFC3339))
	return TokenCreated{Token: tok.String(), Record: rec}, nil
}

// recordToken records a token made elsewhere: the first token, sent by the
// host that ran corrald init (leader only).
func (d *Daemon) recordToken(ctx context.Context, rec model.JoinToken) (struct{}, error) {
	if !d.store.IsLeader() {
		return struct{}{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	_, err := d.store.Apply(ctx, raftlog.AddJoinToken{Token: rec, Time: time.Now().UTC()})
	return struct{}{}, err
}

// revokeToken forgets a join token (leader only).
func (d *Daemon) revokeToken(ctx context.Context, req TokenRevokeRequest) (struct{}, error) {
	if !d.store.IsLeader() {
		return struct{}{}, fmt.Errorf("ask the leader: %w", model.ErrNotLeader)
	}
	if !identity.ValidTokenID(req.ID) {
		return struct{}{}, fmt.Errorf("token id %q: %w", req.ID, model.ErrInvalid)
	}
	_, err := d.store.Apply(ctx, raftlog.RevokeJoinToken{ID: req.ID})
	if err == nil {
		d.log.Info("join token revoked", "token", req.ID)
		d.event(ctx, "join-token", "token %s revoked", req.ID)
	}
	return struct{}{}, err
}

// TokenRevokeRequest names a token to revoke.
type TokenRevokeRequest struct {
	ID string `json:"id"`
}

// verifyHost checks that a host gossip describes is who it says: its RPC
// and Raft addresses answer with the certificate the cluster CA issued to
// that name. Without an identity there is nothing to check.
func (d *Daemon) verifyHost(ctx context.Context, name, rpcAddr, raftAddr string) error {
	if d.id == nil {
		return nil
	}
	conf := d.id.ClientTLSFor(name)
	for _, a := range []string{rpcAddr, raftAddr} {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := handshake(dctx, a, conf)
		cancel()
		if err != nil {
			return fmt.Errorf("%s does not prove it is host %q: %w", a, name, err)
		}
	}
	return nil
}

// raftDialTLS binds a Raft connection to a name: the server at a Raft
// address registered in state must present that host's certificate (any
// certificate of the cluster before the address is registered, as during
// bootstrap).
func (d *Daemon) raftDialTLS(addr string) *tls.Config {
	if d.id == nil {
		return nil
	}
	for _, h := range d.store.Hosts() {
		if h.RaftAddr == addr {
			return d.id.ClientTLSFor(h.Name)
		}
	}
	return nil
}

// handshake completes one TLS handshake with addr and hangs up.
func handshake(ctx context.Context, addr string, conf *tls.Config) error {
	c, err := (&tls.Dialer{Config: conf}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}
