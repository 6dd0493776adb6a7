package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/audit"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/settings"
	"github.com/byok-io/byok/pkg/tenant"
)

// SettingsView is a tenant's settings as the API shows them: whether a credential is stored,
// never the credential.
type SettingsView struct {
	TenantID      string     `json:"tenant_id"`
	Enabled       bool       `json:"enabled"`
	Provider      string     `json:"provider"`
	KEKID         string     `json:"kek_id"`
	CredentialSet bool       `json:"credential_set"`
	UpdatedAt     *time.Time `json:"updated_at,omitempty"`
	UpdatedBy     string     `json:"updated_by,omitempty"`
	// Revision counts saves from 1; 0 means never saved.
	Revision uint64 `json:"revision"`
	// DEKCacheTTLSeconds is how long readers may serve reads with a DEK the KMS unwrapped (the
	// customer's ceiling, and so the longest reads go on after a revocation in the KMS); 0: the
	// deployment's default.
	DEKCacheTTLSeconds uint32 `json:"dek_cache_ttl_seconds"`
}

// TenantsResponse is the answer of GET /v1/tenants.
type TenantsResponse struct {
	// Admin is the authenticated admin's name.
	Admin string `json:"admin"`
	// Providers are the provider names this deployment accepts.
	Providers []string       `json:"providers"`
	Tenants   []SettingsView `json:"tenants"`
	// MaxDEKCacheTTLSeconds is the largest dek_cache_ttl_seconds this deployment accepts (its
	// readers' ceiling).
	MaxDEKCacheTTLSeconds uint32 `json:"max_dek_cache_ttl_seconds"`
}

// SettingsRequest is the body of PUT /v1/tenants/{tenant}/settings. Empty Provider, KEKID and an
// omitted (or null, or "") Credential keep what is stored, so disabling needs only
// {"enabled": false} and re-enabling only {"enabled": true}.
type SettingsRequest struct {
	// Enabled is required: the "Advanced encryption" toggle.
	Enabled  *bool  `json:"enabled"`
	Provider string `json:"provider,omitempty"`
	KEKID    string `json:"kek_id,omitempty"`
	// Credential is the provider's credential: a JSON object, or a string holding one (as the
	// page's text area sends it).
	Credential json.RawMessage `json:"credential,omitempty"`
	// DEKCacheTTLSeconds sets SettingsView.DEKCacheTTLSeconds (omitted: keep; 0: the default).
	DEKCacheTTLSeconds *uint32 `json:"dek_cache_ttl_seconds,omitempty"`
}

const settingsShape = `{"enabled": bool, "provider": "...", "kek_id": "...", "credential": {...} or "...", "dek_cache_ttl_seconds": 0..max}`

// PurposeEnable, PurposeDisable and PurposeUpdate are the purposes of settings_change audit
// events.
const (
	PurposeEnable  = "enable"
	PurposeDisable = "disable"
	PurposeUpdate  = "update"
)

// ErrorCodeNotSaved is the error_code of an audit event recorded after the change it announced
// could not be published: the event before it did not take effect.
const ErrorCodeNotSaved = "not_saved"

func view(tenantID string, ts *byokv1.TenantSettings) SettingsView {
	v := SettingsView{TenantID: tenantID}
	if ts == nil {
		return v
	}
	v.Enabled, v.Provider, v.KEKID = ts.Enabled, ts.Provider, ts.KekId
	v.CredentialSet = len(ts.SealedCredential) > 0
	v.UpdatedBy, v.Revision, v.DEKCacheTTLSeconds = ts.UpdatedBy, ts.Revision, ts.DekCacheTtlSeconds
	if ts.UpdatedAt != nil {
		t := ts.UpdatedAt.AsTime().UTC()
		v.UpdatedAt = &t
	}
	return v
}

func (s *server) listTenants(w http.ResponseWriter, _ *http.Request, req *request) {
	resp := TenantsResponse{Admin: req.admin.Name, Providers: s.cfg.Providers, Tenants: []SettingsView{},
		MaxDEKCacheTTLSeconds: uint32(s.cfg.MaxDEKCacheTTL / time.Second)}
	for _, t := range req.admin.Tenants {
		ts, _ := s.cfg.Store.Settings(t)
		resp.Tenants = append(resp.Tenants, view(t, ts))
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *server) getSettings(w http.ResponseWriter, _ *http.Request, req *request) {
	ts, _ := s.cfg.Store.Settings(req.tenantID)
	writeJSON(w, http.StatusOK, view(req.tenantID, ts))
}

// parseCredential returns the credential of a request: given false when it keeps the stored one.
// Its reasons never quote the credential.
func parseCredential(raw json.RawMessage) (cred []byte, given bool, reason string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, ""
	}
	switch raw[0] {
	case '"':
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return nil, false, "credential is not a valid JSON string"
		}
		if str = strings.TrimSpace(str); str == "" {
			return nil, false, ""
		}
		cred = []byte(str)
	case '{':
		cred = bytes.Clone(raw)
	default:
		return nil, false, "credential must be a JSON object, or a string holding one"
	}
	if len(cred) > settings.MaxCredentialLen {
		clear(cred)
		return nil, false, fmt.Sprintf("credential is longer than %d bytes", settings.MaxCredentialLen)
	}
	if cred[0] != '{' || !json.Valid(cred) {
		clear(cred)
		return nil, false, "credential is not a JSON object: paste the JSON key your KMS gave you"
	}
	return cred, true, ""
}

