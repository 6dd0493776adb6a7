package callers

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	h := TokenSHA256("t")
	for _, tc := range []struct{ name, file, want string }{
		{"ok", `{"callers": {"a": {"token_sha256": "` + h + `", "tenants": ["acme"]}}}`, ""},
		{"bad hash", `{"callers": {"a": {"token_sha256": "abc", "tenants": ["acme"]}}}`, "caller a: token_sha256"},
		{"no tenants", `{"callers": {"a": {"token_sha256": "` + h + `", "tenants": []}}}`, "caller a: tenants is empty"},
		{"dup token", `{"callers": {"a": {"token_sha256": "` + h + `", "tenants": ["x"]}, "b": {"token_sha256": "` + h + `", "tenants": ["x"]}}}`, "same token"},
		{"plain token field", `{"callers": {"a": {"token": "t", "tenants": ["x"]}}}`, "not valid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.file))
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Parse() err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestAuthenticate(t *testing.T) {
	cs, err := Parse([]byte(`{"callers": {"a": {"token_sha256": "` + TokenSHA256("tok-a") + `", "tenants": ["acme"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := cs.Authenticate("tok-a"); !ok || c.Name != "a" || !c.Allowed("acme") || c.Allowed("globex") {
		t.Fatalf("Authenticate(tok-a) = %+v, %v", c, ok)
	}
	for _, tok := range []string{"", "tok-b", "tok-a "} {
		if _, ok := cs.Authenticate(tok); ok {
			t.Fatalf("Authenticate(%q) succeeded", tok)
		}
	}
}
