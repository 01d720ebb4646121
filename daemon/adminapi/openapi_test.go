package adminapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/corralhq/corral/api"
)

// The served document is valid OpenAPI 3, names every route the server
// serves with the method and pattern the server routes it by, and nothing
// else; answers conform to it.
func TestOpenAPIDescribesExactlyTheRoutes(t *testing.T) {
	b := &fakeBackend{hosts: map[string]api.Host{"h1": {Name: "h1", Mode: "active", RegisteredAt: time.Now()}}}
	s := New(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/openapi.json", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /v1/openapi.json: %d %s", rec.Code, rec.Body)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("invalid OpenAPI document: %v", err)
	}

	// Every operation in the document is served under exactly its pattern.
	mux := s.Handler().(*http.ServeMux)
	described := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			pattern := method + " " + path
			described[pattern] = true
			req := httptest.NewRequest(method, pathParam.ReplaceAllString(path, "x1"), nil)
			if _, got := mux.Handler(req); got != pattern {
				t.Errorf("document has %s; the server routes it to %q", pattern, got)
			}
		}
	}
	// Every served route is in the document.
	for _, rt := range append(s.routes(), openAPIRoute) {
		if !described[rt.pattern] {
			t.Errorf("route %s is not in the document", rt.pattern)
		}
		delete(described, rt.pattern)
	}
	for p := range described {
		t.Errorf("document names %s, which no route serves", p)
	}

	// Answers conform to their schemas.
	for _, path := range []string{"/v1/status", "/v1/hosts", "/v1/hosts/h1"} {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		tmpl := path
		if strings.HasPrefix(path, "/v1/hosts/") {
			tmpl = "/v1/hosts/{name}"
		}
		resp := doc.Paths.Find(tmpl).Get.Responses.Status(rec.Code)
		if resp == nil {
			t.Fatalf("%s answered %d, which the document does not describe", path, rec.Code)
		}
		if err := resp.Value.Content.Get("application/json").Schema.Value.VisitJSON(v); err != nil {
			t.Errorf("%s: answer does not match its schema: %v", path, err)
		}
	}
	// An error answer matches the Error schema.
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/hosts/nope", nil))
	var e any
	json.Unmarshal(rec.Body.Bytes(), &e)
	if err := doc.Components.Schemas["Error"].Value.VisitJSON(e); err != nil || rec.Code != http.StatusNotFound {
		t.Errorf("error answer %d %s: %v", rec.Code, rec.Body, err)
	}
}

func TestOperationID(t *testing.T) {
	for in, want := range map[string]string{
		"POST /v1/vms/{name}/start":          "postVmsNameStart",
		"POST /v1/cluster/gossip-key/rotate": "postClusterGossipKeyRotate",
		"GET /v1/openapi.json":               "getOpenapi.json",
	} {
		m, p, _ := strings.Cut(in, " ")
		if got := operationID(m, p); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}
