{{- define "kubetune.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubetune.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kubetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The rules a release needs wherever it runs Studies: one list, used by the
     ClusterRole (all namespaces) or by each namespaced Role. */}}
{{- define "kubetune.studyRules" -}}
# Read Studies; write their status (phase, conditions, counts, best trial).
- apiGroups: [kubetune.dev]
  resources: [studies]
  verbs: [get, list, watch]
- apiGroups: [kubetune.dev]
  resources: [studies/status]
  verbs: [get, patch, update]
# Create a Study's Trials and record their results.
- apiGroups: [kubetune.dev]
  resources: [trials]
  verbs: [get, list, watch, create]
- apiGroups: [kubetune.dev]
  resources: [trials/status]
  verbs: [get, patch, update]
# One Job per Trial (watched by label); deleted once the Trial has recorded its result
# (after trialDefaults.jobRetentionSeconds), or when the trial is pruned or stopped.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# A JobSet trial (trialTemplate kind JobSet) is one JobSet instead: the same verbs. Its
# pods are found through the JobSet's labels on them; its child Jobs are never touched.
- apiGroups: [jobset.x-k8s.io]
  resources: [jobsets]
  verbs: [get, list, watch, create, delete]
# Read trial pods (state, termination message); delete a stopped trial's pods at once
# to hand back its GPU; create only as a server-side dry run, to validate a Study's
# pod template against Pod Security before any trial starts.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
# A warm-starting Study's snapshot of its source's trials (taken once, owned by the Study).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create]
# Events on Studies (TrialFailed, TrialPruned, StudySucceeded...).
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
