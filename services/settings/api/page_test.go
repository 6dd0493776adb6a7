package api

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/settings"
)

// chromiumPath is where Debian's chromium package puts the browser (STACK.md).
const chromiumPath = "/usr/bin/chromium"

// newBrowser starts a headless Chromium with a fresh profile and returns a tab's context. The
// test is skipped without Chromium unless BYOK_REQUIRE_INTEGRATION=1 (CI), where it fails.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("BYOK_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("%s is missing and BYOK_REQUIRE_INTEGRATION=1: install it with apt-get install -y chromium", chromiumPath)
		}
		t.Skipf("%s is missing (apt-get install -y chromium); skipping the browser test of the settings page", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// The first Run starts the browser and must not carry a timeout (it would stop the browser).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// steps runs browser actions with a deadline.
func steps(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition; on timeout it fails with what the page shows.
func waitFor(t *testing.T, ctx context.Context, what, cond string) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := chromedp.Run(tctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		status := eval[string](t, ctx, `[...document.querySelectorAll('.status')].map(e => e.id + ': ' + e.textContent).join(' | ')`)
		t.Fatalf("waiting for %s (%s): %v; page status lines: %s", what, cond, err, status)
	}
}

const statusIs = `(() => { const s = document.getElementById('status'); return s.classList.contains(%q) && s.textContent.includes(%q); })()`

func TestSettingsPageInChromium(t *testing.T) {
	f := newFixture(t)
	ctx := newBrowser(t)
	cred := f.credential()

	// Sign in and pick a tenant other than the first.
	steps(t, ctx, "sign in",
		chromedp.Navigate(f.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), aliceToken),
		chromedp.Click(chromedp.ID("signin-button")),
		chromedp.WaitVisible(chromedp.ID("app")),
	)
	if got := eval[[]string](t, ctx, `[...document.querySelectorAll('#tenant option')].map(o => o.value)`); strings.Join(got, ",") != "acme,globex" {
		t.Fatalf("tenant picker offers %v, want alice's acme,globex", got)
	}
	eval[bool](t, ctx, `(() => { const s = document.getElementById('tenant'); s.value = 'globex'; s.dispatchEvent(new Event('change')); return true; })()`)
	waitFor(t, ctx, "globex's (empty) settings", `document.getElementById('meta').textContent === 'Not saved yet'`)
	if got := eval[string](t, ctx, `document.querySelector('#settings .hint').textContent`); got != "When enabled, all new messages are encrypted automatically." {
		t.Fatalf("toggle hint = %q", got)
	}

	// Toggle on, type key id and credential, shorten the DEK cache, save.
	steps(t, ctx, "fill in",
		chromedp.Click(chromedp.CSS("label.switch")),
		chromedp.SetValue(chromedp.ID("provider"), "local"),
		chromedp.SendKeys(chromedp.ID("kek-id"), kekGlobex),
		chromedp.SendKeys(chromedp.ID("credential"), cred),
		chromedp.SendKeys(chromedp.ID("dek-ttl"), "\b20"), // replace the shown 0
	)
	if got := eval[string](t, ctx, `document.getElementById('dek-ttl').value`); got != "20" {
		t.Fatalf("DEK cache field = %q after typing, want 20", got)
	}
	steps(t, ctx, "save", chromedp.Click(chromedp.ID("save")))
	waitFor(t, ctx, "the save to succeed", fmt.Sprintf(statusIs, "ok", "Saved. Advanced encryption is on"))
	ts, ok := f.store.Settings("globex")
	if !ok || !ts.Enabled || ts.Provider != "local" || ts.KekId != kekGlobex || ts.UpdatedBy != "alice" || ts.Revision != 1 || ts.DekCacheTtlSeconds != 20 {
		t.Fatalf("stored settings = %v, want globex enabled with local/%s by alice, revision 1, DEK cache TTL 20 s", ts, kekGlobex)
	}
	c, err := settings.ToConfig(ts, f.key)
	if err != nil || string(c.Credential) != cred {
		t.Fatalf("stored credential opens to %d bytes (%v), want what was typed", len(c.Credential), err)
	}
	var changes int
	for _, ev := range f.sink.all() {
		if ev.Operation == audit.OpSettingsChange && ev.TenantId == "globex" && ev.Purpose == PurposeEnable && ev.ActorUser == "alice" {
			changes++
		}
	}
	if changes != 1 {
		t.Fatalf("settings_change/enable events for globex by alice = %d, want 1 (events %v)", changes, f.sink.ops())
	}

	// Reload: the page knows a credential is stored but never receives it.
	steps(t, ctx, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("app")))
	waitFor(t, ctx, "the saved settings after reload", `document.getElementById('meta').textContent.startsWith('Revision 1, saved')`)
	if got := eval[string](t, ctx, `document.getElementById('tenant').value`); got != "globex" {
		t.Fatalf("tenant after reload = %q, want globex (remembered for the tab)", got)
	}
	if v, ph := eval[string](t, ctx, `document.getElementById('credential').value`), eval[string](t, ctx, `document.getElementById('credential').placeholder`); v != "" || ph != "stored — leave empty to keep" {
		t.Fatalf("credential text area = %q, placeholder %q; want empty with the stored placeholder", v, ph)
	}
	if !eval[bool](t, ctx, `document.getElementById('enabled').checked`) || eval[string](t, ctx, `document.getElementById('kek-id').value`) != kekGlobex {
		t.Fatal("after reload the toggle is off or the key id is not shown")
	}
	page := eval[string](t, ctx, `document.documentElement.outerHTML + [...document.querySelectorAll('input, textarea, select')].map(e => e.value).join('\n') + JSON.stringify(sessionStorage) + JSON.stringify(localStorage)`)
	for _, secret := range []string{credCanary, f.keyFile} {
		if strings.Contains(page, secret) {
			t.Fatalf("after reload the page (DOM, field values or storage) contains %q", secret)
		}
	}
	f.mu.Lock()
	reqs := strings.Join(f.requests, "\n") + "\n"
	f.mu.Unlock()
	for _, want := range []string{"GET /", "GET /assets/app.js", "GET /v1/tenants", "PUT /v1/tenants/globex/settings", "GET /v1/tenants/globex/settings"} {
		if !strings.Contains(reqs, want+"\n") {
			t.Fatalf("the browser never sent %s; requests:\n%s", want, reqs)
		}
	}
	// Every response the server sent the browser is scanned for the credential by checkNoLeaks.

	// A wrong key id is refused with the reason, and nothing changes.
	steps(t, ctx, "save a wrong key id",
		chromedp.SetValue(chromedp.ID("kek-id"), "no-such-kek"),
		chromedp.Click(chromedp.ID("save")),
	)
	waitFor(t, ctx, "the refusal", fmt.Sprintf(statusIs, "error", "found no such key: check the KMS Key ID"))
	if after, _ := f.store.Settings("globex"); after.Revision != 1 || after.KekId != kekGlobex || !after.Enabled {
		t.Fatalf("a refused save changed the settings: %v", after)
	}

	// Revoke a chat and a day range, then un-revoke the chat.
	steps(t, ctx, "revoke a chat",
		chromedp.SendKeys(chromedp.ID("rev-chat"), "chat-9"),
		chromedp.SendKeys(chromedp.ID("rev-reason"), "incident 7"),
		chromedp.Click(chromedp.ID("revoke")),
	)
	waitFor(t, ctx, "the chat revocation listed", `document.querySelectorAll('#revocations tr').length === 1 && document.getElementById('revocations').textContent.includes('chat chat-9, every day')`)
	steps(t, ctx, "revoke a day range",
		chromedp.SetValue(chromedp.ID("rev-from"), "2026-01-01"),
		chromedp.SetValue(chromedp.ID("rev-to"), "2026-01-31"),
		chromedp.SendKeys(chromedp.ID("rev-reason"), "January export"),
		chromedp.Click(chromedp.ID("revoke")),
	)
	waitFor(t, ctx, "the range revocation listed", `document.querySelectorAll('#revocations tr').length === 2 && document.getElementById('revocations').textContent.includes('every chat, 2026-01-01..2026-01-31')`)
	revs := f.store.Revocations("globex")
	if len(revs) != 2 || revs[0].ChatId != "chat-9" || revs[0].Reason != "incident 7" || revs[1].FromDay != "2026-01-01" || revs[1].ToDay != "2026-01-31" {
		t.Fatalf("stored revocations = %v", revs)
	}
	steps(t, ctx, "un-revoke the chat", chromedp.Click(chromedp.CSS(`#revocations tr[data-id="`+revs[0].RevocationId+`"] button.unrevoke`)))
	waitFor(t, ctx, "the chat revocation gone", `document.querySelectorAll('#revocations tr').length === 1 && !document.getElementById('revocations').textContent.includes('chat-9')`)
	if revs := f.store.Revocations("globex"); len(revs) != 1 || revs[0].ChatId != "" {
		t.Fatalf("after un-revoke the store holds %v, want only the day range", revs)
	}
	var ops []string
	for _, ev := range f.sink.all() {
		if ev.Operation == audit.OpRevoke || ev.Operation == audit.OpUnrevoke {
			ops = append(ops, ev.Operation+":"+ev.Scopes[0].ChatId+"@"+ev.Scopes[0].Day)
		}
	}
	if want := "revoke:chat-9@.. revoke:@2026-01-01..2026-01-31 unrevoke:chat-9@.."; strings.Join(ops, " ") != want {
		t.Fatalf("revocation audit events = %v, want %s", ops, want)
	}
}
