{{/*
The pod template of a Ray group: (dict "root" $ "group" "head"|"cpu"|"gpu"). Every Ray pod gets
the same image, environment and volumes: Serve may run an application's build step (which
reads the model directory) on any node, the head included.
*/}}

{{- define "ragtune.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $head := eq .group "head" -}}
{{- $g := ternary $v.head (index $v.workers .group) $head -}}
{{- $table := include "ragtune.table" $root | fromYaml -}}
metadata:
  labels:
    {{- include "ragtune.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ ternary "ray-head" (printf "ray-worker-%s" .group) $head }}
spec:
  serviceAccountName: {{ include "ragtune.serviceAccountName" $root }}
  {{- /* Only the head's autoscaler sidecar talks to the Kubernetes API. */}}
  automountServiceAccountToken: {{ and $head $v.ray.autoscaling }}
  {{- with $v.image.pullSecrets }}
  imagePullSecrets:
    {{- range . }}
    - name: {{ . }}
    {{- end }}
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- if and (not $head) $g.runtimeClassName }}
  runtimeClassName: {{ $g.runtimeClassName }}
  {{- end }}
  {{- with $g.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $init := include "ragtune.modelsInitContainer" $root }}
  {{- if $init }}
  initContainers:
    {{- $init | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $head }}
      image: {{ include "ragtune.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      ports:
        {{- if $head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: serve-grpc, containerPort: {{ int $v.gateway.port }}}
        {{- /* Serve's HTTP proxy: KubeRay's readiness checks ask it /-/healthz. KubeRay puts
        the head's ports named "serve" or "serve-*" on the gateway Service: "serve-http"
        while the OpenAI-compatible API answers on it, else "http", left out. */}}
        - {name: {{ ternary "serve-http" "http" $v.services.openai.enabled }}, containerPort: {{ int $table.serveConfig.http_options.port }}}
        - {name: metrics, containerPort: {{ int $v.monitoring.metricsPort }}}
      env:
        {{- range $name, $value := $table.processEnv }}
        - {name: {{ $name }}, value: {{ $value | quote }}}
        {{- end }}
        {{- range $name, $value := index $table.ingressModes $v.serve.ingress }}
        - {name: {{ $name }}, value: {{ $value | quote }}}
        {{- end }}
        {{- if eq $v.database.type "postgresql" }}
        {{- range $var, $key := dict "PGHOST" "host" "PGPORT" "port" "PGUSER" "user" "PGPASSWORD" "password" "PGDATABASE" "database" }}
        - name: {{ $var }}
          valueFrom:
            secretKeyRef: {name: {{ $v.database.existingSecret }}, key: {{ index $v.database.secretKeys $key }}}
        {{- end }}
        - {name: PGSSLMODE, value: {{ $v.database.sslMode }}}
        {{- end }}
        {{- with $v.ray.env }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      resources:
        {{- include "ragtune.groupResources" (dict "group" .group "values" $g) | nindent 8 }}
      volumeMounts:
        - {name: models, mountPath: {{ $v.models.mountPath }}, readOnly: true}
        - {name: data, mountPath: {{ $v.data.mountPath }}}
        - {name: api-keys, mountPath: {{ dir (include "ragtune.keysFile" $root) }}, readOnly: true}
      {{- if not $head }}
      lifecycle:
        preStop:
          exec: {command: ["/bin/sh", "-c", "ray stop"]}
      {{- end }}
  volumes:
    {{- if eq $v.models.source "pvc" }}
    - name: models
      persistentVolumeClaim: {claimName: {{ include "ragtune.modelsClaimName" $root }}, readOnly: true}
    {{- else }}
    - name: models
      emptyDir: {sizeLimit: {{ $v.models.objectStorage.sizeLimit }}}
    {{- end }}
    {{- if $v.data.existingClaim }}
    - name: data
      persistentVolumeClaim: {claimName: {{ $v.data.existingClaim }}}
    {{- else }}
    - name: data
      emptyDir: {}
    {{- end }}
    - name: api-keys
      secret:
        secretName: {{ $v.apiKeys.existingSecret }}
        items: [{key: {{ $v.apiKeys.key }}, path: {{ base (include "ragtune.keysFile" $root) }}}]
{{- end -}}

{{/* Resources of a group; GPU workers get nvidia.com/gpu in both requests and limits. */}}
{{- define "ragtune.groupResources" -}}
{{- $resources := deepCopy .values.resources -}}
{{- if eq .group "gpu" -}}
{{- $gpus := toString (int .values.gpusPerPod) -}}
{{- $_ := set $resources "requests" (merge (dict "nvidia.com/gpu" $gpus) (default (dict) $resources.requests)) -}}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $gpus) (default (dict) $resources.limits)) -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{/* Fills the models volume before Ray starts: from object storage, or the dev model. */}}
{{- define "ragtune.modelsInitContainer" -}}
{{- $v := .Values -}}
{{- $m := $v.models -}}
{{- if eq $m.source "objectStorage" -}}
{{- if not $m.objectStorage.uri -}}
{{- fail "models.source is objectStorage: set models.objectStorage.uri (s3://bucket/prefix)" -}}
{{- end -}}
- name: fetch-models
  image: {{ $m.objectStorage.image }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  command:
    - aws
    - s3
    - sync
    - --only-show-errors
    {{- with $m.objectStorage.endpointUrl }}
    - --endpoint-url={{ . }}
    {{- end }}
    - {{ $m.objectStorage.uri | quote }}
    - {{ $m.mountPath | quote }}
  env:
    - {name: HOME, value: /tmp}
  {{- with $m.objectStorage.credentialsSecret }}
  envFrom:
    - secretRef: {name: {{ . }}}
  {{- end }}
  volumeMounts:
    - {name: models, mountPath: {{ $m.mountPath }}}
{{- else if eq $m.source "devmodel" -}}
{{- $table := include "ragtune.table" . | fromYaml -}}
- name: devmodel
  image: {{ include "ragtune.image" . }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  command: [ragtune, --data-dir, /tmp/ragtune, devmodel, --out, {{ $m.mountPath | quote }}, --if-missing]
  env:
    {{- range $name, $value := $table.processEnv }}
    - {name: {{ $name }}, value: {{ $value | quote }}}
    {{- end }}
  volumeMounts:
    - {name: models, mountPath: {{ $m.mountPath }}}
{{- end -}}
{{- end -}}
