package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/settings"
	"github.com/byok-io/byok/services/settings/api"
)

const (
	settingsTestToken = "CANARY-TOKEN-byokctl-settings-5e0a"
	settingsTestCred  = "CANARY-CRED-byokctl-91ab"
)

type settingsFixture struct {
	url, credFile, keyFile, tokenFile string
	store                             *api.MemStore
	key                               *settings.Key
	logs                              bytes.Buffer
}

func newSettingsFixture(t *testing.T) *settingsFixture {
	t.Helper()
	dir := t.TempDir()
	f := &settingsFixture{store: api.NewMemStore(), keyFile: filepath.Join(dir, "kms.json"), credFile: filepath.Join(dir, "cred.json"),
		tokenFile: filepath.Join(dir, "token")}
	if err := local.WriteKeyFile(f.keyFile, "acme-kek"); err != nil {
		t.Fatal(err)
	}
	cred, _ := json.Marshal(map[string]string{"key_file": f.keyFile, "comment": settingsTestCred})
	if err := os.WriteFile(f.credFile, cred, 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(f.tokenFile, []byte(settingsTestToken+"\n"), 0o600)
	var err error
	if f.key, err = settings.GenerateKeyFile(filepath.Join(dir, "settings.key")); err != nil {
		t.Fatal(err)
	}
	admins, err := api.ParseAdmins(fmt.Appendf(nil, `{"callers": {"sec-team": {"token_sha256": %q, "tenants": ["acme", "globex"]}}}`,
		callers.TokenSHA256(settingsTestToken)))
	if err != nil {
		t.Fatal(err)
	}
	h, err := api.NewHandler(api.Config{Store: f.store, Admins: admins, Key: f.key, Audit: audit.NewLog(discardSink{}, "settings-test"),
		Providers: []string{"local"}, Log: zerolog.New(&f.logs)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// ctl runs byokctl with the fixture's service URL and returns exit code, stdout, stderr. The
// token comes from the environment unless args name a -token-file.
func (f *settingsFixture) ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	full := append(args[:len(args):len(args)], "-settings-url", f.url)
	code := run(context.Background(), full, &out, &errOut)
	for _, s := range []string{out.String(), errOut.String()} {
		if strings.Contains(s, settingsTestToken) || strings.Contains(s, settingsTestCred) {
			t.Fatalf("byokctl %v printed the token or the credential:\n%s", args, s)
		}
	}
	return code, out.String(), errOut.String()
}

func TestTenantSettingsCommands(t *testing.T) {
	f := newSettingsFixture(t)
	t.Setenv("BYOK_SETTINGS_TOKEN", settingsTestToken)

	code, out, errOut := f.ctl(t, "tenant", "enable", "-tenant", "acme", "-provider", "local", "-kek-id", "acme-kek", "-credential-file", f.credFile)
	if code != 0 || !strings.Contains(out, "ok: tenant acme: advanced encryption on (local key acme-kek, validated), revision 1") {
		t.Fatalf("tenant enable = %d\n%s%s", code, out, errOut)
	}
	ts, _ := f.store.Settings("acme")
	c, err := settings.ToConfig(ts, f.key)
	want, _ := os.ReadFile(f.credFile)
	if err != nil || !bytes.Equal(c.Credential, want) {
		t.Fatalf("stored credential = %d bytes (%v), want the credential file's content", len(c.Credential), err)
	}

	code, out, errOut = f.ctl(t, "tenant", "enable", "-tenant", "acme", "-kek-id", "typo-kek")
	if code != 1 || !strings.Contains(errOut, "tenant enable refused: the KMS settings do not work") || !strings.Contains(errOut, "check the KMS Key ID") {
		t.Fatalf("tenant enable with a wrong key id = %d\n%s%s, want exit 1 with the reason", code, out, errOut)
	}
	if ts, _ := f.store.Settings("acme"); ts.KekId != "acme-kek" || ts.Revision != 1 {
		t.Fatalf("a refused enable changed the settings: %v", ts)
	}

	code, out, errOut = f.ctl(t, "tenant", "disable", "-tenant", "acme", "-token-file", f.tokenFile)
	if code != 0 || !strings.Contains(out, "ok: tenant acme: advanced encryption off, revision 2") {
		t.Fatalf("tenant disable (token from file) = %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = f.ctl(t, "tenant", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[1], "acme ") || !strings.Contains(lines[1], "off") ||
		!strings.Contains(lines[1], "stored") || !strings.HasPrefix(lines[2], "globex ") || !strings.Contains(lines[3], "2 tenants for admin sec-team") {
		t.Fatalf("tenant list = %d\n%s%s", code, out, errOut)
	}
}

func TestRevocationCommands(t *testing.T) {
	f := newSettingsFixture(t)
	t.Setenv("BYOK_SETTINGS_TOKEN", settingsTestToken)

	code, out, errOut := f.ctl(t, "revoke", "-tenant", "acme", "-chat", "c-1", "-from", "2026-03-01", "-to", "2026-03-31", "-reason", "leak inquiry")
	if code != 0 || !strings.Contains(out, "revoked: tenant acme, chat c-1, 2026-03-01..2026-03-31 (id ") {
		t.Fatalf("revoke = %d\n%s%s", code, out, errOut)
	}
	revs := f.store.Revocations("acme")
	if len(revs) != 1 || revs[0].ChatId != "c-1" || revs[0].Reason != "leak inquiry" || revs[0].CreatedBy != "sec-team" {
		t.Fatalf("stored revocations = %v", revs)
	}
	id := revs[0].RevocationId

	code, out, _ = f.ctl(t, "revocations", "-tenant", "acme")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "leak inquiry") || !strings.Contains(out, "1 revocations for tenant acme") {
		t.Fatalf("revocations = %d\n%s", code, out)
	}

	code, out, errOut = f.ctl(t, "unrevoke", "-tenant", "acme", "-id", id)
	if code != 0 || !strings.Contains(out, "un-revoked: tenant acme, revocation "+id) || len(f.store.Revocations("acme")) != 0 {
		t.Fatalf("unrevoke = %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = f.ctl(t, "unrevoke", "-tenant", "acme", "-id", id)
	if code != 1 || !strings.Contains(errOut, "404") || !strings.Contains(errOut, "has no revocation") {
		t.Fatalf("unrevoke again = %d %s, want exit 1 with 404", code, errOut)
	}
	code, _, errOut = f.ctl(t, "revoke", "-tenant", "acme", "-from", "2026-03-31", "-to", "2026-03-01", "-reason", "r")
	if code != 1 || !strings.Contains(errOut, "400 to_day 2026-03-01 is before from_day 2026-03-31") {
		t.Fatalf("revoke with a reversed range = %d %s", code, errOut)
	}
	code, _, errOut = f.ctl(t, "revoke", "-tenant", "initech", "-chat", "c", "-reason", "r")
	if code != 1 || !strings.Contains(errOut, "403") {
		t.Fatalf("revoke on another admin's tenant = %d %s, want 403", code, errOut)
	}
	if code, _, errOut = f.ctl(t, "revoke", "-tenant", "acme", "-reason", "everything"); code != 2 || !strings.Contains(errOut, "add -all") {
		t.Fatalf("revoke of the whole tenant without -all = %d %s, want 2", code, errOut)
	}
	if code, out, errOut = f.ctl(t, "revoke", "-tenant", "acme", "-reason", "everything", "-all"); code != 0 || !strings.Contains(out, "every chat, every day") {
		t.Fatalf("revoke -all = %d %s%s", code, out, errOut)
	}
}

func TestSettingsCommandsUsageAndAuth(t *testing.T) {
	f := newSettingsFixture(t)
	t.Setenv("BYOK_SETTINGS_TOKEN", "")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tenant", "list"}, 2, "no admin token"},
		{[]string{"tenant", "enable"}, 2, "tenant enable needs -tenant"},
		{[]string{"revoke", "-tenant", "acme", "-chat", "c"}, 2, "revoke needs -reason"},
		{[]string{"unrevoke", "-tenant", "acme"}, 2, "unrevoke needs -id"},
		{[]string{"revocations", "-tenant", "acme", "-token-file", filepath.Join(t.TempDir(), "none")}, 2, "cannot read -token-file"},
		{[]string{"tenant", "enable", "-tenant", "acme", "-credential-file", f.keyFile + ".missing", "-token-file", f.tokenFile}, 2, "cannot read -credential-file"},
		{[]string{"tenant", "list", "-token-file", f.tokenFile, "extra"}, 2, `unexpected argument "extra"`},
	} {
		code, out, errOut := f.ctl(t, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("byokctl %v = %d\n%s%s, want %d with %q", tc.args, code, out, errOut, tc.code, tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte("token="+settingsTestCred), 0o600)
	if code, _, errOut := f.ctl(t, "tenant", "enable", "-tenant", "acme", "-credential-file", bad, "-token-file", f.tokenFile); code != 2 || !strings.Contains(errOut, "is not a JSON object") {
		t.Errorf("tenant enable with a non-JSON credential file = %d %s", code, errOut)
	}
	t.Setenv("BYOK_SETTINGS_TOKEN", "wrong-token")
	if code, _, errOut := f.ctl(t, "tenant", "list"); code != 1 || !strings.Contains(errOut, "401 missing or invalid bearer token") {
		t.Errorf("tenant list with a wrong token = %d %s, want exit 1 with 401", code, errOut)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"tenant", "list", "-settings-url", "ftp://x"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "not an http(s) URL") {
		t.Errorf("tenant list -settings-url ftp://x = %d %s", code, errOut.String())
	}
}
