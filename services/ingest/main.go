// Command ingest is where messages enter byok over HTTP: it accepts messages on POST /v1/messages
// (and /v1/messages:batch) and publishes them to the plaintext topic, answering 202 once Kafka
// has acknowledged. The API lives in services/ingest/api; this file only reads configuration,
// builds the Kafka producer and runs the server until SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/logging"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/pkg/producer"
	"github.com/byok-io/byok/services/ingest/api"
)

type config struct {
	listen        string
	brokers       []string
	topic         string
	logLevel      string
	metricsListen string // metricsOnAPI, a host:port of its own, or "" (off)
}

// parseConfig reads flags, each falling back to its environment variable, then to its default.
// Errors name the flag and the variable.
func parseConfig(args []string, getenv func(string) string, usage io.Writer) (config, error) {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.SetOutput(usage)
	listen := fs.String("listen", env("BYOK_INGEST_LISTEN", "127.0.0.1:8080"), "HTTP listen address (env BYOK_INGEST_LISTEN)")
	brokers := fs.String("brokers", env("BYOK_KAFKA_BROKERS", "127.0.0.1:19092"), "comma-separated Kafka bootstrap brokers (env BYOK_KAFKA_BROKERS)")
	topic := fs.String("plaintext-topic", env("BYOK_PLAINTEXT_TOPIC", kafkax.TopicPlaintext), "plaintext topic to publish to (env BYOK_PLAINTEXT_TOPIC)")
	logLevel := fs.String("log-level", env("BYOK_LOG_LEVEL", "info"), "debug, info, warn or error (env BYOK_LOG_LEVEL)")
	metricsListen := fs.String("metrics-listen", env("BYOK_METRICS_LISTEN", metricsOnAPI),
		`where /metrics and /readyz are served: "api" (on -listen, next to /healthz), a host:port of their own, or "" or "off" (env BYOK_METRICS_LISTEN)`)
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg := config{listen: *listen, topic: strings.TrimSpace(*topic), logLevel: strings.ToLower(*logLevel), metricsListen: *metricsListen}
	switch cfg.metricsListen {
	case metricsOnAPI:
	case "off":
		cfg.metricsListen = ""
	default:
		if err := metrics.CheckListen(cfg.metricsListen); err != nil {
			return config{}, err
		}
	}
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		return config{}, fmt.Errorf("-listen (BYOK_INGEST_LISTEN) %q is not host:port", cfg.listen)
	}
	for b := range strings.SplitSeq(*brokers, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(b); err != nil {
			return config{}, fmt.Errorf("-brokers (BYOK_KAFKA_BROKERS): %q is not host:port", b)
		}
		cfg.brokers = append(cfg.brokers, b)
	}
	if len(cfg.brokers) == 0 {
		return config{}, fmt.Errorf("-brokers (BYOK_KAFKA_BROKERS) is empty")
	}
	if cfg.topic == "" {
		return config{}, fmt.Errorf("-plaintext-topic (BYOK_PLAINTEXT_TOPIC) is empty")
	}
	if err := logging.CheckLevel(cfg.logLevel); err != nil {
		return config{}, err
	}
	return cfg, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintf(os.Stderr, "ingest: invalid configuration: %v\n", err)
		}
		os.Exit(2)
	}
	log := logging.New("ingest", cfg.logLevel, nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("exiting")
		os.Exit(1)
	}
}

// run builds the producer and serves until ctx ends; the producer is closed (flushed) only after
// the server has drained, so every 202 already sent stays true.
func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	pub, err := producer.New(cfg.brokers, producer.WithTopic(cfg.topic), producer.WithLogger(log))
	if err != nil {
		return err
	}
	defer func() {
		if err := pub.Close(); err != nil {
			log.Error().Err(err).Msg("closing producer")
		}
	}()
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s (-listen, BYOK_INGEST_LISTEN): %w", cfg.listen, err)
	}
	log.Info().Strs("brokers", cfg.brokers).Str("topic", cfg.topic).Msg("starting")
	reg := metrics.NewRegistry("ingest")
	health := metrics.Health{Ready: []metrics.Check{metrics.KafkaReachable(cfg.brokers)}}
	h := api.NewHandler(newCountingPublisher(pub, reg), log)
	switch cfg.metricsListen {
	case "":
	case metricsOnAPI:
		h = withMetrics(h, metrics.Handler(reg, health))
	default:
		addr, err := metrics.Serve(ctx, cfg.metricsListen, reg, health)
		if err != nil {
			ln.Close()
			return err
		}
		log.Info().Str("addr", addr.String()).Msg("serving /metrics, /healthz, /readyz")
	}
	return api.Serve(ctx, ln, h, log)
}
