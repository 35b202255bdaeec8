{{/*
The RayService's serveConfigV2: the Serve config that `ragtune serve` deploys locally, built from
the service table the package generates (files/ragtune.yaml: every application with its import
path, route prefix and default deployment options) and filled in from the values: args,
replicas or autoscaling, resources, and the cluster's ports and proxies.
*/}}

{{- define "ragtune.serveConfig" -}}
{{- $root := . -}}
{{- $table := include "ragtune.table" . | fromYaml -}}
{{- $config := deepCopy $table.serveConfig -}}
{{- /* A proxy on every node, reachable from outside its pod (KubeRay probes it). */ -}}
{{- $_ := set $config "proxy_location" "EveryNode" -}}
{{- $_ := set $config.http_options "host" "0.0.0.0" -}}
{{- $_ := set $config.grpc_options "port" (int .Values.gateway.port) -}}
{{- if not .Values.serve.exposeInternalServices -}}
{{- $_ := set $config.grpc_options "grpc_servicer_functions" (list (index $table.servicers $table.public)) -}}
{{- end -}}
{{- $apps := list -}}
{{- range $app := $config.applications -}}
{{- $values := index $root.Values.services $app.name -}}
{{- if or (not (hasKey $values "enabled")) $values.enabled -}}
{{- $args := include "ragtune.serviceArgs" (dict "root" $root "name" $app.name) | fromYaml -}}
{{- $_ := set $app "args" (mergeOverwrite $args (deepCopy $values.args)) -}}
{{- $deployment := first $app.deployments -}}
{{- if $values.autoscaling.enabled -}}
{{- $_ := unset $deployment "num_replicas" -}}
{{- $_ := set $deployment "autoscaling_config" (dict
    "min_replicas" (int $values.autoscaling.minReplicas)
    "max_replicas" (int $values.autoscaling.maxReplicas)
    "target_ongoing_requests" $values.autoscaling.targetOngoingRequests) -}}
{{- else -}}
{{- $_ := set $deployment "num_replicas" (int $values.replicas) -}}
{{- end -}}
{{- if not (kindIs "invalid" $values.maxOngoingRequests) -}}
{{- $_ := set $deployment "max_ongoing_requests" (int $values.maxOngoingRequests) -}}
{{- end -}}
{{- $actor := $deployment.ray_actor_options -}}
{{- if not (kindIs "invalid" $values.cpus) -}}
{{- $_ := set $actor "num_cpus" $values.cpus -}}
{{- end -}}
{{- if gt (float64 $values.gpus) 0.0 -}}
{{- if not $root.Values.workers.gpu.enabled -}}
{{- fail (printf "services.%s.gpus is %v but workers.gpu.enabled is false: no node has a GPU" $app.name $values.gpus) -}}
{{- end -}}
{{- $_ := set $actor "num_gpus" $values.gpus -}}
{{- end -}}
{{- if not (kindIs "invalid" $values.memoryBytes) -}}
{{- $_ := set $actor "memory" (int64 $values.memoryBytes) -}}
{{- end -}}
{{- with $values.labelSelector -}}
{{- $_ := set $actor "label_selector" . -}}
{{- end -}}
{{- if and (eq $app.name "gateway") $root.Values.apiKeys.revision -}}
{{- /* A changed runtime_env makes Serve replace the gateway's replicas: they read the keys again. */ -}}
{{- $_ := set $app "runtime_env" (dict "env_vars" (dict "RAGTUNE_API_KEYS_REVISION" (toString $root.Values.apiKeys.revision))) -}}
{{- end -}}
{{- $apps = append $apps $app -}}
{{- end -}}
{{- end -}}
{{- $_ := set $config "applications" $apps -}}
{{- toYaml $config -}}
{{- end -}}

{{/* What the chart puts in one application's args: (dict "root" $ "name" SERVICE). */}}
{{- define "ragtune.serviceArgs" -}}
{{- $v := .root.Values -}}
{{- $args := dict -}}
{{- if eq .name "retrieval" -}}
{{- $_ := set $args "database_url" (include "ragtune.databaseUrl" (dict "root" .root "file" "ragtune.db")) -}}
{{- else if eq .name "generation" -}}
{{- $_ := set $args "model_path" (printf "%s/%s" $v.models.mountPath $v.models.baseModel) -}}
{{- $_ := set $args "adapters_dir" (printf "%s/%s" $v.models.mountPath $v.models.adaptersDir) -}}
{{- else if eq .name "gateway" -}}
{{- $_ := set $args "keys_file" (include "ragtune.keysFile" .root) -}}
{{- $_ := set $args "database_url" (include "ragtune.databaseUrl" (dict "root" .root "file" "ledger.db")) -}}
{{- $_ := set $args "rerank" $v.services.rerank.enabled -}}
{{- with $v.pricing -}}
{{- $_ := set $args "pricing" (deepCopy .) -}}
{{- end -}}
{{- end -}}
{{- $telemetry := dict "tracing" $v.telemetry.tracing "sampling_ratio" $v.telemetry.samplingRatio "capture_content" $v.telemetry.captureContent -}}
{{- with $v.telemetry.otlpEndpoint -}}
{{- $_ := set $telemetry "otlp_endpoint" . -}}
{{- end -}}
{{- $_ := set $args "telemetry" $telemetry -}}
{{- toYaml $args -}}
{{- end -}}

{{/*
The database URL of the Serve config. PostgreSQL's carries no credentials: libpq reads the
connection from the PG* environment the pods get from the database Secret.
*/}}
{{- define "ragtune.databaseUrl" -}}
{{- if eq .root.Values.database.type "postgresql" -}}
postgresql+psycopg://
{{- else -}}
{{- printf "sqlite:///%s/%s" .root.Values.data.mountPath .file -}}
{{- end -}}
{{- end -}}
