package model

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// MaxAPITokens bounds the API tokens the cluster keeps.
const MaxAPITokens = 256

// APITokenPrefix starts every API token's secret, so secret scanners and
// people can tell one when they see it.
const APITokenPrefix = "corral_"

// Roles an API token can have: what its bearer may do through the API.
const (
	RoleViewer   = "viewer"   // reads
	RoleOperator = "operator" // creates and operates VMs, networks and images
	RoleAdmin    = "admin"    // everything: hosts, cluster, HA, tokens
)

// APIToken is what the cluster keeps of an API token: its name, its role,
// a hash of its secret (never the secret) and when it expires.
type APIToken struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// Kind is KindToken (empty) or KindCertificate.
	Kind string `json:"kind,omitempty"`
	// Hash is APITokenHash of the secret, or for a certificate the
	// SHA-256 of its DER form (its fingerprint).
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
	// Expires: refused from then on; zero: never.
	Expires time.Time `json:"expires,omitzero"`
	// CreatedBy is the actor who created it (the audit trail's name).
	CreatedBy string `json:"created_by,omitempty"`
	// Project, when set, confines the token to that project's VMs,
	// networks and images (and the default project's images); empty: all.
	Project string `json:"project,omitempty"`
}

// Kinds of API credential.
const (
	KindToken       = ""            // a bearer secret
	KindCertificate = "certificate" // a client certificate from the cluster CA
)

// Validate checks a token record's form.
func (t APIToken) Validate() error {
	if err := ValidateName("token", t.Name); err != nil {
		return err
	}
	if t.Kind != KindToken && t.Kind != KindCertificate {
		return fmt.Errorf("token %q: kind %q: %w", t.Name, t.Kind, ErrInvalid)
	}
	switch t.Role {
	case RoleViewer, RoleOperator, RoleAdmin:
	default:
		return fmt.Errorf("token %q: role %q: want viewer, operator or admin: %w", t.Name, t.Role, ErrInvalid)
	}
	if !IsLowerHex(t.Hash, 64) {
		return fmt.Errorf("token %q: malformed hash: %w", t.Name, ErrInvalid)
	}
	if !t.Expires.IsZero() && !t.Expires.After(t.Created) {
		return fmt.Errorf("token %q: expires before it is created: %w", t.Name, ErrInvalid)
	}
	if t.Project != "" {
		if err := ValidateName("project", t.Project); err != nil {
			return err
		}
		if t.Role == RoleAdmin {
			return fmt.Errorf("token %q: an admin token has every project; give a project to viewer or operator tokens only: %w", t.Name, ErrInvalid)
		}
	}
	if len(t.CreatedBy) > 256 {
		return fmt.Errorf("token %q: created_by of %d bytes, at most 256: %w", t.Name, len(t.CreatedBy), ErrInvalid)
	}
	return nil
}

// Expired reports whether the token is refused at now.
func (t APIToken) Expired(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires)
}

// APITokenHash is what state keeps of a secret: SHA-256, hex. A secret is
// 256 random bits, so a fast hash is enough: there is nothing to guess.
func APITokenHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ValidAPISecret reports whether s has an API token secret's form:
// APITokenPrefix and 64 lower-case hex digits.
func ValidAPISecret(s string) bool {
	rest, ok := strings.CutPrefix(s, APITokenPrefix)
	return ok && IsLowerHex(rest, 64)
}

// FindAPIToken returns the token whose secret is secret, comparing every
// hash in constant time.
func FindAPIToken(tokens []APIToken, secret string) (APIToken, bool) {
	return findCredential(tokens, KindToken, APITokenHash(secret))
}

// FindAPICertificate returns the certificate credential whose fingerprint
// is fp.
func FindAPICertificate(tokens []APIToken, fp string) (APIToken, bool) {
	return findCredential(tokens, KindCertificate, fp)
}

func findCredential(tokens []APIToken, kind, hash string) (APIToken, bool) {
	want := []byte(hash)
	var found APIToken
	ok := false
	for _, t := range tokens {
		if t.Kind == kind && subtle.ConstantTimeCompare([]byte(t.Hash), want) == 1 {
			found, ok = t, true
		}
	}
	return found, ok
}
