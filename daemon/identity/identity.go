// Package identity is a cluster's identity on one host: the cluster CA, this
// host's certificate (named after the host), the gossip keyring and join
// tokens. It only handles keys, certificates and files; who may join is the
// leader's decision (daemon).
//
// Files, all in one directory (data_dir/identity, mode 0700):
//
//	ca.crt       the cluster CA certificate
//	ca.key       the CA's private key (every host holds it: any may lead, and the leader signs)
//	host.crt     this host's certificate, CN and DNS name = the host name, signed by the CA
//	host.key     this host's private key
//	gossip.keys  the gossip keyring, base64 keys one per line, the first in use
//	join-token   the first join token, until the first leader records it in state
//
// Every key file is 0600 and checked at load. It imports only the
// standard library, model and internal/atomicfile.
package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/corralhq/corral/internal/atomicfile"
)

// File names inside the identity directory.
const (
	CAFile        = "ca.crt"
	CAKeyFile     = "ca.key"
	CertFile      = "host.crt"
	KeyFile       = "host.key"
	KeysFile      = "gossip.keys"
	InitTokenFile = "join-token"
)

// Lifetimes of what Init and Sign issue.
const (
	CALifetime   = 10 * 365 * 24 * time.Hour
	CertLifetime = 365 * 24 * time.Hour
	// gossipKeyLen is AES-256.
	gossipKeyLen = 32
)

// ErrNone is returned by Load when the directory holds no identity.
var ErrNone = errors.New("no cluster identity")

// Identity is one host's view of the cluster identity. It is safe for
// concurrent use; the host certificate can be replaced (SetCert) while TLS
// configurations built from it are in use.
type Identity struct {
	Dir  string
	Name string
	// CA is the cluster CA; CAPEM its PEM form.
	CA    *x509.Certificate
	CAPEM []byte
	caKey crypto.Signer
	pool  *x509.CertPool

	mu      sync.RWMutex
	cert    *tls.Certificate
	leaf    *x509.Certificate
	keys    [][]byte
	revoked func(name string, issued time.Time) bool
	// lifetime of the host certificates this identity signs.
	lifetime time.Duration
}

// SetLifetime sets the lifetime of the host certificates this identity
// signs from now on (default CertLifetime; tests shrink it).
func (id *Identity) SetLifetime(d time.Duration) {
	id.mu.Lock()
	id.lifetime = d
	id.mu.Unlock()
}

// SetRevoked installs the check that refuses revoked peer certificates:
// those of a removed host, issued before its removal. TLS configurations
// from this identity apply it from the next handshake on.
func (id *Identity) SetRevoked(fn func(name string, issued time.Time) bool) {
	id.mu.Lock()
	id.revoked = fn
	id.mu.Unlock()
}

// Issued returns when the CA issued a host certificate: the exact time
// stamped in its subject's serialNumber attribute (NotBefore is set back
// to allow for clock skew). ok is false for a certificate without it.
func Issued(c *x509.Certificate) (t time.Time, ok bool) {
	t, err := time.Parse(time.RFC3339Nano, c.Subject.SerialNumber)
	return t, err == nil
}

// RenewDue reports whether this host's certificate has less than a third
// of its lifetime left.
func (id *Identity) RenewDue(now time.Time) bool {
	leaf := id.Leaf()
	issued, ok := Issued(leaf)
	if !ok {
		issued = leaf.NotBefore
	}
	return now.After(leaf.NotAfter.Add(-leaf.NotAfter.Sub(issued) / 3))
}

// hostKey returns this host's current private key.
func (id *Identity) hostKey() (crypto.Signer, error) {
	id.mu.RLock()
	key := id.cert.PrivateKey
	id.mu.RUnlock()
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("host key cannot sign")
	}
	return signer, nil
}

// RenewalRequest returns a certificate request for this host's name,
// signed by its current key: a renewal keeps the key, so that replacing
// the certificate file alone is atomic.
func (id *Identity) RenewalRequest() ([]byte, error) {
	key, err := id.hostKey()
	if err != nil {
		return nil, err
	}
	return csrFor(key, id.Name)
}

// Renew installs a renewed certificate for this host's current key and
// writes it to host.crt.
func (id *Identity) Renew(certPEM []byte) error {
	key, err := id.hostKey()
	if err != nil {
		return err
	}
	keyPEMData, err := keyPEM(key)
	if err != nil {
		return err
	}
	if err := id.SetCert(certPEM, keyPEMData); err != nil {
		return err
	}
	return writeFile(filepath.Join(id.Dir, CertFile), certPEM)
}

