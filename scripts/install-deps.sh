#!/usr/bin/env bash
# install-deps.sh: installs what byok's build and tests need and a fresh Debian machine may lack:
# protoc (Debian's protobuf-compiler), a JDK + Maven for the Kafka broker and Chromium for the
# settings page's browser test. Go must be present.
source "$(dirname "$0")/lib.sh"
missing=()
command -v go >/dev/null || die "Go is required (go 1.26+)"
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v curl >/dev/null || missing+=(curl)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: install them (apt-get install -y ${missing[*]})"
  log "installing ${missing[*]} from Debian"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
log "go $(go env GOVERSION), protoc $(protoc --version | cut -d' ' -f2), java $(java -version 2>&1 | head -1 | cut -d'"' -f2)"