func (s *server) putSettings(w http.ResponseWriter, r *http.Request, req *request) {
	var body SettingsRequest
	if !decodeBody(w, r, &body, settingsShape) {
		return
	}
	defer clear(body.Credential)
	if body.Enabled == nil {
		writeError(w, http.StatusBadRequest, "enabled is required (true or false)")
		return
	}
	if body.Provider != "" && !slices.Contains(s.cfg.Providers, body.Provider) {
		if msg := checkText("provider", body.Provider, 32); msg != "" {
			writeError(w, http.StatusBadRequest, msg)
			return
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("provider %q is not one of %s", body.Provider, strings.Join(s.cfg.Providers, ", ")))
		return
	}
	if msg := checkText("kek_id", body.KEKID, MaxKEKIDLen); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if t := body.DEKCacheTTLSeconds; t != nil && time.Duration(*t)*time.Second > s.cfg.MaxDEKCacheTTL {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("dek_cache_ttl_seconds %d is above this deployment's maximum of %d", *t, s.cfg.MaxDEKCacheTTL/time.Second))
		return
	}
	cred, given, msg := parseCredential(body.Credential)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	defer clear(cred)

	ctx, cancel := context.WithTimeout(r.Context(), RequestTimeout)
	defer cancel()
	defer s.lock(req.tenantID)()
	prev, _ := s.cfg.Store.Settings(req.tenantID) // nil when never saved; shared: not modified
	next := &byokv1.TenantSettings{
		SchemaVersion: settings.SchemaVersion,
		TenantId:      req.tenantID,
		Enabled:       *body.Enabled,
		Provider:      orStored(body.Provider, prev.GetProvider()),
		KekId:         orStored(body.KEKID, prev.GetKekId()),
		UpdatedAt:     timestamppb.New(s.cfg.Now()),
		UpdatedBy:     req.admin.Name,
		Revision:      prev.GetRevision() + 1,

		DekCacheTtlSeconds: prev.GetDekCacheTtlSeconds(),
	}
	if body.DEKCacheTTLSeconds != nil {
		next.DekCacheTtlSeconds = *body.DEKCacheTTLSeconds
	}
	if given {
		sealed, err := settings.Seal(s.cfg.Key, req.tenantID, cred)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error()) // Seal's errors name sizes, never content
			return
		}
		next.SealedCredential, next.SettingsKeyId = sealed, s.cfg.Key.ID()
	} else if len(prev.GetSealedCredential()) > 0 {
		next.SealedCredential, next.SettingsKeyId = bytes.Clone(prev.SealedCredential), prev.SettingsKeyId
	}

	if next.Enabled {
		if next.Provider == "" || next.KekId == "" {
			writeError(w, http.StatusBadRequest, "provider and kek_id are required to enable advanced encryption")
			return
		}
		if len(next.SealedCredential) == 0 {
			writeError(w, http.StatusBadRequest, "credential is required to enable advanced encryption (none is stored)")
			return
		}
		c, err := settings.ToConfig(next, s.cfg.Key)
		if err != nil {
			s.cfg.Log.Error().Str("request_id", req.requestID).Str("tenant_id", req.tenantID).Err(err).Msg("stored credential does not open")
			writeError(w, http.StatusConflict, "the stored credential cannot be opened with this service's settings key: enter the credential again")
			return
		}
		status, reason := s.validate(ctx, req, c)
		clear(c.Credential)
		if status != 0 {
			s.changed(audit.OpSettingsChange, "refused")
			s.cfg.Log.Warn().Str("request_id", req.requestID).Str("tenant_id", req.tenantID).Str("admin", req.admin.Name).
				Str("provider", next.Provider).Str("kek_id", next.KekId).Str("reason", reason).Msg("settings refused: validation failed")
			writeError(w, status, reason)
			return
		}
	}

	purpose := PurposeUpdate
	switch {
	case next.Enabled && !prev.GetEnabled():
		purpose = PurposeEnable
	case !next.Enabled && prev.GetEnabled():
		purpose = PurposeDisable
	}
	// Record first, then publish: a change the key owner cannot see in the audit log is never
	// made. If publishing then fails, a second event with result "error" says so.
	ctx, cancelWrite := writeContext(r)
	defer cancelWrite()
	ev := &byokv1.AuditEvent{Operation: audit.OpSettingsChange, Purpose: purpose, Provider: next.Provider, KekId: next.KekId}
	if err := s.record(ctx, req, ev); err != nil {
		s.failed(w, req, audit.OpSettingsChange, "settings change could not be recorded in the audit log", err,
			"the settings change could not be recorded in the audit log, so it was not saved; try again")
		return
	}
	if err := s.cfg.Store.PutSettings(ctx, next); err != nil {
		s.recordNotSaved(ctx, req, &byokv1.AuditEvent{Operation: audit.OpSettingsChange, Purpose: purpose, Provider: next.Provider, KekId: next.KekId})
		s.failed(w, req, audit.OpSettingsChange, "settings not published", err,
			"the settings could not be saved (the control topic did not confirm them); try again")
		return
	}
	s.changed(audit.OpSettingsChange, "ok")
	s.cfg.Log.Info().Str("request_id", req.requestID).Str("tenant_id", req.tenantID).Str("admin", req.admin.Name).
		Str("purpose", purpose).Bool("enabled", next.Enabled).Str("provider", next.Provider).Str("kek_id", next.KekId).
		Bool("credential_changed", given).Uint64("revision", next.Revision).Msg("settings saved")
	writeJSON(w, http.StatusOK, view(req.tenantID, next))
}

