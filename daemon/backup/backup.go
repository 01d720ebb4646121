package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"
)

// Chunk sizes.
const (
	DefaultChunkSize = 4 << 20
	MaxChunkSize     = 64 << 20
	// ChunkAlign: a chunk size is a multiple of it.
	ChunkAlign = 64 << 10
	// progressEvery: Progress is called about this often (in bytes walked).
	progressEvery = 256 << 20
)

// Options of Write.
type Options struct {
	// ChunkSize cuts data: a multiple of 64 KiB, at most 64 MiB (0: 4 MiB).
	ChunkSize int64
	// BytesPerSec limits the bytes read from the chain (0: no limit).
	BytesPerSec int64
	// Progress, if set, is called with the virtual bytes walked so far
	// and the disk's size, every 256 MiB or so and at the end.
	Progress func(done, total int64)
	// Incremental: the chain holds only the layers written since the
	// previous backup; what no layer allocates did not change and is not
	// recorded. Else (a full backup) it reads as zeros and is recorded so.
	Incremental bool
}

// Stats counts a backup's or a restore's bytes.
type Stats struct {
	// Read: bytes read from the chain (a backup) or of chunks read from
	// the target (a restore).
	Read int64
	// Stored: bytes of new chunks put on the target (a backup), or
	// written to the disk (a restore).
	Stored int64
	// Deduped: bytes of data whose chunk the target already had.
	Deduped int64
	// ZeroBytes: bytes recorded (or restored) as zeros.
	ZeroBytes int64
}

// DiskManifest describes one disk of a backup.
type DiskManifest struct {
	VirtualSize int64 `json:"virtual_size"`
	ChunkSize   int64 `json:"chunk_size"`
	// Extents are in disk order and do not overlap. A full backup's
	// cover the disk; an incremental's only what changed.
	Extents []ManifestExtent `json:"extents"`
}

