// Package api is the settings service's HTTP API and web page: the customer's "Encryption
// settings" screen (byok on or off, provider, KMS Key ID, the credential) and granular
// revocations, for the tenants an admin may act on.
//
//	GET    /                                           the settings page (embedded HTML, JS, CSS)
//	GET    /v1/tenants                                 → TenantsResponse: the admin's tenants
//	GET    /v1/tenants/{tenant}/settings               → SettingsView (never the credential)
//	PUT    /v1/tenants/{tenant}/settings               SettingsRequest → SettingsView
//	GET    /v1/tenants/{tenant}/revocations            → RevocationsResponse
//	POST   /v1/tenants/{tenant}/revocations            RevocationRequest → 201 RevocationView
//	DELETE /v1/tenants/{tenant}/revocations/{id}       → 204
//	GET    /healthz                                    → 200 "ok"
//
// Saving enabled settings proves them first — a real describe, wrap and unwrap of a test DEK
// through the tenant's KMS (tenant.Validate), audited like every KMS access — and refuses with
// 422 and the reason when that fails. Every change (settings, revoke, un-revoke) is recorded as
// an audit event before it is published to the control topics, so an unrecorded change is never
// made.
//
// Credentials are secrets (INVARIANTS.md 7): sealed with the operator's settings key before they
// are stored (pkg/settings), never returned, never logged, never quoted in an error. Request
// bodies are never logged. Where records live and how they reach the workers is the Store's
// business (pkg/control in production); configuration and Kafka setup live in services/settings'
// main.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/deccache"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/settings"
)

// Limits of the API.
const (
	// MaxRequestBytes caps a request body: a credential (settings.MaxCredentialLen) as a JSON
	// string, escaped, with room for the other fields.
	MaxRequestBytes = 3*settings.MaxCredentialLen + 4<<10
	// MaxKEKIDLen caps the KMS Key ID.
	MaxKEKIDLen = 512
	// MaxReasonLen caps a revocation's reason.
	MaxReasonLen = 1024
	// RequestTimeout bounds one request's KMS, audit and publish work.
	RequestTimeout = 30 * time.Second
)

// DefaultProviders are the providers a production deployment accepts. `local` keeps its key file
// on the byok host and is for development and tests only.
var DefaultProviders = []string{"cloudru", "vault", "yandex"}

// Store holds the control records: tenants' settings and revocations. Reads return the state as
// of the last completed write (read your writes); writes return once the record is durably
// stored (for pkg/control: acknowledged by all in-sync replicas and visible in the followed
// state). Records returned by reads are shared and must not be modified. Safe for concurrent use.
type Store interface {
	Settings(tenantID string) (*byokv1.TenantSettings, bool)
	Revocations(tenantID string) []*byokv1.Revocation
	PutSettings(ctx context.Context, ts *byokv1.TenantSettings) error
	Revoke(ctx context.Context, r *byokv1.Revocation) error
	Unrevoke(ctx context.Context, tenantID, revocationID string) error
}

// Config is what the API needs. Store, Admins, Key and Audit are required.
type Config struct {
	Store  Store
	Admins *Admins
	// Key seals credentials before they are stored.
	Key *settings.Key
	// Audit records settings changes and revocations, and (through the audit wrapper) the
	// validation round trips.
	Audit *audit.Log
	// KMS are the operator's options for opening tenants' KMS clients.
	KMS registry.Options
	// Providers are the provider names accepted (default DefaultProviders).
	Providers []string
	// MaxDEKCacheTTL is the largest DEK cache TTL a customer may save: the readers' ceiling
	// (-dek-ttl; default 60s).
	MaxDEKCacheTTL time.Duration
	// WorkerID is this process's name: the actor_service of its audit events.
	WorkerID string
	Log      zerolog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnChange, if set, is called after each published change with the operation (one of
	// audit.OpSettingsChange, audit.OpRevoke, audit.OpUnrevoke) and result ("ok", "refused",
	// "failed"): the hook for metrics.
	OnChange func(operation, result string)
}

func (c *Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("settings api: no Store")
	case c.Admins == nil:
		return errors.New("settings api: no Admins")
	case c.Key == nil:
		return errors.New("settings api: no settings Key")
	case c.Audit == nil:
		return errors.New("settings api: no audit Log")
	}
	if len(c.Providers) == 0 {
		c.Providers = DefaultProviders
	}
	known := registry.Providers()
	for _, p := range c.Providers {
		if !slices.Contains(known, p) {
			return fmt.Errorf("settings api: provider %q is not one of %v", p, known)
		}
	}
	c.Providers = slices.Sorted(slices.Values(c.Providers))
	if c.WorkerID == "" {
		c.WorkerID = "settings"
	}
	if c.MaxDEKCacheTTL <= 0 {
		c.MaxDEKCacheTTL = deccache.DefaultTTL
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// ErrorResponse is the body of every 4xx and 5xx answer of the /v1 API.
type ErrorResponse struct {
	Error string `json:"error"`
}

type server struct {
	cfg Config
	// locks serialises writes per tenant, so that revisions count up without gaps or repeats
	// within this process. Run one settings service: two could each write the same revision.
	mu    sync.Mutex
	locks map[string]*sync.Mutex
	// open is registry.OpenWith (tests replace it to watch credentials go by).
	open func(registry.Options, string, string, []byte) (kms.KMS, error)
}

// NewHandler returns the API's handler, or an error naming what cfg lacks.
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &server{cfg: cfg, locks: map[string]*sync.Mutex{}, open: registry.OpenWith}
	return s.handler(), nil
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", servePage)
	mux.Handle("GET /assets/", assetHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /v1/tenants", s.authed(s.listTenants))
	mux.HandleFunc("GET /v1/tenants/{tenant}/settings", s.authed(s.tenantScoped(s.getSettings)))
	mux.HandleFunc("PUT /v1/tenants/{tenant}/settings", s.authed(s.tenantScoped(s.putSettings)))
	mux.HandleFunc("GET /v1/tenants/{tenant}/revocations", s.authed(s.tenantScoped(s.listRevocations)))
	mux.HandleFunc("POST /v1/tenants/{tenant}/revocations", s.authed(s.tenantScoped(s.revoke)))
	mux.HandleFunc("DELETE /v1/tenants/{tenant}/revocations/{id}", s.authed(s.tenantScoped(s.unrevoke)))
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s.logged(mux)
}

// request is what the handlers know about a request; logged creates it, authed and
// tenantScoped fill it in, logged logs it.
type request struct {
	admin     Admin
	tenantID  string // "" outside /v1/tenants/{tenant}/...
	requestID string
	route     string // the matched pattern, once known
}

type reqKey struct{}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// logged gives each request an id (X-Request-Id, echoed; generated when absent or odd) and logs
// one line per API request: method, route, status, admin, tenant, time taken. Never a body, a
// header value or a query string.
func (s *server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !requestIDPattern.MatchString(id) {
			id = uuid.NewString()
		}
		w.Header().Set("X-Request-Id", id)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		req := &request{requestID: id}
		sw := &statusWriter{ResponseWriter: w}
		start := time.Now()
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), reqKey{}, req)))
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			return
		}
		ev := s.cfg.Log.Info()
		if sw.status >= 500 {
			ev = s.cfg.Log.Warn()
		}
		ev.Str("request_id", id).Str("method", r.Method).Str("route", req.route).Str("path", r.URL.Path).Int("status", sw.status).
			Str("admin", req.admin.name()).Str("tenant_id", req.tenantID).
			Dur("took", time.Since(start)).Msg("request")
	})
}

