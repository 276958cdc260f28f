{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "account-sync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources: <release>-<chart>, or the release name if it already contains the chart name. */}}
{{- define "account-sync.fullname" -}}
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

{{- define "account-sync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable for the life of a release (a Deployment's selector is immutable). */}}
{{- define "account-sync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "account-sync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "account-sync.labels" -}}
helm.sh/chart: {{ include "account-sync.chart" . }}
{{ include "account-sync.selectorLabels" . }}
app.kubernetes.io/version: {{ include "account-sync.imageTag" . | trunc 63 | quote }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: account-sync
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "account-sync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "account-sync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image tag: the value, or the chart's appVersion. */}}
{{- define "account-sync.imageTag" -}}
{{- default .Chart.AppVersion (toString (.Values.image.tag | default "")) }}
{{- end }}

{{- define "account-sync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "account-sync.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the app's secret key. */}}
{{- define "account-sync.secretName" -}}
{{- if .Values.secretKey.existingSecret }}
{{- .Values.secretKey.existingSecret }}
{{- else }}
{{- include "account-sync.fullname" . }}
{{- end }}
{{- end }}

{{/* Where the secret key file is mounted in the container. */}}
{{- define "account-sync.secretKeyFile" -}}
{{- printf "%s/secret-key" (trimSuffix "/" .Values.secretKey.mountPath) }}
{{- end }}

{{/* Seconds Kubernetes waits between SIGTERM and SIGKILL: always longer than the drain timeout. */}}
{{- define "account-sync.terminationGracePeriodSeconds" -}}
{{- $drain := int .Values.worker.drainTimeoutSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $drain 30 }}
{{- else }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if le $grace $drain }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than worker.drainTimeoutSeconds (%d): the pod would be killed while it drains, flushes and commits" $grace $drain) }}
{{- end }}
{{- $grace }}
{{- end }}
{{- end }}

{{- define "account-sync.kafkaCaDir" -}}/etc/account-sync/kafka-ca{{- end }}
{{- define "account-sync.kafkaClientCertDir" -}}/etc/account-sync/kafka-client{{- end }}

{{/* security.protocol implied by kafka.sasl / kafka.tls; empty when neither is enabled. */}}
{{- define "account-sync.securityProtocol" -}}
{{- if and .Values.kafka.sasl.enabled .Values.kafka.tls.enabled }}SASL_SSL
{{- else if .Values.kafka.sasl.enabled }}SASL_PLAINTEXT
{{- else if .Values.kafka.tls.enabled }}SSL
{{- end }}
{{- end }}

{{/*
The value of ACCOUNT_SYNC_KAFKA_PROPERTIES: key=value pairs separated by ';'. The SASL password is
never written here: the pair is sasl.password=$(ACCOUNT_SYNC_SASL_PASSWORD), which Kubernetes
expands from the env var defined just before it (a secretKeyRef). Same for a user name kept in the
Secret. kafka.properties come last, so they win.
*/}}
{{- define "account-sync.kafkaProperties" -}}
{{- $props := list }}
{{- $protocol := include "account-sync.securityProtocol" . }}
{{- if $protocol }}
{{- $props = append $props (printf "security.protocol=%s" $protocol) }}
{{- end }}
{{- with .Values.kafka.sasl }}
{{- if .enabled }}
{{- $props = append $props (printf "sasl.mechanism=%s" .mechanism) }}
{{- if .usernameKey }}
{{- $props = append $props "sasl.username=$(ACCOUNT_SYNC_SASL_USERNAME)" }}
{{- else }}
{{- $props = append $props (printf "sasl.username=%s" .username) }}
{{- end }}
{{- $props = append $props "sasl.password=$(ACCOUNT_SYNC_SASL_PASSWORD)" }}
{{- end }}
{{- end }}
{{- if .Values.kafka.tls.enabled }}
{{- if or .Values.kafka.tls.ca.secretName .Values.kafka.tls.ca.configMapName }}
{{- $props = append $props (printf "ssl.ca.location=%s/ca.crt" (include "account-sync.kafkaCaDir" .)) }}
{{- end }}
{{- if .Values.kafka.tls.clientCertSecret }}
{{- $props = append $props (printf "ssl.certificate.location=%s/tls.crt" (include "account-sync.kafkaClientCertDir" .)) }}
{{- $props = append $props (printf "ssl.key.location=%s/tls.key" (include "account-sync.kafkaClientCertDir" .)) }}
{{- end }}
{{- end }}
{{- range $k, $v := .Values.kafka.properties }}
{{- $props = append $props (printf "%s=%v" $k $v) }}
{{- end }}
{{- join ";" $props }}
{{- end }}

{{/* Checks across values that values.schema.json cannot express. */}}
{{- define "account-sync.validate" -}}
{{- if lt (int .Values.worker.maxEventsInFlight) (int .Values.worker.windowSize) }}
{{- fail (printf "worker.maxEventsInFlight (%d) must be at least worker.windowSize (%d), or no window could ever fill" (int .Values.worker.maxEventsInFlight) (int .Values.worker.windowSize)) }}
{{- end }}
{{- $t := .Values.kafka.topics }}
{{- if or (eq $t.input $t.outcome) (eq $t.input $t.dlq) }}
{{- fail "kafka.topics.input must differ from kafka.topics.outcome and kafka.topics.dlq (the worker would consume its own output)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are exclusive: KEDA creates its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor and metrics.podMonitor are exclusive: the pods would be scraped twice" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "autoscaling: set targetCPUUtilizationPercentage and/or targetMemoryUtilizationPercentage" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.keda.enabled (gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount)) }}
{{- fail "keda.minReplicaCount must not exceed keda.maxReplicaCount" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.kafka.to) }}
{{- fail "networkPolicy.kafka.to must name the Kafka brokers (ipBlock or namespaceSelector/podSelector peers) when networkPolicy.enabled" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable" }}
{{- end }}
{{- if and (not .Values.secretKey.existingSecret) (not .Values.secretKey.value) }}
{{- fail "the app's secret key is required: set secretKey.existingSecret (a Secret you manage) or secretKey.value" }}
{{- end }}
{{- end }}

{{/* Host of the Chat API the worker calls: the explicit base URL's, or the region's. */}}
{{- define "account-sync.chatApiHost" -}}
{{- if .Values.chat.apiBaseUrl }}
{{- (urlParse .Values.chat.apiBaseUrl).host }}
{{- else }}
{{- get (dict "china" "console.tim.qq.com" "singapore" "adminapisgp.im.qcloud.com" "seoul" "adminapikr.im.qcloud.com" "tokyo" "adminapijpn.im.qcloud.com" "frankfurt" "adminapiger.im.qcloud.com" "silicon-valley" "adminapiusa.im.qcloud.com" "jakarta" "adminapiidn.im.qcloud.com") .Values.chat.region }}
{{- end }}
{{- end }}

{{/* TCP port of the Chat API: the explicit base URL's, else 443. */}}
{{- define "account-sync.chatApiPort" -}}
{{- $port := 443 }}
{{- if .Values.chat.apiBaseUrl }}
{{- $u := urlParse .Values.chat.apiBaseUrl }}
{{- if regexMatch ":[0-9]+$" $u.host }}
{{- $port = regexReplaceAll "^.*:([0-9]+)$" $u.host "${1}" | int }}
{{- else if eq $u.scheme "http" }}
{{- $port = 80 }}
{{- end }}
{{- end }}
{{- $port }}
{{- end }}
