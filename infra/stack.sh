#!/usr/bin/env bash
# Local infrastructure for tollgate: a single-node Apache Kafka (KRaft) and PostgreSQL on loopback,
# plus the platform's services as background processes. State lives in .local/ (git-ignored):
#   .local/kafka/   broker config, cluster id, data     .local/pgdata/  PostgreSQL data (owned by postgres)
#   .local/logs/    one log per process                 .local/run/     pid files, PostgreSQL socket
#   .local/secrets.env  generated secrets (mode 0600): the PII key, the Kafka password of every principal, the
#                       PostgreSQL password of every service role
#   .local/kafka/client.properties  the operator principal's Kafka client settings (mode 0600)
#
# Usage: infra/stack.sh <command>
#   deps            check/install java, maven, postgresql, curl; resolve the Kafka jars
#   venv            install uv if missing, then `uv sync --frozen --all-packages`
#   kafka-up | kafka-down | pg-up | pg-down | infra-up | infra-down
#   topics          create the platform's topics (when tollgate_core.topics exists)
#   migrate         every service's migrations and grants, as the owner (services-up runs it first)
#   services-up | services-down   each service connects to PostgreSQL as its own role (tollgate_<service>)
#   up              infra, topics, services            down   services, then infra
#   status | wait-kafka | wait-pg
#   as PRINCIPAL CMD...  run CMD with the Kafka credentials of PRINCIPAL (admin, operator, producer, a service)
#   compose-env     generate docker-compose.yml's secrets (.local/compose.env, the audit signing key)
#
# TOLLGATE_KAFKA_BOOTSTRAP / TOLLGATE_DATABASE_URL set: that Kafka / PostgreSQL is used and nothing local
# is started or stopped for it (the wait-* commands wait for the configured one).
# Knobs: STACK_KAFKA_PORT (9092), STACK_KAFKA_CONTROLLER_PORT (9093), STACK_PG_PORT (5432),
# STACK_SERVICES, STACK_STATE_DIR (.local), STACK_READY_TIMEOUT (60 s), STACK_STOP_TIMEOUT (30 s),
# STACK_KAFKA_HEAP ("-Xms256m -Xmx1g").
# Replicas: REPLICAS (1) runs every service as that many processes, REPLICAS_<service> (e.g.
# REPLICAS_validator=2, REPLICAS_audit_log=2) one service; replica k gets TOLLGATE_<SERVICE>_INSTANCE_ID=k
# (its Kafka client id) and HTTP port <port> + 100*k; its pid file and log are
# <service>@k (replica 0 keeps the plain <service> names).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${STACK_STATE_DIR:-$ROOT/.local}
LOGS=$STATE/logs
RUN=$STATE/run
CACHE=$ROOT/infra/.cache
PY=$ROOT/.venv/bin/python
TOLLGATE=$ROOT/.venv/bin/tollgate  # the platform's command line (libs/cli)
UV_VERSION=0.13.8

