package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
)

// RestoreOptions are the options of Restore.
type RestoreOptions struct {
	// BytesPerSec limits the bytes of chunks read from the target (0: no
	// limit).
	BytesPerSec int64
	// Progress, if set, is called with the bytes of data written so far
	// and the bytes of data to write, every 256 MiB or so and at the end.
	Progress func(done, total int64)
}

// seg is a run of the restored disk: zeros, or the bytes of a run of a
// data extent of backup src.
type seg struct {
	off, len int64
	zero     bool
	src      int
	ext      ManifestExtent
}

func (s seg) end() int64 { return s.off + s.len }

// checkChain checks that chain is a full backup followed by incrementals
// each building on the one before, all with disk, of the same size; it
// returns the disk's size.
func checkChain(chain []Manifest, disk int) (int64, error) {
	if len(chain) == 0 {
		return 0, errors.New("no backups to restore from")
	}
	var size int64
	for i, m := range chain {
		if err := m.Validate(); err != nil {
			return 0, err
		}
		switch {
		case i == 0 && m.Kind != KindFull:
			return 0, fmt.Errorf("backup %s is %s; a chain starts with a full backup", m.ID, m.Kind)
		case i > 0 && m.Kind != KindIncremental:
			return 0, fmt.Errorf("backup %s (number %d of the chain) is %s, not incremental", m.ID, i, m.Kind)
		case i > 0 && m.Parent != chain[i-1].ID:
			return 0, fmt.Errorf("backup %s builds on %s, not on %s before it in the chain", m.ID, m.Parent, chain[i-1].ID)
		}
		if disk < 0 || disk >= len(m.Disks) {
			return 0, fmt.Errorf("backup %s has no disk %d (it has %d)", m.ID, disk, len(m.Disks))
		}
		d := m.Disks[disk]
		if i == 0 {
			size = d.VirtualSize
		} else if d.VirtualSize != size {
			return 0, fmt.Errorf("backup %s: disk %d is %d bytes, %d in backup %s: a resized disk needs a new full backup", m.ID, disk, d.VirtualSize, size, chain[0].ID)
		}
	}
	return size, nil
}

// merge lays disk's extents of chain over each other, later backups over
// earlier ones, and returns the resulting runs in disk order.
func merge(chain []Manifest, disk int) []seg {
	var out []seg
	for i, m := range chain {
		over := make([]seg, len(m.Disks[disk].Extents))
		for j, e := range m.Disks[disk].Extents {
			over[j] = seg{off: e.Off, len: e.Len, zero: e.Zero, src: i, ext: e}
		}
		out = overlay(out, over)
	}
	return out
}

// overlay returns the runs of base not covered by over, and over, in order.
// Both are sorted and each does not overlap itself.
func overlay(base, over []seg) []seg {
	kept := make([]seg, 0, len(base))
	k := 0
	for _, b := range base {
		s, e := b.off, b.end()
		for k < len(over) && over[k].end() <= s {
			k++
		}
		for i := k; s < e; i++ {
			if i < len(over) && over[i].off < e {
				if over[i].off > s {
					kept = append(kept, b.cut(s, over[i].off))
				}
				s = max(s, over[i].end())
				continue
			}
			kept = append(kept, b.cut(s, e))
			s = e
		}
	}
	out := make([]seg, 0, len(kept)+len(over))
	i, j := 0, 0
	for i < len(kept) || j < len(over) {
		if j == len(over) || i < len(kept) && kept[i].off < over[j].off {
			out = append(out, kept[i])
			i++
		} else {
			out = append(out, over[j])
			j++
		}
	}
	return out
}

func (s seg) cut(from, to int64) seg {
	s.off, s.len = from, to-from
	return s
}

// chunkJob is a chunk to read and the runs of the disk it gives.
type restoreJob struct {
	src  int
	ext  ManifestExtent
	segs []seg
}

