package model

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAPITokenRecords(t *testing.T) {
	secret := APITokenPrefix + strings.Repeat("ab", 32)
	now := time.Unix(1000, 0)
	tok := APIToken{Name: "ci", Role: RoleOperator, Hash: APITokenHash(secret), Created: now, Expires: now.Add(time.Hour)}
	if err := tok.Validate(); err != nil {
		t.Fatal(err)
	}
	cert := APIToken{Name: "alice", Role: RoleViewer, Kind: KindCertificate, Hash: strings.Repeat("cd", 32), Created: now}
	for _, bad := range []APIToken{
		{Name: "x", Role: "root", Hash: tok.Hash},
		{Name: "x", Role: RoleAdmin, Hash: tok.Hash, Project: "p"},
		{Name: "x", Role: RoleViewer, Hash: "short"},
		{Name: "x", Role: RoleViewer, Hash: tok.Hash, Kind: "password"},
		{Name: "x", Role: RoleViewer, Hash: tok.Hash, Created: now, Expires: now},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	all := []APIToken{cert, tok}
	if got, ok := FindAPIToken(all, secret); !ok || got.Name != "ci" {
		t.Fatalf("find by secret: %+v %v", got, ok)
	}
	if _, ok := FindAPIToken(all, APITokenPrefix+strings.Repeat("00", 32)); ok {
		t.Fatal("found an unknown secret")
	}
	// A certificate's fingerprint is no bearer secret, nor the reverse.
	if _, ok := FindAPICertificate(all, tok.Hash); ok {
		t.Fatal("a token's hash found as a certificate")
	}
	if got, ok := FindAPICertificate(all, cert.Hash); !ok || got.Name != "alice" {
		t.Fatal("certificate not found by fingerprint")
	}
	if tok.Expired(now.Add(59*time.Minute)) || !tok.Expired(now.Add(time.Hour)) || cert.Expired(now.Add(1e6*time.Hour)) {
		t.Fatal("expiry")
	}
	for s, want := range map[string]bool{secret: true, strings.ToUpper(secret): false, secret[:20]: false, "corral_" + strings.Repeat("g", 64): false} {
		if ValidAPISecret(s) != want {
			t.Errorf("ValidAPISecret(%q) != %v", s, want)
		}
	}
}

func TestQuotaExceeds(t *testing.T) {
	q := Quota{VCPUs: 4, DiskGiB: 2}
	before := Usage{VCPUs: 3, DiskMiB: 2048}
	if err := q.Exceeds("p", before, Usage{VCPUs: 4, DiskMiB: 2048}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	err := q.Exceeds("p", before, Usage{VCPUs: 4, DiskMiB: 2049})
	var qe *QuotaError
	if !errors.Is(err, ErrQuota) || !errors.As(err, &qe) || qe.Quota != "disk_gib" || qe.Wanted != 3 || qe.Used != 2 {
		t.Fatalf("one MiB past 2 GiB: %v", err)
	}
	// Above a lowered limit already: shrinking passes, growing does not.
	over := Usage{VCPUs: 6}
	if err := q.Exceeds("p", over, Usage{VCPUs: 5}); err != nil {
		t.Fatalf("shrink above the limit: %v", err)
	}
	if err := q.Exceeds("p", over, Usage{VCPUs: 7}); !errors.Is(err, ErrQuota) {
		t.Fatalf("grow above the limit: %v", err)
	}
	if err := (Quota{}).Exceeds("p", Usage{}, Usage{VCPUs: 1 << 20, VMs: 1 << 20}); err != nil {
		t.Fatalf("no limits: %v", err)
	}
}
