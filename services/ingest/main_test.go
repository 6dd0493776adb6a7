package main

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/byok-io/byok/pkg/kafkax"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    config
		wantErr string
	}{
		{
			name: "defaults",
			want: config{listen: "127.0.0.1:8080", brokers: []string{"127.0.0.1:19092"}, topic: kafkax.TopicPlaintext, logLevel: "info"},
		},
		{
			name: "env",
			env: map[string]string{"BYOK_INGEST_LISTEN": ":9000", "BYOK_KAFKA_BROKERS": "k1:9092, k2:9092",
				"BYOK_PLAINTEXT_TOPIC": "in", "BYOK_LOG_LEVEL": "DEBUG"},
			want: config{listen: ":9000", brokers: []string{"k1:9092", "k2:9092"}, topic: "in", logLevel: "debug"},
		},
		{
			name: "flags win over env",
			args: []string{"-listen", ":9001", "-brokers", "k3:9092", "-plaintext-topic", "t", "-log-level", "warn"},
			env:  map[string]string{"BYOK_INGEST_LISTEN": ":9000", "BYOK_KAFKA_BROKERS": "k1:9092", "BYOK_PLAINTEXT_TOPIC": "in"},
			want: config{listen: ":9001", brokers: []string{"k3:9092"}, topic: "t", logLevel: "warn"},
		},
		{name: "bad listen", env: map[string]string{"BYOK_INGEST_LISTEN": "8080"}, wantErr: "-listen (BYOK_INGEST_LISTEN)"},
		{name: "empty brokers", args: []string{"-brokers", " , "}, wantErr: "-brokers (BYOK_KAFKA_BROKERS) is empty"},
		{name: "broker without port", args: []string{"-brokers", "k1:9092,k2"}, wantErr: `-brokers (BYOK_KAFKA_BROKERS): "k2"`},
		{name: "empty topic", args: []string{"-plaintext-topic", " "}, wantErr: "-plaintext-topic (BYOK_PLAINTEXT_TOPIC)"},
		{name: "bad log level", env: map[string]string{"BYOK_LOG_LEVEL": "verbose"}, wantErr: "-log-level (BYOK_LOG_LEVEL)"},
		{name: "unknown flag", args: []string{"-listn", ":1"}, wantErr: "listn"},
		{name: "stray argument", args: []string{"serve"}, wantErr: `unexpected argument "serve"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseConfig() err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseConfig() err = %v, want nil", err)
			}
			if got.listen != tt.want.listen || !slices.Equal(got.brokers, tt.want.brokers) ||
				got.topic != tt.want.topic || got.logLevel != tt.want.logLevel {
				t.Errorf("parseConfig() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
