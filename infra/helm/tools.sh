#!/usr/bin/env bash
# Tools the chart's tests need, from the Go module proxy through the go command (pinned versions):
#   helm      built from its Go module into infra/.cache/helm-<version>/helm
#   KEDA CRDs the CustomResourceDefinitions shipped in KEDA's Go module (config/crd/bases), copied to
#             infra/.cache/crds/keda-<version>/
# Idempotent: does nothing when both are there. Needs Go (on the machine) and the network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

HELM_VERSION=v4.3.2
KEDA_VERSION=v2.21.1
CACHE=infra/.cache
HELM_DIR="$CACHE/helm-$HELM_VERSION"
KEDA_DIR="$CACHE/crds/keda-$KEDA_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

if ! command -v go >/dev/null 2>&1; then
  echo "helm tools: go is not installed; apt-get install golang-go (or put Go on PATH)" >&2
  exit 1
fi

if [ ! -x "$HELM_DIR/helm" ]; then
  echo "helm tools: building helm $HELM_VERSION from helm.sh/helm/v4 (a few minutes the first time)"
  GOBIN="$PWD/$HELM_DIR" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
fi

if [ ! -f "$KEDA_DIR/keda.sh_scaledobjects.yaml" ]; then
  echo "helm tools: KEDA $KEDA_VERSION CRDs from github.com/kedacore/keda/v2"
  # The module declares a newer Go than the local toolchain; the download (and its checksum check) still
  # completes and reports that as an error, so the extracted folder is what is checked.
  go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" >/dev/null 2>&1 || true
  src="$(go env GOMODCACHE)/github.com/kedacore/keda/v2@$KEDA_VERSION/config/crd/bases"
  if [ ! -f "$src/keda.sh_scaledobjects.yaml" ]; then
    echo "helm tools: KEDA CRDs not found in $src" >&2
    exit 1
  fi
  mkdir -p "$KEDA_DIR"
  cp "$src"/keda.sh_*.yaml "$KEDA_DIR/"
fi
echo "helm tools: $("$HELM_DIR/helm" version --short 2>/dev/null || echo "helm $HELM_VERSION"), KEDA CRDs $KEDA_VERSION"
