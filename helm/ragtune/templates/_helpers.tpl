{{/* Names, labels and the pieces every Ray pod shares. */}}

{{- define "ragtune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ragtune.fullname" -}}
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

{{- define "ragtune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragtune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ragtune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ragtune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ragtune
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of an object of one component: (dict "root" $ "component" "NAME"). */}}
{{- define "ragtune.componentLabels" -}}
{{ include "ragtune.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "ragtune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ragtune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ragtune.gatewayServiceName" -}}
{{- printf "%s-gateway" (include "ragtune.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ragtune.modelsClaimName" -}}
{{- default (printf "%s-models" (include "ragtune.fullname" .)) .Values.models.pvc.existingClaim -}}
{{- end -}}

{{- define "ragtune.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The service table, generated from the ragtune package (`ragtune config --chart`). */}}
{{- define "ragtune.table" -}}
{{- .Files.Get "files/ragtune.yaml" -}}
{{- end -}}

{{/* Where the keys Secret is mounted; the gateway's keys_file. */}}
{{- define "ragtune.keysFile" -}}
/etc/ragtune/keys/keys.yaml
{{- end -}}