// authed authenticates the bearer token: 401 without a valid one.
func (s *server) authed(h func(http.ResponseWriter, *http.Request, *request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req := r.Context().Value(reqKey{}).(*request)
		req.route = r.Pattern
		admin, ok := s.cfg.Admins.Authenticate(bearer(r))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="byok-settings"`)
			writeError(w, http.StatusUnauthorized, "missing or invalid bearer token")
			s.cfg.Log.Warn().Str("request_id", req.requestID).Str("remote", r.RemoteAddr).Msg("request without a valid bearer token")
			return
		}
		req.admin = admin
		h(w, r, req)
	}
}

// tenantScoped checks the admin may act on the path's tenant: 403 otherwise.
func (s *server) tenantScoped(h func(http.ResponseWriter, *http.Request, *request)) func(http.ResponseWriter, *http.Request, *request) {
	return func(w http.ResponseWriter, r *http.Request, req *request) {
		t := r.PathValue("tenant")
		if !req.admin.Allowed(t) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("admin %s may not act on tenant %q", req.admin.Name, t))
			s.cfg.Log.Warn().Str("request_id", req.requestID).Str("admin", req.admin.Name).Str("tenant_id", t).Msg("tenant not allowed for this admin")
			return
		}
		req.tenantID = t
		h(w, r, req)
	}
}

func bearer(r *http.Request) string {
	v := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(v) <= len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
		return ""
	}
	return strings.TrimSpace(v[len(prefix):])
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, reason string) {
	writeJSON(w, status, ErrorResponse{Error: reason})
}

// decodeBody decodes a JSON request body of at most MaxRequestBytes into v, writing the 4xx
// answer itself when it cannot. Its messages never quote the body: it may hold a credential.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, shape string) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
			return false
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request is larger than %d bytes", MaxRequestBytes))
	case errors.As(err, &typeErr) && typeErr.Field != "":
		writeError(w, http.StatusBadRequest, fmt.Sprintf("field %s has the wrong type; want %s", typeErr.Field, shape))
	default:
		writeError(w, http.StatusBadRequest, "request is not valid JSON of the form "+shape)
	}
	return false
}

// lock serialises writes of one tenant.
func (s *server) lock(tenantID string) func() {
	s.mu.Lock()
	m, ok := s.locks[tenantID]
	if !ok {
		m = &sync.Mutex{}
		s.locks[tenantID] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// writeContext bounds a change's record-then-publish phase. It does not end when the client goes
// away: a change recorded in the audit log is then published (or marked not saved), never cut
// off between the two.
func writeContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), RequestTimeout)
}

// record emits one audit event of a control action (settings change, revoke, un-revoke) with
// the admin as actor_user.
func (s *server) record(ctx context.Context, req *request, ev *byokv1.AuditEvent) error {
	ev.TenantId = req.tenantID
	ev.ActorService = s.cfg.WorkerID
	ev.ActorUser = req.admin.Name
	ev.RequestId = req.requestID
	if ev.Result == "" {
		ev.Result = audit.ResultOK
	}
	return s.cfg.Audit.Emit(ctx, ev)
}

func (s *server) changed(op, result string) {
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(op, result)
	}
}

// checkText checks an identifier-like field: within max bytes, valid UTF-8, no control characters.
func checkText(field, v string, max int) string {
	if len(v) > max {
		return fmt.Sprintf("%s is longer than %d bytes", field, max)
	}
	if !utf8.ValidString(v) {
		return field + " is not valid UTF-8"
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return field + " contains a control character"
		}
	}
	return ""
}
