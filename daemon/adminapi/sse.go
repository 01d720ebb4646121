package adminapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/corralhq/corral/internal/errcode"
	"github.com/corralhq/corral/internal/httpserve"
	"github.com/corralhq/corral/model"
)

// sseKeepAlive is how long a stream may stay silent: a comment line then
// tells proxies and browsers the stream is alive.
const sseKeepAlive = 15 * time.Second

// wantsStream says whether a request asks for Server-Sent Events.
func wantsStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// streamEvents answers GET /v1/events as Server-Sent Events: every event
// after ?after= (or the Last-Event-ID a reconnecting browser sends) as
// "id: SEQ", "event: KIND" and "data: JSON", until the client goes away.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	after, err := intParam(r, "after", 0)
	if id := r.Header.Get("Last-Event-ID"); err == nil && id != "" {
		after, err = strconv.ParseInt(id, 10, 64)
		if err != nil || after < 0 {
			err = fmt.Errorf("Last-Event-ID %q: want a non-negative number: %w", id, model.ErrInvalid)
		}
	}
	flusher, ok := w.(http.Flusher)
	if err == nil && !ok {
		err = fmt.Errorf("this connection cannot stream: %w", model.ErrInvalid)
	}
	if err != nil {
		e := errcode.ToAPI(err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(e.Code.Status())
		json.NewEncoder(w).Encode(e)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": corral events\n\n")
	flusher.Flush()
	// The stream ends when the client goes or the server stops.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-httpserve.Stopping(r.Context()):
			cancel()
		case <-ctx.Done():
		}
	}()
	seq := uint64(after)
	for ctx.Err() == nil {
		evs, err := s.b.Events(ctx, seq, 0, sseKeepAlive)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fmt.Fprintf(w, "event: error\ndata: %s\n\n", jsonLine(errcode.ToAPI(err)))
			flusher.Flush()
			return
		}
		if len(evs) == 0 {
			fmt.Fprint(w, ": keep-alive\n\n")
		}
		for _, e := range evs {
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, oneLine(e.Kind), jsonLine(e))
			seq = max(seq, e.Seq)
		}
		flusher.Flush()
	}
}

// jsonLine encodes v on one line (encoding/json escapes newlines in
// strings, so the data field cannot be split).
func jsonLine(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// oneLine keeps a field of the stream on its line.
func oneLine(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }
