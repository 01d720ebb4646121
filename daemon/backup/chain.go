package backup

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MaxChainDepth bounds how many layers a chain may have.
const MaxChainDepth = 128

// Chain is a stack of disk layers read as one disk: a qcow2 file, its
// backing file, that one's backing file, and so on. Layers[0] is the top.
type Chain struct {
	Layers []*Image
	size   int64
}

// Extent is a run of a chain's virtual disk whose bytes all have the same
// Kind.
type Extent struct {
	Off, Len int64
	Kind     Kind
}

// OpenChain opens top and the backing files under it. With stopAt != "",
// the walk stops before the file at path stopAt, which it must meet: the
// chain then holds only the layers above stopAt (what changed since a
// backup read stopAt). A relative backing file name is taken relative to
// the directory of the file naming it, as QEMU does.
func OpenChain(top, stopAt string) (*Chain, error) {
	var stopInfo os.FileInfo
	if stopAt != "" {
		fi, err := os.Stat(stopAt)
		if err != nil {
			return nil, fmt.Errorf("chain of %s: stop layer: %w", top, err)
		}
		stopInfo = fi
	}
	c := &Chain{}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	var seen []os.FileInfo
	path, format := top, ""
	for {
		if stopAt != "" && isFile(path, stopAt, stopInfo) {
			if len(c.Layers) == 0 {
				return nil, fmt.Errorf("chain of %s: the top is the stop layer %s; nothing to read", top, stopAt)
			}
			break
		}
		if len(c.Layers) == MaxChainDepth {
			return nil, fmt.Errorf("chain of %s: more than %d layers", top, MaxChainDepth)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("chain of %s: layer %d: %w", top, len(c.Layers), err)
		}
		for _, s := range seen {
			if os.SameFile(s, fi) {
				return nil, fmt.Errorf("chain of %s: %s appears twice (the chain loops)", top, path)
			}
		}
		seen = append(seen, fi)
		im, err := openImageFormat(path, format)
		if err != nil {
			return nil, fmt.Errorf("chain of %s: %w", top, err)
		}
		c.Layers = append(c.Layers, im)
		next := im.Backing()
		if next == "" {
			if stopAt != "" {
				return nil, fmt.Errorf("chain of %s: stop layer %s is not in the chain", top, stopAt)
			}
			break
		}
		if strings.HasPrefix(next, "json:") || strings.ContainsRune(next, 0) {
			return nil, fmt.Errorf("chain of %s: %s: backing file %q is not a plain file name", top, path, next)
		}
		if !filepath.IsAbs(next) {
			next = filepath.Join(filepath.Dir(path), next)
		}
		path, format = filepath.Clean(next), im.BackingFormat()
	}
	c.size = c.Layers[0].Size()
	ok = true
	return c, nil
}

// isFile reports whether path is stopAt: the same name, or the same file.
func isFile(path, stopAt string, stopInfo os.FileInfo) bool {
	if filepath.Clean(path) == filepath.Clean(stopAt) {
		return true
	}
	fi, err := os.Stat(path)
	return err == nil && os.SameFile(fi, stopInfo)
}

// Close closes the layers.
func (c *Chain) Close() error {
	var errs []error
	for _, l := range c.Layers {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// Size is the virtual size of the disk: the top layer's.
func (c *Chain) Size() int64 { return c.size }

// status tells which layer gives the bytes at off (-1 for none) and how
// far that holds, looking no further than limit.
func (c *Chain) status(off, limit int64) (kind Kind, layer int, end int64, err error) {
	end = min(c.size, limit)
	for i, l := range c.Layers {
		if off >= l.Size() {
			// Past the end of a backing file reads as zeros; the layers
			// under it are not consulted (as in QEMU).
			return Zero, i, end, nil
		}
		k, e, err := l.statusRun(off, end)
		if err != nil {
			return 0, 0, 0, err
		}
		end = min(end, e)
		if k != Unallocated {
			return k, i, end, nil
		}
	}
	return Unallocated, -1, end, nil
}

// Extents calls fn for each maximal run of the disk, in order: Data where
// the topmost layer allocating the run has data, Zero where it reads as
// zeros, Unallocated where no layer of the chain allocates it (for a chain
// down to a base without backing file, that reads as zeros too; the caller
// decides). Boundaries fall on cluster boundaries of the layers. An error
// from fn stops the walk and is returned.
func (c *Chain) Extents(fn func(e Extent) error) error {
	var cur Extent
	for off := int64(0); off < c.size; {
		k, _, end, err := c.status(off, c.size)
		if err != nil {
			return err
		}
		if cur.Len > 0 && cur.Kind == k {
			cur.Len += end - off
		} else {
			if cur.Len > 0 {
				if err := fn(cur); err != nil {
					return err
				}
			}
			cur = Extent{Off: off, Len: end - off, Kind: k}
		}
		off = end
	}
	if cur.Len > 0 {
		return fn(cur)
	}
	return nil
}

// ReadAt reads the disk as the chain shows it: each byte from the topmost
// layer allocating it, zeros where none does. It returns io.EOF if it
// reads less than len(p) (past the virtual size).
func (c *Chain) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("chain: negative offset %d", off)
	}
	if off >= c.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > c.size-off {
		p = p[:c.size-off]
	}
	for done := 0; done < len(p); {
		pos := off + int64(done)
		k, layer, end, err := c.status(pos, off+int64(len(p)))
		if err != nil {
			return done, err
		}
		n := int(min(end-pos, int64(len(p)-done)))
		if k == Data {
			if err := c.Layers[layer].read(p[done:done+n], pos); err != nil {
				return done, err
			}
		} else {
			clear(p[done : done+n])
		}
		done += n
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}
