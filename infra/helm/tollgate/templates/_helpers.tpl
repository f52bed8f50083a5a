{{/* Common names and labels. */}}
{{- define "tollgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "tollgate.labels" -}}
app.kubernetes.io/part-of: tollgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one service: (dict "root" $ "name" "scorer") */}}
{{- define "tollgate.selector" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "tollgate.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The Kafka and Strimzi data generated from the topic catalog, topic namespace filled in. */}}
{{- define "tollgate.kafkaData" -}}
{{ .Files.Get "files/kafka.yaml" | replace "@NS@" .Values.topicNamespace }}
{{- end -}}

{{- define "tollgate.kafkaUser" -}}
{{ printf "%s-%s" .root.Values.kafka.clusterName .name }}
{{- end -}}

{{- define "tollgate.kafkaBootstrap" -}}
{{- if .Values.kafka.create -}}
{{ printf "%s-kafka-bootstrap:9092" .Values.kafka.clusterName }}
{{- else -}}
{{ required "kafka.external.bootstrap is required when kafka.create is false" .Values.kafka.external.bootstrap }}
{{- end -}}
{{- end -}}

{{/* Environment every service container gets: (dict "root" $ "name" "scorer" "svc" $svc) */}}
{{- define "tollgate.env" -}}
{{- $v := .root.Values -}}
{{- $prefix := printf "TOLLGATE_%s_" (.name | upper | replace "-" "_") -}}
- name: TOLLGATE_ENV
  value: {{ $v.environment | quote }}
- name: TOLLGATE_TOPIC_NAMESPACE
  value: {{ $v.topicNamespace | quote }}
- name: TOLLGATE_KAFKA_BOOTSTRAP
  value: {{ include "tollgate.kafkaBootstrap" .root | quote }}
- name: {{ $v.kafka.credentialEnv.mechanism }}
  value: {{ $v.kafka.saslMechanism | quote }}
- name: {{ $v.kafka.credentialEnv.username }}
{{- if $v.kafka.create }}
  value: {{ include "tollgate.kafkaUser" . | quote }}
{{- else }}
  valueFrom: {secretKeyRef: {name: {{ required "kafka.external.credentialsSecret is required" $v.kafka.external.credentialsSecret }}, key: username}}
{{- end }}
- name: {{ $v.kafka.credentialEnv.password }}
  valueFrom:
    secretKeyRef:
      name: {{ if $v.kafka.create }}{{ include "tollgate.kafkaUser" . }}{{ else }}{{ $v.kafka.external.credentialsSecret }}{{ end }}
      key: password
# The service's own database role (tollgate_core.db_roles), never the owner's.
- name: TOLLGATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "postgresql.serviceUrlSecret is required" $v.postgresql.serviceUrlSecret }}
      key: {{ .name }}
- name: TOLLGATE_PII_KEY
  valueFrom: {secretKeyRef: {name: {{ $v.secrets.existingSecret }}, key: pii-key}}
- name: TOLLGATE_ARTIFACT_DIR
  value: /var/lib/tollgate/artifacts
- name: {{ $prefix }}HTTP_HOST
  value: "0.0.0.0"
- name: {{ $prefix }}HTTP_PORT
  value: {{ .svc.port | quote }}
- name: {{ $prefix }}INSTANCE_ID
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
{{- if $v.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.tracing.otlpEndpoint | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $v.tracing.sampleRatio | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The hook Job's containers past name and command: (dict "root" $ "keyMount" bool) */}}
{{- define "tollgate.jobContainer" -}}
{{- $v := .root.Values -}}
image: {{ include "tollgate.image" .root }}
imagePullPolicy: {{ $v.image.pullPolicy }}
env:
  - name: TOLLGATE_DATABASE_URL
    valueFrom:
      secretKeyRef:
      {{- if $v.postgresql.create }}
        name: {{ printf "%s-app" $v.postgresql.clusterName }}
        key: uri
      {{- else }}
        name: {{ required "postgresql.external.urlSecret is required when postgresql.create is false" $v.postgresql.external.urlSecret }}
        key: {{ $v.postgresql.external.urlKey }}
      {{- end }}
resources:
  requests: {cpu: 100m, memory: 256Mi}
  limits: {memory: 512Mi}
securityContext: {{- toYaml $v.containerSecurityContext | nindent 2 }}
volumeMounts:
  - {name: tmp, mountPath: /tmp}
  {{- if .keyMount }}
  - {name: metrics-key, mountPath: /etc/tollgate/metrics-key, readOnly: true}
  {{- end }}
{{- end -}}
