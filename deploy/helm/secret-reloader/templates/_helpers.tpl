{{/*
Names, labels and images shared by the templates.
*/}}

{{/* The chart's name. */}}
{{- define "secret-reloader.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource's name: the release's name, followed by the chart's unless it
already holds it. At most 40 characters, so that a suffix (-selfsigned, -tls) still makes a
valid name, the Service's a DNS label of at most 63.
*/}}
{{- define "secret-reloader.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The labels of every resource. */}}
{{- define "secret-reloader.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "secret-reloader.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels that select the webhook's pods (Deployment, PDB, Service, NetworkPolicy,
PodMonitor): fixed for the release's life, a Deployment's selector cannot change. */}}
{{- define "secret-reloader.selectorLabels" -}}
app.kubernetes.io/name: {{ include "secret-reloader.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* The webhook's image: repository:tag, or repository:tag@digest. */}}
{{- define "secret-reloader.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The injected sidecar's image: inject.image, else the webhook's own. */}}
{{- define "secret-reloader.sidecarImage" -}}
{{- default (include "secret-reloader.image" .) .Values.inject.image }}
{{- end }}

{{/* The Secret holding the serving certificate, its key and the CA (ca.crt). */}}
{{- define "secret-reloader.tlsSecret" -}}
{{- printf "%s-tls" (include "secret-reloader.fullname" .) }}
{{- end }}

{{/* The names the API server calls the webhook by (the Service), as the certificate holds them. */}}
{{- define "secret-reloader.dnsNames" -}}
{{- $svc := printf "%s.%s.svc" (include "secret-reloader.fullname" .) .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc .Values.clusterDomain) | toJson }}
{{- end }}
