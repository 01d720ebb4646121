package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/corralhq/corral/api"
	"github.com/corralhq/corral/internal/testutil"
)

// TestPortalInFirefox drives the built portal in a real headless Firefox
// (over WebDriver BiDi, which Firefox speaks itself: no geckodriver)
// against a fake cluster of 3 hosts and 20 VMs: it logs in through the
// login form, sees the dashboard and its live event stream, walks the nav
// by keyboard, searches and filters the VM list, opens a VM and sees its
// CPU chart, and fails on any JavaScript error (none is excused).
func TestPortalInFirefox(t *testing.T) {
	srv := httptest.NewServer(fakeCluster(3, 20))
	t.Cleanup(srv.Close) // after Firefox is gone: its event stream holds a request open
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ff := startFirefox(ctx, t, nil)
	rows := func(n int) string {
		return fmt.Sprintf(`document.querySelectorAll('main table tbody tr').length === %d`, n)
	}

	// Logged out, the portal asks for a token; the form takes one.
	token := "corral_" + strings.Repeat("0", 64)
	ff.logIn(t, srv.URL, token)

	// The dashboard: a row per host, the VM count, who is logged in.
	ff.poll(t, "the dashboard with 3 hosts and 20 VMs", rows(3)+` && [...document.querySelectorAll('.card')].some((c) =>
		c.querySelector('b')?.textContent === 'VMs' && c.querySelector('span')?.textContent === '20')`)
	ff.poll(t, "the dashboard's state counts", `[...document.querySelectorAll('.card')].map((c) => c.innerText.replace(/\s+/g, ' ')).join('|')
		.includes('running 12|starting 4|stopped 4')`)
	ff.poll(t, "the event stream live", `[...document.querySelectorAll('main h2 small')].some((s) => s.textContent === 'live')`)
	ff.poll(t, "the token kept in the tab and the role shown", `sessionStorage.getItem('corral.token') === `+jsString(token)+
		` && document.querySelector('nav .who')?.textContent.includes('token bench · operator')`)

	// Keyboard: every nav link takes focus, Tab moves along them, Enter follows one.
	var links []string
	ff.eval(t, `[...document.querySelectorAll('nav a')].filter((a) => { a.focus(); return document.activeElement === a; }).map((a) => a.textContent)`, &links)
	if want := []string{"Dashboard", "Hosts", "VMs", "Groups", "Networks", "Images", "Projects", "Events"}; strings.Join(links, ",") != strings.Join(want, ",") {
		t.Fatalf("focusable nav links %q, want %q", links, want)
	}
	ff.eval(t, `document.querySelector('nav a[href="#/hosts"]').focus()`, nil)
	ff.keys(t, "\uE004") // Tab
	ff.poll(t, "Tab from Hosts to the VMs link", `document.activeElement?.getAttribute('href') === '#/vms'`)
	ff.keys(t, "\uE007") // Enter

	// The VM list, searched by typing and filtered by state.
	ff.poll(t, "the VM list with 20 rows", `location.hash === '#/vms' && `+rows(20)+
		` && document.querySelector('nav a[href="#/vms"]').getAttribute('aria-current') === 'page'`)
	ff.eval(t, `document.querySelector('input[type=search]').focus()`, nil)
	ff.keys(t, "vm-001")
	ff.poll(t, "the 10 VMs named vm-001*", rows(10)+` && [...document.querySelectorAll('main tbody tr td:first-child')].every((td) => td.textContent.startsWith('vm-001'))`)
	ff.keys(t, "\uE003\uE003\uE003\uE003\uE003\uE003h2") // Backspace ×6, then search by host
	ff.poll(t, "the 7 VMs on h2", rows(7)+` && [...document.querySelectorAll('main tbody tr td:nth-child(3)')].every((td) => td.textContent === 'h2')`)
	ff.eval(t, `(() => {
		const q = document.querySelector('input[type=search]');
		q.value = '';
		q.dispatchEvent(new Event('input', { bubbles: true }));
		const s = document.querySelector('select[aria-label="Filter by state"]');
		s.value = 'stopped';
		s.dispatchEvent(new Event('change', { bubbles: true }));
	})()`, nil)
	ff.poll(t, "the 4 stopped VMs", rows(4)+` && [...document.querySelectorAll('main tbody .state')].every((s) => s.textContent === 'stopped')`)
	ff.eval(t, `(() => {
		const s = document.querySelector('select[aria-label="Filter by state"]');
		s.value = '';
		s.dispatchEvent(new Event('change', { bubbles: true }));
	})()`, nil)
	ff.poll(t, "all 20 VMs again", rows(20))

	// A running VM's page: its facts, the actions an operator may take, its CPU chart.
	ff.eval(t, `document.querySelector('main a[href="#/vms/vm-0000"]').click()`, nil)
	ff.poll(t, "vm-0000's page", `location.hash === '#/vms/vm-0000' && document.querySelector('main h2')?.textContent === 'vm-0000'
		&& document.querySelector('dl.facts')?.innerText.replace(/\s+/g, ' ').includes('Host h1 Project default Size 2 vCPU, 4 GiB')
		&& [...document.querySelectorAll('.actions button')].map((b) => b.textContent + (b.disabled ? '-' : '+')).join() === 'Start-,Stop+,Restart+,Delete+'
		&& document.querySelector('#open-console') !== null`)
	ff.poll(t, "vm-0000's CPU chart", `/^CPU \d+% of 2 vCPU on h1$/.test(document.querySelector('.chart h3')?.textContent.trim())`)

	if errs := ff.errors(); len(errs) > 0 {
		t.Fatalf("JavaScript errors in Firefox:\n%s", strings.Join(errs, "\n"))
	}
}

