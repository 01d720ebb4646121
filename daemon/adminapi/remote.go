package adminapi

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/corralhq/corral/internal/errcode"
	"github.com/corralhq/corral/internal/httpserve"
	"github.com/corralhq/corral/internal/wsconsole"
	"github.com/corralhq/corral/model"
)

// APILimits bound the HTTPS API listener: 512 requests in flight in all.
// The rate limit (Server.RateLimit) counts per token, after the token is
// known, so a client that presents none costs one hash and a 401.
var APILimits = httpserve.Limits{MaxInFlight: 512}

// ServeAPI answers on ln, a TLS listener (api_addr), until ctx ends: the
// same routes as the socket, each client named by the API token it sends
// as "Authorization: Bearer SECRET", or else by the client certificate it
// presented (verified by the listener against the cluster CA), and given
// that credential's role and project.
func (s *Server) ServeAPI(ctx context.Context, ln net.Listener) error {
	perToken := httpserve.Limits{Rate: s.RateLimit, Burst: int(2 * s.RateLimit), Identity: peerIdentity}
	api := crossOrigin(s.bearer(httpserve.Limit(s.withOrigin(s.authorize(s.mux)), perToken)))
	h := api
	if s.Portal != nil {
		// The portal's files hold no data: they are served to anyone, and
		// the page then asks for a token.
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if s.PortalServes(r) {
				s.Portal.ServeHTTP(w, r)
				return
			}
			api.ServeHTTP(w, r)
		})
	}
	return httpserve.Serve(ctx, ln, h, s.log, APILimits)
}

// crossOrigin refuses a change that a page of another site asks a
// browser to send (by the Sec-Fetch-Site and Origin headers browsers add;
// corralctl sends neither). A token cannot travel that way, but a client
// certificate can: the browser presents it to whichever page calls.
func crossOrigin(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errcode.ToAPI(fmt.Errorf("cross-origin request refused: a page of another site may not act with this browser's credentials: %w", model.ErrForbidden)))
	}))
	return cop.Handler(next)
}

// bearer admits a request that carries a live API token (s.Tokens) and
// answers any other 401; the token names the client and gives its role.
// Neither a secret nor its hash ever appears in an answer or a log.
func (s *Server) bearer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, err := s.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="corral"`)
			writeError(w, errcode.ToAPI(err))
			return
		}
		kind := "token"
		if t.Kind == model.KindCertificate {
			kind = "certificate"
		}
		p := peer{name: kind + " " + t.Name, role: roleNamed(t.Role), why: kind, project: t.Project}
		if t.Project != "" {
			p.why = kind + " of project " + t.Project
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, p)))
	})
}

func (s *Server) authenticate(r *http.Request) (model.APIToken, error) {
	auth := r.Header.Values("Authorization")
	if len(auth) == 0 && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		return s.certificate(r.TLS.VerifiedChains[0][0])
	}
	if len(auth) == 0 {
		// A browser cannot set headers on a WebSocket: the portal offers
		// its token as a subprotocol instead (the server never selects it).
		if secret, ok := wsconsole.BearerProtocol(r); ok {
			auth = []string{"Bearer " + secret}
		}
	}
	secret, err := bearerSecret(auth)
	if err != nil {
		return model.APIToken{}, err
	}
	if s.Tokens == nil {
		return model.APIToken{}, fmt.Errorf("this host knows no API tokens: %w", model.ErrUnauthenticated)
	}
	t, ok := s.Tokens(secret)
	if !ok {
		return model.APIToken{}, fmt.Errorf("unknown or revoked API token: %w", model.ErrUnauthenticated)
	}
	if t.Expired(time.Now()) {
		return model.APIToken{}, fmt.Errorf("API token %q expired at %s: %w", t.Name, t.Expires.Format(time.RFC3339), model.ErrUnauthenticated)
	}
	return t, nil
}

// certificate finds the credential of a client certificate the TLS layer
// verified against the cluster CA: its fingerprint must be recorded, as
// a token's hash is (a host's certificate is not, nor one revoked).
func (s *Server) certificate(leaf *x509.Certificate) (model.APIToken, error) {
	if s.Certificates == nil {
		return model.APIToken{}, fmt.Errorf("this host takes no client certificates: %w", model.ErrUnauthenticated)
	}
	sum := sha256.Sum256(leaf.Raw)
	t, ok := s.Certificates(hex.EncodeToString(sum[:]))
	if !ok {
		return model.APIToken{}, fmt.Errorf("client certificate %q is not a known API credential (revoked, or a host's): %w", leaf.Subject.CommonName, model.ErrUnauthenticated)
	}
	if t.Expired(time.Now()) {
		return model.APIToken{}, fmt.Errorf("client certificate %q expired at %s: %w", t.Name, t.Expires.Format(time.RFC3339), model.ErrUnauthenticated)
	}
	return t, nil
}

// bearerSecret takes the secret from the Authorization header: exactly
// one, "Bearer SECRET", and SECRET of an API token's form. Its errors
// never quote the header.
func bearerSecret(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", fmt.Errorf("no API token: send \"Authorization: Bearer TOKEN\" (corralctl token create): %w", model.ErrUnauthenticated)
	case 1:
	default:
		return "", fmt.Errorf("%d Authorization headers, want one: %w", len(values), model.ErrUnauthenticated)
	}
	scheme, secret, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("authorization scheme is not Bearer: %w", model.ErrUnauthenticated)
	}
	secret = strings.TrimSpace(secret)
	if !model.ValidAPISecret(secret) {
		return "", fmt.Errorf("malformed API token (want %s and 64 hex digits): %w", model.APITokenPrefix, model.ErrUnauthenticated)
	}
	return secret, nil
}

func roleNamed(name string) Role {
	switch name {
	case model.RoleAdmin:
		return RoleAdmin
	case model.RoleOperator:
		return RoleOperator
	case model.RoleViewer:
		return RoleViewer
	}
	return RoleNone
}
