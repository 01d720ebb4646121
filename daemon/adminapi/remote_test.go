package adminapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/corralhq/corral/model"
)

var goodSecret = model.APITokenPrefix + strings.Repeat("a1", 32)

func TestBearerSecret(t *testing.T) {
	for _, c := range []struct {
		values []string
		ok     bool
	}{
		{[]string{"Bearer " + goodSecret}, true},
		{[]string{"bearer " + goodSecret}, true},
		{[]string{"Bearer  " + goodSecret + " "}, true},
		{nil, false},
		{[]string{"Bearer " + goodSecret, "Bearer " + goodSecret}, false},
		{[]string{"Basic " + goodSecret}, false},
		{[]string{"Bearer"}, false},
		{[]string{"Bearer " + strings.ToUpper(goodSecret)}, false},
		{[]string{"Bearer " + goodSecret + "00"}, false},
	} {
		got, err := bearerSecret(c.values)
		if (err == nil) != c.ok || c.ok && got != goodSecret {
			t.Errorf("%q: %q %v", c.values, got, err)
		}
		if err != nil && !errors.Is(err, model.ErrUnauthenticated) {
			t.Errorf("%q: %v is not ErrUnauthenticated", c.values, err)
		}
	}
}

// FuzzBearerSecret: any header is taken or refused without a panic, a
// refusal never quotes what was sent, and what is taken is a secret's form.
func FuzzBearerSecret(f *testing.F) {
	f.Add("Bearer " + goodSecret)
	f.Add("Bearer corral_")
	f.Add("Basic dXNlcjpwYXNz")
	f.Add("\x00Bearer \xff")
	f.Fuzz(func(t *testing.T, h string) {
		got, err := bearerSecret([]string{h})
		if err != nil {
			if len(h) > 8 && strings.Contains(err.Error(), h) {
				t.Fatalf("the refusal quotes the header: %v", err)
			}
			return
		}
		if !model.ValidAPISecret(got) {
			t.Fatalf("took %q", got)
		}
	})
}