// TestPortalInFirefoxClientCertificate logs in to the portal with a client
// certificate, over HTTPS: Firefox's profile trusts a throwaway CA and
// holds a client certificate the CA signed, which Firefox presents by
// itself in the TLS handshake; the fake API answers requests that carry
// no token from the verified certificate.
func TestPortalInFirefoxClientCertificate(t *testing.T) {
	for _, tool := range []string{"certutil", "pk12util", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testing.Short() {
				t.Skipf("no %s (Debian packages libnss3-tools and openssl)", tool)
			}
			t.Fatalf("no %s (Debian packages libnss3-tools and openssl; scripts/deps.sh test installs them)", tool)
		}
	}
	// A CA, the server's certificate (for 127.0.0.1) and alice's client
	// certificate, all valid for an hour.
	ca, caKey := newCert(t, nil, nil, &x509.Certificate{Subject: pkix.Name{CommonName: "corral test CA"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign})
	server, serverKey := newCert(t, ca, caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	client, clientKey := newCert(t, ca, caKey, &x509.Certificate{Subject: pkix.Name{CommonName: "alice"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	dir := t.TempDir()
	pemFile := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pemFile("ca.pem", "CERTIFICATE", ca.Raw)
	p12 := filepath.Join(dir, "alice.p12")
	mustRun(t, "openssl", "pkcs12", "-export", "-in", pemFile("alice.pem", "CERTIFICATE", client.Raw), "-inkey", pemFile("alice.key", "PRIVATE KEY", keyDER),
		"-name", "corral alice", "-out", p12, "-passout", "pass:")

	// The API: a request without a token is answered from the client
	// certificate the TLS handshake verified, or refused.
	cluster := fakeCluster(3, 20)
	var mu sync.Mutex
	var bare, withToken []string // the /v1 requests without and with a token
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			cluster.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "" {
			mu.Lock()
			withToken = append(withToken, r.URL.Path)
			mu.Unlock()
			cluster.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeUnauthenticated, Message: "no token and no client certificate"})
			return
		}
		mu.Lock()
		bare = append(bare, r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/v1/whoami" {
			json.NewEncoder(w).Encode(api.Whoami{Actor: "certificate " + r.TLS.VerifiedChains[0][0].Subject.CommonName, Role: "operator"})
			return
		}
		cluster.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(handler)
	srv.Config.ErrorLog = log.New(unfinishedHandshakes{}, "", log.LstdFlags)
	cas := x509.NewCertPool()
	cas.AddCert(ca)
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{server.Raw}, PrivateKey: serverKey}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    cas,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ff := startFirefox(ctx, t, func(profile string, prefs map[string]any) {
		// The profile's NSS database: the CA trusted for servers, alice's
		// certificate and key, and Firefox choosing it without asking.
		db := "sql:" + profile
		mustRun(t, "certutil", "-N", "-d", db, "--empty-password")
		mustRun(t, "certutil", "-A", "-d", db, "-n", "corral-ca", "-t", "CT,,", "-i", caPEM)
		mustRun(t, "pk12util", "-i", p12, "-d", db, "-W", "", "-K", "")
		t.Logf("the profile's certificates:\n%s", mustRun(t, "certutil", "-L", "-d", db))
		prefs["security.default_personal_cert"] = "Select Automatically"
	})

	ff.call(t, "browsingContext.navigate", map[string]any{"context": ff.tab, "url": srv.URL + "/", "wait": "complete"}, nil)
	ff.poll(t, "the login form's certificate button", `document.querySelector('main.login #use-cert') !== null`)
	ff.eval(t, `document.querySelector('#use-cert').click()`, nil)
	ff.poll(t, "alice logged in by her certificate", `document.querySelector('nav .who')?.textContent === 'certificate alice · operator'`)
	ff.poll(t, "the dashboard with 3 hosts", `document.querySelectorAll('main table tbody tr').length === 3`)
	var kept struct{ Token, Cert *string }
	ff.eval(t, `({ Token: sessionStorage.getItem('corral.token'), Cert: sessionStorage.getItem('corral.cert') })`, &kept)
	if kept.Token != nil || kept.Cert == nil || *kept.Cert != "1" {
		t.Errorf("sessionStorage holds corral.token %v and corral.cert %v, want no token and the certificate chosen", deref(kept.Token), deref(kept.Cert))
	}
	mu.Lock()
	if !slices.Contains(bare, "/v1/whoami") || !slices.Contains(bare, "/v1/vms") {
		t.Errorf("the API saw these requests without a token: %q; want /v1/whoami and /v1/vms among them", bare)
	}
	if len(withToken) > 0 {
		t.Errorf("the portal sent a token with %q", withToken)
	}
	mu.Unlock()
	if errs := ff.errors(); len(errs) > 0 {
		t.Fatalf("JavaScript errors in Firefox:\n%s", strings.Join(errs, "\n"))
	}
}

// unfinishedHandshakes passes a server's log on to stderr, but for TLS
// handshakes that end in EOF (Firefox closes a connection per run before
// its handshake is done, the test passing); a refused certificate shows.
type unfinishedHandshakes struct{}

func (unfinishedHandshakes) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("TLS handshake error")) && bytes.HasSuffix(bytes.TrimSpace(p), []byte(": EOF")) {
		return len(p), nil
	}
	return os.Stderr.Write(p)
}

