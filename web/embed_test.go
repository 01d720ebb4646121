package web

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The built portal is embedded: / is its page, naming its hashed assets,
// which are served and cached for good; every answer carries the CSP;
// Serves picks exactly the portal's requests.
func TestHandler(t *testing.T) {
	h := Handler()
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w
	}
	page := get("/")
	if page.Code != 200 || !strings.Contains(page.Body.String(), `<div id="app">`) {
		t.Fatalf("/: %d %q", page.Code, page.Body.String())
	}
	if csp := page.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	assets := regexp.MustCompile(`/assets/app-[A-Za-z0-9]+\.(js|css)`).FindAllString(page.Body.String(), -1)
	if len(assets) != 2 {
		t.Fatalf("the page names %v, want a script and a style sheet", assets)
	}
	for _, a := range assets {
		w := get(a)
		if w.Code != 200 || w.Body.Len() == 0 || !strings.Contains(w.Header().Get("Cache-Control"), "immutable") {
			t.Fatalf("%s: %d, %d bytes, %q", a, w.Code, w.Body.Len(), w.Header().Get("Cache-Control"))
		}
	}
	for path, want := range map[string]bool{"/": true, "/assets/x.js": true, "/v1/vms": false, "/v1/openapi.json": false} {
		if got := Serves(httptest.NewRequest(http.MethodGet, path, nil)); got != want {
			t.Errorf("Serves(GET %s) = %v", path, got)
		}
	}
	if Serves(httptest.NewRequest(http.MethodPost, "/", nil)) {
		t.Error("Serves a POST")
	}
}

// dist/ was built from the sources as they are: build.mjs records their
// hash, and this recomputes it (run make portal after changing web/src).
func TestDistIsBuiltFromSources(t *testing.T) {
	names := []string{"build.mjs", "package-lock.json"}
	src, err := os.ReadDir("src")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, f := range src {
		files = append(files, "src/"+f.Name())
	}
	sort.Strings(files)
	sum := sha256.New()
	for _, n := range append(names, files...) {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		sum.Write([]byte(n + "\n"))
		sum.Write(b)
	}
	recorded, err := dist.ReadFile("dist/source.sha256")
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); strings.TrimSpace(string(recorded)) != got {
		t.Fatalf("web/dist was built from other sources (%s, now %s): run make portal", strings.TrimSpace(string(recorded)), got)
	}
}
