package api

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/httpserve"
)

var serveOptions = httpserve.Options{Name: "reader", RequestTimeout: RequestTimeout}

// ShutdownTimeout bounds how long Serve waits for in-flight requests once its context ends.
var ShutdownTimeout = serveOptions.ShutdownTimeout()

func contextWithTimeout(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), d)
}

// Serve serves h on ln until ctx ends, then stops accepting requests and waits up to
// ShutdownTimeout for in-flight ones. It returns nil after a clean shutdown.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log zerolog.Logger) error {
	return httpserve.Serve(ctx, ln, h, log, serveOptions)
}
