package adminapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/corralhq/corral/api"
)

// FuzzDecode feeds arbitrary bodies to the admin API's decoder for every
// request type it takes: errors are fine, panics are not, and unknown
// fields are refused.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"name":"v1","vcpus":1,"memory_mib":64,"kernel":"/k","disks":[{"size_gib":1}]}`))
	f.Add([]byte(`{"set":{"a":"b"},"remove":["c"]}`))
	f.Add([]byte(`{"armed":true}`))
	f.Add([]byte(`{"ttl":"1h","description":"x"}`))
	f.Add([]byte(`{"name":"n","vxlan":5,"vlan":0}`))
	f.Add([]byte(`{"unknown":1}`))
	f.Add([]byte(`{"vcpus":1e309}`))
	targets := []func() any{
		func() any { return &api.HostLabelsRequest{} },
		func() any { return &api.HostRestoreRequest{} },
		func() any { return &api.HARequest{} },
		func() any { return &api.JoinTokenCreateRequest{} },
		func() any { return &api.VMMigrateRequest{} },
		func() any { return &api.VMCreateRequest{} },
		func() any { return &api.VMResizeRequest{} },
		func() any { return &api.NetworkCreateRequest{} },
		func() any { return &api.APITokenCreateRequest{} },
		func() any { return &api.ProjectCreateRequest{} },
		func() any { return &api.Quota{} },
		func() any { return &api.CertificateCreateRequest{} },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, target := range targets {
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			v := target()
			if err := decode(r, v); err == nil && bytes.Contains(body, []byte(`"unknown"`)) && bytes.HasPrefix(bytes.TrimSpace(body), []byte(`{"unknown"`)) {
				t.Fatalf("%T accepted an unknown field: %q", v, body)
			}
		}
	})
}