// ManifestExtent is a run of the disk: zeros, or the data of one chunk.
// A data extent never crosses a multiple of the chunk size.
type ManifestExtent struct {
	Off    int64  `json:"off"`
	Len    int64  `json:"len"`
	Zero   bool   `json:"zero,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// ChunkKey is the target key of the chunk with SHA-256 sum (64 hex
// digits): chunks/<first two digits>/<sum>.
func ChunkKey(sum string) string {
	if len(sum) < 2 {
		return "chunks/" + sum
	}
	return "chunks/" + sum[:2] + "/" + sum
}

func (o *Options) chunkSize() (int64, error) {
	cs := o.ChunkSize
	if cs == 0 {
		cs = DefaultChunkSize
	}
	if cs < 0 || cs%ChunkAlign != 0 || cs > MaxChunkSize {
		return 0, fmt.Errorf("chunk size %d: must be a multiple of %d, at most %d", cs, ChunkAlign, MaxChunkSize)
	}
	return cs, nil
}

// Write backs up chain into t: it stores the chain's data as chunks
// (those t does not have yet) and returns the disk's manifest. The caller
// stores the manifest (PutManifest) once all its disks are written.
//
// Data is cut at multiples of the chunk size of the virtual disk, so the
// same data at the same place gives the same chunks in every backup, and
// pieces of zeros are recorded as zeros, without a chunk.
func Write(ctx context.Context, t Target, chain *Chain, opt Options) (DiskManifest, Stats, error) {
	var st Stats
	cs, err := opt.chunkSize()
	if err != nil {
		return DiskManifest{}, st, err
	}
	if opt.BytesPerSec < 0 {
		return DiskManifest{}, st, fmt.Errorf("negative bandwidth limit %d", opt.BytesPerSec)
	}
	size := chain.Size()
	dm := DiskManifest{VirtualSize: size, ChunkSize: cs, Extents: []ManifestExtent{}}
	lim := newLimiter(opt.BytesPerSec, cs)
	reported := int64(0)
	progress := func(done int64, final bool) {
		if opt.Progress != nil && (final || done-reported >= progressEvery) {
			reported = done
			opt.Progress(done, size)
		}
	}
	addZero := func(off, n int64) {
		st.ZeroBytes += n
		if k := len(dm.Extents) - 1; k >= 0 && dm.Extents[k].Zero && dm.Extents[k].Off+dm.Extents[k].Len == off {
			dm.Extents[k].Len += n
			return
		}
		dm.Extents = append(dm.Extents, ManifestExtent{Off: off, Len: n, Zero: true})
	}

	// A goroutine stores chunks while the next ones are read and hashed.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := newStorer(ctx, t, cs, cancel)
	seen := make(map[string]bool)
	zeros := make([]byte, cs)

	walkErr := chain.Extents(func(e Extent) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case e.Kind == Unallocated && opt.Incremental:
		case e.Kind != Data:
			addZero(e.Off, e.Len)
		default:
			for p, end := e.Off, e.Off+e.Len; p < end; {
				q := min(end, (p/cs+1)*cs)
				if err := lim.wait(ctx, q-p); err != nil {
					return err
				}
				buf, err := s.buffer()
				if err != nil {
					return err
				}
				piece := buf[:q-p]
				if _, err := chain.ReadAt(piece, p); err != nil {
					return fmt.Errorf("read disk at %d (%d bytes): %w", p, len(piece), err)
				}
				st.Read += int64(len(piece))
				if bytes.Equal(piece, zeros[:len(piece)]) {
					s.release(buf)
					addZero(p, q-p)
				} else {
					h := sha256.Sum256(piece)
					sum := hex.EncodeToString(h[:])
					dm.Extents = append(dm.Extents, ManifestExtent{Off: p, Len: q - p, SHA256: sum})
					if seen[sum] {
						st.Deduped += int64(len(piece))
						s.release(buf)
					} else {
						seen[sum] = true
						if err := s.store(sum, buf, piece); err != nil {
							return err
						}
					}
				}
				p = q
				progress(p, false)
			}
		}
		progress(e.Off+e.Len, false)
		return nil
	})
	storeErr := s.wait()
	st.Stored += s.stored
	st.Deduped += s.deduped
	if walkErr != nil {
		if storeErr != nil {
			walkErr = storeErr
		}
		return DiskManifest{}, st, fmt.Errorf("backup of %s: %w", chain.Layers[0].Path(), walkErr)
	}
	if storeErr != nil {
		return DiskManifest{}, st, fmt.Errorf("backup of %s: %w", chain.Layers[0].Path(), storeErr)
	}
	progress(size, true)
	return dm, st, nil
}

// storer puts chunks on a target with a few goroutines, so that writes
// (and their syncs) overlap each other and the reading and hashing of the
// next chunks.
type storer struct {
	ctx    context.Context
	t      Target
	cancel func()
	free   chan []byte
	jobs   chan chunkJob
	wg     sync.WaitGroup

	mu              sync.Mutex
	err             error
	stored, deduped int64
}

type chunkJob struct {
	sum  string
	buf  []byte
	data []byte
}

// storeBufferBytes bounds the memory of the chunks in flight (at least
// three chunks are).
const storeBufferBytes = 64 << 20

func newStorer(ctx context.Context, t Target, cs int64, cancel func()) *storer {
	workers := int(max(1, min(4, storeBufferBytes/cs-2)))
	s := &storer{ctx: ctx, t: t, cancel: cancel, free: make(chan []byte, workers+2), jobs: make(chan chunkJob)}
	for range cap(s.free) {
		s.free <- make([]byte, cs)
	}
	for range workers {
		s.wg.Add(1)
		go s.run()
	}
	return s
}

func (s *storer) run() {
	defer s.wg.Done()
	for j := range s.jobs {
		stored, err := s.put(j)
		s.mu.Lock()
		switch {
		case err != nil && s.err == nil:
			s.err = err
			s.cancel()
		case err != nil:
		case stored:
			s.stored += int64(len(j.data))
		default:
			s.deduped += int64(len(j.data))
		}
		s.mu.Unlock()
		s.free <- j.buf
	}
}

// put stores j unless the target has it; it reports whether it stored it.
func (s *storer) put(j chunkJob) (bool, error) {
	key := ChunkKey(j.sum)
	ok, err := s.t.Stat(s.ctx, key)
	if err != nil || ok {
		return false, err
	}
	if err := s.t.Put(s.ctx, key, bytes.NewReader(j.data), int64(len(j.data))); err != nil {
		return false, err
	}
	return true, nil
}

// buffer returns a free chunk buffer.
func (s *storer) buffer() ([]byte, error) {
	select {
	case b := <-s.free:
		return b, nil
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

func (s *storer) release(b []byte) { s.free <- b }

// store queues data (in buf) to be put as chunk sum.
func (s *storer) store(sum string, buf, data []byte) error {
	select {
	case s.jobs <- chunkJob{sum: sum, buf: buf, data: data}:
		return nil
	case <-s.ctx.Done():
		s.free <- buf
		return s.ctx.Err()
	}
}

// wait stops the goroutines once they have stored what was queued and
// returns the first error.
func (s *storer) wait() error {
	close(s.jobs)
	s.wg.Wait()
	return s.err
}

// limiter is a token bucket of bytes per second.
type limiter struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

// newLimiter returns a limiter of bps bytes per second allowing bursts of
// burst bytes (a chunk) but never more than a second's worth, or nil (no
// limit) if bps is 0.
func newLimiter(bps, burst int64) *limiter {
	if bps <= 0 {
		return nil
	}
	b := float64(max(min(burst, bps), 1))
	return &limiter{rate: float64(bps), burst: b, tokens: b, last: time.Now()}
}

// wait takes n bytes from the bucket, waiting until the bucket has paid
// them back if it goes into debt.
func (l *limiter) wait(ctx context.Context, n int64) error {
	if l == nil {
		return nil
	}
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	l.tokens -= float64(n)
	if l.tokens >= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(-l.tokens / l.rate * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
