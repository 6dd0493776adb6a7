package api

import (
	"net/http"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/control"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/scope"
)

// RevocationRequest is the body of POST /v1/tenants/{tenant}/revocations: one chat, a UTC day
// range (inclusive; either end may be open), or a chat within a range. With neither a chat nor a
// day, the revocation covers the whole tenant.
type RevocationRequest struct {
	ChatID  string `json:"chat_id,omitempty"`
	FromDay string `json:"from_day,omitempty"` // YYYY-MM-DD
	ToDay   string `json:"to_day,omitempty"`   // YYYY-MM-DD
	// Reason is required: it is shown in listings.
	Reason string `json:"reason"`
}

const revocationShape = `{"chat_id": "...", "from_day": "YYYY-MM-DD", "to_day": "YYYY-MM-DD", "reason": "..."}`

// RevocationView is a revocation as the API shows it.
type RevocationView struct {
	RevocationID string     `json:"revocation_id"`
	TenantID     string     `json:"tenant_id"`
	ChatID       string     `json:"chat_id,omitempty"`
	FromDay      string     `json:"from_day,omitempty"`
	ToDay        string     `json:"to_day,omitempty"`
	Reason       string     `json:"reason"`
	CreatedAt    *time.Time `json:"created_at,omitempty"`
	CreatedBy    string     `json:"created_by,omitempty"`
	// Covers says in words what is revoked, e.g. "chat c-1, 2026-01-01..2026-01-31".
	Covers string `json:"covers"`
}

// RevocationsResponse is the answer of GET /v1/tenants/{tenant}/revocations, oldest first.
type RevocationsResponse struct {
	Revocations []RevocationView `json:"revocations"`
}

// Purposes of revoke and unrevoke audit events: what kind of revocation it is.
const (
	PurposeChat     = "chat"      // one chat, every day
	PurposeDays     = "days"      // a day range of every chat
	PurposeChatDays = "chat_days" // a day range of one chat
	PurposeTenant   = "tenant"    // every chat, every day
)

func revocationView(r *byokv1.Revocation) RevocationView {
	v := RevocationView{RevocationID: r.RevocationId, TenantID: r.TenantId, ChatID: r.ChatId, FromDay: r.FromDay,
		ToDay: r.ToDay, Reason: r.Reason, CreatedBy: r.CreatedBy, Covers: control.Describe(r)}
	if r.CreatedAt != nil {
		t := r.CreatedAt.AsTime().UTC()
		v.CreatedAt = &t
	}
	return v
}

// revocationEvent is the audit event of revoking or un-revoking r: its scope is the chat ("" for
// every chat) and the day range "from..to".
func revocationEvent(op string, r *byokv1.Revocation, ts *byokv1.TenantSettings) *byokv1.AuditEvent {
	purpose := PurposeTenant
	switch {
	case r.ChatId != "" && (r.FromDay != "" || r.ToDay != ""):
		purpose = PurposeChatDays
	case r.ChatId != "":
		purpose = PurposeChat
	case r.FromDay != "" || r.ToDay != "":
		purpose = PurposeDays
	}
	return &byokv1.AuditEvent{Operation: op, Purpose: purpose, Provider: ts.GetProvider(), KekId: ts.GetKekId(),
		Scopes: []*byokv1.AuditScope{{ChatId: r.ChatId, Day: r.FromDay + ".." + r.ToDay}}}
}

func (s *server) listRevocations(w http.ResponseWriter, _ *http.Request, req *request) {
	resp := RevocationsResponse{Revocations: []RevocationView{}}
	for _, r := range s.cfg.Store.Revocations(req.tenantID) {
		resp.Revocations = append(resp.Revocations, revocationView(r))
	}
	writeJSON(w, http.StatusOK, resp)
}

