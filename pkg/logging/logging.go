// Package logging sets up zerolog for byok services: JSON lines to stderr, or a human console
// format when stderr is a terminal. Log fields carry ids and counts only: never message bodies,
// DEKs or credentials (tests plant canaries and scan the output to hold that).
package logging

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// New returns a logger for service name at level (debug, info, warn, error; default info),
// writing to w (os.Stderr when nil).
func New(service, level string, w io.Writer) zerolog.Logger {
	if w == nil {
		w = os.Stderr
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			w = zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}
		}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("service", service).Logger()
}

// CheckLevel validates a -log-level value, naming the setting in its error.
func CheckLevel(level string) error {
	switch level {
	case "debug", "info", "warn", "error":
		return nil
	}
	return fmt.Errorf("-log-level (BYOK_LOG_LEVEL) %q is not one of debug, info, warn, error", level)
}