// Restore writes disk number disk of the backup chain (a full backup, then
// the incrementals building on it, in order) to dst, a new raw file of the
// disk's size that must not exist. Each chunk's length and SHA-256 are
// checked before its data is written; zeros are left as holes, so dst is
// sparse. On any error dst is removed.
func Restore(ctx context.Context, t Target, chain []Manifest, disk int, dst string, opt RestoreOptions) (st Stats, err error) {
	size, err := checkChain(chain, disk)
	if err != nil {
		return st, fmt.Errorf("restore to %s: %w", dst, err)
	}
	if opt.BytesPerSec < 0 {
		return st, fmt.Errorf("restore to %s: negative bandwidth limit %d", dst, opt.BytesPerSec)
	}
	segs := merge(chain, disk)
	var jobs []*restoreJob
	byExt := make(map[[2]int64]*restoreJob)
	var total int64
	for _, s := range segs {
		if s.zero {
			continue
		}
		total += s.len
		k := [2]int64{int64(s.src), s.ext.Off}
		j := byExt[k]
		if j == nil {
			j = &restoreJob{src: s.src, ext: s.ext}
			byExt[k] = j
			jobs = append(jobs, j)
		}
		j.segs = append(j.segs, s)
	}

	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return st, fmt.Errorf("restore: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(dst)
			err = fmt.Errorf("restore disk %d of backup %s to %s: %w", disk, chain[len(chain)-1].ID, dst, err)
		}
	}()
	if err := f.Truncate(size); err != nil {
		return st, err
	}
	lim := newLimiter(opt.BytesPerSec, chain[0].Disks[disk].ChunkSize)
	var buf []byte
	reported := int64(0)
	for _, j := range jobs {
		m := chain[j.src]
		if err := lim.wait(ctx, j.ext.Len); err != nil {
			return st, err
		}
		data, err := readChunk(ctx, t, j.ext, &buf)
		if err != nil {
			return st, fmt.Errorf("backup %s, disk offset %d: %w", m.ID, j.ext.Off, err)
		}
		st.Read += int64(len(data))
		for _, s := range j.segs {
			from := s.off - j.ext.Off
			if _, err := f.WriteAt(data[from:from+s.len], s.off); err != nil {
				return st, err
			}
			st.Stored += s.len
		}
		if opt.Progress != nil && st.Stored-reported >= progressEvery {
			reported = st.Stored
			opt.Progress(st.Stored, total)
		}
	}
	if err := f.Sync(); err != nil {
		return st, err
	}
	if err := f.Close(); err != nil {
		return st, err
	}
	st.ZeroBytes = size - st.Stored
	if opt.Progress != nil {
		opt.Progress(st.Stored, total)
	}
	return st, nil
}

// readChunk reads the chunk of data extent e into *buf and checks its
// length and hash.
func readChunk(ctx context.Context, t Target, e ManifestExtent, buf *[]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rc, err := t.Get(ctx, ChunkKey(e.SHA256))
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", e.SHA256, err)
	}
	defer rc.Close()
	if int64(cap(*buf)) < e.Len+1 {
		*buf = make([]byte, e.Len+1)
	}
	data := (*buf)[:e.Len+1]
	n, err := io.ReadFull(rc, data)
	switch {
	case err == nil:
		return nil, fmt.Errorf("chunk %s: longer than %d bytes: damaged", e.SHA256, e.Len)
	case int64(n) < e.Len && (err == io.EOF || err == io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("chunk %s: %d bytes, want %d: damaged", e.SHA256, n, e.Len)
	case err != io.ErrUnexpectedEOF:
		return nil, fmt.Errorf("chunk %s: %w", e.SHA256, err)
	}
	data = data[:e.Len]
	h := sha256.Sum256(data)
	if sum := hex.EncodeToString(h[:]); sum != e.SHA256 {
		return nil, fmt.Errorf("chunk %s: checksum mismatch (content hashes to %s): damaged", e.SHA256, sum)
	}
	return data, nil
}

// Verify checks that disk number disk of the backup chain can be
// restored: the chain is consistent, and every chunk its backups reference
// for that disk is on t with the right length and SHA-256.
func Verify(ctx context.Context, t Target, chain []Manifest, disk int) error {
	if _, err := checkChain(chain, disk); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	checked := make(map[string]int64)
	var buf []byte
	for _, m := range chain {
		for _, e := range m.Disks[disk].Extents {
			if e.Zero {
				continue
			}
			if n, ok := checked[e.SHA256]; ok {
				if n != e.Len {
					return fmt.Errorf("verify: backup %s, disk %d: chunk %s is %d bytes at %d but %d elsewhere", m.ID, disk, e.SHA256, e.Len, e.Off, n)
				}
				continue
			}
			if _, err := readChunk(ctx, t, e, &buf); err != nil {
				return fmt.Errorf("verify: backup %s, disk %d, disk offset %d: %w", m.ID, disk, e.Off, err)
			}
			checked[e.SHA256] = e.Len
		}
	}
	return nil
}