// newCert makes an ECDSA P-256 key and a certificate from template for
// it, valid for an hour, signed by parent's key (self-signed if parent is nil).
func newCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, template *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	template.SerialNumber = serial
	template.NotBefore = time.Now().Add(-time.Minute)
	template.NotAfter = time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = template, key
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// mustRun runs a command to its end and returns its output; it fails the
// test if the command fails.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func deref(s *string) string {
	if s == nil {
		return "null"
	}
	return strconv.Quote(*s)
}

// TestPortalInFirefoxGraphicalConsole opens a running VM's graphical
// console in Firefox: noVNC (loaded on demand) speaks RFB over the
// display WebSocket to a fake VNC server, paints the screen it sends and
// sends the keys typed on it.
func TestPortalInFirefoxGraphicalConsole(t *testing.T) {
	vnc := &fakeVNC{colour: [3]byte{0x2e, 0x8b, 0x57}} // sea green
	cluster := fakeCluster(3, 20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/vms/vm-0000/vnc" {
			vnc.ServeHTTP(w, r)
			return
		}
		cluster.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ff := startFirefox(ctx, t, nil)
	token := "corral_" + strings.Repeat("0", 64)
	ff.logIn(t, srv.URL, token)
	ff.poll(t, "the portal logged in", `document.querySelector('nav .who')?.textContent.includes('token bench · operator')`)

	ff.eval(t, `location.hash = '#/vms/vm-0000'`, nil)
	ff.poll(t, "vm-0000's page with its graphical console button", `document.querySelector('main h2')?.textContent === 'vm-0000' && document.querySelector('#open-display') !== null`)
	ff.eval(t, `document.querySelector('#open-display').click()`, nil)
	ff.poll(t, "the display connected (or closed)", `/connected|closed|did not load/.test(document.querySelector('.display-state')?.textContent)`)
	vnc.check(t)
	var state string
	ff.eval(t, `document.querySelector('.display-state').textContent`, &state)
	if !strings.Contains(state, "connected") {
		t.Fatalf("the display says %q", state)
	}
	if offered := vnc.protocols(); !slices.Equal(offered, []string{"corral.vnc", "corral.bearer." + token}) {
		t.Errorf("the display WebSocket offered subprotocols %q, want corral.vnc and the token", offered)
	}

	// The screen: every pixel of noVNC's canvas the colour the server sent.
	want := []int{int(vnc.colour[0]), int(vnc.colour[1]), int(vnc.colour[2]), 255}
	eventually(t, "the guest's screen painted", func() (bool, string) {
		var screen struct {
			Width, Height, Same int
			First               []int // the first pixel's RGBA
		}
		ff.eval(t, `(() => {
			const c = document.querySelector('#screen canvas');
			if (!c || !c.width || !c.height) return { Width: c?.width ?? 0, Height: c?.height ?? 0, Same: 0, First: [] };
			const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
			let same = 0;
			for (let i = 0; i < d.length; i += 4) {
				if (d[i] === d[0] && d[i + 1] === d[1] && d[i + 2] === d[2] && d[i + 3] === d[3]) same++;
			}
			return { Width: c.width, Height: c.height, Same: same, First: [...d.slice(0, 4)] };
		})()`, &screen)
		return screen.Width > 0 && screen.Same == screen.Width*screen.Height && slices.Equal(screen.First, want),
			fmt.Sprintf("a %dx%d canvas whose first pixel is RGBA %v, %d pixels that colour; want all %v", screen.Width, screen.Height, screen.First, screen.Same, want)
	})

	// Keys typed on the screen (clicked with the mouse) reach the guest.
	ff.click(t, "#screen canvas")
	ff.poll(t, "the screen focused", `document.activeElement === document.querySelector('#screen canvas')`)
	ff.keys(t, "ab\uE007") // a, b, Enter
	eventually(t, "KeyEvents pressing a, b and Return", func() (bool, string) {
		vnc.check(t)
		return vnc.pressed(0x61, 0x62, 0xff0d)
	})
	vnc.check(t)
	if errs := ff.errors(); len(errs) > 0 {
		t.Fatalf("JavaScript errors in Firefox:\n%s", strings.Join(errs, "\n"))
	}
}

