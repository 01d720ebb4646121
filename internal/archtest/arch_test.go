package archtest

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/corralhq/corral"

type pkg struct {
	ImportPath string
	Dir        string
	Doc        string
	Imports    []string
	Deps       []string
	GoFiles    []string
	Standard   bool
}

func listPackages(t *testing.T, patterns ...string) []pkg {
	t.Helper()
	args := append([]string{"list", "-json"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// owners says which package alone may import each third-party library.
var owners = map[string]string{
	"github.com/digitalocean/go-libvirt": module + "/daemon/hypervisor/libvirt",
	"libvirt.org/go/libvirtxml":          module + "/daemon/hypervisor/libvirt",
	"github.com/vishvananda/netlink":     module + "/netsetup",
	"github.com/vishvananda/netns":       module + "/netsetup",
	"github.com/shirou/gopsutil/v4":      module + "/hwmon",
	"github.com/hashicorp/memberlist":    module + "/daemon/membership",
	"github.com/hashicorp/raft":          module + "/raftstore",
	"github.com/hashicorp/raft-wal":      module + "/raftstore",
	"github.com/coder/websocket":         module + "/internal/wsconsole",
	"github.com/minio/minio-go/v7":       module + "/daemon/backup/s3target",
}

// clientSide are the libraries of protocols both ends of which corral
// speaks: corralctl may link them (through their owner).
var clientSide = map[string]bool{"github.com/coder/websocket": true}

func ownerOf(imp string) (lib, owner string) {
	for lib, owner := range owners {
		if imp == lib || strings.HasPrefix(imp, lib+"/") {
			return lib, owner
		}
	}
	return "", ""
}

func TestEachLibraryHasOneImporter(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		for _, imp := range p.Imports {
			lib, owner := ownerOf(imp)
			if lib != "" && p.ImportPath != owner && !strings.HasPrefix(p.ImportPath, owner+"/") {
				t.Errorf("%s imports %s; only %s may", p.ImportPath, imp, owner)
			}
		}
	}
}

func TestCorralctlLinksNoDaemonLibraries(t *testing.T) {
	for _, p := range listPackages(t, "./cmd/corralctl") {
		for _, dep := range p.Deps {
			if lib, _ := ownerOf(dep); lib != "" && !clientSide[lib] {
				t.Errorf("corralctl links %s", dep)
			}
			if strings.HasPrefix(dep, module+"/daemon") || strings.HasPrefix(dep, module+"/raftstore") {
				t.Errorf("corralctl links daemon code %s", dep)
			}
		}
	}
}

// The shipped binaries link no testbed code: the lab, the chaos and soak
// runners and test helpers run only on a developer's machine or in CI.
func TestShippedBinariesLinkNoTestbed(t *testing.T) {
	testbed := []string{"/internal/lab", "/internal/chaos", "/internal/soak", "/internal/testutil"}
	for _, p := range listPackages(t, "./cmd/corrald", "./cmd/corralctl", "./cmd/corral-fencer") {
		for _, dep := range append([]string{p.ImportPath}, p.Deps...) {
			for _, tb := range testbed {
				if dep == module+tb || strings.HasPrefix(dep, module+tb+"/") {
					t.Errorf("%s links %s", p.ImportPath, dep)
				}
			}
		}
	}
}

// The fencer must stay small and must not wait on anything that can be
// slow: the standard library, golang.org/x/sys and internal/guestproc only
// (no libvirt client, no Raft, no gossip, no daemon code).
func TestFencerIsSmall(t *testing.T) {
	std := map[string]bool{}
	for _, p := range listPackages(t, "std") {
		std[p.ImportPath] = true
	}
	allowed := func(dep string) bool {
		return std[dep] || strings.HasPrefix(dep, "golang.org/x/sys/") || strings.HasPrefix(dep, "vendor/") ||
			dep == module+"/fencer" || dep == module+"/internal/guestproc" || dep == module+"/internal/version"
	}
	for _, p := range listPackages(t, "./cmd/corral-fencer") {
		for _, dep := range p.Deps {
			if !allowed(dep) {
				t.Errorf("corral-fencer links %s", dep)
			}
		}
	}
}

// The Raft log vocabulary is the standard library and model only, and the
// controller, which writes commands, does not link Raft.
func TestRaftLogVocabularyLinksNoRaft(t *testing.T) {
	std := map[string]bool{}
	for _, p := range listPackages(t, "std") {
		std[p.ImportPath] = true
	}
	for _, p := range listPackages(t, "./raftlog") {
		for _, imp := range p.Imports {
			if !std[imp] && imp != module+"/model" {
				t.Errorf("raftlog imports %s; it uses the standard library and model only", imp)
			}
		}
	}
	for _, p := range listPackages(t, "./daemon/controller") {
		for _, dep := range p.Deps {
			if lib, _ := ownerOf(dep); lib == "github.com/hashicorp/raft" || dep == module+"/raftstore" {
				t.Errorf("daemon/controller links %s", dep)
			}
		}
	}
}

func TestAPIIsStdlibOnly(t *testing.T) {
	std := map[string]bool{}
	for _, p := range listPackages(t, "std") {
		std[p.ImportPath] = true
	}
	for _, p := range listPackages(t, "./api/...") {
		for _, imp := range p.Imports {
			if !std[imp] && !strings.HasPrefix(imp, module+"/api") {
				t.Errorf("%s imports %s; api packages use the standard library only", p.ImportPath, imp)
			}
		}
	}
}

// Pure packages: no I/O, no goroutines, no clock.
func TestPurePackages(t *testing.T) {
	forbidden := []string{"os", "os/exec", "net/http", "io/fs", "syscall", "log", "log/slog", "math/rand", "math/rand/v2", "crypto/rand"}
	for _, p := range listPackages(t, "./model/...", "./daemon/placement/...") {
		for _, imp := range p.Imports {
			for _, f := range forbidden {
				if imp == f {
					t.Errorf("%s imports %s; it must stay pure", p.ImportPath, imp)
				}
			}
			if strings.HasPrefix(imp, module) && imp != module+"/model" {
				t.Errorf("%s imports %s; pure packages import only model", p.ImportPath, imp)
			}
		}
		for _, f := range p.GoFiles {
			src, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			for _, bad := range []string{"time.Now(", "time.Since(", "time.After(", "time.Sleep(", "go func"} {
				if bytes.Contains(src, []byte(bad)) {
					t.Errorf("%s/%s uses %s; pure packages take time as a parameter", p.ImportPath, f, bad)
				}
			}
		}
	}
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t, "./...") {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", p.ImportPath)
		}
	}
}
