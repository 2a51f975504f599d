{{/* A worker Deployment; .kind is "cpu" or "gpu", .w its values. */}}
{{- define "nexus.workerDeployment" -}}
{{- $root := .root -}}
{{- $w := .w -}}
{{- $component := printf "%s-worker" .kind -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "nexus.fullname" $root }}-{{ $component }}
  labels:
    {{- include "nexus.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  {{- if not (and (eq .kind "cpu") $w.autoscaling.enabled) }}
  replicas: {{ $w.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "nexus.selector" (dict "root" $root "component" $component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "nexus.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $component }}
        nexus.io/role: worker
    spec:
      {{- if eq .kind "gpu" }}
      runtimeClassName: {{ $w.runtimeClassName }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
      containers:
        - name: worker
          {{- $image := $root.Values.image }}
          {{- if eq .kind "gpu" }}{{ $image = $w.image }}{{ end }}
          image: "{{ $image.repository }}:{{ $image.tag }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: [nexus-worker]
          args:
            {{- include "nexus.coordinatorFlags" $root | trim | nindent 12 }}
            - --server-name=nexus-coordinator
            - --certs=/certs
            - --name=worker
            - --key-cache-mib={{ $w.keyCacheMiB }}
            - --buffer-pool-mib={{ $w.bufferPoolMiB }}
            {{- if $w.leanKeys }}
            - --lean-keys
            {{- end }}
            - --metrics=0.0.0.0:{{ $root.Values.worker.metricsPort }}
            {{- if and (eq .kind "cpu") (gt (int $w.threads) 0) }}
            - --threads={{ $w.threads }}
            {{- end }}
            {{- if $root.Values.models.claimName }}
            - --models={{ $root.Values.models.mountPath }}
            {{- end }}
          ports:
            - {name: metrics, containerPort: {{ $root.Values.worker.metricsPort }}, protocol: TCP}
          readinessProbe:
            tcpSocket: {port: metrics}
            periodSeconds: 5
          resources:
            requests:
              {{- toYaml $w.resources.requests | nindent 14 }}
            limits:
              {{- toYaml $w.resources.limits | nindent 14 }}
              {{- if eq .kind "gpu" }}
              {{ $w.resourceName }}: {{ $w.gpusPerPod }}
              {{- end }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: certs, mountPath: /certs, readOnly: true}
            {{- if $root.Values.models.claimName }}
            - {name: models, mountPath: {{ $root.Values.models.mountPath }}, readOnly: true}
            {{- end }}
      volumes:
        - name: certs
          secret:
            secretName: {{ $root.Values.certificates.secretName }}
            items:
              - {key: ca.pem, path: ca.pem}
              - {key: worker.pem, path: worker.pem}
              - {key: worker.key, path: worker.key}
        {{- if $root.Values.models.claimName }}
        - name: models
          persistentVolumeClaim:
            claimName: {{ $root.Values.models.claimName }}
            readOnly: true
        {{- end }}
      {{- with $w.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}