// fakeVNC is a tiny RFB 3.8 server behind a display WebSocket: no
// security, a screen of one colour, and the keys it is sent.
type fakeVNC struct {
	colour [3]byte // red, green, blue

	mu      sync.Mutex
	offered []string // the subprotocols the client offered
	keys    []rfbKey
	err     error // the first protocol error
}

// rfbKey is a KeyEvent: a key pressed (down) or released.
type rfbKey struct {
	down   bool
	keysym uint32
}

// rfbError is the client breaking the protocol, as the fake sees it.
type rfbError string

func (e rfbError) Error() string { return string(e) }

func (v *fakeVNC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var offered []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			offered = append(offered, strings.TrimSpace(p))
		}
	}
	v.mu.Lock()
	v.offered = offered
	v.mu.Unlock()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"corral.vnc"}})
	if err != nil {
		v.fail(fmt.Errorf("accepting the display WebSocket: %w", err))
		return
	}
	defer c.CloseNow()
	if c.Subprotocol() != "corral.vnc" {
		v.fail(fmt.Errorf("the display WebSocket offered subprotocols %q, not corral.vnc", offered))
		c.Close(websocket.StatusPolicyViolation, "no corral.vnc subprotocol")
		return
	}
	err = v.serve(websocket.NetConn(r.Context(), c, websocket.MessageBinary))
	if _, ok := err.(rfbError); ok { // else the connection ended
		v.fail(err)
		reason := err.Error()
		if len(reason) > 120 {
			reason = reason[:120]
		}
		c.Close(websocket.StatusProtocolError, reason)
	}
}

