// Package httpserve runs byok's HTTP APIs (ingest, reader, settings) the same way: bounded header,
// body and idle times, and a graceful stop that lets in-flight requests — each waiting on Kafka or
// a KMS — finish before the process exits.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// Options name the service and bound its requests.
type Options struct {
	// Name prefixes errors ("reader: serve …").
	Name string
	// RequestTimeout is the longest one request's own work takes; writes may take 10s more, and
	// a stop waits up to 5s more for in-flight requests.
	RequestTimeout time.Duration
	// MaxHeaderBytes bounds request headers (default: net/http's 1 MiB).
	MaxHeaderBytes int
}

// ShutdownTimeout is how long Serve waits for in-flight requests once its context ends.
func (o Options) ShutdownTimeout() time.Duration { return o.RequestTimeout + 5*time.Second }

// Serve serves h on ln until ctx ends, then stops accepting requests and waits up to
// o.ShutdownTimeout() for in-flight ones. It returns nil after a clean shutdown.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log zerolog.Logger, o Options) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      o.RequestTimeout + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    o.MaxHeaderBytes,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg("listening")
	select {
	case err := <-errc:
		return fmt.Errorf("%s: serve %s: %w", o.Name, ln.Addr(), err)
	case <-ctx.Done():
	}
	log.Info().Msg("shutting down: draining in-flight requests")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("%s: shutdown: %w", o.Name, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: serve %s: %w", o.Name, ln.Addr(), err)
	}
	return nil
}
