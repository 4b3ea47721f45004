{{/*
Chart name, truncated to 63 characters.
*/}}
{{- define "campaign-os.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Per-service objects append "-<service>", so keep room (max 40).
*/}}
{{- define "campaign-os.fullname" -}}
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

{{- define "campaign-os.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "campaign-os.labels" -}}
helm.sh/chart: {{ include "campaign-os.chart" . }}
{{ include "campaign-os.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: campaign-os
{{- end }}

{{/*
Selector labels shared by every pod of the release (NetworkPolicies select on these).
*/}}
{{- define "campaign-os.selectorLabels" -}}
app.kubernetes.io/name: {{ include "campaign-os.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Image reference: repository@digest when a digest is given, else repository:tag.
*/}}
{{- define "campaign-os.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "campaign-os.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "campaign-os.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
A service's effective settings: serviceDefaults deep-merged under the service's own entry.
Usage: include "campaign-os.svc" (dict "root" $ "name" "identity") | fromYaml
*/}}
{{- define "campaign-os.svc" -}}
{{- $entry := index .root.Values.services .name | default dict }}
{{- include "campaign-os.deepMerge" (dict "base" .root.Values.serviceDefaults "over" $entry) }}
{{- end }}

{{/*
Recursive merge where every key present in "over" wins, including false, 0 and "" (sprig's
merge/mergeOverwrite skip such zero values, so `autoscaling.enabled: false` would be lost).
Maps merge key by key; lists and scalars are replaced. Returns YAML.
*/}}
{{- define "campaign-os.deepMerge" -}}
{{- $base := .base | default dict }}
{{- $over := .over | default dict }}
{{- $out := dict }}
{{- range $k, $v := $base }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- range $k, $v := $over }}
{{- if and (kindIs "map" $v) (kindIs "map" (index $base $k)) }}
{{- $_ := set $out $k (include "campaign-os.deepMerge" (dict "base" (index $base $k) "over" $v) | fromYaml) }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
Names of the enabled services, sorted, as a YAML list.
*/}}
{{- define "campaign-os.enabledServices" -}}
{{- $names := list }}
{{- range $name, $svc := .Values.services }}
{{- if and $svc (ne (toString $svc.enabled) "false") }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- toYaml (sortAlpha $names) }}
{{- end }}

{{/*
Upper-case environment-variable segment of a service name ("identity" -> "IDENTITY").
*/}}
{{/*
A value as an environment-variable string. Helm parses YAML numbers as float64, which would
print 2592000 as "2.592e+06": whole numbers are printed as integers.
*/}}
{{- define "campaign-os.str" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . | toString }}
{{- else if kindIs "slice" . }}
{{- join "," . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{- define "campaign-os.envName" -}}
{{- . | upper | replace "-" "_" }}
{{- end }}

{{/*
Non-secret variables every process reads, as a YAML map (ConfigMap data and the migration Job).
*/}}
{{- define "campaign-os.commonEnv" -}}
{{- $c := .Values.config -}}
COS_ENV: {{ $c.env | quote }}
COS_TELEMETRY__LOG_FORMAT: {{ $c.logFormat | quote }}
RUST_LOG: {{ $c.rustLog | quote }}
COS_DATABASE__MAX_CONNECTIONS: {{ include "campaign-os.str" $c.database.maxConnections | quote }}
{{- with $c.database.appRole }}
COS_DATABASE__APP_ROLE: {{ . | quote }}
{{- end }}
{{- with $c.database.acquireTimeoutSecs }}
COS_DATABASE__ACQUIRE_TIMEOUT_SECS: {{ include "campaign-os.str" . | quote }}
{{- end }}
COS_AMQP__EXCHANGE: {{ $c.amqp.exchange | quote }}
{{- with $c.amqp.deliveryQueue }}
COS_AMQP__DELIVERY_QUEUE: {{ . | quote }}
{{- end }}
{{- with $c.redis.keyPrefix }}
COS_REDIS__KEY_PREFIX: {{ . | quote }}
{{- end }}
{{- with $c.crypto.activeKeyId }}
COS_CRYPTO__ACTIVE_KEY_ID: {{ . | quote }}
{{- end }}
COS_AUTH__ISSUER: {{ $c.auth.issuer | quote }}
{{- with $c.auth.audience }}
COS_AUTH__AUDIENCE: {{ . | quote }}
{{- end }}
COS_AUTH__ACCESS_TTL_SECS: {{ include "campaign-os.str" $c.auth.accessTtlSecs | quote }}
COS_AUTH__REFRESH_TTL_SECS: {{ include "campaign-os.str" $c.auth.refreshTtlSecs | quote }}
{{- with $c.auth.jwksRefreshSecs }}
COS_AUTH__JWKS_REFRESH_SECS: {{ include "campaign-os.str" . | quote }}
{{- end }}
{{- with $c.otel.endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- range $k, $v := $c.extraEnv }}
{{ $k }}: {{ include "campaign-os.str" $v | quote }}
{{- end }}
{{- end }}

{{/*
Public base URL of the gateway (unsubscribe links in emails): gateway.publicUrl; else the first
ingress host when the ingress is enabled (https when that host is listed in ingress.tls); else
config.auth.issuer when it is an http(s) URL; else empty.
*/}}
{{- define "campaign-os.publicUrl" -}}
{{- $ing := .Values.ingress }}
{{- $host := "" }}
{{- if and $ing.enabled $ing.hosts }}
{{- $host = (first $ing.hosts).host | default "" }}
{{- end }}
{{- if .Values.gateway.publicUrl }}
{{- trimSuffix "/" .Values.gateway.publicUrl }}
{{- else if $host }}
{{- $https := false }}
{{- range $ing.tls }}
{{- if has $host (.hosts | default list) }}
{{- $https = true }}
{{- end }}
{{- end }}
{{- printf "%s://%s" (ternary "https" "http" $https) $host }}
{{- else if regexMatch "^https?://." .Values.config.auth.issuer }}
{{- trimSuffix "/" .Values.config.auth.issuer }}
{{- end }}
{{- end }}

{{/*
Variables of one service (listen addresses, peers, its own settings), as a YAML map.
Usage: include "campaign-os.serviceEnv" (dict "root" $ "name" $name "svc" $svc)
*/}}
{{- define "campaign-os.serviceEnv" -}}
{{- $root := .root }}
{{- $fullname := include "campaign-os.fullname" $root }}
{{- $svc := .svc }}
{{- $prefix := printf "COS_%s__" (include "campaign-os.envName" .name) }}
{{- if eq $svc.kind "gateway" }}
{{ $prefix }}HTTP_ADDR: {{ printf "0.0.0.0:%v" $root.Values.ports.http | quote }}
{{ $prefix }}ADMIN_ADDR: {{ printf "0.0.0.0:%v" $root.Values.ports.admin | quote }}
{{- range $peer := include "campaign-os.enabledServices" $root | fromYamlArray }}
{{- $peerSvc := include "campaign-os.svc" (dict "root" $root "name" $peer) | fromYaml }}
{{- if eq $peerSvc.kind "grpc" }}
{{ $prefix }}{{ include "campaign-os.envName" $peer }}_URL: {{ printf "http://%s-%s:%v" $fullname $peer $root.Values.ports.grpc | quote }}
{{- end }}
{{- end }}
{{- with $root.Values.gateway }}
{{ $prefix }}BODY_LIMIT_BYTES: {{ include "campaign-os.str" .bodyLimitBytes | quote }}
{{- with .corsOrigins }}
{{ $prefix }}CORS_ORIGINS: {{ join "," . | quote }}
{{- end }}
{{ $prefix }}TRUST_FORWARDED_FOR: {{ .trustForwardedFor | toString | quote }}
{{ $prefix }}UPSTREAM_TIMEOUT_SECS: {{ include "campaign-os.str" .upstreamTimeoutSecs | quote }}
{{- with .publicUrl }}
{{ $prefix }}PUBLIC_URL: {{ . | quote }}
{{- end }}
{{ $prefix }}RATE_LIMIT__PER_IP_PER_MINUTE: {{ include "campaign-os.str" .rateLimit.perIpPerMinute | quote }}
{{ $prefix }}RATE_LIMIT__PER_TENANT_PER_MINUTE: {{ include "campaign-os.str" .rateLimit.perTenantPerMinute | quote }}
{{ $prefix }}RATE_LIMIT__AUTH_PER_IP_PER_MINUTE: {{ include "campaign-os.str" .rateLimit.authPerIpPerMinute | quote }}
{{- end }}
{{- else }}
{{ $prefix }}GRPC_ADDR: {{ printf "0.0.0.0:%v" $root.Values.ports.grpc | quote }}
{{ $prefix }}ADMIN_ADDR: {{ printf "0.0.0.0:%v" $root.Values.ports.admin | quote }}
{{- range $dep := $svc.dependsOn }}
{{ $prefix }}{{ include "campaign-os.envName" $dep }}_URL: {{ printf "http://%s-%s:%v" $fullname $dep $root.Values.ports.grpc | quote }}
{{- end }}
{{- if and (eq .name "publishing") (not (hasKey ($svc.env | default dict) "COS_PUBLISHING__PUBLIC_URL")) }}
{{- with include "campaign-os.publicUrl" $root }}
{{ $prefix }}PUBLIC_URL: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range $k, $v := $svc.env }}
{{ $k }}: {{ include "campaign-os.str" $v | quote }}
{{- end }}
{{- end }}