// serve speaks RFB 3.8 on conn, whose bytes may come in WebSocket
// messages split or joined anyhow, until the connection ends (an I/O
// error) or the client breaks the protocol (an rfbError).
func (v *fakeVNC) serve(conn net.Conn) error {
	in := bufio.NewReader(conn)
	out := bufio.NewWriterSize(conn, 64<<10) // a Flush is one WebSocket message
	read := func(n int) ([]byte, error) {
		b := make([]byte, n)
		_, err := io.ReadFull(in, b)
		return b, err
	}
	const width, height = 320, 200
	// The handshake: versions, security None, ClientInit, ServerInit.
	out.WriteString("RFB 003.008\n")
	if err := out.Flush(); err != nil {
		return err
	}
	version, err := read(12)
	if err != nil {
		return err
	}
	if string(version) != "RFB 003.008\n" {
		return rfbError(fmt.Sprintf("the client answered version %q, not RFB 003.008", version))
	}
	out.Write([]byte{1, 1}) // one security type: None
	if err := out.Flush(); err != nil {
		return err
	}
	choice, err := read(1)
	if err != nil {
		return err
	}
	if choice[0] != 1 {
		return rfbError(fmt.Sprintf("the client chose security type %d, not None (1)", choice[0]))
	}
	out.Write([]byte{0, 0, 0, 0}) // SecurityResult: OK
	if err := out.Flush(); err != nil {
		return err
	}
	if _, err := read(1); err != nil { // ClientInit: the shared flag
		return err
	}
	// 32 bpp, depth 24, little-endian true colour, 0x00RRGGBB.
	format := []byte{32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0}
	pf := parsePixelFormat(format)
	name := "QEMU (vm-0000)"
	out.Write(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, width), height))
	out.Write(format)
	out.Write(binary.BigEndian.AppendUint32(nil, uint32(len(name))))
	out.WriteString(name)
	if err := out.Flush(); err != nil {
		return err
	}
	// Then the client's messages, by type. The screen never changes, so
	// (as a real server may) an incremental update request waits for
	// good, unless the client has not had the screen in its pixel format.
	sent := false
	for {
		typ, err := in.ReadByte()
		if err != nil {
			return err
		}
		switch typ {
		case 0: // SetPixelFormat: 3 padding bytes, the format
			b, err := read(19)
			if err != nil {
				return err
			}
			pf, sent = parsePixelFormat(b[3:]), false
		case 2: // SetEncodings: padding, a count, the encodings
			b, err := read(3)
			if err != nil {
				return err
			}
			if _, err := read(4 * int(binary.BigEndian.Uint16(b[1:]))); err != nil {
				return err
			}
		case 3: // FramebufferUpdateRequest: incremental, x, y, width, height
			b, err := read(9)
			if err != nil {
				return err
			}
			if b[0] != 0 && sent {
				continue
			}
			frame, err := v.frame(pf, width, height)
			if err != nil {
				return err
			}
			out.Write(frame)
			if err := out.Flush(); err != nil {
				return err
			}
			sent = true
		case 4: // KeyEvent: down, 2 padding bytes, the keysym
			b, err := read(7)
			if err != nil {
				return err
			}
			v.mu.Lock()
			v.keys = append(v.keys, rfbKey{down: b[0] != 0, keysym: binary.BigEndian.Uint32(b[3:])})
			v.mu.Unlock()
		case 5: // PointerEvent: buttons, x, y
			if _, err := read(5); err != nil {
				return err
			}
		case 6: // ClientCutText: 3 padding bytes, a length (negative: extended), the text
			b, err := read(7)
			if err != nil {
				return err
			}
			n := int64(int32(binary.BigEndian.Uint32(b[3:])))
			if n < 0 {
				n = -n
			}
			if n > 1<<20 {
				return rfbError(fmt.Sprintf("ClientCutText of %d bytes", n))
			}
			if _, err := read(int(n)); err != nil {
				return err
			}
		default:
			return rfbError(fmt.Sprintf("the client sent a message of unknown type %d", typ))
		}
	}
}

// rfbPixelFormat is an RFB PIXEL_FORMAT.
type rfbPixelFormat struct {
	bpp, depth                      byte
	bigEndian, trueColour           bool
	redMax, greenMax, blueMax       uint16
	redShift, greenShift, blueShift byte
}

func parsePixelFormat(b []byte) rfbPixelFormat {
	return rfbPixelFormat{bpp: b[0], depth: b[1], bigEndian: b[2] != 0, trueColour: b[3] != 0,
		redMax: binary.BigEndian.Uint16(b[4:]), greenMax: binary.BigEndian.Uint16(b[6:]), blueMax: binary.BigEndian.Uint16(b[8:]),
		redShift: b[10], greenShift: b[11], blueShift: b[12]}
}

// frame is a FramebufferUpdate of one raw rectangle, the whole screen in
// v's colour, in pixel format pf (32 bpp true colour only).
func (v *fakeVNC) frame(pf rfbPixelFormat, width, height int) ([]byte, error) {
	if pf.bpp != 32 || !pf.trueColour {
		return nil, rfbError(fmt.Sprintf("the client set a pixel format of %d bpp (true colour %v): the fake serves 32 bpp true colour only", pf.bpp, pf.trueColour))
	}
	scale := func(c byte, max uint16, shift byte) uint32 { return (uint32(c)*uint32(max) + 127) / 255 << shift }
	pixel := scale(v.colour[0], pf.redMax, pf.redShift) | scale(v.colour[1], pf.greenMax, pf.greenShift) | scale(v.colour[2], pf.blueMax, pf.blueShift)
	var px []byte
	if pf.bigEndian {
		px = binary.BigEndian.AppendUint32(nil, pixel)
	} else {
		px = binary.LittleEndian.AppendUint32(nil, pixel)
	}
	b := []byte{0, 0, 0, 1} // FramebufferUpdate, padding, 1 rectangle
	for _, n := range []int{0, 0, width, height} {
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	}
	b = binary.BigEndian.AppendUint32(b, 0) // raw encoding
	return append(b, bytes.Repeat(px, width*height)...), nil
}

func (v *fakeVNC) fail(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err == nil {
		v.err = err
	}
}