KAFKA_PORT=${STACK_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${STACK_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP=${STACK_KAFKA_HEAP:--Xms256m -Xmx1g}
KAFKA_POM=$ROOT/infra/kafka/pom.xml
KAFKA_HOME=$STATE/kafka
KAFKA_PROPS=$KAFKA_HOME/server.properties

PG_PORT=${STACK_PG_PORT:-5432}
PG_DATA=$STATE/pgdata
PG_SOCK=$RUN/pg
PG_ROLE=tollgate
PG_PASSWORD=tollgate
PG_DB=tollgate

SERVICES_FILE=$ROOT/infra/services.env
svc_table() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$SERVICES_FILE"; }
SERVICES=${STACK_SERVICES:-$(svc_table | awk '{print $1}' | xargs)}
READY_TIMEOUT=${STACK_READY_TIMEOUT:-60}
STOP_TIMEOUT=${STACK_STOP_TIMEOUT:-30}

LOCAL_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
SECRETS=$STATE/secrets.env
KAFKA_CLIENT_PROPS=$KAFKA_HOME/client.properties
# Kafka principals with a SCRAM user: the super user, people, outside clients, and one per service.
KAFKA_USERS="admin operator producer $(svc_table | awk '{print $1}' | xargs)"
KAFKA_MECHANISM=SCRAM-SHA-512
LOCAL_DATABASE_URL=postgresql://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB
# Services with a PostgreSQL login role of their own, tollgate_<service> (infra/postgres/roles.sql); the
# audit-log's is tollgate_audit_writer. Their passwords are generated into .local/secrets.env.
PG_SERVICE_ROLES="ingest validator trainer registry scorer monitor"
PG_WRITER_ROLE=tollgate_audit_writer

# ---------------------------------------------------------------------------------------------- helpers

say() { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: %s\n' "$*" >&2; }
die() {
  printf 'stack: error: %s\n' "$*" >&2
  exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }

# True while the process exists and is not a zombie.
alive() {
  local pid=$1 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# running_pid NAME MARKER: pid from .local/run/NAME.pid if that process is alive and its command line
# contains MARKER; a stale pid file (process gone or pid reused) is removed.
running_pid() {
  local name=$1 marker=$2 file="$RUN/$1.pid" pid
  [ -f "$file" ] || return 1
  if pid_of "$name" "$marker"; then return 0; fi
  pid=$(tr -dc '0-9' <"$file")
  warn "$name: removing stale pid file (process ${pid:-?} is gone)"
  rm -f "$file"
  return 1
}

# pid_of NAME MARKER: like running_pid, without touching the pid file.
pid_of() {
  local file="$RUN/$1.pid" pid
  [ -f "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  if alive "$pid" && [[ "$(cmdline "$pid")" == *"$2"* ]]; then
    echo "$pid"
    return 0
  fi
  return 1
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# Who listens on a TCP port: "pid=N (command)" when ss can tell, "unknown process" otherwise.
port_holder() {
  local port=$1 pid=""
  if command -v ss >/dev/null 2>&1; then
    pid=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
  fi
  if [ -n "$pid" ]; then
    local cmd
    cmd=$(cmdline "$pid")
    if [ "${#cmd}" -gt 160 ]; then cmd="${cmd:0:60} ... ${cmd: -90}"; fi
    echo "pid=$pid ($cmd)"
  else
    echo "an unknown process"
  fi
}

require_free_port() {
  local port=$1 what=$2 hint=$3
  if port_open 127.0.0.1 "$port"; then
    die "port $port (needed by $what) is already held by $(port_holder "$port"), which this stack did not start. $hint"
  fi
}

# stop_pid NAME PID: SIGTERM, wait up to STOP_TIMEOUT seconds, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 waited=0
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid"; do
    if [ "$waited" -ge $((STOP_TIMEOUT * 10)) ]; then
      warn "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s: sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$RUN/$name.pid"
  say "$name stopped"
}

# Keep the previous run's log as NAME.log.1.
rotate_log() {
  local file="$LOGS/$1.log"
  if [ -s "$file" ]; then mv -f "$file" "$file.1"; fi
  : >"$file"
}

log_tail() {
  local file=$1
  [ -f "$file" ] || return 0
  warn "last lines of $file:"
  tail -n 25 "$file" | sed 's/^/    /' >&2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

state_dirs() { mkdir -p "$LOGS" "$RUN" "$KAFKA_HOME"; }

# ---------------------------------------------------------------------------------------------- secrets

# kafka_password_var PRINCIPAL: the variable in .local/secrets.env holding PRINCIPAL's Kafka password.
kafka_password_var() {
  local name=${1//-/_}
  echo "TOLLGATE_KAFKA_PASSWORD_${name^^}"
}

# pg_password_var SERVICE: the variable in .local/secrets.env (and compose.env) holding SERVICE's database password.
pg_password_var() {
  local name=${1//-/_}
  echo "TOLLGATE_PG_PASSWORD_${name^^}"
}

random_secret() { head -c 32 /dev/urandom | sha256sum | cut -c1-40; }

# Every secret the local stack needs, generated once into .local/secrets.env (mode 0600); missing entries are
# added, existing ones are kept.
ensure_secrets() {
  local var u added=()
  mkdir -p "$STATE"
  (umask 077 && touch "$SECRETS")
  chmod 600 "$SECRETS"
  for var in TOLLGATE_PII_KEY TOLLGATE_KAFKA_PASSWORD_CONTROLLER $(for u in $KAFKA_USERS; do kafka_password_var "$u"; done) \
    $(for u in $PG_SERVICE_ROLES; do pg_password_var "$u"; done); do
    if ! grep -q "^$var=" "$SECRETS"; then
      printf '%s=%s\n' "$var" "$(random_secret)" >>"$SECRETS"
      added+=("$var")
    fi
  done
  if [ "${#added[@]}" -gt 0 ]; then say "secrets: generated ${#added[@]} into ${SECRETS#"$ROOT"/} (mode 0600)"; fi
}

# The environment of a platform process of the local stack: development mode, with the generated PII key
# (unless the caller set its own).
platform_env() {
  ensure_secrets
  export TOLLGATE_ENV=${TOLLGATE_ENV:-development}
  TOLLGATE_PII_KEY=${TOLLGATE_PII_KEY:-$(secret TOLLGATE_PII_KEY)}
  export TOLLGATE_PII_KEY
}

# docker-compose.yml's secrets: .local/compose.env (mode 0600, for `docker compose --env-file`), generated
# once and kept, and the audit-log's checkpoint signing key, readable by the image's user (uid 10001) only.
cmd_compose_env() {
  local file=$STATE/compose.env key=$STATE/compose/audit-ed25519.pem var added=0
  mkdir -p "$STATE/compose"
  (umask 077 && touch "$file")
  chmod 600 "$file"
  for var in TOLLGATE_PII_KEY POSTGRES_PASSWORD TOLLGATE_PG_PASSWORD TOLLGATE_AUDIT_LOG_WRITER_PASSWORD \
    TOLLGATE_MONITOR_SESSION_SECRET TOLLGATE_KAFKA_PASSWORD_CONTROLLER $(for u in $KAFKA_USERS; do kafka_password_var "$u"; done) \
    $(for u in $PG_SERVICE_ROLES; do pg_password_var "$u"; done); do
    if ! grep -q "^$var=" "$file"; then
      printf '%s=%s\n' "$var" "$(random_secret)" >>"$file"
      added=$((added + 1))
    fi
  done
  if [ ! -s "$key" ]; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to generate the audit-log's signing key"
    (umask 077 && openssl genpkey -algorithm ed25519 -out "$key")
    if is_root; then chown 10001:10001 "$key"; fi
    added=$((added + 1))
  fi
  say "compose secrets: ${file#"$ROOT"/} and ${key#"$ROOT"/} (mode 0600; $added generated)"
  say "start with: docker compose --env-file ${file#"$ROOT"/} up --build -d"
}

secret() {
  [ -f "$SECRETS" ] || die "no $SECRETS: start the stack first (make topics)"
  sed -n "s/^$1=//p" "$SECRETS" | tail -n1
}

# kafka_credentials PRINCIPAL: export the client settings tollgate_core.kafka_auth reads, for PRINCIPAL. A
# configured outside broker (TOLLGATE_KAFKA_BOOTSTRAP) keeps whatever credentials the environment has.
kafka_credentials() {
  if [ -n "${TOLLGATE_KAFKA_BOOTSTRAP:-}" ]; then return 0; fi
  ensure_secrets
  export TOLLGATE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT
  export TOLLGATE_KAFKA_SASL_MECHANISM=$KAFKA_MECHANISM
  export TOLLGATE_KAFKA_USERNAME=$1
  TOLLGATE_KAFKA_PASSWORD=$(secret "$(kafka_password_var "$1")")
  export TOLLGATE_KAFKA_PASSWORD
}

# ---------------------------------------------------------------------------------------------- deps

apt_install() {
  local pkgs=("$@") rc=0 policy=/usr/sbin/policy-rc.d added_policy=""
  command -v apt-get >/dev/null 2>&1 || die "missing: ${pkgs[*]} (no apt-get here: install them with the system's package manager)"
  is_root || die "missing: ${pkgs[*]}; install them with: sudo apt-get install -y ${pkgs[*]}"
  say "installing ${pkgs[*]} (apt-get)"
  # Package scripts must not start Debian's own PostgreSQL cluster on 5432: this stack runs its own.
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${pkgs[@]}"
  } </dev/null || rc=$?
  if [ -n "$added_policy" ]; then rm -f "$policy"; fi
  [ "$rc" = 0 ] || die "apt-get install ${pkgs[*]} failed (exit $rc)"
}

# Directory with initdb/pg_ctl/postgres: the newest /usr/lib/postgresql/<major>/bin, or from PATH.
pg_bindir() {
  local dir
  if [ -n "${STACK_PG_BINDIR:-}" ]; then
    echo "$STACK_PG_BINDIR"
    return 0
  fi
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return 0
  fi
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

# A client binary (psql, pg_isready): from the server's bindir, else PATH.
pg_client() {
  local bindir
  bindir=$(pg_bindir 2>/dev/null || true)
  if [ -n "$bindir" ] && [ -x "$bindir/$1" ]; then
    echo "$bindir/$1"
  elif command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  else
    return 1
  fi
}

java_major() {
  java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n1
}

kafka_version() {
  sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n1
}

kafka_lib() { echo "$CACHE/kafka-$(kafka_version)/lib"; }

# Copy the broker's runtime class path from Maven into infra/.cache/kafka-<version>/lib, once per pom content.
resolve_kafka() {
  local version lib marker want tmp mvnlog
  version=$(kafka_version)
  [ -n "$version" ] || die "cannot read <kafka.version> from $KAFKA_POM"
  lib="$CACHE/kafka-$version/lib"
  marker="$CACHE/kafka-$version/.complete"
  want=$(sha256sum <"$KAFKA_POM" | cut -d' ' -f1)
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] && compgen -G "$lib/kafka_2.13-$version.jar" >/dev/null; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "maven (mvn) is missing: run 'infra/stack.sh deps'"
  say "resolving Apache Kafka $version jars with Maven into ${lib#"$ROOT"/}"
  tmp="$CACHE/kafka-$version/lib.partial"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  mvnlog="$CACHE/kafka-$version/maven.log"
  if ! mvn -B -ntp -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" </dev/null >"$mvnlog" 2>&1; then
    rm -rf "$tmp"
    grep -E 'ERROR|BUILD' "$mvnlog" | head -n 20 | sed 's/^/    /' >&2 || true
    die "Maven could not resolve the Kafka jars (is Maven Central reachable?); full output in $mvnlog"
  fi
  compgen -G "$tmp/kafka_2.13-$version.jar" >/dev/null || die "Maven finished but kafka_2.13-$version.jar is missing"
  rm -rf "$lib"
  mv "$tmp" "$lib"
  echo "$want" >"$marker"
  say "Kafka $version: $(find "$lib" -name '*.jar' | wc -l) jars ready"
}

cmd_deps() {
  local need=() bindir
  if [ -z "${TOLLGATE_KAFKA_BOOTSTRAP:-}" ]; then
    if ! command -v java >/dev/null 2>&1; then need+=(openjdk-17-jre-headless); fi
    if ! command -v mvn >/dev/null 2>&1; then need+=(maven); fi
  fi
  if [ -z "${TOLLGATE_DATABASE_URL:-}" ]; then
    if ! pg_bindir >/dev/null 2>&1; then need+=(postgresql); fi
  elif ! pg_client psql >/dev/null 2>&1; then
    need+=(postgresql-client)
  fi
  if ! command -v curl >/dev/null 2>&1; then need+=(curl); fi
  # The monitor's dashboard is tested in headless Chromium; the scorer's benchmark drives load with wrk.
  if ! command -v chromium >/dev/null 2>&1; then need+=(chromium); fi
  if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then need+=(fonts-dejavu-core); fi
  if ! command -v wrk >/dev/null 2>&1; then need+=(wrk); fi
  if [ "${#need[@]}" -gt 0 ]; then apt_install "${need[@]}"; fi

  if [ -z "${TOLLGATE_KAFKA_BOOTSTRAP:-}" ]; then
    local major
    major=$(java_major)
    if [ -z "$major" ] || [ "$major" -lt 17 ]; then die "Kafka $(kafka_version) needs Java 17 or newer; found: $(java -version 2>&1 | head -n1)"; fi
    resolve_kafka
  fi
  if [ -z "${TOLLGATE_DATABASE_URL:-}" ]; then
    bindir=$(pg_bindir) || die "PostgreSQL server binaries not found even after installing; install the 'postgresql' package"
    if is_root && ! id postgres >/dev/null 2>&1; then
      die "the 'postgres' system user is missing (the server refuses to run as root); reinstall the 'postgresql' package"
    fi
  fi
  local javav mvnv
  javav=$(java_major 2>/dev/null || true)
  mvnv=$(mvn -v 2>/dev/null | sed -n '1{s/\x1b\[[0-9;]*m//g;s/^Apache Maven \([^ ]*\).*/\1/;p}' || true)
  say "deps ok: java ${javav:-not needed}, maven ${mvnv:-not needed}, postgres ${bindir:-external (TOLLGATE_DATABASE_URL)}"
}

# ---------------------------------------------------------------------------------------------- python env

cmd_venv() {
  local uv=()
  if command -v uv >/dev/null 2>&1; then
    uv=(uv)
  elif command -v python3 >/dev/null 2>&1 && python3 -m uv --version >/dev/null 2>&1; then
    uv=(python3 -m uv)
  else
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
      apt_install python3 python3-pip
    fi
    say "installing uv==$UV_VERSION with pip"
    local pip_args=(--quiet --disable-pip-version-check)
    # Debian marks its python3 as externally managed (PEP 668); uv is a standalone binary, so this is safe.
    if python3 -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)'; then
      pip_args+=(--break-system-packages)
    fi
    if is_root; then pip_args+=(--root-user-action=ignore); fi
    python3 -m pip install "${pip_args[@]}" "uv==$UV_VERSION" </dev/null || die "could not install uv==$UV_VERSION with pip"
    uv=(python3 -m uv)
  fi
  # The audit trail's compiled hot loops (libs/audit-native, Rust) are built by uv sync with rustup's cargo
  # (its bin folder may be missing from a non-login PATH) and cc. Without them they are left out, and the
  # audit-log runs its Python loops: the same rows and verdicts (verification about twice as slow).
  if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  fi
  local skip=()
  if ! command -v cargo >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
    say "no cargo or cc (install Rust with rustup): tollgate-audit-native is not built; the audit-log runs its Python loops"
    skip=(--no-install-package tollgate-audit-native)
  fi
  cd "$ROOT"
  "${uv[@]}" sync --frozen --all-packages "${skip[@]}" </dev/null
}

# ---------------------------------------------------------------------------------------------- kafka

KAFKA_PROBE='
import asyncio, logging, sys, warnings
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
from aiokafka.admin import AIOKafkaAdminClient
from tollgate_core.kafka_auth import kafka_security

async def probe(bootstrap):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000, **kafka_security())
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        try:
            await admin.close()
        except Exception:
            pass

asyncio.run(asyncio.wait_for(probe(sys.argv[1]), 10))
'

kafka_bootstrap() { echo "${TOLLGATE_KAFKA_BOOTSTRAP:-$LOCAL_BOOTSTRAP}"; }

# A real metadata round trip (aiokafka admin client) when the venv has aiokafka; otherwise the port only.
kafka_metadata_ok() {
  local bootstrap=$1 err=$2
  if [ -x "$PY" ] && "$PY" -c 'import aiokafka, tollgate_core.kafka_auth' 2>/dev/null; then
    (kafka_credentials admin && timeout 15 "$PY" -c "$KAFKA_PROBE" "$bootstrap" </dev/null >"$err" 2>&1)
  else
    [ -z "${TOLLGATE_KAFKA_BOOTSTRAP:-}" ] && grep -q 'Kafka Server started' "$LOGS/kafka.log" 2>/dev/null
  fi
}

# wait_kafka [PID]: until the first bootstrap address accepts connections and a metadata request succeeds.
wait_kafka() {
  local pid=${1:-} bootstrap first host port start deadline err
  bootstrap=$(kafka_bootstrap)
  first=${bootstrap%%,*}
  host=${first%:*}
  port=${first##*:}
  start=$(now)
  deadline=$((SECONDS + READY_TIMEOUT))
  err=$(mktemp)
  if [ ! -x "$PY" ]; then warn "no .venv yet: Kafka readiness is checked without a metadata request"; fi
  while :; do
    if [ -n "$pid" ] && ! alive "$pid"; then
      log_tail "$LOGS/kafka.log"
      rm -f "$err" "$RUN/kafka.pid"
      die "the Kafka broker exited during start-up; see $LOGS/kafka.log"
    fi
    if port_open "$host" "$port" && kafka_metadata_ok "$bootstrap" "$err"; then
      rm -f "$err"
      say "kafka ready at $bootstrap ($(elapsed "$start")s)"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      if [ -s "$err" ]; then
        warn "last metadata probe error:"
        tail -n 5 "$err" | sed 's/^/    /' >&2
      fi
      rm -f "$err"
      if [ -n "${TOLLGATE_KAFKA_BOOTSTRAP:-}" ]; then
        die "Kafka at $bootstrap (TOLLGATE_KAFKA_BOOTSTRAP) did not answer a metadata request within ${READY_TIMEOUT}s"
      fi
      log_tail "$LOGS/kafka.log"
      die "Kafka at $bootstrap did not answer a metadata request within ${READY_TIMEOUT}s; see $LOGS/kafka.log"
    fi
    sleep 0.5
  done
}

render_kafka_props() {
  (umask 077 && sed -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
    -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
    -e "s|@LISTEN_HOST@|127.0.0.1|g" -e "s|@ADVERTISED_HOST@|127.0.0.1|g" \
    -e "s|@DATA_DIR@|$KAFKA_HOME/data|g" \
    -e "s|@ADMIN_PASSWORD@|$(secret TOLLGATE_KAFKA_PASSWORD_ADMIN)|g" \
    -e "s|@CONTROLLER_PASSWORD@|$(secret TOLLGATE_KAFKA_PASSWORD_CONTROLLER)|g" \
    "$ROOT/infra/kafka/server.properties.template" >"$KAFKA_PROPS.tmp")
  mv -f "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"
  # Any Kafka client (the Java tools' --command-config, librdkafka's -F, ...) reads the topics as the operator.
  (umask 077 && printf '%s\n' \
    "# Written by infra/stack.sh: the local broker as the operator principal (reads every topic)." \
    "bootstrap.servers=$LOCAL_BOOTSTRAP" \
    "security.protocol=SASL_PLAINTEXT" \
    "sasl.mechanism=$KAFKA_MECHANISM" \
    "sasl.username=operator" \
    "sasl.password=$(secret TOLLGATE_KAFKA_PASSWORD_OPERATOR)" >"$KAFKA_CLIENT_PROPS.tmp")
  mv -f "$KAFKA_CLIENT_PROPS.tmp" "$KAFKA_CLIENT_PROPS"
}

# The SCRAM users the storage is formatted with (StorageTool --add-scram, one argument per line).
kafka_scram_args() {
  local u
  for u in $KAFKA_USERS; do
    printf -- '--add-scram\n%s=[name=%s,password=%s]\n' "$KAFKA_MECHANISM" "$u" "$(secret "$(kafka_password_var "$u")")"
  done
}

cmd_kafka_up() {
  local pid lib cluster_id start users_digest scram=()
  if [ -n "${TOLLGATE_KAFKA_BOOTSTRAP:-}" ]; then
    say "TOLLGATE_KAFKA_BOOTSTRAP=$TOLLGATE_KAFKA_BOOTSTRAP is set: no local broker is started"
    wait_kafka
    return 0
  fi
  state_dirs
  if pid=$(running_pid kafka "$KAFKA_PROPS"); then
    say "kafka already running (pid $pid)"
    wait_kafka "$pid"
    return 0
  fi
  start=$(now)
  require_free_port "$KAFKA_PORT" "Kafka" "Stop it, or use it by setting TOLLGATE_KAFKA_BOOTSTRAP, or pick another STACK_KAFKA_PORT."
  require_free_port "$KAFKA_CONTROLLER_PORT" "the Kafka controller" "Stop it, or pick another STACK_KAFKA_CONTROLLER_PORT."
  command -v java >/dev/null 2>&1 || die "java is missing: run 'infra/stack.sh deps' (or 'make deps')"
  resolve_kafka
  lib=$(kafka_lib)
  ensure_secrets
  render_kafka_props
  # Storage formatted with other SCRAM users (or before authentication) is formatted again.
  users_digest=$(kafka_scram_args | sha256sum | cut -d' ' -f1)
  if [ -f "$KAFKA_HOME/data/meta.properties" ] && [ "$(cat "$KAFKA_HOME/users.sha256" 2>/dev/null)" != "$users_digest" ]; then
    warn "kafka: the local storage was formatted without the current SCRAM users: formatting it again (local topics are lost)"
    rm -rf "$KAFKA_HOME/data"
  fi
  if [ ! -f "$KAFKA_HOME/data/meta.properties" ]; then
    if [ ! -s "$KAFKA_HOME/cluster.id" ]; then
      java -cp "$lib/*" kafka.tools.StorageTool random-uuid </dev/null 2>/dev/null | tail -n1 >"$KAFKA_HOME/cluster.id"
    fi
    cluster_id=$(cat "$KAFKA_HOME/cluster.id")
    [ -n "$cluster_id" ] || die "kafka.tools.StorageTool random-uuid produced no cluster id"
    say "formatting KRaft storage (cluster $cluster_id)"
    mapfile -t scram < <(kafka_scram_args)
    java -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.yaml" -cp "$lib/*" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$KAFKA_PROPS" --ignore-formatted "${scram[@]}" </dev/null >"$LOGS/kafka-format.log" 2>&1 ||
      {
        log_tail "$LOGS/kafka-format.log"
        die "formatting KRaft storage failed; see $LOGS/kafka-format.log"
      }
    echo "$users_digest" >"$KAFKA_HOME/users.sha256"
  fi
  rotate_log kafka
  # shellcheck disable=SC2086  # KAFKA_HEAP is a list of JVM options
  setsid java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/infra/kafka/log4j2.yaml" \
    -cp "$lib/*" kafka.Kafka "$KAFKA_PROPS" </dev/null >>"$LOGS/kafka.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$RUN/kafka.pid"
  say "kafka $(kafka_version) starting (pid $pid, log ${LOGS#"$ROOT"/}/kafka.log)"
  wait_kafka "$pid"
  say "kafka up in $(elapsed "$start")s (SASL/SCRAM-SHA-512; passwords in ${SECRETS#"$ROOT"/}, operator client settings in ${KAFKA_CLIENT_PROPS#"$ROOT"/})"
}

cmd_kafka_down() {
  local pid
  if [ -n "${TOLLGATE_KAFKA_BOOTSTRAP:-}" ]; then
    say "TOLLGATE_KAFKA_BOOTSTRAP is set: the configured broker is not managed here, nothing to stop"
    return 0
  fi
  if pid=$(running_pid kafka "$KAFKA_PROPS"); then
    say "stopping kafka (pid $pid)"
    stop_pid kafka "$pid"
  else
    say "kafka is not running"
  fi
}

# ---------------------------------------------------------------------------------------------- postgres

PG_BIN=""
pg_bin() {
  if [ -z "$PG_BIN" ]; then
    PG_BIN=$(pg_bindir) || die "PostgreSQL server binaries not found: run 'infra/stack.sh deps' (it installs the Debian 'postgresql' package), or install it with: apt-get install -y postgresql"
  fi
  echo "$PG_BIN"
}

# Run as the postgres system user when we are root (the server refuses to run as root).
as_pg() {
  if is_root; then
    (cd / && runuser -u postgres -- "$@" 9>&-)
  else
    (cd / && "$@" 9>&-)
  fi
}

pg_owner() { if is_root; then echo postgres; else id -un; fi; }

# The postmaster's pid when our data directory's server is running.
pg_running_pid() {
  local pid
  [ -f "$PG_DATA/postmaster.pid" ] || return 1
  pid=$(head -n1 "$PG_DATA/postmaster.pid" | tr -dc '0-9')
  if alive "$pid" && [[ "$(cmdline "$pid")" == *"$PG_DATA"* ]]; then
    echo "$pid"
    return 0
  fi
  return 1
}

pg_conf() {
  cat >"$PG_DATA/tollgate.conf" <<EOF
# Written by infra/stack.sh on every start; edits here are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
# A local development and test cluster: a process crash loses nothing, only an OS crash could.
fsync = off
full_page_writes = off
logging_collector = off
log_timezone = 'UTC'
timezone = 'UTC'
EOF
  cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# Written by infra/stack.sh on every start; edits here are lost.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
EOF
  if ! grep -q "^include_if_exists = 'tollgate.conf'" "$PG_DATA/postgresql.conf"; then
    printf "\ninclude_if_exists = 'tollgate.conf'\n" >>"$PG_DATA/postgresql.conf"
  fi
  chown "$(pg_owner)": "$PG_DATA/tollgate.conf" "$PG_DATA/pg_hba.conf"
  chmod 600 "$PG_DATA/tollgate.conf" "$PG_DATA/pg_hba.conf"
}

pg_ensure_role() {
  local psql svc args=()
  psql=$(pg_client psql)
  ensure_secrets
  for svc in $PG_SERVICE_ROLES; do args+=(-v "${svc}_password=$(secret "$(pg_password_var "$svc")")"); done
  # PG_ROLE, PG_DB: infra/postgres/roles.sql names them (tollgate); the owner's and the audit writer's local
  # passwords are the development ones, every other service role's is generated (.local/secrets.env).
  "$psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres \
    -v owner_password="$PG_PASSWORD" \
    -v writer_password="${TOLLGATE_AUDIT_LOG_WRITER_PASSWORD:-tollgate-audit-writer}" \
    "${args[@]}" -f "$ROOT/infra/postgres/roles.sql" </dev/null >/dev/null
}

# service_database_url SERVICE: the DSN SERVICE connects with: its own role on the local PostgreSQL, or the
# configured TOLLGATE_DATABASE_URL as it is.
service_database_url() {
  local svc=$1
  if [ -n "${TOLLGATE_DATABASE_URL:-}" ]; then
    echo "$TOLLGATE_DATABASE_URL"
  elif [ "$svc" = audit-log ]; then
    echo "postgresql://$PG_WRITER_ROLE:${TOLLGATE_AUDIT_LOG_WRITER_PASSWORD:-tollgate-audit-writer}@127.0.0.1:$PG_PORT/$PG_DB"
  else
    echo "postgresql://tollgate_${svc//-/_}:$(secret "$(pg_password_var "$svc")")@127.0.0.1:$PG_PORT/$PG_DB"
  fi
}

# Every service's migrations and every service role's grants, as the owner (the services' own roles may
# create nothing, so this runs before they start).
cmd_migrate() {
  [ -x "$PY" ] || die "no .venv: run 'make venv' first"
  state_dirs
  rotate_log migrate
  (
    cd "$ROOT"
    export TOLLGATE_DATABASE_URL="${TOLLGATE_DATABASE_URL:-$LOCAL_DATABASE_URL}"
    "$PY" -m tollgate_core.migrate </dev/null >>"$LOGS/migrate.log" 2>&1 || {
      log_tail "$LOGS/migrate.log"
      die "migrations failed; see $LOGS/migrate.log"
    }
  )
  say "migrations and grants applied (log ${LOGS#"$ROOT"/}/migrate.log)"
}

# wait_pg [PID]: pg_isready until it accepts connections, then a real query.
wait_pg() {
  local pid=${1:-} start deadline isready psql url target
  start=$(now)
  deadline=$((SECONDS + READY_TIMEOUT))
  isready=$(pg_client pg_isready) || die "pg_isready not found: install the 'postgresql-client' package"
  psql=$(pg_client psql) || die "psql not found: install the 'postgresql-client' package"
  if [ -n "${TOLLGATE_DATABASE_URL:-}" ]; then
    url=$TOLLGATE_DATABASE_URL
    target="TOLLGATE_DATABASE_URL"
  else
    url=$LOCAL_DATABASE_URL
    target="127.0.0.1:$PG_PORT"
  fi
  until "$isready" -q -d "$url" -t 2 </dev/null; do
    if [ -n "$pid" ] && ! alive "$pid"; then
      log_tail "$LOGS/postgres.log"
      die "PostgreSQL exited during start-up; see $LOGS/postgres.log"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      if [ -n "${TOLLGATE_DATABASE_URL:-}" ]; then
        die "PostgreSQL at $target is not accepting connections after ${READY_TIMEOUT}s"
      fi
      log_tail "$LOGS/postgres.log"
      die "PostgreSQL at $target is not accepting connections after ${READY_TIMEOUT}s; see $LOGS/postgres.log"
    fi
    sleep 0.3
  done
  if [ -z "${TOLLGATE_DATABASE_URL:-}" ]; then pg_ensure_role; fi
  "$psql" -X -q -A -t -d "$url" -c 'SELECT 1' </dev/null >/dev/null ||
    die "PostgreSQL at $target accepts connections but 'SELECT 1' failed (credentials? database exists?)"
  say "postgres ready at $target ($(elapsed "$start")s)"
}

cmd_pg_up() {
  local bin pid start owner stale="" lock attempt
  if [ -n "${TOLLGATE_DATABASE_URL:-}" ]; then
    say "TOLLGATE_DATABASE_URL is set: no local PostgreSQL is started"
    wait_pg
    return 0
  fi
  state_dirs
  bin=$(pg_bin)
  if pid=$(pg_running_pid); then
    echo "$pid" >"$RUN/postgres.pid"
    say "postgres already running (pid $pid)"
    wait_pg "$pid"
    return 0
  fi
  start=$(now)
  require_free_port "$PG_PORT" "PostgreSQL" \
    "If it is Debian's default cluster, stop it with 'pg_ctlcluster <version> main stop'; or use it via TOLLGATE_DATABASE_URL; or pick another STACK_PG_PORT."
  owner=$(pg_owner)
  if is_root && ! id postgres >/dev/null 2>&1; then
    die "the 'postgres' system user is missing (the server refuses to run as root); install the 'postgresql' package"
  fi
  [ "$(printf '%s/.s.PGSQL.%s' "$PG_SOCK" "$PG_PORT" | wc -c)" -lt 100 ] ||
    die "the socket path $PG_SOCK is too long for a unix socket; set STACK_STATE_DIR to a shorter path"
  mkdir -p "$PG_DATA" "$PG_SOCK"
  chown "$owner": "$PG_DATA" "$PG_SOCK"
  chmod 700 "$PG_DATA"
  chmod 755 "$PG_SOCK"
  if ! as_pg test -w "$PG_DATA"; then
    die "user '$owner' cannot reach $PG_DATA: a parent directory is not traversable (o+x) for it; move the checkout or set STACK_STATE_DIR"
  fi
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    say "postgres: removing stale postmaster.pid (server is gone)"
    rm -f "$PG_DATA/postmaster.pid"
    stale=1
  fi
  # A killed server leaves its socket lock behind; the server itself refuses to start while the pid in it
  # still exists, which includes a zombie nobody has reaped yet.
  for lock in "$PG_SOCK"/.s.PGSQL.*.lock; do
    [ -e "$lock" ] || continue
    if ! alive "$(head -n1 "$lock" | tr -dc '0-9')"; then
      say "postgres: removing stale socket lock ${lock##*/}"
      rm -f "$lock" "${lock%.lock}"
      stale=1
    fi
  done
  rm -f "$RUN/postgres.pid"
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    say "initialising PostgreSQL data directory ${PG_DATA#"$ROOT"/}"
    as_pg "$bin/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 </dev/null >"$LOGS/postgres-initdb.log" 2>&1 ||
      {
        log_tail "$LOGS/postgres-initdb.log"
        die "initdb failed; see $LOGS/postgres-initdb.log"
      }
  fi
  pg_conf
  rotate_log postgres
  chown "$owner": "$LOGS/postgres.log"
  # After a crash the old server's backends may hold its shared memory for a moment: retry briefly.
  for attempt in 1 2 3 4 5; do
    if as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$LOGS/postgres.log" -w -t "$READY_TIMEOUT" start </dev/null >/dev/null; then
      break
    fi
    if [ -z "$stale" ] || [ "$attempt" = 5 ]; then
      log_tail "$LOGS/postgres.log"
      die "PostgreSQL did not start; see $LOGS/postgres.log"
    fi
    warn "postgres: start after a crash failed (attempt $attempt), retrying"
    rm -f "$PG_DATA/postmaster.pid"
    sleep 2
  done
  pid=$(pg_running_pid) || die "pg_ctl reported success but no server is running; see $LOGS/postgres.log"
  echo "$pid" >"$RUN/postgres.pid"
  say "postgres $("$bin/postgres" -V | awk '{print $3}') starting (pid $pid, log ${LOGS#"$ROOT"/}/postgres.log)"
  wait_pg "$pid"
  say "postgres up in $(elapsed "$start")s"
}

cmd_pg_down() {
  local bin pid
  if [ -n "${TOLLGATE_DATABASE_URL:-}" ]; then
    say "TOLLGATE_DATABASE_URL is set: the configured database is not managed here, nothing to stop"
    return 0
  fi
  if ! pid=$(pg_running_pid); then
    rm -f "$RUN/postgres.pid"
    say "postgres is not running"
    return 0
  fi
  bin=$(pg_bin)
  say "stopping postgres (pid $pid)"
  if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" stop </dev/null >/dev/null; then
    warn "fast shutdown did not finish in ${STOP_TIMEOUT}s: immediate shutdown"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w -t 10 stop </dev/null >/dev/null || true
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$RUN/postgres.pid"
  say "postgres stopped"
}

# ---------------------------------------------------------------------------------------------- services

# A process name is a service (replica 0) or service@k (replica k).
svc_module() {
  local svc=${1%@*}
  echo "tollgate_${svc//-/_}"
}

svc_port() {
  local svc=${1%@*} replica=0 base
  case $1 in *@*) replica=${1##*@} ;; esac
  base=$(svc_table | awk -v s="$svc" '$1 == s { print $2 }')
  if [ -n "$base" ]; then echo $((base + 100 * replica)); fi
}

# replicas SVC: how many processes of SVC (REPLICAS_<svc>, else REPLICAS, else 1).
replicas() {
  local var="REPLICAS_${1//-/_}" n
  n=${!var:-${REPLICAS:-1}}
  [[ "$n" =~ ^[1-9][0-9]?$ ]] || die "$var/REPLICAS must be a number from 1 to 99, not '$n'"
  echo "$n"
}

# The process names of every service's replicas: ingest ingest@1 ... (replica 0 first).
replica_names() {
  local svc k n
  for svc in $SERVICES; do
    n=$(replicas "$svc")
    echo "$svc"
    for ((k = 1; k < n; k++)); do echo "$svc@$k"; done
  done
}

wait_http() {
  local svc=$1 pid=$2 port=$3 start deadline
  start=$(now)
  deadline=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null -m 2 "http://127.0.0.1:$port/healthz" 2>/dev/null; do
    if ! alive "$pid"; then
      rm -f "$RUN/$svc.pid"
      log_tail "$LOGS/$svc.log"
      die "$svc exited during start-up; see $LOGS/$svc.log"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail "$LOGS/$svc.log"
      die "$svc: http://127.0.0.1:$port/healthz did not answer 200 within ${READY_TIMEOUT}s; see $LOGS/$svc.log"
    fi
    sleep 0.3
  done
  say "$svc healthy on :$port ($(elapsed "$start")s)"
}

cmd_topics() {
  if [ ! -f "$ROOT/libs/core/tollgate_core/topics.py" ]; then
    say "topics: libs/core/tollgate_core/topics.py does not exist yet, skipped"
    return 0
  fi
  [ -x "$TOLLGATE" ] || die "no .venv: run 'make venv' first"
  (
    cd "$ROOT"
    kafka_credentials admin
    TOLLGATE_KAFKA_BOOTSTRAP=$(kafka_bootstrap)
    export TOLLGATE_KAFKA_BOOTSTRAP
    "$TOLLGATE" admin topics apply </dev/null
    "$TOLLGATE" admin acls apply </dev/null
  )
}

# cmd_as PRINCIPAL CMD...: CMD with the Kafka credentials of PRINCIPAL and the local stack's addresses.
cmd_as() {
  [ "$#" -ge 2 ] || die "usage: infra/stack.sh as PRINCIPAL CMD..."
  case " $KAFKA_USERS " in *" $1 "*) ;; *) die "unknown Kafka principal $1 (one of: $KAFKA_USERS)" ;; esac
  kafka_credentials "$1"
  platform_env
  shift
  export TOLLGATE_KAFKA_BOOTSTRAP=${TOLLGATE_KAFKA_BOOTSTRAP:-$LOCAL_BOOTSTRAP}
  exec "$@"
}

cmd_services_up() {
  local svc mod pid port replica started=()
  [ -x "$PY" ] || die "no .venv: run 'make venv' first"
  state_dirs
  cmd_migrate
  for svc in $(replica_names); do
    mod=$(svc_module "$svc")
    replica=0
    case $svc in *@*) replica=${svc##*@} ;; esac
    if [ ! -f "$ROOT/services/${svc%@*}/$mod/__main__.py" ]; then
      say "$svc: skipped (services/${svc%@*}/$mod/__main__.py does not exist yet)"
      continue
    fi
    if pid=$(running_pid "$svc" "-m $mod"); then
      say "$svc already running (pid $pid)"
      continue
    fi
    port=$(svc_port "$svc")
    if [ -n "$port" ]; then
      require_free_port "$port" "$svc" "Stop it, then run services-up again."
    fi
    rotate_log "$svc"
    # shellcheck disable=SC2030,SC2031  # the service's environment, set in its own subshell
    (
      cd "$ROOT"
      kafka_credentials "${svc%@*}" # replicas share their service's principal
      platform_env
      export TOLLGATE_KAFKA_BOOTSTRAP="${TOLLGATE_KAFKA_BOOTSTRAP:-$LOCAL_BOOTSTRAP}"
      TOLLGATE_DATABASE_URL=$(service_database_url "${svc%@*}")
      export TOLLGATE_DATABASE_URL
      export PYTHONUNBUFFERED=1
      svcenv=${svc%@*}
      svcenv=${svcenv//-/_}
      export "TOLLGATE_${svcenv^^}_INSTANCE_ID=$replica"
      if [ -n "$port" ]; then
        export "TOLLGATE_${svcenv^^}_HTTP_PORT=$port"
      fi
      exec setsid "$PY" -m "$mod" </dev/null >>"$LOGS/$svc.log" 2>&1 9>&-
    ) &
    pid=$!
    echo "$pid" >"$RUN/$svc.pid"
    say "$svc starting (pid $pid, log ${LOGS#"$ROOT"/}/$svc.log)"
    started+=("$svc:$pid")
  done
  for entry in "${started[@]}"; do
    svc=${entry%%:*}
    pid=${entry##*:}
    port=$(svc_port "$svc")
    if [ -n "$port" ]; then
      wait_http "$svc" "$pid" "$port"
    else
      sleep 0.5
      alive "$pid" || {
        log_tail "$LOGS/$svc.log"
        die "$svc exited during start-up; see $LOGS/$svc.log"
      }
    fi
  done
}

cmd_services_down() {
  local svc file name pid order=() stopped=0
  for svc in $(replica_names); do order=("$svc" "${order[@]}"); done
  # Also stop anything started earlier under a list that has since changed.
  for file in "$RUN"/*.pid; do
    [ -e "$file" ] || continue
    name=$(basename "$file" .pid)
    case " kafka postgres ${order[*]} " in *" $name "*) ;; *) order+=("$name") ;; esac
  done
  for svc in "${order[@]}"; do
    if pid=$(running_pid "$svc" "-m $(svc_module "$svc")" 2>/dev/null); then
      say "stopping $svc (pid $pid)"
      stop_pid "$svc" "$pid"
      stopped=$((stopped + 1))
    fi
  done
  if [ "$stopped" = 0 ]; then say "no services running"; fi
}

# ---------------------------------------------------------------------------------------------- status

cmd_status() {
  local pid svc port mod
  if [ -n "${TOLLGATE_KAFKA_BOOTSTRAP:-}" ]; then
    local first=${TOLLGATE_KAFKA_BOOTSTRAP%%,*}
    if port_open "${first%:*}" "${first##*:}"; then
      echo "kafka      external  $TOLLGATE_KAFKA_BOOTSTRAP (reachable)"
    else
      echo "kafka      external  $TOLLGATE_KAFKA_BOOTSTRAP (NOT reachable)"
    fi
  elif pid=$(pid_of kafka "$KAFKA_PROPS"); then
    if port_open 127.0.0.1 "$KAFKA_PORT"; then
      echo "kafka      running   pid $pid, $LOCAL_BOOTSTRAP"
    else
      echo "kafka      starting  pid $pid, $LOCAL_BOOTSTRAP not listening yet"
    fi
  elif [ -f "$RUN/kafka.pid" ]; then
    echo "kafka      stopped   (stale pid file: the broker died; 'up' cleans it up)"
  else
    echo "kafka      stopped"
  fi
  if [ -n "${TOLLGATE_DATABASE_URL:-}" ]; then
    echo "postgres   external  (TOLLGATE_DATABASE_URL)"
  elif pid=$(pg_running_pid); then
    if port_open 127.0.0.1 "$PG_PORT"; then
      echo "postgres   running   pid $pid, $LOCAL_DATABASE_URL"
    else
      echo "postgres   starting  pid $pid"
    fi
  else
    echo "postgres   stopped"
  fi
  for svc in $(replica_names); do
    mod=$(svc_module "$svc")
    port=$(svc_port "$svc")
    if [ ! -f "$ROOT/services/${svc%@*}/$mod/__main__.py" ]; then
      printf '%-11s %s\n' "$svc" "absent    (no services/$svc/$mod/__main__.py)"
    elif pid=$(pid_of "$svc" "-m $mod"); then
      printf '%-11s running   pid %s%s\n' "$svc" "$pid" "${port:+, http://127.0.0.1:$port}"
    else
      printf '%-11s stopped\n' "$svc"
    fi
  done
}

# ---------------------------------------------------------------------------------------------- main

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

# One stack.sh at a time changes the stack (several `make test` may start together). File descriptor 9
# holds the lock; the processes started here must not inherit it (they close it with 9>&-).
lock_stack() {
  mkdir -p "$RUN"
  exec 9>"$RUN/stack.lock"
  if ! flock -n 9; then
    say "another infra/stack.sh is changing the stack: waiting for it"
    flock -w 600 9 || die "another infra/stack.sh held $RUN/stack.lock for 600 s"
  fi
}

main() {
  local cmd=${1:-}
  case $cmd in
    deps | kafka-up | kafka-down | pg-up | pg-down | infra-up | infra-down | topics | migrate | services-up | services-down | up | down)
      lock_stack
      ;;
  esac
  case $cmd in
    deps) cmd_deps ;;
    venv) cmd_venv ;;
    kafka-up) cmd_kafka_up ;;
    kafka-down) cmd_kafka_down ;;
    pg-up) cmd_pg_up ;;
    pg-down) cmd_pg_down ;;
    infra-up)
      cmd_pg_up
      cmd_kafka_up
      ;;
    infra-down)
      cmd_kafka_down
      cmd_pg_down
      ;;
    topics) cmd_topics ;;
    services-up) cmd_services_up ;;
    migrate) cmd_migrate ;;
    services-down) cmd_services_down ;;
    up)
      cmd_pg_up
      cmd_kafka_up
      cmd_topics
      cmd_services_up
      ;;
    down)
      cmd_services_down
      cmd_kafka_down
      cmd_pg_down
      ;;
    status) cmd_status ;;
    wait-kafka) wait_kafka ;;
    wait-pg) wait_pg ;;
    as)
      shift
      cmd_as "$@"
      ;;
    compose-env) cmd_compose_env ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