// Fingerprint is the SHA-256 of the CA certificate: what a join token pins.
func (id *Identity) Fingerprint() string { return Fingerprint(id.CA) }

// Fingerprint returns the hex SHA-256 of a certificate's DER form.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// Leaf returns this host's certificate.
func (id *Identity) Leaf() *x509.Certificate {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return id.leaf
}

// SetGossipKeys records the keyring in use (after a rotation step), in
// memory and in gossip.keys: a restarted host gossips with it, and a
// joining host receives it.
func (id *Identity) SetGossipKeys(keys [][]byte) error {
	if err := writeFile(filepath.Join(id.Dir, KeysFile), encodeKeys(keys)); err != nil {
		return err
	}
	id.mu.Lock()
	id.keys = append([][]byte(nil), keys...)
	id.mu.Unlock()
	return nil
}

// NewGossipKey returns a new random gossip key.
func NewGossipKey() []byte {
	k := make([]byte, gossipKeyLen)
	rand.Read(k)
	return k
}

// GossipKeys returns the keyring, the key in use first.
func (id *Identity) GossipKeys() [][]byte {
	id.mu.RLock()
	defer id.mu.RUnlock()
	return append([][]byte(nil), id.keys...)
}

// Init creates a new cluster identity in dir for the host name: a CA, this
// host's certificate, a gossip key and the first join token (also written
// to join-token). It refuses to overwrite an identity.
func Init(dir, name string, now time.Time) (*Identity, Token, error) {
	if Exists(dir) {
		return nil, Token{}, fmt.Errorf("%s already holds a cluster identity", dir)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, Token{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "corral cluster CA", Organization: []string{"corral"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, Token{}, err
	}
	ca, _ := x509.ParseCertificate(der)
	id := &Identity{Dir: dir, Name: name, CA: ca, CAPEM: pemBlock("CERTIFICATE", der), caKey: caKey}
	id.pool = x509.NewCertPool()
	id.pool.AddCert(ca)
	key, err := NewKey()
	if err != nil {
		return nil, Token{}, err
	}
	csr, err := CSR(key, name)
	if err != nil {
		return nil, Token{}, err
	}
	certPEM, err := id.Sign(csr, name, now)
	if err != nil {
		return nil, Token{}, err
	}
	gk := make([]byte, gossipKeyLen)
	rand.Read(gk)
	tok := NewToken(id.Fingerprint())
	caKeyPEM, err := keyPEM(caKey)
	if err != nil {
		return nil, Token{}, err
	}
	hostKeyPEM, err := keyPEM(key)
	if err != nil {
		return nil, Token{}, err
	}
	if err := Save(dir, Bundle{CA: id.CAPEM, CAKey: caKeyPEM, Cert: certPEM, Key: hostKeyPEM, GossipKeys: [][]byte{gk}}); err != nil {
		return nil, Token{}, err
	}
	if err := writeFile(filepath.Join(dir, InitTokenFile), []byte(tok.String()+"\n")); err != nil {
		return nil, Token{}, err
	}
	loaded, err := Load(dir, name)
	return loaded, tok, err
}

// Bundle is an identity's files' contents (PEM, and raw gossip keys).
type Bundle struct {
	CA, CAKey, Cert, Key []byte
	GossipKeys           [][]byte
}

// Save writes a bundle into dir (created 0700), every file 0600, each
// replaced atomically.
func Save(dir string, b Bundle) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
	}{{CAFile, b.CA}, {CAKeyFile, b.CAKey}, {KeyFile, b.Key}, {CertFile, b.Cert}, {KeysFile, encodeKeys(b.GossipKeys)}}
	for _, f := range files {
		if len(f.data) == 0 && f.name == CAKeyFile {
			continue // a host that may not sign
		}
		if err := writeFile(filepath.Join(dir, f.name), f.data); err != nil {
			return err
		}
	}
	return nil
}

// Exists reports whether dir holds a host certificate.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, CertFile))
	return err == nil
}

// Load reads the identity in dir and checks it: key files private, the
// host certificate signed by the CA and named name. It returns ErrNone when
// dir holds none.
func Load(dir, name string) (*Identity, error) {
	if !Exists(dir) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNone)
	}
	for _, f := range []string{CAKeyFile, KeyFile, KeysFile} {
		if err := checkPrivate(filepath.Join(dir, f)); err != nil {
			return nil, err
		}
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	ca, err := parseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CAFile, err)
	}
	id := &Identity{Dir: dir, Name: name, CA: ca, CAPEM: caPEM, pool: x509.NewCertPool()}
	id.pool.AddCert(ca)
	if raw, err := os.ReadFile(filepath.Join(dir, CAKeyFile)); err == nil {
		if id.caKey, err = parseKey(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", CAKeyFile, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, err
	}
	keyPEMData, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	if err := id.SetCert(certPEM, keyPEMData); err != nil {
		return nil, err
	}
	rawKeys, err := os.ReadFile(filepath.Join(dir, KeysFile))
	if err != nil {
		return nil, err
	}
	if id.keys, err = decodeKeys(rawKeys); err != nil {
		return nil, fmt.Errorf("%s: %w", KeysFile, err)
	}
	return id, nil
}

