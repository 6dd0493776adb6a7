// Package e2e holds the end-to-end tests of the encrypt path: real binaries (ingest, two
// encryptors) against a real Kafka broker and a real Vault server, started by `make test`.
// Without them (plain `go test`) the tests skip, unless BYOK_REQUIRE_INTEGRATION=1.
package e2e
