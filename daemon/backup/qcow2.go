package backup

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Kind says what a range of a disk layer holds.
type Kind int

const (
	// Unallocated: the layer does not hold the range; it reads from the
	// layer's backing file (or as zeros when there is none).
	Unallocated Kind = iota
	// Zero: the range reads as zeros.
	Zero
	// Data: the layer holds the range's data.
	Data
)

func (k Kind) String() string {
	switch k {
	case Unallocated:
		return "unallocated"
	case Zero:
		return "zero"
	case Data:
		return "data"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Limits on what a qcow2 header may ask for, so that a corrupt or hostile
// image gives an error rather than a huge allocation.
const (
	minClusterBits = 9
	maxClusterBits = 21
	maxL1Bytes     = 32 << 20 // QEMU's QCOW_MAX_L1_SIZE
	maxBackingName = 4096
	maxVirtualSize = 1 << 61
	maxL2Cached    = 64
	maxL2CacheSize = 32 << 20
	rawCluster     = 64 << 10
	qcow2V2Header  = 72
	qcow2V3Header  = 104
)

// Incompatible feature bits of a qcow2 v3 header.
const (
	incompatDirty       = 1 << 0
	incompatCorrupt     = 1 << 1
	incompatDataFile    = 1 << 2
	incompatCompression = 1 << 3
	incompatExtendedL2  = 1 << 4
	incompatKnown       = incompatDirty | incompatCorrupt | incompatDataFile | incompatCompression | incompatExtendedL2
)

// Header extension types.
const (
	extEnd           = 0
	extBackingFormat = 0xe2792aca
)

// Bits of L1 and L2 entries.
const (
	entryOffsetMask = 0x00fffffffffffe00 // bits 9-55
	l2Compressed    = 1 << 62
	l2ZeroFlag      = 1 << 0
)

var qcow2Magic = []byte{'Q', 'F', 'I', 0xfb}

// ErrCorrupt marks an image whose metadata is inconsistent.
var ErrCorrupt = errors.New("corrupt image")

// Image is a read-only disk layer: a qcow2 file or a raw one. It never
// writes to the file. An Image is safe for concurrent use.
type Image struct {
	path     string
	r        io.ReaderAt
	closer   io.Closer
	fileSize int64
	size     int64 // virtual size
	qcow2    bool

	// qcow2 only.
	version       int
	clusterBits   uint
	clusterSize   int64
	l2Bits        uint // log2 of entries per L2 table
	l1            []uint64
	backing       string
	backingFormat string
	csizeShift    uint
	csizeMask     uint64
	coffsetMask   uint64

	cache imageCache
}

// OpenImage opens the image at path for reading. A file starting with the
// qcow2 magic is read as qcow2, any other as raw.
func OpenImage(path string) (*Image, error) {
	return openImageFormat(path, "")
}

// openImageFormat opens path as format ("qcow2", "raw", or "" to probe).
// An overlay's backing format header extension names the format, which
// must be honoured: a raw disk whose guest wrote the qcow2 magic at its
// start is still raw.
func openImageFormat(path, format string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("image %s: not a regular file", path)
	}
	im, err := newImage(f, fi.Size(), path, format)
	if err != nil {
		f.Close()
		return nil, err
	}
	im.closer = f
	return im, nil
}

// newImage reads the image in r, of size bytes; name is for errors.
func newImage(r io.ReaderAt, size int64, name, format string) (*Image, error) {
	im := &Image{path: name, r: r, fileSize: size}
	magic := make([]byte, 4)
	n, err := r.ReadAt(magic, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	isQcow2 := n == 4 && bytes.Equal(magic, qcow2Magic)
	switch format {
	case "":
	case "raw":
		isQcow2 = false
	case "qcow2":
		if !isQcow2 {
			return nil, fmt.Errorf("image %s: not a qcow2 file (no qcow2 magic)", name)
		}
	default:
		return nil, fmt.Errorf("image %s: unsupported format %q", name, format)
	}
	if !isQcow2 {
		im.size = size
		im.clusterSize = rawCluster
		return im, nil
	}
	im.qcow2 = true
	if err := im.readHeader(); err != nil {
		return nil, fmt.Errorf("qcow2 image %s: %w", name, err)
	}
	return im, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// readAtFull reads len(p) bytes at off, which the caller checked lie in
// the file.
func (im *Image) readAtFull(p []byte, off int64) error {
	n, err := im.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at %d: %w", len(p), off, err)
}

// inFile reports whether [off, off+n) lies within the file.
func (im *Image) inFile(off, n int64) bool {
	return off >= 0 && n >= 0 && off <= im.fileSize && n <= im.fileSize-off
}

func (im *Image) readHeader() error {
	if im.fileSize < qcow2V2Header {
		return corrupt("file of %d bytes is shorter than a qcow2 header", im.fileSize)
	}
	h := make([]byte, qcow2V3Header)
	if im.fileSize < qcow2V3Header {
		h = h[:qcow2V2Header]
	}
	if err := im.readAtFull(h, 0); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	be := binary.BigEndian
	im.version = int(be.Uint32(h[4:]))
	backingOff := be.Uint64(h[8:])
	backingLen := be.Uint32(h[16:])
	clusterBits := be.Uint32(h[20:])
	size := be.Uint64(h[24:])
	crypt := be.Uint32(h[32:])
	l1Size := be.Uint32(h[36:])
	l1Off := be.Uint64(h[40:])

	if im.version != 2 && im.version != 3 {
		return fmt.Errorf("unsupported qcow2 version %d", im.version)
	}
	if clusterBits < minClusterBits || clusterBits > maxClusterBits {
		return corrupt("cluster_bits %d outside %d..%d", clusterBits, minClusterBits, maxClusterBits)
	}
	im.clusterBits = uint(clusterBits)
	im.clusterSize = 1 << clusterBits
	im.l2Bits = im.clusterBits - 3
	if crypt != 0 {
		return fmt.Errorf("encrypted images are not supported (crypt_method %d)", crypt)
	}

	headerLen := uint64(qcow2V2Header)
	if im.version == 3 {
		if len(h) < qcow2V3Header {
			return corrupt("file of %d bytes is shorter than a qcow2 v3 header", im.fileSize)
		}
		incompat := be.Uint64(h[72:])
		headerLen = uint64(be.Uint32(h[100:]))
		if headerLen < qcow2V3Header || headerLen > uint64(im.clusterSize) || !im.inFile(0, int64(headerLen)) {
			return corrupt("header_length %d", headerLen)
		}
		switch {
		case incompat&incompatCorrupt != 0:
			return fmt.Errorf("image is marked corrupt (incompatible feature bit 1); check it with qemu-img check")
		case incompat&incompatDataFile != 0:
			return fmt.Errorf("images with an external data file are not supported")
		case incompat&incompatExtendedL2 != 0:
			return fmt.Errorf("images with extended L2 entries are not supported")
		case incompat&^incompatKnown != 0:
			return fmt.Errorf("unknown incompatible features %#x", incompat&^incompatKnown)
		}
		// The dirty bit only says refcounts may be stale, which a reader
		// does not use.
		ctype := byte(0)
		if headerLen > qcow2V3Header {
			b := make([]byte, 1)
			if err := im.readAtFull(b, qcow2V3Header); err != nil {
				return fmt.Errorf("header: %w", err)
			}
			ctype = b[0]
		}
		if incompat&incompatCompression == 0 && ctype != 0 {
			return corrupt("compression type %d without its incompatible feature bit", ctype)
		}
		switch ctype {
		case 0: // zlib (raw deflate)
		case 1:
			return fmt.Errorf("zstd compression type is not supported (only zlib); convert the image with qemu-img convert -o compression_type=zlib")
		default:
			return fmt.Errorf("unknown compression type %d", ctype)
		}
	}

	if size > maxVirtualSize {
		return corrupt("virtual size %d too large", size)
	}
	im.size = int64(size)
	// Bytes one L1 entry maps; at most 2^21 * 2^18 = 2^39.
	perL1 := int64(1) << (im.clusterBits + im.l2Bits)
	need := (im.size + perL1 - 1) / perL1
	if int64(l1Size) < need {
		return corrupt("l1_size %d too small for virtual size %d", l1Size, im.size)
	}
	if uint64(l1Size)*8 > maxL1Bytes {
		return corrupt("l1_size %d over the limit", l1Size)
	}
	// Entries past the virtual size are never used: read only those needed.
	if l1Off%uint64(im.clusterSize) != 0 || l1Off > uint64(im.fileSize) || !im.inFile(int64(l1Off), need*8) {
		return corrupt("L1 table at %d (%d entries) outside the file of %d bytes or unaligned", l1Off, l1Size, im.fileSize)
	}
	if need > 0 {
		buf := make([]byte, need*8)
		if err := im.readAtFull(buf, int64(l1Off)); err != nil {
			return fmt.Errorf("L1 table: %w", err)
		}
		im.l1 = make([]uint64, need)
		for i := range im.l1 {
			im.l1[i] = be.Uint64(buf[i*8:])
		}
	}

	if backingOff != 0 && backingLen != 0 {
		if backingLen > maxBackingName || backingOff > uint64(im.fileSize) || !im.inFile(int64(backingOff), int64(backingLen)) {
			return corrupt("backing file name at %d (%d bytes) outside the file or too long", backingOff, backingLen)
		}
		name := make([]byte, backingLen)
		if err := im.readAtFull(name, int64(backingOff)); err != nil {
			return fmt.Errorf("backing file name: %w", err)
		}
		if bytes.IndexByte(name, 0) >= 0 {
			return corrupt("backing file name contains NUL")
		}
		im.backing = string(name)
	}
	// As in QEMU, the extensions end at the backing file name, if any (old
	// images have no end marker before it), else with the first cluster.
	extEnd := min(im.clusterSize, im.fileSize)
	if backingOff != 0 && backingLen != 0 {
		extEnd = min(extEnd, int64(backingOff))
	}
	if err := im.readExtensions(int64(headerLen), extEnd); err != nil {
		return err
	}

	im.csizeShift = 62 - (im.clusterBits - 8)
	im.csizeMask = 1<<(im.clusterBits-8) - 1
	im.coffsetMask = 1<<im.csizeShift - 1
	im.cache.maxL2 = min(maxL2Cached, maxL2CacheSize/int(im.clusterSize))
	return nil
}

// readExtensions reads the header extensions, from off to at most end;
// only the backing format is used.
func (im *Image) readExtensions(off, end int64) error {
	be := binary.BigEndian
	hdr := make([]byte, 8)
	for off+8 <= end {
		if err := im.readAtFull(hdr, off); err != nil {
			return fmt.Errorf("header extension: %w", err)
		}
		typ, n := be.Uint32(hdr), int64(be.Uint32(hdr[4:]))
		if typ == extEnd {
			return nil
		}
		off += 8
		if n > end-off {
			return corrupt("header extension %#x of %d bytes overruns the extension area (ends at %d)", typ, n, end)
		}
		if typ == extBackingFormat {
			if n > 64 {
				return corrupt("backing format name of %d bytes", n)
			}
			b := make([]byte, n)
			if err := im.readAtFull(b, off); err != nil {
				return fmt.Errorf("backing format: %w", err)
			}
			im.backingFormat = string(bytes.TrimRight(b, "\x00"))
		}
		off += (n + 7) &^ 7
	}
	return nil
}

// Path is the file the image was opened from.
func (im *Image) Path() string { return im.path }

// Format is "qcow2" or "raw".
func (im *Image) Format() string {
	if im.qcow2 {
		return "qcow2"
	}
	return "raw"
}

// Size is the virtual size of the disk, in bytes.
func (im *Image) Size() int64 { return im.size }

// ClusterSize is the qcow2 cluster size; 64 KiB for a raw image.
func (im *Image) ClusterSize() int64 { return im.clusterSize }

// Backing is the backing file name from the qcow2 header, as written there
// (normally an absolute path); "" when there is none, and for raw.
func (im *Image) Backing() string { return im.backing }

// BackingFormat is the backing file's format from the qcow2 header
// extension ("qcow2", "raw"), or "" when the header does not say.
func (im *Image) BackingFormat() string { return im.backingFormat }

// Close closes the file.
func (im *Image) Close() error {
	if im.closer == nil {
		return nil
	}
	return im.closer.Close()
}

// Status tells what the cluster holding byte off holds in this layer, and
// where that cluster ends (at most the virtual size).
func (im *Image) Status(off int64) (kind Kind, runEnd int64, err error) {
	if off < 0 || off >= im.size {
		return 0, 0, fmt.Errorf("image %s: offset %d outside the disk of %d bytes", im.path, off, im.size)
	}
	end := min((off|(im.clusterSize-1))+1, im.size)
	if !im.qcow2 {
		return Data, end, nil
	}
	im.cache.mu.Lock()
	defer im.cache.mu.Unlock()
	m, err := im.lookup(off)
	if err != nil {
		return 0, 0, err
	}
	return m.kind, end, nil
}

// statusRun is Status with runEnd extended over the following clusters of
// the same kind that the same lookup shows: the rest of a raw file, an
// L1 entry without an L2 table, the same kind in the rest of an L2 table.
// Chain walks use it to skip large empty ranges quickly. It looks no
// further than limit (the result may still go past it).
func (im *Image) statusRun(off, limit int64) (Kind, int64, error) {
	if off < 0 || off >= im.size {
		return 0, 0, fmt.Errorf("image %s: offset %d outside the disk of %d bytes", im.path, off, im.size)
	}
	if !im.qcow2 {
		return Data, im.size, nil
	}
	im.cache.mu.Lock()
	defer im.cache.mu.Unlock()
	m, err := im.lookup(off)
	if err != nil {
		return 0, 0, err
	}
	cluster := off >> im.clusterBits
	l2Entries := int64(1) << im.l2Bits
	tableEnd := (cluster | (l2Entries - 1)) + 1
	next := cluster + 1
	if m.table == nil {
		next = tableEnd
	} else {
		for ; next < tableEnd && next<<im.clusterBits < min(im.size, limit); next++ {
			k, err := im.entryKind(m.table[next&(l2Entries-1)], next)
			if err != nil || k != m.kind {
				break
			}
		}
	}
	return m.kind, min(next<<im.clusterBits, im.size), nil
}

// mapping is where a cluster's data is.
type mapping struct {
	kind       Kind
	host       int64 // host offset of a standard cluster, or of compressed data
	compressed bool
	csize      int64    // bytes of compressed data
	table      []uint64 // the L2 table it came from; nil if none
}

// lookup maps the cluster holding virtual offset off. Caller holds the
// cache lock.
func (im *Image) lookup(off int64) (mapping, error) {
	cluster := off >> im.clusterBits
	l1i := cluster >> im.l2Bits
	if l1i >= int64(len(im.l1)) {
		return mapping{}, corrupt("image %s: offset %d beyond the L1 table", im.path, off)
	}
	l2Off := int64(im.l1[l1i] & entryOffsetMask)
	if l2Off == 0 {
		return mapping{kind: Unallocated}, nil
	}
	table, err := im.l2Table(l2Off)
	if err != nil {
		return mapping{}, err
	}
	e := table[cluster&(1<<im.l2Bits-1)]
	m := mapping{table: table}
	m.kind, err = im.entryKind(e, cluster)
	if err != nil || m.kind != Data {
		return m, err
	}
	if e&l2Compressed != 0 {
		m.compressed = true
		m.host = int64(e & im.coffsetMask)
		sectors := int64((e>>im.csizeShift)&im.csizeMask) + 1
		m.csize = sectors*512 - m.host&511
	} else {
		m.host = int64(e & entryOffsetMask)
	}
	return m, nil
}

// entryKind classifies L2 entry e of cluster and checks its offsets.
func (im *Image) entryKind(e uint64, cluster int64) (Kind, error) {
	if e&l2Compressed != 0 {
		host := int64(e & im.coffsetMask)
		if host >= im.fileSize {
			return 0, corrupt("image %s: compressed cluster %d at host offset %d beyond the file of %d bytes", im.path, cluster, host, im.fileSize)
		}
		return Data, nil
	}
	if im.version >= 3 && e&l2ZeroFlag != 0 {
		return Zero, nil
	}
	host := int64(e & entryOffsetMask)
	if host == 0 {
		return Unallocated, nil
	}
	if host&(im.clusterSize-1) != 0 || host >= im.fileSize {
		return 0, corrupt("image %s: cluster %d at host offset %#x unaligned or beyond the file of %d bytes", im.path, cluster, host, im.fileSize)
	}
	return Data, nil
}

// ReadAt reads the layer's own view of the disk at off: its data where it
// has data, zeros elsewhere (zero clusters, and unallocated ones: it does
// not look into the backing file; a Chain does). It reads at most up to the
// virtual size, returning io.EOF when it reads less than len(p).
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("image %s: negative offset %d", im.path, off)
	}
	if off >= im.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > im.size-off {
		p = p[:im.size-off]
	}
	if err := im.read(p, off); err != nil {
		return 0, err
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// read fills p from off, which lies within the disk.
func (im *Image) read(p []byte, off int64) error {
	if !im.qcow2 {
		return im.readHost(p, off)
	}
	// Standard clusters that follow each other in the file are read with
	// one call.
	var pend []byte
	var pendHost int64
	flush := func() error {
		if len(pend) == 0 {
			return nil
		}
		err := im.readHost(pend, pendHost)
		pend = nil
		return err
	}
	for len(p) > 0 {
		inCluster := off & (im.clusterSize - 1)
		n := min(int64(len(p)), im.clusterSize-inCluster)
		im.cache.mu.Lock()
		m, err := im.lookup(off)
		if err == nil && m.compressed {
			err = im.readCompressed(p[:n], m, inCluster)
		}
		im.cache.mu.Unlock()
		if err != nil {
			return err
		}
		switch {
		case m.compressed:
		case m.kind == Data:
			host := m.host + inCluster
			if len(pend) > 0 && pendHost+int64(len(pend)) == host {
				// pend ends where p starts: extend it.
				pend = pend[:len(pend)+int(n)]
			} else {
				if err := flush(); err != nil {
					return err
				}
				pend, pendHost = p[:n], host
			}
		default:
			clear(p[:n])
		}
		if m.kind != Data || m.compressed {
			if err := flush(); err != nil {
				return err
			}
		}
		p, off = p[n:], off+n
	}
	return flush()
}

// readHost reads p at host offset off; what lies past the end of the file
// reads as zeros (a cluster may start in the file and end past it).
func (im *Image) readHost(p []byte, off int64) error {
	n, err := im.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err != nil && err != io.EOF {
		return fmt.Errorf("image %s: read at %d: %w", im.path, off, err)
	}
	clear(p[n:])
	return nil
}

// readCompressed copies bytes from off into its cluster of the compressed
// cluster m into p. Caller holds the cache lock.
func (im *Image) readCompressed(p []byte, m mapping, off int64) error {
	c := &im.cache
	if c.zhost != m.host || c.zdata == nil {
		if c.zdata == nil {
			c.zdata = make([]byte, im.clusterSize)
		}
		c.zhost = -1
		n := min(m.csize, im.fileSize-m.host)
		if int64(cap(c.zin)) < n {
			c.zin = make([]byte, n)
		}
		in := c.zin[:n]
		if err := im.readAtFull(in, m.host); err != nil {
			return fmt.Errorf("image %s: compressed cluster: %w", im.path, err)
		}
		if c.inflate == nil {
			c.inflate = flate.NewReader(bytes.NewReader(in))
		} else if err := c.inflate.(flate.Resetter).Reset(bytes.NewReader(in), nil); err != nil {
			return err
		}
		// As QEMU: the stream must give a whole cluster; what follows
		// it in the last sector is another cluster's.
		if _, err := io.ReadFull(c.inflate, c.zdata); err != nil {
			return corrupt("image %s: compressed cluster at host offset %d (%d bytes): %v", im.path, m.host, n, err)
		}
		c.zhost = m.host
	}
	copy(p, c.zdata[off:])
	return nil
}