// SetCert installs a host certificate and key after checking that the CA
// signed it for this host's name. TLS configurations from this identity
// present it from the next handshake on.
func (id *Identity) SetCert(certPEM, keyPEMData []byte) error {
	pair, err := tls.X509KeyPair(certPEM, keyPEMData)
	if err != nil {
		return fmt.Errorf("host certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("host certificate: %w", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: id.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("host certificate: not from the cluster CA: %w", err)
	}
	if leaf.Subject.CommonName != id.Name {
		return fmt.Errorf("host certificate is for %q, this host is %q", leaf.Subject.CommonName, id.Name)
	}
	// Present the CA after the leaf: a joining host pins it by fingerprint.
	pair.Certificate = append(pair.Certificate, id.CA.Raw)
	pair.Leaf = leaf
	id.mu.Lock()
	id.cert, id.leaf = &pair, leaf
	id.mu.Unlock()
	return nil
}

// CanSign reports whether this host holds the CA key.
func (id *Identity) CanSign() bool { return id.caKey != nil }

// CAKeyPEM returns the CA key for a joining host.
func (id *Identity) CAKeyPEM() ([]byte, error) {
	if id.caKey == nil {
		return nil, errors.New("this host does not hold the CA key")
	}
	return keyPEM(id.caKey)
}

// Sign issues a host certificate for name from a PEM certificate request,
// which must be signed by its own key and name the same host.
func (id *Identity) Sign(csrPEM []byte, name string, now time.Time) ([]byte, error) {
	csr, err := id.checkCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	if csr.Subject.CommonName != name {
		return nil, fmt.Errorf("certificate request names %q, the host joining is %q", csr.Subject.CommonName, name)
	}
	id.mu.RLock()
	lifetime := id.lifetime
	id.mu.RUnlock()
	if lifetime == 0 {
		lifetime = CertLifetime
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"corral"}, SerialNumber: now.UTC().Format(time.RFC3339Nano)},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, id.CA, csr.PublicKey, id.caKey)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE", der), nil
}

// checkCSR parses a PEM certificate request, which must be signed by its
// own key, for this host to sign (it must hold the CA key).
func (id *Identity) checkCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	if id.caKey == nil {
		return nil, errors.New("this host does not hold the CA key")
	}
	blk, _ := pem.Decode(csrPEM)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("certificate request: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return csr, nil
}

// NewKey returns a new host key.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// CSR returns a PEM certificate request for name signed by key.
func CSR(key *ecdsa.PrivateKey, name string) ([]byte, error) { return csrFor(key, name) }

func csrFor(key crypto.Signer, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, err
	}
	return pemBlock("CERTIFICATE REQUEST", der), nil
}

// KeyPEM encodes a private key.
func KeyPEM(key *ecdsa.PrivateKey) ([]byte, error) { return keyPEM(key) }

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func parseKey(raw []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return nil, errors.New("no PEM key")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("key cannot sign")
	}
	return s, nil
}

func parseCert(raw []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(raw)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// ParseCA parses a PEM CA certificate and checks it against a fingerprint.
func ParseCA(raw []byte, fingerprint string) (*x509.Certificate, error) {
	ca, err := parseCert(raw)
	if err != nil {
		return nil, err
	}
	if Fingerprint(ca) != fingerprint {
		return nil, errors.New("CA certificate does not match the join token's fingerprint")
	}
	return ca, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func encodeKeys(keys [][]byte) []byte {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func decodeKeys(raw []byte) ([][]byte, error) {
	var keys [][]byte
	for _, line := range strings.Fields(string(raw)) {
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, err
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("gossip key of %d bytes; must be 16, 24 or 32", n)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no gossip key")
	}
	return keys, nil
}

// checkPrivate refuses a secret file that group or others may write, or
// others may read.
func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && filepath.Base(path) == CAKeyFile {
			return nil
		}
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o037 != 0 {
		return fmt.Errorf("%s is mode %04o but holds a secret: make it 0600 (chmod 600 %s)", path, perm, path)
	}
	return nil
}

// writeFile replaces path atomically with a 0600 file.
func writeFile(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }
