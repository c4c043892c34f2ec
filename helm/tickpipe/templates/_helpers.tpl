{{/* Names */}}
{{- define "tickpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tickpipe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "tickpipe.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "tickpipe.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tickpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tickpipe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tickpipe.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Labels */}}
{{- define "tickpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tickpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tickpipe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tickpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The label every long-running pod carries: what the metrics Service, PodMonitor and NetworkPolicy select. */}}
{{- define "tickpipe.scrapeLabel" -}}
tickpipe.io/metrics: "true"
{{- end }}

{{/*
Non-secret settings as TICKPIPE_* variables: the data of the ConfigMap, and the inline
environment of the topics Job (a pre-install hook runs before the ConfigMap exists).
*/}}
{{- define "tickpipe.configData" -}}
{{- $k := .Values.kafka -}}
TICKPIPE_KAFKA_BOOTSTRAP_SERVERS: {{ $k.bootstrapServers | quote }}
TICKPIPE_KAFKA_TOPIC_PREFIX: {{ $k.topicPrefix | quote }}
TICKPIPE_KAFKA_CLIENT_ID: {{ $k.clientId | quote }}
TICKPIPE_KAFKA_REPLICATION_FACTOR: {{ $k.replicationFactor | quote }}
TICKPIPE_KAFKA_SECURITY_PROTOCOL: {{ $k.securityProtocol | quote }}
{{- if has $k.securityProtocol (list "SSL" "SASL_SSL") }}
TICKPIPE_KAFKA_SSL_CHECK_HOSTNAME: {{ $k.tls.checkHostname | quote }}
{{- if $k.tls.caSecret.name }}
TICKPIPE_KAFKA_SSL_CAFILE: "/etc/tickpipe/kafka-ca/{{ $k.tls.caSecret.key }}"
{{- end }}
{{- if $k.tls.clientCertSecret.name }}
TICKPIPE_KAFKA_SSL_CERTFILE: "/etc/tickpipe/kafka-client/{{ $k.tls.clientCertSecret.certKey }}"
TICKPIPE_KAFKA_SSL_KEYFILE: "/etc/tickpipe/kafka-client/{{ $k.tls.clientCertSecret.keyKey }}"
{{- end }}
{{- end }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
TICKPIPE_KAFKA_SASL_MECHANISM: {{ $k.sasl.mechanism | quote }}
{{- if $k.sasl.username }}
TICKPIPE_KAFKA_SASL_USERNAME: {{ $k.sasl.username | quote }}
{{- end }}
{{- if $k.sasl.passwordSecret.name }}
TICKPIPE_KAFKA_SASL_PASSWORD_FILE: "/etc/tickpipe/kafka-sasl/{{ $k.sasl.passwordSecret.key }}"
{{- end }}
{{- if $k.sasl.oauthTokenSecret.name }}
TICKPIPE_KAFKA_SASL_OAUTH_TOKEN_FILE: "/etc/tickpipe/kafka-oauth/{{ $k.sasl.oauthTokenSecret.key }}"
{{- end }}
{{- end }}
TICKPIPE_OPS_HOST: "0.0.0.0"
TICKPIPE_OPS_PORT: {{ .Values.opsPort | quote }}
{{- range $section, $settings := .Values.config }}
{{- range $name, $value := $settings }}
{{ printf "TICKPIPE_%s_%s" $section $name | upper | replace "-" "_" }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes for Kafka TLS/SASL files (from Secrets) and the writable scratch directories. */}}
{{- define "tickpipe.volumes" -}}
{{- $k := .Values.kafka -}}
- name: tmp
  emptyDir: {}
- name: workdir
  emptyDir: {}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ $k.tls.caSecret.name }}
    items: [{key: {{ $k.tls.caSecret.key | quote }}, path: {{ $k.tls.caSecret.key | quote }}}]
{{- end }}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.clientCertSecret.name }}
- name: kafka-client
  secret:
    secretName: {{ $k.tls.clientCertSecret.name }}
    defaultMode: 0400
    items:
      - {key: {{ $k.tls.clientCertSecret.certKey | quote }}, path: {{ $k.tls.clientCertSecret.certKey | quote }}}
      - {key: {{ $k.tls.clientCertSecret.keyKey | quote }}, path: {{ $k.tls.clientCertSecret.keyKey | quote }}}
{{- end }}
{{- if and (hasPrefix "SASL_" $k.securityProtocol) $k.sasl.passwordSecret.name }}
- name: kafka-sasl
  secret:
    secretName: {{ $k.sasl.passwordSecret.name }}
    defaultMode: 0400
    items: [{key: {{ $k.sasl.passwordSecret.key | quote }}, path: {{ $k.sasl.passwordSecret.key | quote }}}]
{{- end }}
{{- if and (hasPrefix "SASL_" $k.securityProtocol) $k.sasl.oauthTokenSecret.name }}
- name: kafka-oauth
  secret:
    secretName: {{ $k.sasl.oauthTokenSecret.name }}
    defaultMode: 0400
    items: [{key: {{ $k.sasl.oauthTokenSecret.key | quote }}, path: {{ $k.sasl.oauthTokenSecret.key | quote }}}]
{{- end }}
{{- end }}

{{- define "tickpipe.volumeMounts" -}}
{{- $k := .Values.kafka -}}
- {name: tmp, mountPath: /tmp}
- {name: workdir, mountPath: /var/lib/tickpipe}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.caSecret.name }}
- {name: kafka-ca, mountPath: /etc/tickpipe/kafka-ca, readOnly: true}
{{- end }}
{{- if and (has $k.securityProtocol (list "SSL" "SASL_SSL")) $k.tls.clientCertSecret.name }}
- {name: kafka-client, mountPath: /etc/tickpipe/kafka-client, readOnly: true}
{{- end }}
{{- if and (hasPrefix "SASL_" $k.securityProtocol) $k.sasl.passwordSecret.name }}
- {name: kafka-sasl, mountPath: /etc/tickpipe/kafka-sasl, readOnly: true}
{{- end }}
{{- if and (hasPrefix "SASL_" $k.securityProtocol) $k.sasl.oauthTokenSecret.name }}
- {name: kafka-oauth, mountPath: /etc/tickpipe/kafka-oauth, readOnly: true}
{{- end }}
{{- end }}

{{/* Liveness and readiness probes on the ops port. */}}
{{- define "tickpipe.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: ops}
  {{- toYaml .Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: ops}
  {{- toYaml .Values.probes.readiness | nindent 2 }}
{{- end }}

{{/* Pod-level settings shared by every tickpipe pod. */}}
{{- define "tickpipe.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}