// check fails the test if the server saw the protocol broken.
func (v *fakeVNC) check(t *testing.T) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		t.Fatalf("the fake VNC server: %v", v.err)
	}
}

func (v *fakeVNC) protocols() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.offered
}

// pressed reports whether keys with these keysyms were pressed down, in
// this order (with anything between), and the KeyEvents received.
func (v *fakeVNC) pressed(keysyms ...uint32) (bool, string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var got []string
	for _, k := range v.keys {
		if len(keysyms) > 0 && k.down && k.keysym == keysyms[0] {
			keysyms = keysyms[1:]
		}
		dir := "up"
		if k.down {
			dir = "down"
		}
		got = append(got, fmt.Sprintf("%#x %s", k.keysym, dir))
	}
	return len(keysyms) == 0, fmt.Sprintf("KeyEvents [%s]", strings.Join(got, ", "))
}

// firefox is a headless Firefox and a WebDriver BiDi session in it.
type firefox struct {
	ctx    context.Context
	conn   *websocket.Conn
	tab    string        // the browsing context the test drives
	closed chan struct{} // closed when reading the socket fails
	stderr *watch

	mu      sync.Mutex
	id      int
	waiting map[int]chan bidiMessage
	readErr error
	logs    []logEntry
}

// bidiMessage is any message from Firefox: a command's success or error,
// or an event.
type bidiMessage struct {
	Type    string          `json:"type"` // success, error or event
	ID      int             `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
	Method  string          `json:"method"` // an event's
	Params  json.RawMessage `json:"params"`
}

// logEntry is a log.entryAdded event: a console call or an uncaught error.
type logEntry struct {
	Type       string `json:"type"`  // console or javascript
	Level      string `json:"level"` // debug, info, warn or error
	Text       string `json:"text"`
	StackTrace *struct {
		CallFrames []struct {
			URL        string `json:"url"`
			LineNumber int    `json:"lineNumber"`
		} `json:"callFrames"`
	} `json:"stackTrace"`
}

// startFirefox starts firefox-esr headless with a fresh profile, connects
// to its BiDi endpoint, starts a session that records the page's log and
// drives its first tab; the test's end kills it. prepare, if not nil, may
// add prefs (to user.js) and files to the profile before Firefox starts.
func startFirefox(ctx context.Context, t *testing.T, prepare func(profile string, prefs map[string]any)) *firefox {
	t.Helper()
	bin, err := exec.LookPath("firefox-esr")
	if err != nil {
		if testing.Short() {
			t.Skip("no firefox-esr (Debian package firefox-esr)")
		}
		t.Fatal("no firefox-esr (Debian package firefox-esr; scripts/deps.sh test installs it)")
	}
	profile := t.TempDir() // removed after the cleanup below has killed Firefox
	// Only BiDi (no CDP), and nothing on the first run that opens pages or
	// reaches the network (Firefox also applies its own recommended prefs
	// for remote control, remote.prefs.recommended).
	prefs := map[string]any{
		"remote.active-protocols":                     1,
		"browser.shell.checkDefaultBrowser":           false,
		"browser.startup.page":                        0,
		"browser.startup.homepage_override.mstone":    "ignore",
		"browser.aboutwelcome.enabled":                false,
		"datareporting.policy.dataSubmissionEnabled":  false,
		"toolkit.telemetry.reportingpolicy.firstRun":  false,
		"app.update.disabledForTesting":               true,
		"app.normandy.enabled":                        false,
		"messaging-system.rsexperimentloader.enabled": false,
		"network.captive-portal-service.enabled":      false,
		"network.connectivity-service.enabled":        false,
	}
	if prepare != nil {
		prepare(profile, prefs)
	}
	var userJS strings.Builder
	for k, v := range prefs {
		j, _ := json.Marshal(v)
		fmt.Fprintf(&userJS, "user_pref(%q, %s);\n", k, j)
	}
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(userJS.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-remote", "--profile", profile, "--remote-debugging-port=0", "about:blank")
	cmd.Env = append(os.Environ(), "MOZ_CRASHREPORTER_DISABLE=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its content processes too, to end them together
	stderr := &watch{re: regexp.MustCompile(`WebDriver BiDi listening on (ws://\S+)`), found: make(chan string, 1)}
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the group Setpgid made: Firefox's pid is its id
		<-exited
	})
	var url string
	select {
	case url = <-stderr.found:
	case err := <-exited:
		t.Fatalf("firefox-esr exited before listening (%v):\n%s", err, stderr)
	case <-ctx.Done():
		t.Fatalf("firefox-esr did not start listening:\n%s", stderr)
	}
	conn, _, err := websocket.Dial(ctx, url+"/session", nil)
	if err != nil {
		t.Fatalf("connecting to %s/session: %v", url, err)
	}
	conn.SetReadLimit(16 << 20)
	ff := &firefox{ctx: ctx, conn: conn, closed: make(chan struct{}), stderr: stderr, waiting: map[int]chan bidiMessage{}}
	go ff.read()
	t.Cleanup(func() { conn.CloseNow() })
	var session struct {
		Capabilities struct {
			BrowserName    string `json:"browserName"`
			BrowserVersion string `json:"browserVersion"`
		} `json:"capabilities"`
	}
	ff.call(t, "session.new", map[string]any{"capabilities": map[string]any{}}, &session)
	t.Logf("%s %s", session.Capabilities.BrowserName, session.Capabilities.BrowserVersion)
	ff.call(t, "session.subscribe", map[string]any{"events": []string{"log.entryAdded"}}, nil)
	var tree struct {
		Contexts []struct{ Context string } `json:"contexts"`
	}
	ff.call(t, "browsingContext.getTree", map[string]any{"maxDepth": 0}, &tree)
	if len(tree.Contexts) == 0 {
		t.Fatal("Firefox has no browsing context")
	}
	ff.tab = tree.Contexts[0].Context
	return ff
}

