package main

// The settings commands talk to the settings service (services/settings) over HTTP, as the
// settings page does, with an admin bearer token: `tenant list`, `tenant enable`, `tenant
// disable`, `revoke`, `unrevoke`, `revocations`. The service validates, audits and publishes;
// these commands only ask and print. The token and credentials are never printed.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/byok-io/byok/pkg/flagenv"
	"github.com/byok-io/byok/services/settings/api"
)

// settingsFlags are the flags every settings command takes.
type settingsFlags struct {
	fs        *flagenv.Set
	url       *string
	tokenFile *string
	timeout   *time.Duration
}

func newSettingsFlags(name string, errOut io.Writer) settingsFlags {
	fs := flagenv.New("byokctl " + name)
	fs.SetOutput(errOut)
	return settingsFlags{
		fs:        fs,
		url:       fs.String("settings-url", "BYOK_SETTINGS_URL", "http://127.0.0.1:8091", "the settings service"),
		tokenFile: fs.String("token-file", "BYOK_SETTINGS_TOKEN_FILE", "", "file holding the admin token (default: the BYOK_SETTINGS_TOKEN env var; never on the command line)"),
		timeout:   fs.Duration("timeout", "BYOK_CTL_TIMEOUT", time.Minute, "give up after"),
	}
}

// client builds the settings client after parsing; exit code 2 with a message when it cannot.
func (f settingsFlags) client(errOut io.Writer) (*settingsClient, int) {
	token := os.Getenv("BYOK_SETTINGS_TOKEN")
	if *f.tokenFile != "" {
		raw, err := os.ReadFile(*f.tokenFile)
		if err != nil {
			fmt.Fprintf(errOut, "byokctl: cannot read -token-file %s\n", *f.tokenFile)
			return nil, 2
		}
		token = string(raw)
	}
	token = strings.TrimSpace(token)
	if token == "" {
		fmt.Fprintln(errOut, "byokctl: no admin token: set BYOK_SETTINGS_TOKEN or give -token-file")
		return nil, 2
	}
	u, err := url.Parse(*f.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(errOut, "byokctl: -settings-url (BYOK_SETTINGS_URL) %q is not an http(s) URL\n", *f.url)
		return nil, 2
	}
	return &settingsClient{base: strings.TrimRight(*f.url, "/"), token: token, hc: &http.Client{Timeout: *f.timeout}}, 0
}

// settingsClient calls the settings service's /v1 API.
type settingsClient struct {
	base, token string
	hc          *http.Client
}

// apiError is a 4xx or 5xx answer of the settings service.
type apiError struct {
	status int
	reason string
}

func (e *apiError) Error() string { return fmt.Sprintf("settings service: %d %s", e.status, e.reason) }

// do sends body (if any) as JSON and decodes a 2xx answer into out (if any).
func (c *settingsClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err // a *url.Error: method, URL (no token: that is a header) and cause
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("settings service: read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e api.ErrorResponse
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &apiError{status: resp.StatusCode, reason: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("settings service: answer is not the expected JSON: %w", err)
		}
	}
	return nil
}

func settingsPath(tenantID, rest string) string {
	return "/v1/tenants/" + url.PathEscape(tenantID) + rest
}

// settingsFail prints err and returns the exit code: 1 for anything the service refused or could not do.
func settingsFail(errOut io.Writer, what string, err error) int {
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusUnprocessableEntity {
		fmt.Fprintf(errOut, "byokctl: %s refused: %s\n", what, ae.reason)
		return 1
	}
	fmt.Fprintf(errOut, "byokctl: %s: %v\n", what, err)
	return 1
}

