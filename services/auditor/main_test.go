package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil)
	if err != nil {
		t.Fatalf("parseConfig(nil) err = %v", err)
	}
	if c.consumer.Topic != "byok.audit" || c.consumer.GroupID != "byok-auditor" || c.chAddr != "127.0.0.1:19000" ||
		c.chDatabase != "byok" || c.consumer.FlushCount != 10_000 || c.consumer.FlushBytes != 8<<20 ||
		c.consumer.FlushInterval != time.Second || c.retentionDays != 0 {
		t.Errorf("defaults = %+v", c)
	}
}

func TestParseConfigEnvAndFlags(t *testing.T) {
	t.Setenv("BYOK_CLICKHOUSE_ADDR", "10.0.0.1:9000")
	t.Setenv("BYOK_AUDITOR_GROUP", "g-env")
	c, err := parseConfig([]string{"-group", "g-flag", "-flush-interval", "250ms"})
	if err != nil {
		t.Fatal(err)
	}
	if c.chAddr != "10.0.0.1:9000" || c.consumer.GroupID != "g-flag" || c.consumer.FlushInterval != 250*time.Millisecond {
		t.Errorf("clickhouse %q group %q interval %v; want env value, flag over env, flag", c.chAddr, c.consumer.GroupID, c.consumer.FlushInterval)
	}
}

func TestParseConfigNamesTheBadSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  [2]string
		want string
	}{
		{args: []string{"-flush-count", "0"}, want: "-flush-count"},
		{args: []string{"-flush-bytes", "-1"}, want: "-flush-bytes"},
		{args: []string{"-flush-interval", "0s"}, want: "-flush-interval"},
		{args: []string{"-clickhouse", ""}, want: "-clickhouse"},
		{args: []string{"-clickhouse-database", "byok; DROP"}, want: "-clickhouse-database"},
		{args: []string{"-retention-days", "-3"}, want: "-retention-days"},
		{args: []string{"-session-timeout", "2s"}, want: "-session-timeout"},
		{args: []string{"-brokers", ""}, want: "brokers"},
		{env: [2]string{"BYOK_AUDITOR_FLUSH_INTERVAL", "soon"}, want: "BYOK_AUDITOR_FLUSH_INTERVAL"},
		{env: [2]string{"BYOK_AUDITOR_FLUSH_COUNT", "many"}, want: "BYOK_AUDITOR_FLUSH_COUNT"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if tc.env[0] != "" {
				t.Setenv(tc.env[0], tc.env[1])
			}
			_, err := parseConfig(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseConfig(%q, %v) err = %v, want one naming %s", tc.args, tc.env, err, tc.want)
			}
		})
	}
}
