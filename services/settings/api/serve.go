package api

import (
	"context"
	"net"
	"net/http"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/httpserve"
)

var serveOptions = httpserve.Options{Name: "settings", RequestTimeout: RequestTimeout, MaxHeaderBytes: 64 << 10}

// ShutdownTimeout bounds how long Serve waits for in-flight requests once its context ends.
var ShutdownTimeout = serveOptions.ShutdownTimeout()

// Serve serves h on ln until ctx ends, then stops accepting requests and waits up to
// ShutdownTimeout for in-flight ones (a save may be in its KMS round trip). It returns nil after a clean shutdown.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log zerolog.Logger) error {
	return httpserve.Serve(ctx, ln, h, log, serveOptions)
}