// check validates a revocation request; the reason names the field.
func (b *RevocationRequest) check() string {
	if msg := checkText("chat_id", b.ChatID, scope.MaxChatIDLen); msg != "" {
		return msg
	}
	var from, to scope.Day
	var err error
	if b.FromDay != "" {
		if from, err = scope.ParseDay(b.FromDay); err != nil || len(b.FromDay) != 10 {
			return "from_day must be a date as YYYY-MM-DD"
		}
	}
	if b.ToDay != "" {
		if to, err = scope.ParseDay(b.ToDay); err != nil || len(b.ToDay) != 10 {
			return "to_day must be a date as YYYY-MM-DD"
		}
	}
	if b.FromDay != "" && b.ToDay != "" && to < from {
		return "to_day " + b.ToDay + " is before from_day " + b.FromDay
	}
	if b.Reason == "" {
		return "reason is required: it is shown with the revocation"
	}
	return checkText("reason", b.Reason, MaxReasonLen)
}

func (s *server) revoke(w http.ResponseWriter, r *http.Request, req *request) {
	var body RevocationRequest
	if !decodeBody(w, r, &body, revocationShape) {
		return
	}
	if msg := body.check(); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	id, err := uuid.NewV7()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "could not generate a revocation id")
		return
	}
	rev := &byokv1.Revocation{SchemaVersion: 1, RevocationId: id.String(), TenantId: req.tenantID, ChatId: body.ChatID,
		FromDay: body.FromDay, ToDay: body.ToDay, Reason: body.Reason, CreatedAt: timestamppb.New(s.cfg.Now()),
		CreatedBy: req.admin.Name}

	ctx, cancel := writeContext(r)
	defer cancel()
	defer s.lock(req.tenantID)()
	ts, _ := s.cfg.Store.Settings(req.tenantID)
	if err := s.record(ctx, req, revocationEvent(audit.OpRevoke, rev, ts)); err != nil {
		s.failed(w, req, audit.OpRevoke, "revocation could not be recorded in the audit log", err,
			"the revocation could not be recorded in the audit log, so it was not made; try again")
		return
	}
	if err := s.cfg.Store.Revoke(ctx, rev); err != nil {
		s.recordNotSaved(ctx, req, revocationEvent(audit.OpRevoke, rev, ts))
		s.failed(w, req, audit.OpRevoke, "revocation not published", err,
			"the revocation could not be saved (the control topic did not confirm it); try again")
		return
	}
	s.changed(audit.OpRevoke, "ok")
	s.cfg.Log.Info().Str("request_id", req.requestID).Str("tenant_id", req.tenantID).Str("admin", req.admin.Name).
		Str("revocation_id", rev.RevocationId).Str("covers", control.Describe(rev)).Msg("revoked")
	w.Header().Set("Location", "/v1/tenants/"+req.tenantID+"/revocations/"+rev.RevocationId)
	writeJSON(w, http.StatusCreated, revocationView(rev))
}

func (s *server) unrevoke(w http.ResponseWriter, r *http.Request, req *request) {
	id := r.PathValue("id")
	ctx, cancel := writeContext(r)
	defer cancel()
	defer s.lock(req.tenantID)()
	var rev *byokv1.Revocation
	for _, x := range s.cfg.Store.Revocations(req.tenantID) {
		if x.RevocationId == id {
			rev = x
			break
		}
	}
	if rev == nil {
		writeError(w, http.StatusNotFound, "tenant "+req.tenantID+" has no revocation "+id)
		return
	}
	ts, _ := s.cfg.Store.Settings(req.tenantID)
	if err := s.record(ctx, req, revocationEvent(audit.OpUnrevoke, rev, ts)); err != nil {
		s.failed(w, req, audit.OpUnrevoke, "un-revocation could not be recorded in the audit log", err,
			"the un-revocation could not be recorded in the audit log, so the revocation stays; try again")
		return
	}
	if err := s.cfg.Store.Unrevoke(ctx, req.tenantID, id); err != nil {
		s.recordNotSaved(ctx, req, revocationEvent(audit.OpUnrevoke, rev, ts))
		s.failed(w, req, audit.OpUnrevoke, "un-revocation not published", err,
			"the un-revocation could not be saved (the control topic did not confirm it); try again")
		return
	}
	s.changed(audit.OpUnrevoke, "ok")
	s.cfg.Log.Info().Str("request_id", req.requestID).Str("tenant_id", req.tenantID).Str("admin", req.admin.Name).
		Str("revocation_id", id).Str("covers", control.Describe(rev)).Msg("un-revoked")
	w.WriteHeader(http.StatusNoContent)
}
