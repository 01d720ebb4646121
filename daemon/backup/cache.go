package backup

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// imageCache holds an image's recently used L2 tables (least recently used
// goes first) and its last decompressed cluster.
type imageCache struct {
	mu    sync.Mutex
	maxL2 int
	tick  uint64
	l2    map[int64]*l2Entry

	zhost   int64 // host offset of the cluster in zdata
	zdata   []byte
	zin     []byte
	inflate io.ReadCloser
}

type l2Entry struct {
	table []uint64
	used  uint64
}

// l2Table returns the L2 table at host offset off. Caller holds the lock.
func (im *Image) l2Table(off int64) ([]uint64, error) {
	c := &im.cache
	c.tick++
	if e, ok := c.l2[off]; ok {
		e.used = c.tick
		return e.table, nil
	}
	if off&(im.clusterSize-1) != 0 || !im.inFile(off, im.clusterSize) {
		return nil, corrupt("image %s: L2 table at %#x unaligned or beyond the file of %d bytes", im.path, off, im.fileSize)
	}
	buf := make([]byte, im.clusterSize)
	if err := im.readAtFull(buf, off); err != nil {
		return nil, fmt.Errorf("image %s: L2 table: %w", im.path, err)
	}
	table := make([]uint64, im.clusterSize/8)
	for i := range table {
		table[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	if c.l2 == nil {
		c.l2 = make(map[int64]*l2Entry)
	}
	if len(c.l2) >= max(c.maxL2, 1) {
		var oldest int64
		var used uint64
		first := true
		for k, e := range c.l2 {
			if first || e.used < used {
				oldest, used, first = k, e.used, false
			}
		}
		delete(c.l2, oldest)
	}
	c.l2[off] = &l2Entry{table: table, used: c.tick}
	return table, nil
}
