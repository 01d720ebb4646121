// Package notify fans a "something changed" signal out to any number of
// subscribers without ever blocking the sender: each subscriber has a
// one-slot channel, and signals that arrive while the slot is full coalesce.
package notify

import "sync"

// Hub is a set of subscribers. The zero value is ready to use.
type Hub struct {
	mu   sync.Mutex
	subs map[chan struct{}]struct{}
}

// Subscribe returns a channel that receives after each Signal (coalesced)
// and a function that unsubscribes.
func (h *Hub) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[chan struct{}]struct{}{}
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// Signal wakes every subscriber.
func (h *Hub) Signal() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
