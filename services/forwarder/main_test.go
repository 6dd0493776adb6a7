package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"tenants":{"acme":{"webhook":{"url":"https://siem.acme.example/byok?token=TOKENVALUE","secret_env":"FWD_TEST_ACME_SECRET"}}}}`)
	badJSON := write("bad.json", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret":"INLINESECRET-0123456789"`)
	noSecret := write("nosecret.json", `{"tenants":{"acme":{"webhook":{"url":"https://h/x","secret_env":"FWD_TEST_UNSET"}}}}`)
	t.Setenv("FWD_TEST_ACME_SECRET", "acme-secret-0123456789")

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // "" means valid; else a substring of the error
	}{
		{"valid", []string{"-targets-file", good}, nil, ""},
		{"valid from env", nil, map[string]string{"BYOK_FORWARD_TARGETS_FILE": good, "BYOK_FORWARDER_BATCH_SIZE": "10"}, ""},
		{"targets required", nil, nil, "-targets-file (BYOK_FORWARD_TARGETS_FILE) is required"},
		{"targets unreadable", []string{"-targets-file", filepath.Join(dir, "missing.json")}, nil, "-targets-file (BYOK_FORWARD_TARGETS_FILE): targets file"},
		{"targets not json", []string{"-targets-file", badJSON}, nil, "-targets-file (BYOK_FORWARD_TARGETS_FILE): targets file is not valid"},
		{"secret env empty", []string{"-targets-file", noSecret}, nil, "tenant acme: webhook.secret_env: environment variable FWD_TEST_UNSET is empty"},
		{"no brokers", []string{"-targets-file", good, "-brokers", " , "}, nil, "-brokers (BYOK_KAFKA_BROKERS)"},
		{"empty topic", []string{"-targets-file", good, "-audit-topic", ""}, nil, "-audit-topic (BYOK_AUDIT_TOPIC)"},
		{"empty group", []string{"-targets-file", good, "-group", ""}, nil, "-group (BYOK_FORWARDER_GROUP)"},
		{"batch size", []string{"-targets-file", good, "-batch-size", "0"}, nil, "-batch-size (BYOK_FORWARDER_BATCH_SIZE)"},
		{"batch size env not int", []string{"-targets-file", good}, map[string]string{"BYOK_FORWARDER_BATCH_SIZE": "many"}, "BYOK_FORWARDER_BATCH_SIZE (-batch-size)"},
		{"batch wait", []string{"-targets-file", good, "-batch-wait", "0s"}, nil, "-batch-wait (BYOK_FORWARDER_BATCH_WAIT)"},
		{"timeout", []string{"-targets-file", good, "-timeout", "-1s"}, nil, "-timeout (BYOK_FORWARDER_TIMEOUT)"},
		{"max held", []string{"-targets-file", good, "-max-held", "10", "-batch-size", "20"}, nil, "-max-held (BYOK_FORWARDER_MAX_HELD)"},
		{"session", []string{"-targets-file", good, "-session-timeout", "1s"}, nil, "-session-timeout (BYOK_SESSION_TIMEOUT)"},
		{"log level", []string{"-targets-file", good, "-log-level", "loud"}, nil, "-log-level (BYOK_LOG_LEVEL)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := parseConfig(tc.args)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("parseConfig(%q) err = %v, want nil", tc.args, err)
				}
				if c.forward.GroupID != "byok-forwarder" || c.forward.Topic != "byok.audit" || len(c.targets) != 1 || c.forward.BatchWait != time.Second {
					t.Errorf("parseConfig() = group %q topic %q targets %d batch-wait %v; want defaults and 1 target",
						c.forward.GroupID, c.forward.Topic, len(c.targets), c.forward.BatchWait)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseConfig(%q) err = %v, want an error containing %q", tc.args, err, tc.want)
			}
			for _, secret := range []string{"INLINESECRET", "acme-secret-0123456789", "TOKENVALUE"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
		})
	}
}
