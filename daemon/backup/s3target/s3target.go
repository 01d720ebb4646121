// Package s3target is a backup.Target on S3-compatible object storage,
// through minio-go (the only importer of it). Objects live under a prefix
// in one bucket; a PUT is atomic and durable once it returns, so Sync has
// nothing to do.
package s3target

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/corralhq/corral/daemon/backup"
)

// Config says where the objects go.
type Config struct {
	// Endpoint is host:port of the service.
	Endpoint string
	Bucket   string
	// Prefix is prepended to every key ("" or ending in "/").
	Prefix    string
	Region    string
	AccessKey string
	SecretKey string
	// Insecure speaks plain HTTP (a test server on loopback).
	Insecure bool
}

// Target is a backup.Target in a bucket.
type Target struct {
	c      *minio.Client
	bucket string
	prefix string
}

var _ backup.Target = (*Target)(nil)

// New returns a target; it does not contact the service.
func New(cfg Config) (*Target, error) {
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: !cfg.Insecure,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 %s: %w", cfg.Endpoint, err)
	}
	p := cfg.Prefix
	if p != "" && !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return &Target{c: c, bucket: cfg.Bucket, prefix: p}, nil
}

func (t *Target) key(k string) (string, error) {
	if err := backup.ValidateKey(k); err != nil {
		return "", err
	}
	return t.prefix + k, nil
}

// wrap names the bucket and key, and maps a missing object to
// backup.ErrNotFound (credentials never appear in errors minio-go makes).
func (t *Target) wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	r := minio.ToErrorResponse(err)
	if r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound && r.Code != "NoSuchBucket" {
		return fmt.Errorf("s3 bucket %s: %s %s: %w", t.bucket, op, key, backup.ErrNotFound)
	}
	return fmt.Errorf("s3 bucket %s: %s %s: %w", t.bucket, op, key, err)
}

// Stat implements backup.Target.
func (t *Target) Stat(ctx context.Context, key string) (int64, error) {
	k, err := t.key(key)
	if err != nil {
		return 0, err
	}
	info, err := t.c.StatObject(ctx, t.bucket, k, minio.StatObjectOptions{})
	if err != nil {
		return 0, t.wrap("stat", key, err)
	}
	return info.Size, nil
}

// Put implements backup.Target: one PUT of size bytes.
func (t *Target) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	k, err := t.key(key)
	if err != nil {
		return err
	}
	_, err = t.c.PutObject(ctx, t.bucket, k, r, size, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	return t.wrap("put", key, err)
}

// Sync implements backup.Target: a PUT that returned is durable.
func (t *Target) Sync(ctx context.Context) error { return nil }

// Get implements backup.Target.
func (t *Target) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	k, err := t.key(key)
	if err != nil {
		return nil, err
	}
	o, err := t.c.GetObject(ctx, t.bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, t.wrap("get", key, err)
	}
	if _, err := o.Stat(); err != nil { // GetObject is lazy: ask now
		o.Close()
		return nil, t.wrap("get", key, err)
	}
	return o, nil
}

// Delete implements backup.Target. S3 does not say whether the object
// was there: a missing one is deleted without an error.
func (t *Target) Delete(ctx context.Context, key string) error {
	k, err := t.key(key)
	if err != nil {
		return err
	}
	return t.wrap("delete", key, t.c.RemoveObject(ctx, t.bucket, k, minio.RemoveObjectOptions{}))
}

// List implements backup.Target.
func (t *Target) List(ctx context.Context, prefix string) ([]string, error) {
	var out []string
	for o := range t.c.ListObjects(ctx, t.bucket, minio.ListObjectsOptions{Prefix: t.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, t.wrap("list", prefix, o.Err)
		}
		k := strings.TrimPrefix(o.Key, t.prefix)
		if backup.ValidateKey(k) == nil {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Check reaches the service and says whether the bucket is there, so that
// a target is refused when it is added rather than at its first backup.
func (t *Target) Check(ctx context.Context) error {
	ok, err := t.c.BucketExists(ctx, t.bucket)
	if err != nil {
		return fmt.Errorf("s3 bucket %s: %w", t.bucket, err)
	}
	if !ok {
		return fmt.Errorf("s3 bucket %s does not exist: create it first", t.bucket)
	}
	return nil
}
