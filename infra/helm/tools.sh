#!/usr/bin/env bash
# Tools the chart's tests need, from the Go module proxy through the go command (pinned versions):
#   helm      built from its Go module into infra/.cache/helm-<version>/helm
#   CRDs      the CustomResourceDefinitions the operators ship in their Go modules, copied to
#             infra/.cache/crds/<operator>-<version>/: KEDA (config/crd/bases), CloudNativePG
#             (config/crd/bases), the Prometheus operator (example/prometheus-operator-crd)
# Idempotent: does nothing when all are there. Needs Go (on the machine) and the network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

HELM_VERSION=v4.3.2
KEDA_VERSION=v2.21.1
CNPG_VERSION=v1.28.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
CACHE=infra/.cache
HELM_DIR="$CACHE/helm-$HELM_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

if ! command -v go >/dev/null 2>&1; then
  echo "helm tools: go is not installed; apt-get install golang-go (or put Go on PATH)" >&2
  exit 1
fi

if [ ! -x "$HELM_DIR/helm" ]; then
  echo "helm tools: building helm $HELM_VERSION from helm.sh/helm/v4 (a few minutes the first time)"
  GOBIN="$PWD/$HELM_DIR" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
fi

# crds NAME MODULE VERSION FOLDER PATTERN: copy the module's FOLDER/PATTERN to infra/.cache/crds/NAME-VERSION/.
crds() {
  local name=$1 module=$2 version=$3 folder=$4 pattern=$5 dest="$CACHE/crds/$1-$3" src
  if compgen -G "$dest/$pattern" >/dev/null; then return 0; fi
  echo "helm tools: $name $version CRDs from $module"
  # A module may declare a newer Go than the local toolchain; the download (and its checksum check) still
  # completes and reports that as an error, so the extracted folder is what is checked.
  go mod download -json "$module@$version" >/dev/null 2>&1 || true
  src="$(go env GOMODCACHE)/$module@$version/$folder"
  if ! compgen -G "$src/$pattern" >/dev/null; then
    echo "helm tools: $name CRDs not found in $src" >&2
    exit 1
  fi
  mkdir -p "$dest"
  cp "$src"/$pattern "$dest/"
}
crds keda github.com/kedacore/keda/v2 "$KEDA_VERSION" config/crd/bases 'keda.sh_*.yaml'
crds cloudnative-pg github.com/cloudnative-pg/cloudnative-pg "$CNPG_VERSION" config/crd/bases 'postgresql.cnpg.io_*.yaml'
crds prometheus-operator github.com/prometheus-operator/prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" \
  example/prometheus-operator-crd 'monitoring.coreos.com_*.yaml'
echo "helm tools: $("$HELM_DIR/helm" version --short 2>/dev/null || echo "helm $HELM_VERSION"), CRDs: KEDA $KEDA_VERSION," \
  "CloudNativePG $CNPG_VERSION, Prometheus operator $PROMETHEUS_OPERATOR_VERSION"
