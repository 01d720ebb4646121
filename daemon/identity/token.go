package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/corralhq/corral/model"
)

// tokenPrefix versions the token format.
const tokenPrefix = "corral1"

// Token lets one new host join: the CA fingerprint it pins before it
// trusts anything, an ID the cluster knows the token by, and a secret of
// which the cluster keeps only a hash. Its text form is
//
//	corral1.<CA SHA-256, 64 hex>.<id, 12 hex>.<secret, 40 hex>
type Token struct {
	CAFingerprint string
	ID            string
	Secret        string
}

// NewToken returns a token with a random ID and secret.
func NewToken(caFingerprint string) Token {
	return Token{CAFingerprint: caFingerprint, ID: randHex(6), Secret: randHex(20)}
}

func (t Token) String() string {
	return tokenPrefix + "." + t.CAFingerprint + "." + t.ID + "." + t.Secret
}

// Hash is what the cluster stores of the secret.
func (t Token) Hash() string { return HashSecret(t.Secret) }

// HashSecret returns the hex SHA-256 of a token secret.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches compares a secret with a stored hash in constant time.
func SecretMatches(hash, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(hash), []byte(HashSecret(secret))) == 1
}

// ErrBadToken is returned for text that is not a join token.
var ErrBadToken = errors.New("not a corral join token (corral1.<fingerprint>.<id>.<secret>)")

// ParseToken parses a token's text form.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != tokenPrefix ||
		!model.IsLowerHex(parts[1], 64) || !model.IsLowerHex(parts[2], 12) || !model.IsLowerHex(parts[3], 40) {
		return Token{}, ErrBadToken
	}
	return Token{CAFingerprint: parts[1], ID: parts[2], Secret: parts[3]}, nil
}

// ValidTokenID reports whether s has the form of a token ID.
func ValidTokenID(s string) bool { return model.IsLowerHex(s, 12) }

// InitToken returns the first join token Init wrote, if it is still there.
func InitToken(dir string) (Token, bool) {
	raw, err := os.ReadFile(filepath.Join(dir, InitTokenFile))
	if err != nil {
		return Token{}, false
	}
	t, err := ParseToken(string(raw))
	return t, err == nil
}

// DropInitToken removes the first join token's file once the cluster state
// holds the token.
func DropInitToken(dir string) error {
	err := os.Remove(filepath.Join(dir, InitTokenFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b)
}
