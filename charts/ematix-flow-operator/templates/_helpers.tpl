{{/*
Expand the name of the chart.
*/}}
{{- define "ematix-flow-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified name for the operator's resources, at most 63 characters.
A release name that already contains the chart name is used as is.
*/}}
{{- define "ematix-flow-operator.fullname" -}}
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
Chart name and version, as used by the chart label.
*/}}
{{- define "ematix-flow-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "ematix-flow-operator.labels" -}}
helm.sh/chart: {{ include "ematix-flow-operator.chart" . }}
{{ include "ematix-flow-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ematix-flow
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "ematix-flow-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ematix-flow-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the ServiceAccount to use.
*/}}
{{- define "ematix-flow-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ematix-flow-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image.
*/}}
{{- define "ematix-flow-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The default image of pipeline pods; empty when none is configured.
*/}}
{{- define "ematix-flow-operator.pipelineImage" -}}
{{- if .Values.pipelineImage.repository }}
{{- printf "%s:%s" .Values.pipelineImage.repository (default .Chart.AppVersion .Values.pipelineImage.tag) }}
{{- end }}
{{- end }}

{{/*
Rules the operator needs in each namespace it watches (or cluster-wide).
No Secrets: pipeline pods read their DSNs themselves.
*/}}
{{- define "ematix-flow-operator.namespacedRules" -}}
- apiGroups:
  - ematix.io
  resources:
  - emtxpipelines
  verbs:
  - get
  - list
  - watch
  - patch
- apiGroups:
  - ematix.io
  resources:
  - emtxpipelines/status
  verbs:
  - get
  - patch
  - update
- apiGroups:
  - batch
  resources:
  - cronjobs
  verbs:
  - get
  - list
  - watch
  - create
  - update
  - patch
  - delete
- apiGroups:
  - batch
  resources:
  - jobs
  verbs:
  - get
  - list
  - watch
- apiGroups:
  - ""
  resources:
  - pods
  verbs:
  - get
  - list
  - watch
- apiGroups:
  - ""
  - events.k8s.io
  resources:
  - events
  verbs:
  - create
  - patch
{{- end }}

{{/*
Read-only cluster-scoped rules kopf needs in every mode: it discovers resources
through the CRDs and matches its namespace patterns against the namespaces.
*/}}
{{- define "ematix-flow-operator.clusterRules" -}}
- apiGroups:
  - apiextensions.k8s.io
  resources:
  - customresourcedefinitions
  verbs:
  - get
  - list
  - watch
- apiGroups:
  - ""
  resources:
  - namespaces
  verbs:
  - get
  - list
  - watch
{{- end }}

{{/*
The metrics Service's name.
*/}}
{{- define "ematix-flow-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "ematix-flow-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The `job` label Prometheus gives the operator's scrape: the Service's name for a
ServiceMonitor, `<namespace>/<name>` for a PodMonitor, unless set explicitly.
*/}}
{{- define "ematix-flow-operator.metricsJob" -}}
{{- if .Values.metrics.prometheusRule.operatorJob }}
{{- .Values.metrics.prometheusRule.operatorJob }}
{{- else if and .Values.metrics.podMonitor.enabled (not .Values.metrics.serviceMonitor.enabled) }}
{{- printf "%s/%s" .Release.Namespace (include "ematix-flow-operator.fullname" .) }}
{{- else }}
{{- include "ematix-flow-operator.metricsServiceName" . }}
{{- end }}
{{- end }}

{{/*
Fail early on monitoring values that cannot work together.
*/}}
{{- define "ematix-flow-operator.checkMetrics" -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled }}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled both scrape the operator pod: enable one of them" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.operator.healthPort)) }}
{{- fail "metrics.port and operator.healthPort are the same port: give the metrics endpoint another one" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.create) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.create (the ServiceMonitor selects that Service); or use metrics.podMonitor" }}
{{- end }}
{{- end }}
