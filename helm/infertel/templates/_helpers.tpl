{{/* Names, cut to 63 characters (the DNS label limit). */}}
{{- define "infertel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infertel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "infertel.webhookName" -}}
{{- printf "%s-webhook" (include "infertel.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infertel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "infertel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infertel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "infertel.labels" -}}
helm.sh/chart: {{ include "infertel.chart" . }}
{{ include "infertel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: infertel
{{- end -}}

{{- define "infertel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Native sidecars (initContainers with restartPolicy Always) exist from Kubernetes 1.29 on. */}}
{{- define "infertel.nativeSidecar" -}}
{{- $v := toString .Values.sidecar.nativeSidecar -}}
{{- if eq $v "auto" -}}
{{- semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version -}}
{{- else -}}
{{- eq $v "true" -}}
{{- end -}}
{{- end -}}

{{- define "infertel.agentConfigMap" -}}
{{- printf "%s-agent" (include "infertel.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What the webhook injects (agent/webhook/config.ts reads it). */}}
{{- define "infertel.webhookConfig" -}}
image: {{ include "infertel.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
port: {{ .Values.sidecar.port }}
upstream: {{ .Values.sidecar.upstream | quote }}
nativeSidecar: {{ include "infertel.nativeSidecar" . }}
scrapeAnnotations: {{ .Values.scrape.annotations }}
configMap: {{ include "infertel.agentConfigMap" . }}
resources:
  {{- toYaml .Values.sidecar.resources | nindent 2 }}
env:
  {{- toYaml .Values.sidecar.env | nindent 2 }}
{{- end -}}
