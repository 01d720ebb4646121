package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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

	// Workers hash and store pieces while the next ones are read; each
	// piece's result lands in its own slot, and the manifest is put
	// together in disk order once all are done.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := newStorer(ctx, t, cs, cancel)
	type item struct {
		off, n int64
		piece  int // index in s.results, or -1: zeros
	}
	var items []item

	walkErr := chain.Extents(func(e Extent) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case e.Kind == Unallocated && opt.Incremental:
		case e.Kind != Data:
			items = append(items, item{e.Off, e.Len, -1})
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
				k, err := s.store(buf, piece)
				if err != nil {
					return err
				}
				items = append(items, item{p, q - p, k})
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
	for _, it := range items {
		if it.piece < 0 || s.results[it.piece] == "" {
			addZero(it.off, it.n)
		} else {
			dm.Extents = append(dm.Extents, ManifestExtent{Off: it.off, Len: it.n, SHA256: s.results[it.piece]})
		}
	}
	progress(size, true)
	return dm, st, nil
}

// storer hashes pieces and puts them on a target with a few goroutines,
// so that hashing and writes overlap each other and the reading of the
// next pieces. A piece of zeros is not stored (its result is ""); a piece
// seen before in this backup or on the target is not stored again.
type storer struct {
	ctx    context.Context
	t      Target
	cancel func()
	free   chan []byte
	jobs   chan chunkJob
	wg     sync.WaitGroup
	zeros  []byte

	mu              sync.Mutex
	err             error
	stored, deduped int64
	results         []string        // each piece's SHA-256 (hex), "" for zeros
	seen            map[string]bool // sums stored or being stored
}

type chunkJob struct {
	index int
	buf   []byte
	data  []byte
}

// storeBufferBytes bounds the memory of the chunks in flight (at least
// three chunks are).
const storeBufferBytes = 64 << 20

func newStorer(ctx context.Context, t Target, cs int64, cancel func()) *storer {
	workers := int(max(1, min(4, storeBufferBytes/cs-2)))
	s := &storer{ctx: ctx, t: t, cancel: cancel, free: make(chan []byte, workers+2), jobs: make(chan chunkJob),
		zeros: make([]byte, cs), seen: map[string]bool{}}
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
		sum, stored, err := s.hashAndPut(j)
		s.mu.Lock()
		s.results[j.index] = sum
		switch {
		case err != nil && s.err == nil:
			s.err = err
			s.cancel()
		case err != nil, sum == "":
		case stored:
			s.stored += int64(len(j.data))
		default:
			s.deduped += int64(len(j.data))
		}
		s.mu.Unlock()
		s.free <- j.buf
	}
}

// hashAndPut hashes j and stores it unless it is zeros or known.
func (s *storer) hashAndPut(j chunkJob) (sum string, stored bool, err error) {
	if bytes.Equal(j.data, s.zeros[:len(j.data)]) {
		return "", false, nil
	}
	h := sha256.Sum256(j.data)
	sum = hex.EncodeToString(h[:])
	s.mu.Lock()
	known := s.seen[sum]
	s.seen[sum] = true
	s.mu.Unlock()
	if known {
		return sum, false, nil
	}
	stored, err = s.put(sum, j.data)
	return sum, stored, err
}

// put stores data as the chunk sum unless the target has it; it reports
// whether it stored it.
func (s *storer) put(sum string, data []byte) (bool, error) {
	key := ChunkKey(sum)
	size, err := s.t.Stat(s.ctx, key)
	if err == nil && size == int64(len(data)) {
		return false, nil // there already
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if err := s.t.Put(s.ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
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

// store queues data (in buf) to be hashed and put; it returns the index
// of its result.
func (s *storer) store(buf, data []byte) (int, error) {
	s.mu.Lock()
	k := len(s.results)
	s.results = append(s.results, "")
	s.mu.Unlock()
	select {
	case s.jobs <- chunkJob{index: k, buf: buf, data: data}:
		return k, nil
	case <-s.ctx.Done():
		s.free <- buf
		return k, s.ctx.Err()
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
