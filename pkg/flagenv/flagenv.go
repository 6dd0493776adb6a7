// Package flagenv declares command-line flags that fall back to environment variables, so every
// service setting can be given either way (flag wins over env, env over the default) and the
// usage text names both. Parse errors name the setting.
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Set wraps a flag.FlagSet and collects env parse errors until Parse.
type Set struct {
	*flag.FlagSet
	errs  []string
	after []func()
}

// New returns a Set for program name.
func New(name string) *Set {
	return &Set{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
}

func (s *Set) usage(usage, env string) string { return fmt.Sprintf("%s (env %s)", usage, env) }

// String declares a string setting.
func (s *Set) String(name, env, def, usage string) *string {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	return s.FlagSet.String(name, def, s.usage(usage, env))
}

// Strings declares a comma-separated list setting.
func (s *Set) Strings(name, env, def, usage string) *[]string {
	raw := s.String(name, env, def, usage)
	out := new([]string)
	s.after = append(s.after, func() {
		for _, p := range strings.Split(*raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				*out = append(*out, p)
			}
		}
	})
	return out
}

// Int declares an integer setting.
func (s *Set) Int(name, env string, def int, usage string) *int {
	if v, ok := os.LookupEnv(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s (-%s): %q is not an integer", env, name, v))
		} else {
			def = n
		}
	}
	return s.FlagSet.Int(name, def, s.usage(usage, env))
}

// Duration declares a duration setting ("250ms", "1h").
func (s *Set) Duration(name, env string, def time.Duration, usage string) *time.Duration {
	if v, ok := os.LookupEnv(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s (-%s): %q is not a duration like 250ms or 1h", env, name, v))
		} else {
			def = d
		}
	}
	return s.FlagSet.Duration(name, def, s.usage(usage, env))
}

// Bool declares a boolean setting.
func (s *Set) Bool(name, env string, def bool, usage string) *bool {
	if v, ok := os.LookupEnv(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s (-%s): %q is not true or false", env, name, v))
		} else {
			def = b
		}
	}
	return s.FlagSet.Bool(name, def, s.usage(usage, env))
}

// Parse parses args and reports every bad env value or flag, naming the setting.
func (s *Set) Parse(args []string) error {
	if err := s.FlagSet.Parse(args); err != nil {
		return err
	}
	if len(s.errs) > 0 {
		return fmt.Errorf("invalid configuration: %s", strings.Join(s.errs, "; "))
	}
	for _, f := range s.after {
		f()
	}
	return nil
}
