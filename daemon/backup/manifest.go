package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ManifestVersion is the version of the manifest format this package
// writes and reads.
const ManifestVersion = 1

// Backup kinds.
const (
	KindFull        = "full"
	KindIncremental = "incremental"
)

// Limits on manifests.
const (
	// MaxManifestBytes bounds a stored manifest. A data extent takes about
	// 100 bytes, so this holds a full backup of about 10 TiB of data in
	// 4 MiB chunks.
	MaxManifestBytes = 256 << 20
	maxID            = 128
	maxDisks         = 256
)

// Manifest describes a complete backup. It is stored last, so a manifest
// on a target means its backup is complete.
type Manifest struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	VM      string `json:"vm"`
	VMID    string `json:"vm_id"`
	// Parent is the backup an incremental builds on; "" for a full.
	Parent  string    `json:"parent,omitempty"`
	Kind    string    `json:"kind"`
	Created time.Time `json:"created"`
	// Spec is the VM's spec, opaque to this package.
	Spec  json.RawMessage `json:"spec,omitempty"`
	Disks []DiskManifest  `json:"disks"`
	// Checksum is the SHA-256 (hex) of the manifest's JSON with Checksum
	// empty.
	Checksum string `json:"checksum"`
}

// ManifestKey is the target key of backup id's manifest.
func ManifestKey(id string) string { return "backups/" + id + ".json" }

// ValidateID checks a backup ID: 1 to 128 of a-z, 0-9, '.', '_', '-',
// starting with a letter or digit.
func ValidateID(id string) error {
	if id == "" || len(id) > maxID || !validChars(id, false) || id[0] == '.' || id[0] == '_' || id[0] == '-' {
		return fmt.Errorf("backup id %q: 1 to %d of a-z, 0-9, '.', '_', '-', starting with a letter or digit", id, maxID)
	}
	return nil
}

// canonical is m's JSON with Checksum empty, which Checksum is the hash of.
func (m Manifest) canonical() ([]byte, error) {
	m.Checksum = ""
	return json.Marshal(m)
}

func (m Manifest) sum() (string, error) {
	b, err := m.canonical()
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// Validate checks m's structure (not its checksum): IDs, kind and parent,
// and each disk's extents.
func (m Manifest) Validate() error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("manifest %q: version %d, want %d", m.ID, m.Version, ManifestVersion)
	}
	if err := ValidateID(m.ID); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	switch m.Kind {
	case KindFull:
		if m.Parent != "" {
			return fmt.Errorf("manifest %s: a full backup with parent %q", m.ID, m.Parent)
		}
	case KindIncremental:
		if err := ValidateID(m.Parent); err != nil {
			return fmt.Errorf("manifest %s: parent: %w", m.ID, err)
		}
		if m.Parent == m.ID {
			return fmt.Errorf("manifest %s: its own parent", m.ID)
		}
	default:
		return fmt.Errorf("manifest %s: kind %q, want %q or %q", m.ID, m.Kind, KindFull, KindIncremental)
	}
	if len(m.Disks) == 0 || len(m.Disks) > maxDisks {
		return fmt.Errorf("manifest %s: %d disks, want 1 to %d", m.ID, len(m.Disks), maxDisks)
	}
	for i, d := range m.Disks {
		if err := d.validate(m.Kind == KindFull); err != nil {
			return fmt.Errorf("manifest %s: disk %d: %w", m.ID, i, err)
		}
	}
	return nil
}

// validate checks d's extents: in order, not overlapping, within the disk,
// data extents within one chunk with a well-formed hash; and with full,
// that they cover the disk.
func (d DiskManifest) validate(full bool) error {
	if d.VirtualSize <= 0 || d.VirtualSize > maxVirtualSize {
		return fmt.Errorf("virtual size %d", d.VirtualSize)
	}
	if d.ChunkSize <= 0 || d.ChunkSize%ChunkAlign != 0 || d.ChunkSize > MaxChunkSize {
		return fmt.Errorf("chunk size %d", d.ChunkSize)
	}
	next := int64(0)
	for i, e := range d.Extents {
		if e.Off < next || e.Len <= 0 || e.Len > d.VirtualSize-e.Off {
			return fmt.Errorf("extent %d (%d+%d) out of order, empty or past the disk's end %d", i, e.Off, e.Len, d.VirtualSize)
		}
		if full && e.Off != next {
			return fmt.Errorf("extent %d at %d leaves a gap after %d in a full backup", i, e.Off, next)
		}
		if e.Zero {
			if e.SHA256 != "" {
				return fmt.Errorf("extent %d at %d: zero with a hash", i, e.Off)
			}
		} else {
			if !validSum(e.SHA256) {
				return fmt.Errorf("extent %d at %d: hash %q is not 64 lower-case hex digits", i, e.Off, e.SHA256)
			}
			if e.Off/d.ChunkSize != (e.Off+e.Len-1)/d.ChunkSize {
				return fmt.Errorf("extent %d (%d+%d) crosses a chunk boundary", i, e.Off, e.Len)
			}
		}
		next = e.Off + e.Len
	}
	if full && next != d.VirtualSize {
		return fmt.Errorf("a full backup's extents end at %d, not at the disk's end %d", next, d.VirtualSize)
	}
	return nil
}

func validSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// PutManifest stores backup m under backups/<ID>.json, with its Version
// set (if 0) and its Checksum computed; m must be valid. Store it after all
// the backup's chunks: a manifest on the target means a complete backup.
func PutManifest(ctx context.Context, t Target, m Manifest) error {
	if m.Version == 0 {
		m.Version = ManifestVersion
	}
	m.Created = m.Created.UTC()
	if len(m.Spec) > 0 {
		var b bytes.Buffer
		if err := json.Compact(&b, m.Spec); err != nil {
			return fmt.Errorf("manifest %s: spec: %w", m.ID, err)
		}
		m.Spec = b.Bytes()
	}
	if err := m.Validate(); err != nil {
		return err
	}
	sum, err := m.sum()
	if err != nil {
		return fmt.Errorf("manifest %s: %w", m.ID, err)
	}
	m.Checksum = sum
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", m.ID, err)
	}
	if len(b) > MaxManifestBytes {
		return fmt.Errorf("manifest %s: %d bytes, over the limit of %d", m.ID, len(b), MaxManifestBytes)
	}
	// The chunks first, then the manifest that names them.
	if err := t.Sync(ctx); err != nil {
		return fmt.Errorf("manifest %s: %w", m.ID, err)
	}
	if err := t.Put(ctx, ManifestKey(m.ID), bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("manifest %s: %w", m.ID, err)
	}
	if err := t.Sync(ctx); err != nil {
		return fmt.Errorf("manifest %s: %w", m.ID, err)
	}
	return nil
}

// GetManifest reads backup id's manifest and checks its checksum and
// structure. A missing manifest gives ErrNotFound.
func GetManifest(ctx context.Context, t Target, id string) (Manifest, error) {
	if err := ValidateID(id); err != nil {
		return Manifest{}, err
	}
	rc, err := t.Get(ctx, ManifestKey(id))
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifestBytes+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", id, err)
	}
	if len(b) > MaxManifestBytes {
		return Manifest{}, fmt.Errorf("manifest %s: over the limit of %d bytes", id, MaxManifestBytes)
	}
	return ParseManifest(id, b)
}

// ParseManifest decodes the manifest of backup id from b and checks its
// checksum and structure.
func ParseManifest(id string, b []byte) (Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", id, err)
	}
	if m.Checksum == "" {
		return Manifest{}, fmt.Errorf("manifest %s: no checksum", id)
	}
	sum, err := m.sum()
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", id, err)
	}
	if sum != m.Checksum {
		return Manifest{}, fmt.Errorf("manifest %s: checksum mismatch (stored %.16s…, computed %.16s…): the manifest is damaged", id, m.Checksum, sum)
	}
	if m.ID != id {
		return Manifest{}, fmt.Errorf("manifest %s: holds backup %q", id, m.ID)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// ListBackups returns the IDs of the complete backups on t (those with a
// manifest), sorted.
func ListBackups(ctx context.Context, t Target) ([]string, error) {
	keys, err := t.List(ctx, "backups/")
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, k := range keys {
		id, ok := strings.CutSuffix(strings.TrimPrefix(k, "backups/"), ".json")
		if ok && !strings.Contains(id, "/") && ValidateID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// DeleteBackup deletes backup id: its manifest first (so it is no longer
// complete), then its chunks that no manifest in keep references. keep
// must hold every other backup of the target that is to stay (all of them,
// for all VMs sharing the target), and no backup may be written to t
// meanwhile: a backup under way may use chunks no manifest references yet.
//
// If id's manifest is damaged, its chunks are not known: DeleteBackup then
// deletes the manifest and every chunk on t that keep does not reference.
func DeleteBackup(ctx context.Context, t Target, id string, keep []Manifest) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	refs := make(map[string]bool)
	for _, m := range keep {
		if m.ID == id {
			return fmt.Errorf("delete backup %s: it is among the backups to keep", id)
		}
		for _, d := range m.Disks {
			for _, e := range d.Extents {
				if !e.Zero {
					refs[e.SHA256] = true
				}
			}
		}
	}
	var candidates []string
	m, err := GetManifest(ctx, t, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("delete backup %s: %w", id, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case err != nil:
		keys, lerr := t.List(ctx, "chunks/")
		if lerr != nil {
			return fmt.Errorf("delete backup %s (damaged: %v): %w", id, err, lerr)
		}
		for _, k := range keys {
			if sum := k[strings.LastIndexByte(k, '/')+1:]; validSum(sum) && k == ChunkKey(sum) {
				candidates = append(candidates, sum)
			}
		}
	default:
		seen := make(map[string]bool)
		for _, d := range m.Disks {
			for _, e := range d.Extents {
				if !e.Zero && !seen[e.SHA256] {
					seen[e.SHA256] = true
					candidates = append(candidates, e.SHA256)
				}
			}
		}
	}
	if err := t.Delete(ctx, ManifestKey(id)); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("delete backup %s: %w", id, err)
	}
	for _, sum := range candidates {
		if refs[sum] {
			continue
		}
		if err := t.Delete(ctx, ChunkKey(sum)); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("delete backup %s: chunk %s: %w", id, sum, err)
		}
	}
	return nil
}
