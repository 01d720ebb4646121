package membership

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestForgetDeparted: members dead or gone longer than reconnect_timeout
// are forgotten; alive ones, and recent departures, are kept.
func TestForgetDeparted(t *testing.T) {
	m := New(Config{Name: "self", ReconnectTimeout: time.Hour})
	node := func(name string) *memberlist.Node {
		return &memberlist.Node{Name: name, Addr: net.ParseIP("192.0.2.1"), Port: 7946}
	}
	for i := 0; i < 100; i++ {
		m.setState(node(fmt.Sprintf("ghost%d", i)), Dead)
	}
	m.setState(node("alive"), Alive)
	m.setState(node("recent"), Left)
	m.mu.Lock()
	for name, mem := range m.members {
		if name != "recent" {
			mem.Since = mem.Since.Add(-2 * time.Hour)
		}
	}
	m.mu.Unlock()
	m.forget(time.Now())
	var names []string
	for _, mem := range m.Members() {
		names = append(names, mem.Name)
	}
	if len(names) != 2 {
		t.Fatalf("members after forgetting: %v", names)
	}
	for _, want := range []string{"alive", "recent"} {
		if _, ok := m.Member(want); !ok {
			t.Fatalf("%s forgotten", want)
		}
	}
}
