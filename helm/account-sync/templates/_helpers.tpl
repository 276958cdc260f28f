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

{{/* Labels of every resource, for component `component`: (dict "root" $ "component" NAME). */}}
{{- define "account-sync.componentLabels" -}}
{{- $root := .root -}}
helm.sh/chart: {{ include "account-sync.chart" $root }}
{{ include "account-sync.selectorLabels" $root }}
app.kubernetes.io/version: {{ include "account-sync.imageTag" $root | trunc 63 | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: account-sync
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of the worker's resources. */}}
{{- define "account-sync.labels" -}}
{{ include "account-sync.componentLabels" (dict "root" . "component" "worker") }}
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

{{/* Where the Schema Registry's credentials are mounted. */}}
{{- define "account-sync.schemaRegistryDir" -}}
/etc/account-sync/schema-registry
{{- end }}

{{/* Checks across values that values.schema.json cannot express. */}}
{{- define "account-sync.validate" -}}
{{- $in := .Values.worker.input }}
{{- $sr := $in.schemaRegistry }}
{{- $registryFormat := has $in.format (list "avro" "protobuf" "json-schema") }}
{{- if and $registryFormat (not $sr.url) }}
{{- fail (printf "worker.input.format %s reads through a Schema Registry: set worker.input.schemaRegistry.url" $in.format) }}
{{- end }}
{{- if and $sr.url (not $registryFormat) }}
{{- fail (printf "worker.input.schemaRegistry.url is set, but worker.input.format %s does not read through a registry" $in.format) }}
{{- end }}
{{- if and $sr.existingSecret (eq (empty $sr.userInfoKey) (empty $sr.tokenKey)) }}
{{- fail "worker.input.schemaRegistry.existingSecret: set exactly one of userInfoKey and tokenKey" }}
{{- end }}
{{- if and (or $sr.userInfoKey $sr.tokenKey) (not $sr.existingSecret) }}
{{- fail "worker.input.schemaRegistry.userInfoKey / tokenKey name keys of existingSecret, which is not set" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled $sr.url (not .Values.networkPolicy.schemaRegistry.to) }}
{{- fail "networkPolicy.schemaRegistry.to must name the Schema Registry's peers when networkPolicy.enabled and worker.input.schemaRegistry.url is set" }}
{{- end }}
{{- $lc := .Values.worker.lifecycle }}
{{- if and (or $lc.createTypes $lc.updateTypes $lc.deleteTypes) (not $lc.eventTypePointer) }}
{{- fail "worker.lifecycle.createTypes / updateTypes / deleteTypes need worker.lifecycle.eventTypePointer" }}
{{- end }}
{{- if and $lc.eventTypePointer (eq $in.format "plain") }}
{{- fail "worker.lifecycle.eventTypePointer needs a structured worker.input.format (the plain format has no fields)" }}
{{- end }}
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

{{/*
Settings of `account-sync run` (and of `doctor`, which takes the same), one ACCOUNT_SYNC_* variable
per flag: the worker's ConfigMap data, and the doctor hook's env (at pre-install no ConfigMap of
the release exists yet). Nothing secret: the secret key and the SASL password come from Secrets.
*/}}
{{- define "account-sync.settings" -}}
ACCOUNT_SYNC_BROKERS: {{ .Values.kafka.brokers | quote }}
ACCOUNT_SYNC_GROUP_ID: {{ .Values.kafka.groupId | quote }}
ACCOUNT_SYNC_GROUP_PROTOCOL: {{ .Values.kafka.groupProtocol | default "classic" | quote }}
ACCOUNT_SYNC_INPUT_TOPIC: {{ .Values.kafka.topics.input | quote }}
ACCOUNT_SYNC_OUTCOME_TOPIC: {{ .Values.kafka.topics.outcome | quote }}
ACCOUNT_SYNC_DLQ_TOPIC: {{ .Values.kafka.topics.dlq | quote }}
ACCOUNT_SYNC_SDKAPPID: {{ required "chat.sdkappid is required (the app's SDKAppID)" .Values.chat.sdkappid | int64 | quote }}
ACCOUNT_SYNC_IDENTIFIER: {{ .Values.chat.identifier | quote }}
ACCOUNT_SYNC_REGION: {{ .Values.chat.region | quote }}
{{- with .Values.chat.apiBaseUrl }}
ACCOUNT_SYNC_API_BASE_URL: {{ . | quote }}
{{- end }}
{{- if not .Values.chat.backupDomain }}
ACCOUNT_SYNC_NO_BACKUP_DOMAIN: "true"
{{- else }}
{{- with .Values.chat.backupApiBaseUrl }}
ACCOUNT_SYNC_BACKUP_API_BASE_URL: {{ . | quote }}
{{- end }}
{{- end }}
ACCOUNT_SYNC_OUTAGE_AFTER: {{ .Values.chat.outage.after | quote }}
ACCOUNT_SYNC_OUTAGE_MIN_FAILED_CALLS: {{ .Values.chat.outage.minFailedCalls | int64 | quote }}
ACCOUNT_SYNC_REQUEST_TIMEOUT: {{ .Values.chat.requestTimeout | quote }}
ACCOUNT_SYNC_RETRY_MAX_ATTEMPTS: {{ .Values.chat.retry.maxAttempts | int64 | quote }}
ACCOUNT_SYNC_RETRY_MAX_ELAPSED: {{ .Values.chat.retry.maxElapsed | quote }}
# The app's rate budget (calls/s for the whole app); the replicas share it (by demand, or by the
# input partitions each owns), so the sum over replicas never exceeds it.
ACCOUNT_SYNC_BUDGET_SPLIT: {{ .Values.rateBudget.split | quote }}
{{- with .Values.rateBudget.topic }}
ACCOUNT_SYNC_BUDGET_TOPIC: {{ . | quote }}
{{- end }}
{{- if not .Values.rateBudget.createTopic }}
ACCOUNT_SYNC_NO_BUDGET_TOPIC_CREATE: "true"
{{- end }}
ACCOUNT_SYNC_BUDGET_INTERVAL: {{ .Values.rateBudget.interval | quote }}
ACCOUNT_SYNC_BUDGET_LEASE: {{ .Values.rateBudget.lease | quote }}
ACCOUNT_SYNC_CHECK_RATE: {{ .Values.rateBudget.checkRate | toString | quote }}
ACCOUNT_SYNC_CHECK_BURST: {{ .Values.rateBudget.checkBurst | int64 | quote }}
ACCOUNT_SYNC_IMPORT_RATE: {{ .Values.rateBudget.importRate | toString | quote }}
ACCOUNT_SYNC_IMPORT_BURST: {{ .Values.rateBudget.importBurst | int64 | quote }}
ACCOUNT_SYNC_BATCH_IMPORT_RATE: {{ .Values.rateBudget.batchImportRate | toString | quote }}
ACCOUNT_SYNC_BATCH_IMPORT_BURST: {{ .Values.rateBudget.batchImportBurst | int64 | quote }}
ACCOUNT_SYNC_DELETE_RATE: {{ .Values.rateBudget.deleteRate | toString | quote }}
ACCOUNT_SYNC_DELETE_BURST: {{ .Values.rateBudget.deleteBurst | int64 | quote }}
ACCOUNT_SYNC_IMPORT_API: {{ .Values.rateBudget.importApi | quote }}
ACCOUNT_SYNC_BATCH_MIN: {{ .Values.rateBudget.batchMin | int64 | quote }}
ACCOUNT_SYNC_WINDOW_SIZE: {{ .Values.worker.windowSize | int64 | quote }}
ACCOUNT_SYNC_WINDOW_LINGER: {{ .Values.worker.windowLinger | quote }}
ACCOUNT_SYNC_MAX_WINDOWS_IN_FLIGHT: {{ .Values.worker.maxWindowsInFlight | int64 | quote }}
ACCOUNT_SYNC_MAX_EVENTS_IN_FLIGHT: {{ .Values.worker.maxEventsInFlight | int64 | quote }}
ACCOUNT_SYNC_MAX_IMPORTS_IN_FLIGHT: {{ .Values.worker.maxImportsInFlight | int64 | quote }}
ACCOUNT_SYNC_COMMIT_INTERVAL: {{ .Values.worker.commitInterval | quote }}
ACCOUNT_SYNC_DRAIN_TIMEOUT: {{ printf "%ds" (int .Values.worker.drainTimeoutSeconds) | quote }}
ACCOUNT_SYNC_INPUT_FORMAT: {{ .Values.worker.input.format | quote }}
ACCOUNT_SYNC_INPUT_ENVELOPE: {{ .Values.worker.input.envelope | quote }}
{{- with .Values.worker.input.schemaRegistry }}
{{- if .url }}
ACCOUNT_SYNC_SCHEMA_REGISTRY_URL: {{ .url | quote }}
{{- end }}
{{- if and .existingSecret .userInfoKey }}
ACCOUNT_SYNC_SCHEMA_REGISTRY_USER_INFO_FILE: {{ printf "%s/user-info" (include "account-sync.schemaRegistryDir" $) | quote }}
{{- end }}
{{- if and .existingSecret .tokenKey }}
ACCOUNT_SYNC_SCHEMA_REGISTRY_TOKEN_FILE: {{ printf "%s/token" (include "account-sync.schemaRegistryDir" $) | quote }}
{{- end }}
{{- end }}
ACCOUNT_SYNC_USER_ID_POINTER: {{ .Values.worker.input.userIdPointer | quote }}
ACCOUNT_SYNC_NICK_POINTER: {{ .Values.worker.input.nickPointer | quote }}
ACCOUNT_SYNC_FACE_URL_POINTER: {{ .Values.worker.input.faceUrlPointer | quote }}
{{- with .Values.worker.lifecycle }}
{{- if .eventTypePointer }}
ACCOUNT_SYNC_EVENT_TYPE_POINTER: {{ .eventTypePointer | quote }}
{{- end }}
{{- if .createTypes }}
ACCOUNT_SYNC_CREATE_TYPES: {{ join "," .createTypes | quote }}
{{- end }}
{{- if .updateTypes }}
ACCOUNT_SYNC_UPDATE_TYPES: {{ join "," .updateTypes | quote }}
{{- end }}
{{- if .deleteTypes }}
ACCOUNT_SYNC_DELETE_TYPES: {{ join "," .deleteTypes | quote }}
{{- end }}
ACCOUNT_SYNC_APPLY_DELETES: {{ .applyDeletes | toString | quote }}
ACCOUNT_SYNC_DRY_RUN: {{ .dryRun | toString | quote }}
{{- end }}
ACCOUNT_SYNC_LOG_FORMAT: {{ .Values.log.format | quote }}
ACCOUNT_SYNC_LOG_LEVEL: {{ .Values.log.level | quote }}
ACCOUNT_SYNC_ADMIN_LISTEN: {{ printf "0.0.0.0:%d" (int .Values.admin.port) | quote }}
{{- end }}

{{/*
The container env besides the settings: the secret key (file or variable, from the Secret named
`secretName`), the SASL credentials, the Kafka properties, extraEnv. Called with
(dict "root" $ "secretName" NAME). The order matters: $(VAR) expansion in
ACCOUNT_SYNC_KAFKA_PROPERTIES only sees variables defined before it.
*/}}
{{- define "account-sync.env" -}}
{{- $root := .root }}
{{- $kafkaProperties := include "account-sync.kafkaProperties" $root }}
{{- if $root.Values.secretKey.mountAsFile }}
- name: ACCOUNT_SYNC_SECRET_KEY_FILE
  value: {{ include "account-sync.secretKeyFile" $root | quote }}
{{- else }}
- name: ACCOUNT_SYNC_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ $root.Values.secretKey.key | quote }}
{{- end }}
{{- if $root.Values.kafka.sasl.enabled }}
{{- if $root.Values.kafka.sasl.usernameKey }}
- name: ACCOUNT_SYNC_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.kafka.sasl.existingSecret }}
      key: {{ $root.Values.kafka.sasl.usernameKey | quote }}
{{- end }}
# Read from the Secret here and substituted into ACCOUNT_SYNC_KAFKA_PROPERTIES below
# by Kubernetes ($(VAR) expansion of earlier variables), so the password is in no
# ConfigMap and not in the pod spec.
- name: ACCOUNT_SYNC_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.kafka.sasl.existingSecret }}
      key: {{ $root.Values.kafka.sasl.passwordKey | quote }}
{{- end }}
{{- if $kafkaProperties }}
- name: ACCOUNT_SYNC_KAFKA_PROPERTIES
  value: {{ $kafkaProperties | quote }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The container's volume mounts: scratch /tmp, the secret key file, Kafka CA and client certificate, extras. */}}
{{- define "account-sync.volumeMounts" -}}
{{- $tls := .Values.kafka.tls }}
- name: tmp
  mountPath: /tmp
{{- if .Values.secretKey.mountAsFile }}
- name: secret-key
  mountPath: {{ .Values.secretKey.mountPath | quote }}
  readOnly: true
{{- end }}
{{- if and $tls.enabled (or $tls.ca.secretName $tls.ca.configMapName) }}
- name: kafka-ca
  mountPath: {{ include "account-sync.kafkaCaDir" . }}
  readOnly: true
{{- end }}
{{- if and $tls.enabled $tls.clientCertSecret }}
- name: kafka-client-cert
  mountPath: {{ include "account-sync.kafkaClientCertDir" . }}
  readOnly: true
{{- end }}
{{- if .Values.worker.input.schemaRegistry.existingSecret }}
- name: schema-registry
  mountPath: {{ include "account-sync.schemaRegistryDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The volumes behind account-sync.volumeMounts; the secret key from the Secret `secretName`. Called with (dict "root" $ "secretName" NAME). */}}
{{- define "account-sync.volumes" -}}
{{- $root := .root }}
{{- $tls := $root.Values.kafka.tls }}
# The root filesystem is read-only; a small scratch /tmp for libraries that want one.
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if $root.Values.secretKey.mountAsFile }}
- name: secret-key
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.secretKey.key | quote }}
        path: secret-key
{{- end }}
{{- if and $tls.enabled $tls.ca.secretName }}
- name: kafka-ca
  secret:
    secretName: {{ $tls.ca.secretName }}
    items:
      - key: {{ $tls.ca.key | quote }}
        path: ca.crt
{{- else if and $tls.enabled $tls.ca.configMapName }}
- name: kafka-ca
  configMap:
    name: {{ $tls.ca.configMapName }}
    items:
      - key: {{ $tls.ca.key | quote }}
        path: ca.crt
{{- end }}
{{- with $root.Values.worker.input.schemaRegistry }}
{{- if .existingSecret }}
- name: schema-registry
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ default .tokenKey .userInfoKey | quote }}
        path: {{ ternary "user-info" "token" (not (empty .userInfoKey)) }}
{{- end }}
{{- end }}
{{- if and $tls.enabled $tls.clientCertSecret }}
- name: kafka-client-cert
  secret:
    secretName: {{ $tls.clientCertSecret }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- with $root.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Name of the doctor hook's Job (and of its copy of the chart-made Secret). */}}
{{- define "account-sync.doctorName" -}}
{{- printf "%s-doctor" (include "account-sync.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/* The most replicas the release runs: the autoscaler's maximum, else replicaCount. */}}
{{- define "account-sync.maxReplicas" -}}
{{- if .Values.keda.enabled }}{{ .Values.keda.maxReplicaCount }}
{{- else if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas }}
{{- else }}{{ .Values.replicaCount }}
{{- end }}
{{- end }}