// validate opens the tenant's KMS client and runs the audited round trip. It returns 0 when the
// settings work, or the status and the reason to show (never quoting the credential).
func (s *server) validate(ctx context.Context, req *request, c tenant.Config) (int, string) {
	k, err := s.open(s.cfg.KMS, c.Provider, c.KEKID, c.Credential)
	if err != nil {
		return http.StatusUnprocessableEntity, "the KMS settings cannot be used: " + redact(err.Error(), c.Credential)
	}
	defer k.Close()
	audited := audit.Wrap(k, req.tenantID, s.cfg.Audit, audit.Access{
		ActorService: s.cfg.WorkerID, ActorUser: req.admin.Name, Purpose: "validate", RequestID: req.requestID})
	if err := tenant.Validate(ctx, req.tenantID, audited); err != nil {
		if errors.Is(err, audit.ErrNotRecorded) {
			s.cfg.Log.Error().Str("request_id", req.requestID).Str("tenant_id", req.tenantID).Err(err).Msg("validation not recorded in the audit log")
			return http.StatusServiceUnavailable, "the validation could not be recorded in the audit log, so nothing was saved; try again"
		}
		return http.StatusUnprocessableEntity, "the KMS settings do not work: " + redact(err.Error(), c.Credential)
	}
	return 0, ""
}

// failed answers 503 after a change could not be recorded or published, and logs why.
func (s *server) failed(w http.ResponseWriter, req *request, op, logMsg string, err error, reason string) {
	s.changed(op, "failed")
	s.cfg.Log.Error().Str("request_id", req.requestID).Str("tenant_id", req.tenantID).Str("admin", req.admin.Name).
		Str("operation", op).Err(err).Msg(logMsg)
	writeError(w, http.StatusServiceUnavailable, reason)
}

// recordNotSaved records that an announced change did not take effect. Best effort: the change
// was not made either way; a failure here is logged.
func (s *server) recordNotSaved(ctx context.Context, req *request, ev *byokv1.AuditEvent) {
	ev.Result, ev.ErrorCode = audit.ResultError, ErrorCodeNotSaved
	if err := s.record(context.WithoutCancel(ctx), req, ev); err != nil {
		s.cfg.Log.Error().Str("request_id", req.requestID).Str("tenant_id", req.tenantID).Err(err).
			Msg("could not record that a change was not saved: the audit log shows a change that did not happen")
	}
}

// orStored returns the requested value if it is set, else the stored one.
func orStored(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// redact removes from msg the credential and every string in it of 6 characters or more (a
// token, a secret, a private key), in case some layer quoted one. Errors of byok's providers do
// not quote credentials; this holds for libraries underneath too.
func redact(msg string, credential []byte) string {
	secrets := []string{string(credential)}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			if len(v) >= 6 {
				secrets = append(secrets, v)
				if b, err := json.Marshal(v); err == nil {
					secrets = append(secrets, string(b[1:len(b)-1])) // as it appears in JSON
				}
			}
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	var v any
	if json.Unmarshal(credential, &v) == nil {
		walk(v)
	}
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, sec := range secrets {
		if sec != "" {
			msg = strings.ReplaceAll(msg, sec, "[redacted]")
		}
	}
	return msg
}
