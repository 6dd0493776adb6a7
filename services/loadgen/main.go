// Command loadgen sends synthetic messages to byok for long runs: to the ingest service over HTTP
// (-target http://host:port) or straight to the plaintext topic (-target kafka). It prints
// progress every second and a summary to stderr, and exits non-zero if any message failed.
// The generator lives in services/loadgen/gen; this file only reads configuration and builds the sink.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/producer"
	"github.com/byok-io/byok/services/loadgen/gen"
)

type config struct {
	target  string // ingest base URL, or "kafka"
	brokers []string
	topic   string
	gen     gen.Config
}

// parseConfig reads flags, each falling back to its environment variable, then to its default.
// Errors name the flag and the variable.
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (config, error) {
	def := gen.DefaultConfig()
	var bad []string
	str := func(env, d string) string {
		if v := getenv(env); v != "" {
			return v
		}
		return d
	}
	num := func(flagName, env string, d int) int {
		if v := getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				bad = append(bad, fmt.Sprintf("-%s (%s) %q is not an integer", flagName, env, v))
			}
			return n
		}
		return d
	}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(usage)
	target := fs.String("target", str("BYOK_LOADGEN_TARGET", "http://127.0.0.1:8080"), `ingest base URL, or "kafka" to publish to the plaintext topic (env BYOK_LOADGEN_TARGET)`)
	brokers := fs.String("brokers", str("BYOK_KAFKA_BROKERS", "127.0.0.1:19092"), "comma-separated Kafka brokers, for -target kafka (env BYOK_KAFKA_BROKERS)")
	topic := fs.String("plaintext-topic", str("BYOK_PLAINTEXT_TOPIC", kafkax.TopicPlaintext), "plaintext topic, for -target kafka (env BYOK_PLAINTEXT_TOPIC)")
	messages := fs.Int("messages", num("messages", "BYOK_LOADGEN_MESSAGES", def.Messages), "messages to send (env BYOK_LOADGEN_MESSAGES)")
	tenants := fs.Int("tenants", num("tenants", "BYOK_LOADGEN_TENANTS", def.Tenants), "tenants tenant-1..N (env BYOK_LOADGEN_TENANTS)")
	chats := fs.Int("chats", num("chats", "BYOK_LOADGEN_CHATS", def.Chats), "chats chat-1..N, spread over the tenants (env BYOK_LOADGEN_CHATS)")
	bodySize := fs.Int("body-size", num("body-size", "BYOK_LOADGEN_BODY_SIZE", def.BodySize), "body bytes (env BYOK_LOADGEN_BODY_SIZE)")
	concurrency := fs.Int("concurrency", num("concurrency", "BYOK_LOADGEN_CONCURRENCY", def.Concurrency), "requests in flight (env BYOK_LOADGEN_CONCURRENCY)")
	rate := fs.Int("rate", num("rate", "BYOK_LOADGEN_RATE", 0), "messages per second, 0 = unlimited (env BYOK_LOADGEN_RATE)")
	batch := fs.Int("batch", num("batch", "BYOK_LOADGEN_BATCH", def.Batch), "messages per request or publish (env BYOK_LOADGEN_BATCH)")
	if len(bad) > 0 {
		return config{}, errors.New(strings.Join(bad, "; "))
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := config{
		target: strings.TrimSpace(*target),
		topic:  strings.TrimSpace(*topic),
		gen: gen.Config{Messages: *messages, Tenants: *tenants, Chats: *chats, BodySize: *bodySize,
			Concurrency: *concurrency, Rate: float64(*rate), Batch: *batch},
	}
	if err := cfg.gen.Validate(); err != nil {
		return config{}, fmt.Errorf("-%w", err) // gen's errors start with the setting's name
	}
	if cfg.target == "kafka" {
		for b := range strings.SplitSeq(*brokers, ",") {
			if b = strings.TrimSpace(b); b == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(b); err != nil {
				return config{}, fmt.Errorf("-brokers (BYOK_KAFKA_BROKERS): %q is not host:port", b)
			}
			cfg.brokers = append(cfg.brokers, b)
		}
		if len(cfg.brokers) == 0 {
			return config{}, errors.New("-brokers (BYOK_KAFKA_BROKERS) is empty")
		}
		if cfg.topic == "" {
			return config{}, errors.New("-topic (BYOK_PLAINTEXT_TOPIC) is empty")
		}
	} else if _, err := gen.NewHTTPSink(cfg.target, nil); err != nil {
		return config{}, fmt.Errorf("-target (BYOK_LOADGEN_TARGET): %w, or \"kafka\"", err)
	}
	return cfg, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "loadgen: invalid configuration: %v\n", err)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}

// run builds the sink and sends the load; it fails if any message failed.
func run(ctx context.Context, cfg config, progress io.Writer) error {
	var sink gen.Sink
	if cfg.target == "kafka" {
		pub, err := producer.New(cfg.brokers, producer.WithTopic(cfg.topic), producer.WithBatchSize(cfg.gen.Batch))
		if err != nil {
			return err
		}
		defer pub.Close()
		sink = gen.KafkaSink{Publisher: pub}
	} else {
		s, err := gen.NewHTTPSink(cfg.target, nil)
		if err != nil {
			return err
		}
		sink = s
	}
	res, err := gen.Run(ctx, cfg.gen, sink, progress)
	if err != nil {
		return err
	}
	if res.Failed > 0 {
		return fmt.Errorf("%d of %d messages failed", res.Failed, cfg.gen.Messages)
	}
	return nil
}
