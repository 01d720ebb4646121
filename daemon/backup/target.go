package backup

import (
	"golang.org/x/sys/unix"

	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Target stores a backup's objects under slash-separated keys.
type Target interface {
	// Stat returns the size of the object key; ErrNotFound if there is
	// none.
	Stat(ctx context.Context, key string) (size int64, err error)
	// Put stores size bytes from r as key, replacing any object there.
	// It is atomic: readers never see a partial object. It may be durable
	// only after Sync.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Sync makes every object Put so far durable (PutManifest calls it
	// before and after it stores a manifest).
	Sync(ctx context.Context) error
	// Get opens the object key; ErrNotFound if there is none.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes the object key; ErrNotFound if there is none.
	Delete(ctx context.Context, key string) error
	// List returns the keys starting with prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

var (
	// ErrNotFound: the target has no such object.
	ErrNotFound = errors.New("not found")
	// ErrNoSpace: the target is full (or over its quota).
	ErrNoSpace = errors.New("no space left on the backup target")
)

// maxKey bounds a key's length.
const maxKey = 1024

// ValidateKey checks an object key: slash-separated, relative, of
// a-z 0-9 . _ - and /, without empty, "." or ".." elements, and with no
// element starting with "." (those names are a target's temporary files).
func ValidateKey(key string) error {
	if key == "" || len(key) > maxKey {
		return fmt.Errorf("object key %q: 1 to %d characters", key, maxKey)
	}
	if !validChars(key, true) {
		return fmt.Errorf("object key %q: only a-z, 0-9, '.', '_', '-' and '/'", key)
	}
	for _, el := range strings.Split(key, "/") {
		if el == "" || el[0] == '.' {
			return fmt.Errorf("object key %q: empty element or one starting with '.'", key)
		}
	}
	return nil
}

func validChars(s string, slash bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || slash && c == '/') {
			return false
		}
	}
	return true
}

// DirTarget is a Target in a directory (local disk or NFS): key a/b is the
// file Root/a/b.
type DirTarget struct {
	Root string
}

var _ Target = DirTarget{}

func (d DirTarget) path(key string) (string, error) {
	if d.Root == "" {
		return "", errors.New("backup target: no directory")
	}
	if err := ValidateKey(key); err != nil {
		return "", fmt.Errorf("backup target %s: %w", d.Root, err)
	}
	return filepath.Join(d.Root, filepath.FromSlash(key)), nil
}

// fsError maps err about key to ErrNotFound or ErrNoSpace where it is one.
func (d DirTarget) fsError(op, key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("backup target %s: %s %s: %w", d.Root, op, key, ErrNotFound)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("backup target %s: %s %s: %w (%v)", d.Root, op, key, ErrNoSpace, err)
	}
	return fmt.Errorf("backup target %s: %s %s: %w", d.Root, op, key, err)
}

// Stat implements Target.
func (d DirTarget) Stat(ctx context.Context, key string) (int64, error) {
	p, err := d.path(key)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("backup target %s: %s: %w", d.Root, key, ErrNotFound)
	case err != nil:
		return 0, d.fsError("stat", key, err)
	case !fi.Mode().IsRegular():
		return 0, fmt.Errorf("backup target %s: %s is not a regular file", d.Root, key)
	}
	return fi.Size(), nil
}

// Put implements Target: it writes a temporary file in the object's
// directory and renames it into place. It does not sync: Sync (one
// syncfs of the whole target) does, before a manifest names the object;
// a chunk a crash left short is taken for missing by its size and put
// again.
func (d DirTarget) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := d.mkdirs(dir); err != nil {
		return d.fsError("put", key, err)
	}
	f, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return d.fsError("put", key, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return d.fsError("put", key, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("backup target %s: put %s: got %d bytes, want %d", d.Root, key, n, size)
	}
	if err := f.Close(); err != nil {
		return d.fsError("put", key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return d.fsError("put", key, err)
	}
	return nil
}

// Sync implements Target: one syncfs(2) of the file system under Root.
func (d DirTarget) Sync(ctx context.Context) error {
	f, err := os.Open(d.Root)
	if err != nil {
		return d.fsError("sync", "", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return d.fsError("sync", "", err)
	}
	return nil
}

// mkdirs creates dir and its missing parents under Root, syncing each
// parent that got a new entry.
func (d DirTarget) mkdirs(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir && dir != filepath.Clean(d.Root) {
		if err := d.mkdirs(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// validPrefix checks a List prefix: the start of a valid key (or "").
func validPrefix(prefix string) bool {
	if len(prefix) > maxKey || !validChars(prefix, true) {
		return false
	}
	els := strings.Split(prefix, "/")
	for i, el := range els {
		if el == "" && i < len(els)-1 || el != "" && el[0] == '.' {
			return false
		}
	}
	return true
}

// Get implements Target.
func (d DirTarget) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, d.fsError("get", key, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("backup target %s: get %s: not a regular file", d.Root, key)
	}
	return f, nil
}

// Delete implements Target.
func (d DirTarget) Delete(ctx context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return d.fsError("delete", key, err)
	}
	return nil
}

// List implements Target. Temporary files are not listed.
func (d DirTarget) List(ctx context.Context, prefix string) ([]string, error) {
	if d.Root == "" {
		return nil, errors.New("backup target: no directory")
	}
	if !validPrefix(prefix) {
		return nil, fmt.Errorf("backup target %s: bad key prefix %q", d.Root, prefix)
	}
	// Walk only the directory the prefix names.
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i]
	}
	var keys []string
	walkRoot := filepath.Join(d.Root, filepath.FromSlash(base))
	err := filepath.WalkDir(walkRoot, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(de.Name(), ".") {
			if de.IsDir() && p != walkRoot {
				return fs.SkipDir
			}
			return nil
		}
		if !de.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(d.Root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup target %s: list %q: %w", d.Root, prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}
