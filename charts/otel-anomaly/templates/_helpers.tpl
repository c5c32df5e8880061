{{/*
Chart name, truncated to the 63 characters DNS names allow.
*/}}
{{- define "otel-anomaly.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the release name
already contains it. Truncated to 63 characters.
*/}}
{{- define "otel-anomaly.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "otel-anomaly.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "otel-anomaly.labels" -}}
helm.sh/chart: {{ include "otel-anomaly.chart" . }}
{{ include "otel-anomaly.selectorLabels" . }}
app.kubernetes.io/version: {{ (.Values.image.tag | default .Chart.AppVersion) | toString | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: anomaly-detector
{{- end }}

{{/*
Selector labels: stable for the life of a release (a Deployment's selector is immutable).
*/}}
{{- define "otel-anomaly.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otel-anomaly.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the service account to use.
*/}}
{{- define "otel-anomaly.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "otel-anomaly.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference.
*/}}
{{- define "otel-anomaly.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Port of a "host:port" listen endpoint. Fails when the endpoint is unset (the sidecar's own
default listens on localhost only) or on a loopback address, neither of which other pods
can reach. Called with (list <endpoint> <config key>).
*/}}
{{- define "otel-anomaly.listenPort" -}}
{{- $endpoint := index . 0 | default "" | toString }}
{{- $key := index . 1 }}
{{- if not $endpoint }}
{{- fail (printf "config.%s must be set, e.g. to 0.0.0.0:PORT (the sidecar's default listens on localhost only)" $key) }}
{{- end }}
{{- if not (regexMatch ":[0-9]+$" $endpoint) }}
{{- fail (printf "config.%s must be host:port; got %q" $key $endpoint) }}
{{- end }}
{{- $host := regexReplaceAll ":[0-9]+$" $endpoint "" }}
{{- if or (hasPrefix "localhost" $host) (hasPrefix "127." $host) (eq $host "[::1]") }}
{{- fail (printf "config.%s is %q: other pods cannot reach a loopback address; use 0.0.0.0:PORT" $key $endpoint) }}
{{- end }}
{{- regexFind "[0-9]+$" $endpoint }}
{{- end }}

{{- define "otel-anomaly.grpcPort" -}}
{{- $c := .Values.config | default dict }}
{{- $r := $c.receivers | default dict }}
{{- $g := $r.grpc | default dict }}
{{- include "otel-anomaly.listenPort" (list $g.endpoint "receivers.grpc.endpoint") }}
{{- end }}

{{- define "otel-anomaly.httpPort" -}}
{{- $c := .Values.config | default dict }}
{{- $r := $c.receivers | default dict }}
{{- $h := $r.http | default dict }}
{{- include "otel-anomaly.listenPort" (list $h.endpoint "receivers.http.endpoint") }}
{{- end }}

{{- define "otel-anomaly.metricsPort" -}}
{{- $c := .Values.config | default dict }}
{{- $e := $c.exposition | default dict }}
{{- include "otel-anomaly.listenPort" (list $e.endpoint "exposition.endpoint") }}
{{- end }}

{{/*
The three named ports, shared by the Services.
*/}}
{{- define "otel-anomaly.servicePorts" -}}
- name: otlp-grpc
  port: {{ include "otel-anomaly.grpcPort" . }}
  targetPort: otlp-grpc
  protocol: TCP
  appProtocol: grpc
- name: otlp-http
  port: {{ include "otel-anomaly.httpPort" . }}
  targetPort: otlp-http
  protocol: TCP
  appProtocol: {{ if include "otel-anomaly.receiversTls" . }}https{{ else }}http{{ end }}
- name: metrics
  port: {{ include "otel-anomaly.metricsPort" . }}
  targetPort: metrics
  protocol: TCP
  appProtocol: {{ if include "otel-anomaly.metricsTls" . }}https{{ else }}http{{ end }}
{{- end }}

{{/*
Folder of config.state.path: where the state volume is mounted. The path must be absolute
(the container's working directory is not writable); empty keeps no state but the volume
is still mounted at /var/lib/otel-anomaly.
*/}}
{{- define "otel-anomaly.stateDir" -}}
{{- $c := .Values.config | default dict }}
{{- $s := $c.state | default dict }}
{{- $path := $s.path | default "" | toString }}
{{- if not $path }}
{{- "/var/lib/otel-anomaly" }}
{{- else if not (isAbs $path) }}
{{- fail (printf "config.state.path must be an absolute path on the state volume, e.g. /var/lib/otel-anomaly/state.ckpt; got %q" $path) }}
{{- else }}
{{- dir $path }}
{{- end }}
{{- end }}

{{/*
TLS and bearer tokens (values tls and auth). Each Secret is mounted as a directory, never
with subPath, so an updated Secret reaches the files and the sidecar picks it up without a
restart. The helpers below print "true" or nothing.
*/}}
{{- define "otel-anomaly.tlsDir" -}}
/var/run/secrets/otel-anomaly/tls
{{- end }}

{{- define "otel-anomaly.authDir" -}}
/var/run/secrets/otel-anomaly/auth
{{- end }}

{{- define "otel-anomaly.receiversTls" -}}
{{- if and .Values.tls.enabled .Values.tls.receivers }}true{{ end }}
{{- end }}

{{- define "otel-anomaly.metricsTls" -}}
{{- if and .Values.tls.enabled .Values.tls.metrics }}true{{ end }}
{{- end }}

{{- define "otel-anomaly.receiversAuth" -}}
{{- if and .Values.auth.enabled .Values.auth.receivers }}true{{ end }}
{{- end }}

{{- define "otel-anomaly.metricsAuth" -}}
{{- if and .Values.auth.enabled .Values.auth.metrics }}true{{ end }}
{{- end }}

{{/*
The map at key of a map, created (or replacing a null) when absent. Called with
(list <map> <key>).
*/}}
{{- define "otel-anomaly.child" -}}
{{- $parent := index . 0 }}
{{- $key := index . 1 }}
{{- if not (kindIs "map" (get $parent $key)) }}
{{- $_ := set $parent $key dict }}
{{- end }}
{{- end }}

{{/*
The sidecar's config file: .Values.config, plus the file paths of the mounted Secrets in
receivers.{grpc,http}.tls, receivers.auth, exposition.tls and exposition.auth (they replace
those keys of .Values.config; min_version stays as config sets it).
*/}}
{{- define "otel-anomaly.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $tlsDir := include "otel-anomaly.tlsDir" . }}
{{- $server := dict "cert_file" (printf "%s/tls.crt" $tlsDir) "key_file" (printf "%s/tls.key" $tlsDir) }}
{{- $token := dict "bearer_token_file" (printf "%s/%s" (include "otel-anomaly.authDir" .) (.Values.auth.key | toString)) }}
{{- if .Values.tls.enabled }}
{{- $_ := required "tls.secretName must name a kubernetes.io/tls Secret when tls.enabled is true" .Values.tls.secretName }}
{{- end }}
{{- if .Values.auth.enabled }}
{{- $_ := required "auth.secretName must name the Secret of the bearer token file when auth.enabled is true" .Values.auth.secretName }}
{{- end }}
{{- if or (include "otel-anomaly.receiversTls" .) (include "otel-anomaly.receiversAuth" .) }}
{{- include "otel-anomaly.child" (list $config "receivers") }}
{{- end }}
{{- if or (include "otel-anomaly.metricsTls" .) (include "otel-anomaly.metricsAuth" .) }}
{{- include "otel-anomaly.child" (list $config "exposition") }}
{{- end }}
{{- if include "otel-anomaly.receiversTls" . }}
{{- $receiverTls := deepCopy $server }}
{{- if .Values.tls.clientAuth }}
{{- $_ := set $receiverTls "client_ca_file" (printf "%s/ca.crt" $tlsDir) }}
{{- end }}
{{- range $name := list "grpc" "http" }}
{{- include "otel-anomaly.child" (list $config.receivers $name) }}
{{- $receiver := get $config.receivers $name }}
{{- include "otel-anomaly.child" (list $receiver "tls") }}
{{- $_ := mustMergeOverwrite $receiver.tls (deepCopy $receiverTls) }}
{{- end }}
{{- end }}
{{- if include "otel-anomaly.receiversAuth" . }}
{{- include "otel-anomaly.child" (list $config.receivers "auth") }}
{{- $_ := mustMergeOverwrite $config.receivers.auth (deepCopy $token) }}
{{- end }}
{{- if include "otel-anomaly.metricsTls" . }}
{{- include "otel-anomaly.child" (list $config.exposition "tls") }}
{{- $_ := mustMergeOverwrite $config.exposition.tls (deepCopy $server) }}
{{- end }}
{{- if include "otel-anomaly.metricsAuth" . }}
{{- include "otel-anomaly.child" (list $config.exposition "auth") }}
{{- $_ := mustMergeOverwrite $config.exposition.auth (deepCopy $token) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
A probe from values: over HTTPS when it asks the metrics port and /metrics serves TLS (the
kubelet does not verify the certificate, and /healthz and /readyz never need a token).
Called with (list <probe> <context>).
*/}}
{{- define "otel-anomaly.probe" -}}
{{- $probe := deepCopy (index . 0) }}
{{- $ctx := index . 1 }}
{{- $get := $probe.httpGet }}
{{- if and $get (include "otel-anomaly.metricsTls" $ctx) (not $get.scheme) }}
{{- $port := $get.port | toString }}
{{- if or (eq $port "metrics") (eq $port (include "otel-anomaly.metricsPort" $ctx)) }}
{{- $_ := set $get "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- toYaml $probe }}
{{- end }}
