package testutil

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// VersityGWVersion is the S3 server tests run (versitygw, Apache 2.0: an
// S3 gateway over a POSIX directory), built from the Go module proxy.
const VersityGWVersion = "v1.8.0"

var buildGW sync.Mutex

// VersityGW returns the path of the versitygw binary, building it into
// the user's cache the first time (a few minutes; needs the module proxy).
func VersityGW(t testing.TB) string {
	t.Helper()
	buildGW.Lock()
	defer buildGW.Unlock()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "corral-test", "versitygw-"+VersityGWVersion)
	exe := filepath.Join(bin, "versitygw")
	if _, err := os.Stat(exe); err == nil {
		return exe
	}
	start := time.Now()
	cmd := exec.Command("go", "install", "github.com/versity/versitygw/cmd/versitygw@"+VersityGWVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build versitygw %s: %v\n%s", VersityGWVersion, err, tail(string(out), 2000))
	}
	t.Logf("built versitygw %s in %v", VersityGWVersion, time.Since(start).Round(time.Second))
	return exe
}

// S3Server is a versitygw serving a directory over S3.
type S3Server struct {
	Endpoint             string // host:port
	AccessKey, SecretKey string
	Dir                  string // its buckets are its directories
	stop                 func()
}

// Stop kills the server (a target that becomes unreachable).
func (s S3Server) Stop() { s.stop() }

// StartS3 runs versitygw on a free port of ip (loopback) over a new
// directory until the test ends.
func StartS3(t testing.TB, ip string) S3Server {
	t.Helper()
	exe := VersityGW(t)
	s := S3Server{AccessKey: "corraltest", SecretKey: "corral-test-secret-key", Dir: t.TempDir()}
	port := FreePort(t, ip)
	s.Endpoint = net.JoinHostPort(ip, strconv.Itoa(port))
	cmd := exec.Command(exe, "--access", s.AccessKey, "--secret", s.SecretKey, "--port", s.Endpoint, "posix", s.Dir)
	cmd.Stdout, cmd.Stderr = Writer(t), Writer(t)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(s.stop)
	Eventually(t, 30*time.Second, func() error {
		c, err := net.DialTimeout("tcp", s.Endpoint, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return s
}
