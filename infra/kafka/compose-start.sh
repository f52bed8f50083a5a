#!/bin/bash
# The broker of docker-compose.yml, run inside the official apache/kafka image: renders the local stack's
# infra/kafka/server.properties.template (mounted at /tollgate/kafka), formats the storage once with one
# SCRAM-SHA-512 user per principal (passwords from the environment, i.e. the compose env file), then starts.
set -euo pipefail

template=/tollgate/kafka/server.properties.template
conf=/var/lib/kafka/data/server.properties
admin_conf=/var/lib/kafka/data/admin.properties
: "${CLUSTER_ID:?}" "${KAFKA_USERS:?}" "${TOLLGATE_KAFKA_PASSWORD_ADMIN:?}" "${TOLLGATE_KAFKA_PASSWORD_CONTROLLER:?}"

umask 077
sed -e "s|@KAFKA_PORT@|9092|g" -e "s|@CONTROLLER_PORT@|9093|g" \
  -e "s|@LISTEN_HOST@|0.0.0.0|g" -e "s|@ADVERTISED_HOST@|kafka|g" \
  -e "s|@DATA_DIR@|/var/lib/kafka/data/log|g" \
  -e "s|@ADMIN_PASSWORD@|$TOLLGATE_KAFKA_PASSWORD_ADMIN|g" \
  -e "s|@CONTROLLER_PASSWORD@|$TOLLGATE_KAFKA_PASSWORD_CONTROLLER|g" \
  "$template" >"$conf"
# For the health check (kafka-broker-api-versions.sh --command-config).
printf '%s\n' "security.protocol=SASL_PLAINTEXT" "sasl.mechanism=SCRAM-SHA-512" \
  "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$TOLLGATE_KAFKA_PASSWORD_ADMIN\";" \
  >"$admin_conf"

scram=()
for user in $KAFKA_USERS; do
  var=TOLLGATE_KAFKA_PASSWORD_${user//-/_}
  var=${var^^}
  [ -n "${!var:-}" ] || { echo "compose-start: $var is not set (see the compose env file)" >&2; exit 1; }
  scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=${!var}]")
done
/opt/kafka/bin/kafka-storage.sh format -t "$CLUSTER_ID" -c "$conf" --ignore-formatted "${scram[@]}"
exec /opt/kafka/bin/kafka-server-start.sh "$conf"
