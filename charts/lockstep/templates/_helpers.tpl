{{/* Chart name, overridable. */}}
{{- define "lockstep.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-based, capped at 63 characters (DNS label) with room for the suffixes used below. */}}
{{- define "lockstep.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lockstep.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lockstep.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lockstep.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The instances to run, as a JSON list: "" (the main instance) and every sharding.shards entry. */}}
{{- define "lockstep.instances" -}}
{{- $shards := .Values.sharding.shards | default list }}
{{- if ne (len $shards) (len ($shards | uniq)) }}
{{- fail "sharding.shards: every shard must be named once" }}
{{- end }}
{{- prepend $shards "" | toJson }}
{{- end }}

{{/* Name of one instance's Deployment (and prefix of its Services): the release's full name, plus
     -shard-<name> for a shard. Capped like the full name, so the Services' suffixes still fit 63. */}}
{{- define "lockstep.instanceName" -}}
{{- $fullname := include "lockstep.fullname" .root }}
{{- if .shard }}
{{- $name := printf "%s-shard-%s" $fullname .shard }}
{{- if gt (len $name) 52 }}
{{- fail (printf "sharding.shards: %q makes the name %q longer than 52 characters; use a shorter shard name or fullnameOverride" .shard $name) }}
{{- end }}
{{- $name }}
{{- else }}
{{- $fullname }}
{{- end }}
{{- end }}

{{/* Pod labels a Deployment selects on. The main instance keeps lockstep.selectorLabels (a Deployment's
     selector is immutable, so upgrades must not change it); a shard's app.kubernetes.io/instance names the
     shard, so the main Deployment and Services never select a shard's pods. */}}
{{- define "lockstep.instanceSelectorLabels" -}}
{{- if .shard }}
{{- $instance := printf "%s-shard-%s" .root.Release.Name .shard }}
{{- if gt (len $instance) 63 }}
{{- fail (printf "sharding.shards: %q makes the label value %q longer than 63 characters; use a shorter shard or release name" .shard $instance) }}
{{- end }}
app.kubernetes.io/name: {{ include "lockstep.name" .root }}
app.kubernetes.io/instance: {{ $instance }}
lockstep.dev/shard: {{ .shard }}
{{- else }}
{{- include "lockstep.selectorLabels" .root }}
{{- end }}
{{- end }}

{{/* The Lease an instance elects its leader on: each shard its own, so each shard has a leader. */}}
{{- define "lockstep.leaseName" -}}
{{- if .shard }}
{{- printf "%s-shard-%s" .root.Values.leaderElection.leaseName .shard }}
{{- else }}
{{- .root.Values.leaderElection.leaseName }}
{{- end }}
{{- end }}

{{- define "lockstep.labels" -}}
helm.sh/chart: {{ include "lockstep.chart" . }}
{{ include "lockstep.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lockstep
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lockstep.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lockstep.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lockstep.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when more than one replica runs, so they must elect a leader; empty otherwise. */}}
{{- define "lockstep.leaderElection" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/* The Secret holding the webhook credentials: the user's, or the one this chart creates. */}}
{{- define "lockstep.webhookSecretName" -}}
{{- if .Values.webhook.auth.existingSecret }}
{{- .Values.webhook.auth.existingSecret }}
{{- else }}
{{- printf "%s-webhook-auth" (include "lockstep.fullname" .) }}
{{- end }}
{{- end }}

{{/* Key of the username in the webhook Secret; empty when Basic authentication is not used. */}}
{{- define "lockstep.webhookUsernameKey" -}}
{{- if .Values.webhook.auth.existingSecret }}
{{- .Values.webhook.auth.usernameKey }}
{{- else if .Values.webhook.auth.username }}username
{{- end }}
{{- end }}

{{/* Key of the password in the webhook Secret; the created Secret always has one. */}}
{{- define "lockstep.webhookPasswordKey" -}}
{{- if .Values.webhook.auth.existingSecret }}
{{- .Values.webhook.auth.passwordKey }}
{{- else }}password
{{- end }}
{{- end }}

{{/* Key of the header token in the webhook Secret; empty when no token is required. */}}
{{- define "lockstep.webhookTokenKey" -}}
{{- if .Values.webhook.auth.existingSecret }}
{{- .Values.webhook.auth.tokenKey }}
{{- else if .Values.webhook.auth.token }}token
{{- end }}
{{- end }}

{{/* "true" when lockstep generates the webhook password into the chart's Secret on its first start. */}}
{{- define "lockstep.generatedPassword" -}}
{{- if not (or .Values.webhook.auth.existingSecret .Values.webhook.auth.password) }}true{{ end }}
{{- end }}

{{/* Where the webhook credential files are mounted (read-only). */}}
{{- define "lockstep.webhookAuthDir" -}}
/etc/lockstep/webhook-auth
{{- end }}

{{/* The rules lockstep needs in every namespace it watches. */}}
{{- define "lockstep.watchRules" -}}
- apiGroups: ["lockstep.dev"]
  resources: ["pipelinegates", "servicetraces"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["lockstep.dev"]
  resources: ["pipelinegates/status", "servicetraces/status"]
  verbs: ["patch"]
# PATs referenced by spec.azureDevOps.credentials.secretRef.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{ include "lockstep.deployedRefRules" . }}
{{- end }}

{{/* Read access to what ServiceTrace's spec.deployed can point at, and patch on the kinds nudged. */}}
{{- define "lockstep.deployedRefRules" -}}
- apiGroups: ["kustomize.toolkit.fluxcd.io"]
  resources: ["kustomizations"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["argoproj.io"]
  resources: ["applications"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "list", "watch"]
{{- if .Values.nudge.flux }}
# Nudging (nudge.flux): set reconcile.fluxcd.io/requestedAt when a gate opens.
- apiGroups: ["kustomize.toolkit.fluxcd.io"]
  resources: ["kustomizations"]
  verbs: ["patch"]
{{- end }}
{{- if .Values.nudge.argocd }}
# Nudging (nudge.argocd): set argocd.argoproj.io/refresh (and retry a failed sync where a gate asks).
- apiGroups: ["argoproj.io"]
  resources: ["applications"]
  verbs: ["patch"]
{{- end }}
{{- end }}