{{/*
Secret variables (from the existing Secret), as a container env list.
*/}}
{{- define "campaign-os.secretEnv" -}}
{{- $root := .root | default . }}
{{- $omit := .omit | default list }}
{{- $secret := required "secrets.existingSecret is required: the Secret holding COS_DATABASE__URL, COS_AMQP__URL, COS_REDIS__URL, COS_CRYPTO__KEYS and COS_AUTH__SERVICE_SECRET" $root.Values.secrets.existingSecret }}
{{- range $var, $key := $root.Values.secrets.keys }}
{{- if not (has $var $omit) }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Variables from the downward API (resource attributes for traces).
*/}}
{{- define "campaign-os.podEnv" -}}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: OTEL_SERVICE_NAME
  value: {{ printf "campaign-os-%s" .name | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "k8s.pod.name=$(K8S_POD_NAME),k8s.namespace.name=$(K8S_NAMESPACE),k8s.node.name=$(K8S_NODE_NAME),service.namespace=campaign-os"
{{- end }}

{{/*
Fail early on configuration the binary would reject at start-up.
*/}}
{{- define "campaign-os.validate" -}}
{{- if not (has .Values.config.env (list "dev" "test" "production")) }}
{{- fail (printf "config.env must be dev, test or production, got %q" .Values.config.env) }}
{{- end }}
{{- if and (eq .Values.config.env "production") (not .Values.config.crypto.activeKeyId) }}
{{- fail "config.crypto.activeKeyId is required when config.env is production (COS_CRYPTO__ACTIVE_KEY_ID)" }}
{{- end }}
{{- $ttl := int .Values.config.auth.accessTtlSecs }}
{{- if or (lt $ttl 1) (gt $ttl 86400) }}
{{- fail "config.auth.accessTtlSecs must be between 1 and 86400" }}
{{- end }}
{{- $enabled := include "campaign-os.enabledServices" . | fromYamlArray }}
{{- range $name := $enabled }}
{{- $svc := include "campaign-os.svc" (dict "root" $ "name" $name) | fromYaml }}
{{- if not (has $svc.kind (list "gateway" "grpc")) }}
{{- fail (printf "services.%s.kind must be gateway or grpc" $name) }}
{{- end }}
{{- range $dep := $svc.dependsOn }}
{{- if not (has $dep $enabled) }}
{{- fail (printf "services.%s.dependsOn names %q, which is not an enabled service" $name $dep) }}
{{- end }}
{{- end }}
{{- if and (eq $name "publishing") (eq $.Values.config.env "production") }}
{{- $env := $svc.env | default dict }}
{{- if and (not (hasKey $env "COS_PUBLISHING__PUBLIC_URL")) (not (include "campaign-os.publicUrl" $)) }}
{{- fail "publishing needs the public gateway URL for the unsubscribe links in emails: set gateway.publicUrl (or enable the ingress, or make config.auth.issuer the https URL of the gateway)" }}
{{- end }}
{{- /* the service's env wins over config.extraEnv (its ConfigMap comes last in envFrom) */}}
{{- $key := "COS_PUBLISHING__ALLOW_PRIVATE_WEBHOOK_TARGETS" }}
{{- $from := ternary $env ($.Values.config.extraEnv | default dict) (hasKey $env $key) }}
{{- if and (hasKey $from $key) (ne (toString (index $from $key)) "false") }}
{{- fail "COS_PUBLISHING__ALLOW_PRIVATE_WEBHOOK_TARGETS must stay false in production (webhooks to loopback/private addresses are for tests)" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Alert annotations pointing at the runbook (path relative to the repository's docs/).
*/}}
{{- define "campaign-os.runbook" -}}
runbook: {{ printf "docs/%s" .path }}
{{- with .root.Values.prometheusRule.docsBaseUrl }}
runbook_url: {{ printf "%s/%s" (trimSuffix "/" .) $.path }}
{{- end }}
{{- end }}
