#!/usr/bin/env bash
# gen-proto.sh [OUT_DIR]: generates Go code for schemas/proto into pkg/gen (or OUT_DIR, used by
# `make proto-check` to compare against the committed code). protoc comes from Debian's
# protobuf-compiler (3.21.12); protoc-gen-go is pinned by the `tool` line in pkg/go.mod.
source "$(dirname "$0")/lib.sh"
out="${1:-$BYOK_ROOT/pkg/gen}"
command -v protoc >/dev/null || die "protoc not found: apt-get install -y protobuf-compiler"
plugin="$BYOK_CACHE/bin/protoc-gen-go"
mkdir -p "$BYOK_CACHE/bin" "$out"
(cd "$BYOK_ROOT/pkg" && go build -o "$plugin" google.golang.org/protobuf/cmd/protoc-gen-go)
cd "$BYOK_ROOT/schemas/proto"
protoc --plugin=protoc-gen-go="$plugin" \
  --go_out="$out" --go_opt=module=github.com/byok-io/byok/pkg/gen \
  $(find . -name '*.proto' | sort)