// logIn opens the portal at url, logged out, and logs in through the
// login form with token.
func (ff *firefox) logIn(t *testing.T, url, token string) {
	t.Helper()
	ff.call(t, "browsingContext.navigate", map[string]any{"context": ff.tab, "url": url + "/", "wait": "complete"}, nil)
	ff.poll(t, "the login form", `document.querySelector('main.login input#token') !== null && document.activeElement?.id === 'token'`)
	ff.eval(t, `(() => {
		const i = document.querySelector('#token');
		i.value = `+jsString(token)+`;
		i.dispatchEvent(new Event('input', { bubbles: true }));
	})()`, nil)
	ff.eval(t, `document.querySelector('main.login button[type=submit]').click()`, nil)
}

// read hands each command's answer to its caller and keeps log entries.
func (ff *firefox) read() {
	defer close(ff.closed)
	for {
		_, data, err := ff.conn.Read(ff.ctx)
		if err != nil {
			ff.mu.Lock()
			ff.readErr = err
			ff.mu.Unlock()
			return
		}
		var m bidiMessage
		if err := json.Unmarshal(data, &m); err != nil {
			continue // not for us: BiDi messages are JSON objects
		}
		ff.mu.Lock()
		if m.Type == "event" {
			if m.Method == "log.entryAdded" {
				var e logEntry
				if json.Unmarshal(m.Params, &e) == nil {
					ff.logs = append(ff.logs, e)
				}
			}
		} else if ch := ff.waiting[m.ID]; ch != nil {
			delete(ff.waiting, m.ID)
			ch <- m
		}
		ff.mu.Unlock()
	}
}

// call sends a command and decodes its result into result (if not nil).
func (ff *firefox) call(t *testing.T, method string, params, result any) {
	t.Helper()
	if err := ff.send(method, params, result); err != nil {
		t.Fatal(err)
	}
}

func (ff *firefox) send(method string, params, result any) error {
	ff.mu.Lock()
	ff.id++
	id := ff.id
	ch := make(chan bidiMessage, 1)
	ff.waiting[id] = ch
	ff.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err := ff.conn.Write(ff.ctx, websocket.MessageText, msg); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case m := <-ch:
		if m.Type != "success" {
			return fmt.Errorf("%s: %s: %s", method, m.Error, m.Message)
		}
		if result != nil {
			return json.Unmarshal(m.Result, result)
		}
		return nil
	case <-ff.closed:
		ff.mu.Lock()
		defer ff.mu.Unlock()
		return fmt.Errorf("%s: the BiDi connection failed: %v\nfirefox-esr said:\n%s", method, ff.readErr, ff.stderr)
	}
}

// eval runs a JavaScript expression in the page (awaiting a promise) and
// decodes its value, as JSON, into out (if not nil).
func (ff *firefox) eval(t *testing.T, js string, out any) {
	t.Helper()
	ok, err := ff.evaluate(js, out)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("%s threw (see above)", js)
	}
}

