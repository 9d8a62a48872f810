{{/* Names: <release>-tokenworks, or the release name when it already contains the chart name. */}}
{{- define "tokenworks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenworks.fullname" -}}
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

{{/* The operator's Deployment, ServiceAccount, ClusterRole(Binding) and Service prefix. */}}
{{- define "tokenworks.operatorName" -}}
{{- printf "%s-operator" (include "tokenworks.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenworks.leaderElectionName" -}}
{{- printf "%s-leader-election" (include "tokenworks.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tokenworks.serviceAccountName" -}}
{{- default (include "tokenworks.operatorName" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "tokenworks.leaseName" -}}
{{- default (include "tokenworks.operatorName" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "tokenworks.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Every object: the recommended labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/). */}}
{{- define "tokenworks.labels" -}}
app.kubernetes.io/name: {{ include "tokenworks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator pods, as the Deployment, Service, anti-affinity and monitors select them: immutable once
installed (a Deployment's selector cannot change). */}}
{{- define "tokenworks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tokenworks.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "tokenworks.operatorLabels" -}}
{{ include "tokenworks.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The operator's rules on namespaced resources, the same whether granted cluster-wide (ClusterRole) or per
watched namespace (Role). Its argument is the rule on pods, which differs between the two: see rbac.yaml.
operator/rbac.yaml is the same list, rule for rule (tests/unit/test_chart.py).
*/}}
{{- define "tokenworks.namespacedRules" -}}
# The API it serves: read specs, write status; patch only to hand spec.replicas over once when
# autoscaling is switched off (docs/operator.md, "Who owns the replica count").
- apiGroups: ["tokenworks.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["tokenworks.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["get", "patch", "update"]
# Children set blockOwnerDeletion on their owner reference; where OwnerReferencesPermissionEnforcement
# is on (OpenShift) that needs update on the owner's finalizers. The operator adds no finalizer.
- apiGroups: ["tokenworks.dev"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
# Children, written by server-side apply (create + patch); deletion is the garbage collector's.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# A replica larger than one node is a LeaderWorkerSet group; its count is set through /scale, as is a
# Deployment's 0 (or a LeaderWorkerSet's) once a switch between the two has the new one ready.
- apiGroups: ["leaderworkerset.x-k8s.io"]
  resources: ["leaderworkersets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["leaderworkerset.x-k8s.io"]
  resources: ["leaderworkersets/scale"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["podmonitors"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The Gateway API Inference Extension's pool, with spec.routing.inferencePool. No delete: a pool left
# when routing is switched off is reported (RoutingReady) and removed by a person or with its owner.
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "create", "patch"]
{{ . }}
# Whether the model cache and model source claims exist and are large enough (Degraded otherwise).
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# Events on ModelDeployments for people.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
