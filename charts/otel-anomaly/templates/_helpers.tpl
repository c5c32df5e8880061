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
  appProtocol: http
- name: metrics
  port: {{ include "otel-anomaly.metricsPort" . }}
  targetPort: metrics
  protocol: TCP
  appProtocol: http
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
