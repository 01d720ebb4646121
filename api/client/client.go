// Package client is the Go client of corral's admin API over the daemon's
// Unix socket. corralctl and corral-lab use it. Every call takes a context
// first; the zero Client talks to DefaultSocket. Failed calls return
// *api.Error, so callers can use errors.Is(err, api.ErrNotFound).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/corralhq/corral/api"
)

// DefaultSocket is where corrald listens unless configured otherwise.
const DefaultSocket = "/run/corral/corral.sock"

// Client talks to one corrald. The zero value is ready to use.
type Client struct {
	// Socket is the path of the admin socket; empty means DefaultSocket.
	Socket string

	once sync.Once
	hc   *http.Client
}

// New returns a client for the socket at path.
func New(path string) *Client { return &Client{Socket: path} }

func (c *Client) socket() string {
	if c.Socket == "" {
		return DefaultSocket
	}
	return c.Socket
}

func (c *Client) http() *http.Client {
	c.once.Do(func() {
		path := c.socket()
		c.hc = &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
			// A client that is dropped (a program making one per call)
			// must not hold its connection, and the daemon's, for good.
			IdleConnTimeout: 30 * time.Second,
		}}
	})
	return c.hc
}

// Do sends a request with in as the JSON body (nil for none; an io.Reader
// is sent as it is) and decodes the response into out (nil to discard).
// A request refused by the rate limit (429) is sent again after the
// Retry-After the daemon names, up to 5 times while ctx lasts, unless its
// body was a stream.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var stream io.Reader
	var data []byte
	if r, ok := in.(io.Reader); ok {
		stream = r
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		data = b
	}
	for attempt := 0; ; attempt++ {
		body := stream
		if stream == nil && data != nil {
			body = bytes.NewReader(data)
		}
		req, err := http.NewRequestWithContext(ctx, method, "http://corrald"+path, body)
		if err != nil {
			return err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http().Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("corrald at %s: %v", c.socket(), ctx.Err())}
			}
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err
			}
			return &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("cannot reach corrald at %s (is it running?): %v", c.socket(), err)}
		}
		if wait, ok := retryAfter(resp); ok && stream == nil && attempt < 5 {
			resp.Body.Close()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return &api.Error{Code: api.CodeRateLimited, Message: fmt.Sprintf("corrald at %s: rate limited: %v", c.socket(), ctx.Err())}
			}
		}
		defer resp.Body.Close()
		return decodeResponse(resp, out)
	}
}

// retryAfter says how long a 429 answer asks to wait (at most 10 s).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp.StatusCode != http.StatusTooManyRequests {
		return 0, false
	}
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || secs < 0 || secs > 10 {
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}

func decodeResponse(resp *http.Response, out any) error {
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Code == "" {
			return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("corrald answered %s: %s", resp.Status, bytes.TrimSpace(data))}
		}
		return &e
	}
	if out == nil {
		_, err := io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// Status returns this host's view of the cluster.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Hosts lists every host.
func (c *Client) Hosts(ctx context.Context) ([]api.Host, error) {
	var hs []api.Host
	err := c.Do(ctx, http.MethodGet, "/v1/hosts", nil, &hs)
	return hs, err
}

// Host returns one host.
func (c *Client) Host(ctx context.Context, name string) (api.Host, error) {
	var h api.Host
	err := c.Do(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(name), nil, &h)
	return h, err
}

// SetHostLabels sets and removes labels of a host.
func (c *Client) SetHostLabels(ctx context.Context, name string, req api.HostLabelsRequest) (api.Host, error) {
	var h api.Host
	err := c.Do(ctx, http.MethodPut, "/v1/hosts/"+url.PathEscape(name)+"/labels", req, &h)
	return h, err
}

// DrainHost puts a host in maintenance and live-migrates its VMs away; it
// returns at once (follow progress with VMs).
func (c *Client) DrainHost(ctx context.Context, name string) (api.Host, error) {
	var h api.Host
	err := c.Do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/drain", nil, &h)
	return h, err
}

// RemoveHost forgets a stopped, empty host and revokes its certificate.
// With force, the VMs of a dead (fenced) host move to other hosts, stopped.
func (c *Client) RemoveHost(ctx context.Context, name string, force bool) error {
	path := "/v1/hosts/" + url.PathEscape(name)
	if force {
		path += "?force=true"
	}
	return c.Do(ctx, http.MethodDelete, path, nil, nil)
}

// RestoreHost returns a host to service; with failback its former VMs
// migrate back.
func (c *Client) RestoreHost(ctx context.Context, name string, failback bool) (api.Host, error) {
	var h api.Host
	err := c.Do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(name)+"/restore", api.HostRestoreRequest{Failback: failback}, &h)
	return h, err
}

// SetHA arms or disarms fencing and recovery cluster-wide.
func (c *Client) SetHA(ctx context.Context, armed bool) (api.Status, error) {
	var s api.Status
	err := c.Do(ctx, http.MethodPut, "/v1/cluster/ha", api.HARequest{Armed: armed}, &s)
	return s, err
}

// JoinTokens lists the cluster's join tokens.
func (c *Client) JoinTokens(ctx context.Context) ([]api.JoinToken, error) {
	var out []api.JoinToken
	err := c.Do(ctx, http.MethodGet, "/v1/cluster/tokens", nil, &out)
	return out, err
}

// CreateJoinToken makes a join token for one or more new hosts.
func (c *Client) CreateJoinToken(ctx context.Context, req api.JoinTokenCreateRequest) (api.JoinTokenCreated, error) {
	var out api.JoinTokenCreated
	err := c.Do(ctx, http.MethodPost, "/v1/cluster/tokens", req, &out)
	return out, err
}

// RevokeJoinToken makes a join token admit no more hosts.
func (c *Client) RevokeJoinToken(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/cluster/tokens/"+url.PathEscape(id), nil, nil)
}

// RotateGossipKey replaces the cluster's gossip key on every live host.
func (c *Client) RotateGossipKey(ctx context.Context) (api.GossipKeyRotation, error) {
	var out api.GossipKeyRotation
	err := c.Do(ctx, http.MethodPost, "/v1/cluster/gossip-key/rotate", nil, &out)
	return out, err
}

// Networks lists networks.
func (c *Client) Networks(ctx context.Context) ([]api.Network, error) {
	var out []api.Network
	err := c.Do(ctx, http.MethodGet, "/v1/networks", nil, &out)
	return out, err
}

// CreateNetwork creates a network.
func (c *Client) CreateNetwork(ctx context.Context, req api.NetworkCreateRequest) (api.Network, error) {
	var out api.Network
	err := c.Do(ctx, http.MethodPost, "/v1/networks", req, &out)
	return out, err
}

// DeleteNetwork deletes a network no VM uses.
func (c *Client) DeleteNetwork(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/networks/"+url.PathEscape(name), nil, nil)
}