// tenantSettingsCmd runs `byokctl tenant list|enable|disable`.
func tenantSettingsCmd(ctx context.Context, sub string, args []string, out, errOut io.Writer) int {
	f := newSettingsFlags("tenant "+sub, errOut)
	var tenantID, provider, kekID, credFile *string
	var dekTTL *time.Duration
	if sub != "list" {
		tenantID = f.fs.String("tenant", "BYOK_CTL_TENANT", "", "tenant id")
	}
	if sub == "enable" {
		provider = f.fs.String("provider", "BYOK_CTL_PROVIDER", "", "vault, yandex or cloudru (default: the stored one)")
		kekID = f.fs.String("kek-id", "BYOK_CTL_KEK_ID", "", "the tenant's key id in its KMS (default: the stored one)")
		credFile = f.fs.String("credential-file", "BYOK_CTL_CREDENTIAL_FILE", "", "file holding the provider's credential JSON (default: the stored one)")
		dekTTL = f.fs.Duration("dek-cache-ttl", "BYOK_CTL_DEK_CACHE_TTL", -1, "how long readers may use a DEK the KMS unwrapped, whole seconds (0: the default; default: keep the stored one)")
	}
	if err := f.fs.Parse(args); err != nil {
		return 2
	}
	if f.fs.NArg() > 0 {
		fmt.Fprintf(errOut, "byokctl: unexpected argument %q\n", f.fs.Arg(0))
		return 2
	}
	if tenantID != nil && *tenantID == "" {
		fmt.Fprintf(errOut, "byokctl: tenant %s needs -tenant\n", sub)
		return 2
	}
	c, code := f.client(errOut)
	if c == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, *f.timeout)
	defer cancel()

	switch sub {
	case "list":
		var resp api.TenantsResponse
		if err := c.do(ctx, http.MethodGet, "/v1/tenants", nil, &resp); err != nil {
			return settingsFail(errOut, "tenant list", err)
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tENCRYPTION\tPROVIDER\tKEK ID\tCREDENTIAL\tREVISION\tUPDATED BY\tUPDATED AT")
		for _, v := range resp.Tenants {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.TenantID, settingsOnOff(v.Enabled), settingsDash(v.Provider), settingsDash(v.KEKID),
				map[bool]string{true: "stored", false: "-"}[v.CredentialSet], v.Revision, settingsDash(v.UpdatedBy), settingsTime(v.UpdatedAt))
		}
		tw.Flush()
		fmt.Fprintf(out, "%d tenants for admin %s\n", len(resp.Tenants), resp.Admin)
		return 0
	case "enable", "disable":
		enabled := sub == "enable"
		req := api.SettingsRequest{Enabled: &enabled}
		if sub == "enable" {
			req.Provider, req.KEKID = *provider, *kekID
			if *dekTTL >= 0 {
				if *dekTTL%time.Second != 0 {
					fmt.Fprintf(errOut, "byokctl: -dek-cache-ttl %s is not whole seconds\n", *dekTTL)
					return 2
				}
				secs := uint32(*dekTTL / time.Second)
				req.DEKCacheTTLSeconds = &secs
			}
			if *credFile != "" {
				raw, err := os.ReadFile(*credFile)
				if err != nil {
					fmt.Fprintf(errOut, "byokctl: cannot read -credential-file %s\n", *credFile)
					return 2
				}
				raw = bytes.TrimSpace(raw)
				if len(raw) == 0 || raw[0] != '{' || !json.Valid(raw) {
					clear(raw)
					fmt.Fprintf(errOut, "byokctl: -credential-file %s is not a JSON object\n", *credFile)
					return 2
				}
				req.Credential = raw
				defer clear(raw)
			}
		}
		var v api.SettingsView
		if err := c.do(ctx, http.MethodPut, settingsPath(*tenantID, "/settings"), req, &v); err != nil {
			return settingsFail(errOut, "tenant "+sub, err)
		}
		if v.Enabled {
			fmt.Fprintf(out, "ok: tenant %s: advanced encryption on (%s key %s, validated), revision %d\n", v.TenantID, v.Provider, v.KEKID, v.Revision)
		} else {
			fmt.Fprintf(out, "ok: tenant %s: advanced encryption off, revision %d\n", v.TenantID, v.Revision)
		}
		return 0
	}
	fmt.Fprintln(errOut, usage)
	return 2
}

// revocationCmd runs `byokctl revoke|unrevoke|revocations`.
func revocationCmd(ctx context.Context, cmd string, args []string, out, errOut io.Writer) int {
	f := newSettingsFlags(cmd, errOut)
	tenantID := f.fs.String("tenant", "BYOK_CTL_TENANT", "", "tenant id")
	var chat, from, to, reason, id *string
	var all *bool
	switch cmd {
	case "revoke":
		chat = f.fs.String("chat", "BYOK_CTL_CHAT", "", "only this chat (default: every chat)")
		from = f.fs.String("from", "BYOK_CTL_FROM", "", "first UTC day revoked, YYYY-MM-DD (default: open)")
		to = f.fs.String("to", "BYOK_CTL_TO", "", "last UTC day revoked, YYYY-MM-DD (default: open)")
		reason = f.fs.String("reason", "BYOK_CTL_REASON", "", "why (shown in listings)")
		all = f.fs.Bool("all", "BYOK_CTL_ALL", false, "revoke every chat on every day: required when -chat, -from and -to are all empty")
	case "unrevoke":
		id = f.fs.String("id", "BYOK_CTL_REVOCATION_ID", "", "the revocation id (byokctl revocations lists them)")
	}
	if err := f.fs.Parse(args); err != nil {
		return 2
	}
	if f.fs.NArg() > 0 {
		fmt.Fprintf(errOut, "byokctl: unexpected argument %q\n", f.fs.Arg(0))
		return 2
	}
	switch {
	case *tenantID == "":
		fmt.Fprintf(errOut, "byokctl: %s needs -tenant\n", cmd)
		return 2
	case cmd == "revoke" && *reason == "":
		fmt.Fprintln(errOut, "byokctl: revoke needs -reason")
		return 2
	case cmd == "revoke" && *chat == "" && *from == "" && *to == "" && !*all:
		fmt.Fprintln(errOut, "byokctl: revoke without -chat, -from or -to cuts off the whole tenant: add -all if that is meant")
		return 2
	case cmd == "unrevoke" && *id == "":
		fmt.Fprintln(errOut, "byokctl: unrevoke needs -id")
		return 2
	}
	c, code := f.client(errOut)
	if c == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, *f.timeout)
	defer cancel()

	switch cmd {
	case "revoke":
		var v api.RevocationView
		req := api.RevocationRequest{ChatID: *chat, FromDay: *from, ToDay: *to, Reason: *reason}
		if err := c.do(ctx, http.MethodPost, settingsPath(*tenantID, "/revocations"), req, &v); err != nil {
			return settingsFail(errOut, "revoke", err)
		}
		fmt.Fprintf(out, "revoked: tenant %s, %s (id %s)\n", v.TenantID, v.Covers, v.RevocationID)
	case "unrevoke":
		if err := c.do(ctx, http.MethodDelete, settingsPath(*tenantID, "/revocations/"+url.PathEscape(*id)), nil, nil); err != nil {
			return settingsFail(errOut, "unrevoke", err)
		}
		fmt.Fprintf(out, "un-revoked: tenant %s, revocation %s\n", *tenantID, *id)
	case "revocations":
		var resp api.RevocationsResponse
		if err := c.do(ctx, http.MethodGet, settingsPath(*tenantID, "/revocations"), nil, &resp); err != nil {
			return settingsFail(errOut, "revocations", err)
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCOVERS\tREASON\tBY\tAT")
		for _, r := range resp.Revocations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.RevocationID, r.Covers, r.Reason, settingsDash(r.CreatedBy), settingsTime(r.CreatedAt))
		}
		tw.Flush()
		fmt.Fprintf(out, "%d revocations for tenant %s\n", len(resp.Revocations), *tenantID)
	}
	return 0
}

func settingsOnOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func settingsDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func settingsTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}
