{{/* Chart name, truncated to 63 characters (a DNS label). */}}
{{- define "signalman.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of every object and of the leader Lease: the release name when it contains the
chart name, else <release>-<chart>.
*/}}
{{- define "signalman.fullname" -}}
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

{{- define "signalman.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "signalman.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signalman.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "signalman.labels" -}}
helm.sh/chart: {{ include "signalman.chart" . }}
{{ include "signalman.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: signalman
{{- end }}

{{- define "signalman.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "signalman.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "signalman.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Settings that cannot work together, refused at render time. */}}
{{- define "signalman.validate" -}}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail "leaderElection.enabled=false needs replicaCount: 1 (only an elected leader may send)" }}
{{- end }}
{{- if ge (mul (int .Values.controller.sendTimeoutSeconds) 2) (int .Values.controller.claimTtlSeconds) }}
{{- fail "controller.sendTimeoutSeconds must be under half of controller.claimTtlSeconds" }}
{{- end }}
{{- if ge (int .Values.leaderElection.renewSeconds) (int .Values.leaderElection.leaseDurationSeconds) }}
{{- fail "leaderElection.renewSeconds must be less than leaderElection.leaseDurationSeconds" }}
{{- end }}
{{- end }}

{{/*
The operator's environment: the chart's variables, then extraEnv. A name in extraEnv
replaces the chart's variable of that name (one entry per name, as server-side apply wants).
*/}}
{{- define "signalman.env" -}}
{{- $v := .Values }}
{{- $env := list }}
{{- $env = append $env (dict "name" "POD_NAME" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) }}
{{- $env = append $env (dict "name" "POD_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) }}
{{- $env = append $env (dict "name" "SIGNALMAN_LEADER_ELECTION" "value" (toString $v.leaderElection.enabled)) }}
{{- $env = append $env (dict "name" "SIGNALMAN_LEASE_NAME" "value" (include "signalman.fullname" .)) }}
{{- $env = append $env (dict "name" "SIGNALMAN_LEASE_DURATION_SECONDS" "value" (toString (int $v.leaderElection.leaseDurationSeconds))) }}
{{- $env = append $env (dict "name" "SIGNALMAN_LEASE_RENEW_SECONDS" "value" (toString (int $v.leaderElection.renewSeconds))) }}
{{- $env = append $env (dict "name" "SIGNALMAN_LEASE_RETRY_SECONDS" "value" (toString (int $v.leaderElection.retrySeconds))) }}
{{- with $v.watchNamespaces }}
{{- $env = append $env (dict "name" "SIGNALMAN_NAMESPACES" "value" (join "," .)) }}
{{- end }}
{{- if $v.aws.region }}
{{- $env = append $env (dict "name" "SIGNALMAN_REGION" "value" $v.aws.region) }}
{{- end }}
{{- range $key, $var := dict "all" "AWS_ENDPOINT_URL" "swf" "AWS_ENDPOINT_URL_SWF" "ssm" "AWS_ENDPOINT_URL_SSM" "sts" "AWS_ENDPOINT_URL_STS" }}
{{- with index $v.aws.endpoints $key }}
{{- $env = append $env (dict "name" $var "value" .) }}
{{- end }}
{{- end }}
{{- $env = append $env (dict "name" "SIGNALMAN_CONCURRENCY" "value" (toString (int $v.controller.concurrency))) }}
{{- $env = append $env (dict "name" "SIGNALMAN_CLAIM_TTL_SECONDS" "value" (toString (int $v.controller.claimTtlSeconds))) }}
{{- $env = append $env (dict "name" "SIGNALMAN_SEND_TIMEOUT_SECONDS" "value" (toString (int $v.controller.sendTimeoutSeconds))) }}
{{- $env = append $env (dict "name" "SIGNALMAN_VERIFY_SETTLE_MS" "value" (toString (int $v.controller.verifySettleMs))) }}
{{- $env = append $env (dict "name" "SIGNALMAN_SWF_RATE" "value" (toString $v.rateLimits.swf.perSecond)) }}
{{- $env = append $env (dict "name" "SIGNALMAN_SWF_BURST" "value" (toString (int $v.rateLimits.swf.burst))) }}
{{- $env = append $env (dict "name" "SIGNALMAN_SSM_RATE" "value" (toString $v.rateLimits.ssm.perSecond)) }}
{{- $env = append $env (dict "name" "SIGNALMAN_SSM_BURST" "value" (toString (int $v.rateLimits.ssm.burst))) }}
{{- /* The requester is evidence only where the chart's requested-by binding guarded it. */}}
{{- if and $v.admission.enabled (include "signalman.vapApiVersion" .) }}
{{- $env = append $env (dict "name" "SIGNALMAN_REQUESTER_SOURCE" "value" (printf "binding=%s-requested-by" (include "signalman.fullname" .))) }}
{{- else }}
{{- $env = append $env (dict "name" "SIGNALMAN_REQUESTER_SOURCE" "value" "ignore") }}
{{- end }}
{{- $env = append $env (dict "name" "SIGNALMAN_LOG_LEVEL" "value" $v.logging.level) }}
{{- $env = append $env (dict "name" "SIGNALMAN_LOG_FORMAT" "value" $v.logging.format) }}
{{- $env = append $env (dict "name" "SIGNALMAN_METRICS_BIND_ADDRESS" "value" (printf "0.0.0.0:%d" (int $v.metrics.port))) }}
{{- $extra := list }}
{{- range $v.extraEnv }}
{{- $extra = append $extra .name }}
{{- end }}
{{- $out := list }}
{{- range $env }}
{{- if not (has .name $extra) }}
{{- $out = append $out . }}
{{- end }}
{{- end }}
{{- toYaml (concat $out $v.extraEnv) }}
{{- end }}

{{/*
The operator's rules for the two kinds (ClusterRole or per-namespace Role): read and watch them,
delete a finished one after its TTL, replace their status (a PUT: update), post events.k8s.io
Events. Nothing else: no create (it cannot forge signals), no status get/patch, no core Events.
*/}}
{{- define "signalman.rules" -}}
- apiGroups: ["signalman.dev"]
  resources: ["workflowsignals", "automationsignals"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["signalman.dev"]
  resources: ["workflowsignals/status", "automationsignals/status"]
  verbs: ["update"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
PromQL label matchers of this release's series, for the PrometheusRule's alerts:
metrics.prometheusRule.selector, else the job and namespace a ServiceMonitor of the metrics
Service gives them (the Prometheus Operator names the job after the Service).
*/}}
{{- define "signalman.ruleSelector" -}}
{{- if .Values.metrics.prometheusRule.selector }}
{{- .Values.metrics.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q,namespace=%q" (printf "%s-metrics" (include "signalman.fullname" .)) .Release.Namespace }}
{{- end }}
{{- end }}
