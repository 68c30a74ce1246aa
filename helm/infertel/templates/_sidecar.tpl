{{/*
The agent container, for users who add the sidecar to their own pod template instead of using the
webhook. Call it with a dict:
  {{- include "infertel.sidecar" (dict "root" $ "upstream" "vllm=http://127.0.0.1:8000/metrics" "model" "") | nindent 8 }}
"upstream" takes [FLAVOR=]URL; "model" names the model for engines whose metrics do not (TGI).
Request-level mode: "proxyPort" (e.g. 8001) starts the inline proxy there, forwarding to
"proxyTarget" (default http://127.0.0.1:8000, the engine); point the Service's targetPort at
"infertel-proxy" (README, Request-level mode).
It matches what the webhook injects; add the "infertel-tmp" emptyDir and "infertel-config"
ConfigMap volumes (see infertel.sidecarVolumes) to the pod.
*/}}
{{- define "infertel.sidecar" -}}
{{- $root := .root -}}
{{- $port := int (default $root.Values.sidecar.port .port) -}}
- name: infertel
  image: {{ include "infertel.image" $root | quote }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args: ["run"]
  env:
    - name: INFERTEL_LISTEN
      value: {{ printf "0.0.0.0:%d" $port | quote }}
    - name: INFERTEL_UPSTREAMS
      value: {{ default $root.Values.sidecar.upstream .upstream | quote }}
    {{- with .model }}
    - name: INFERTEL_MODEL
      value: {{ . | quote }}
    {{- end }}
    {{- with .proxyPort }}
    - name: INFERTEL_PROXY_LISTEN
      value: {{ printf "0.0.0.0:%d" (int .) | quote }}
    - name: INFERTEL_PROXY_TARGET
      value: {{ default "http://127.0.0.1:8000" $.proxyTarget | quote }}
    {{- $ownNodeOptions := false }}
    {{- range $root.Values.sidecar.env }}{{ if eq .name "NODE_OPTIONS" }}{{ $ownNodeOptions = true }}{{ end }}{{ end }}
    {{- if not $ownNodeOptions }}
    {{- /* Proxy-mode heap flags, as the webhook sets them (PROXY_NODE_OPTIONS in agent/webhook/mutate.ts). */}}
    - name: NODE_OPTIONS
      value: "--max-semi-space-size=32 --max-old-space-size=160"
    {{- end }}
    {{- end }}
    - name: INFERTEL_CONFIG
      value: /etc/infertel/config.yaml
    {{- with $root.Values.sidecar.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: infertel-metrics
      containerPort: {{ $port }}
      protocol: TCP
    {{- with .proxyPort }}
    - name: infertel-proxy
      containerPort: {{ int . }}
      protocol: TCP
    {{- end }}
  readinessProbe:
    httpGet: { path: /readyz, port: infertel-metrics }
    periodSeconds: {{ if .proxyPort }}5{{ else }}10{{ end }}
    timeoutSeconds: 2
    failureThreshold: 3
  livenessProbe:
    httpGet: { path: /healthz, port: infertel-metrics }
    periodSeconds: 20
    timeoutSeconds: 2
    failureThreshold: 3
  resources:
    {{- toYaml $root.Values.sidecar.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    readOnlyRootFilesystem: true
    allowPrivilegeEscalation: false
    capabilities: { drop: [ALL] }
    seccompProfile: { type: RuntimeDefault }
  volumeMounts:
    - { name: infertel-tmp, mountPath: /tmp }
    - { name: infertel-config, mountPath: /etc/infertel, readOnly: true }
{{- end -}}

{{- define "infertel.sidecarVolumes" -}}
- name: infertel-tmp
  emptyDir: { sizeLimit: 16Mi }
- name: infertel-config
  configMap:
    name: {{ include "infertel.agentConfigMap" . }}
{{- end -}}