// evaluate is eval's work: ok is false if the script threw (err says why).
func (ff *firefox) evaluate(js string, out any) (ok bool, err error) {
	var r struct {
		Type   string `json:"type"` // success or exception
		Result struct {
			Type  string `json:"type"`
			Value any    `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	expr := `(async () => JSON.stringify(await (` + js + `)) ?? 'null')()`
	if err := ff.send("script.evaluate", map[string]any{"expression": expr, "target": map[string]any{"context": ff.tab}, "awaitPromise": true}, &r); err != nil {
		return false, err
	}
	if r.Type != "success" {
		return false, fmt.Errorf("%s\nthrew %s", js, r.ExceptionDetails.Text)
	}
	s, _ := r.Result.Value.(string)
	if out != nil {
		if err := json.Unmarshal([]byte(s), out); err != nil {
			return false, fmt.Errorf("%s\nreturned %v: %v", js, r.Result.Value, err)
		}
	}
	return true, nil
}

// poll waits until the JavaScript condition cond holds in the page, for
// up to 10 s, and fails the test saying what the page shows if it never does.
func (ff *firefox) poll(t *testing.T, what, cond string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var holds bool
		_, err := ff.evaluate(`!!(`+cond+`)`, &holds)
		if holds {
			return
		}
		if time.Now().After(deadline) {
			var page string
			ff.evaluate(`location.hash + '\n' + document.body.innerText.slice(0, 2000)`, &page)
			t.Fatalf("no %s after 10 s (last error: %v); the page shows %s\nJavaScript errors: %q", what, err, page, ff.errors())
		}
		select {
		case <-tick.C:
		case <-ff.closed:
			_, err := ff.evaluate(`true`, nil) // says why
			t.Fatalf("waiting for %s: %v", what, err)
		}
	}
}

// keys types text into the page's focused element as real key presses
// (WebDriver key values: "\uE004" is Tab, "\uE007" Enter, "\uE003" Backspace).
func (ff *firefox) keys(t *testing.T, text string) {
	t.Helper()
	var actions []map[string]any
	for _, r := range text {
		actions = append(actions, map[string]any{"type": "keyDown", "value": string(r)}, map[string]any{"type": "keyUp", "value": string(r)})
	}
	ff.call(t, "input.performActions", map[string]any{"context": ff.tab,
		"actions": []any{map[string]any{"type": "key", "id": "keyboard", "actions": actions}}}, nil)
}

// click clicks the middle of the element selector picks with a real
// mouse (scrolled into view first).
func (ff *firefox) click(t *testing.T, selector string) {
	t.Helper()
	var at struct{ X, Y float64 }
	ff.eval(t, `(() => {
		const e = document.querySelector(`+jsString(selector)+`);
		e.scrollIntoView({ block: 'center' });
		const r = e.getBoundingClientRect();
		return { X: r.x + r.width / 2, Y: r.y + r.height / 2 };
	})()`, &at)
	ff.call(t, "input.performActions", map[string]any{"context": ff.tab, "actions": []any{map[string]any{
		"type": "pointer", "id": "mouse", "parameters": map[string]any{"pointerType": "mouse"},
		"actions": []any{
			map[string]any{"type": "pointerMove", "x": int(at.X), "y": int(at.Y)},
			map[string]any{"type": "pointerDown", "button": 0},
			map[string]any{"type": "pointerUp", "button": 0},
		}}}}, nil)
}

// eventually waits until cond holds, for up to 10 s, and fails the test
// if it never does, with what cond last saw.
func eventually(t *testing.T, what string, cond func() (ok bool, saw string)) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if ok, saw := cond(); !ok {
			return fmt.Errorf("no %s; saw %s", what, saw)
		}
		return nil
	})
}

// errors are the uncaught JavaScript errors and console errors so far.
func (ff *firefox) errors() []string {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	var errs []string
	for _, e := range ff.logs {
		if e.Type != "javascript" && e.Level != "error" {
			continue
		}
		at := ""
		if e.StackTrace != nil && len(e.StackTrace.CallFrames) > 0 {
			f := e.StackTrace.CallFrames[0]
			at = fmt.Sprintf(" at %s:%d", f.URL, f.LineNumber)
		}
		errs = append(errs, fmt.Sprintf("%s %s: %s%s", e.Type, e.Level, e.Text, at))
	}
	return errs
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	j, _ := json.Marshal(s)
	return string(j)
}

// watch keeps what Firefox writes to stderr (for failure messages) and
// sends the first submatch of re once it appears.
type watch struct {
	re    *regexp.Regexp
	found chan string

	mu   sync.Mutex
	buf  bytes.Buffer
	sent bool
}

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() < 1<<20 {
		w.buf.Write(p)
	}
	if !w.sent {
		if m := w.re.FindSubmatch(w.buf.Bytes()); m != nil {
			w.found <- string(m[1])
			w.sent = true
		}
	}
	return len(p), nil
}

func (w *watch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
