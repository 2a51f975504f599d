{{/* Names. */}}
{{- define "nexus.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "nexus.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "nexus.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The coordinators' stable DNS names through the headless Service. */}}
{{- define "nexus.coordinatorHost" -}}
{{- $full := include "nexus.fullname" .root -}}
{{- printf "%s-coordinator-%d.%s-coordinator-peers.%s.svc" $full (int .ordinal) $full .root.Release.Namespace -}}
{{- end -}}

{{/* --peer flags for every member: ID=RAFT=PUBLIC. */}}
{{- define "nexus.peerFlags" -}}
{{- $root := . -}}
{{- range $i := until (int .Values.coordinator.replicas) -}}
{{- $host := include "nexus.coordinatorHost" (dict "root" $root "ordinal" $i) }}
- --peer={{ add $i 1 }}={{ $host }}:{{ $root.Values.coordinator.ports.raft }}={{ $host }}:{{ $root.Values.coordinator.ports.public }}
{{- end -}}
{{- end -}}

{{/* --coordinator flags for workers: every member. */}}
{{- define "nexus.coordinatorFlags" -}}
{{- $root := . -}}
{{- range $i := until (int .Values.coordinator.replicas) }}
- --coordinator={{ include "nexus.coordinatorHost" (dict "root" $root "ordinal" $i) }}:{{ $root.Values.coordinator.ports.public }}
{{- end -}}
{{- end -}}
