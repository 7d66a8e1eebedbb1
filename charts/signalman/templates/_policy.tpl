{{/*
CEL shared by the admission policies that take a SignalPolicy as parameter: whether the policy
selects the signal's namespace (its namespaceSelector over the namespace's labels) and allows the
signal (kind, region, SWF domain and workflowId, SSM signal type). Patterns (* and ?) become
anchored regular expressions; the CRD admits only characters that are literal in a regular
expression apart from . and +, which are escaped. src/policy.rs decides the same in the operator.
*/}}
{{- define "signalman.globRegex" -}}
'^' + {{ . }}.replace('.', '\\.').replace('+', '\\+').replace('*', '.*').replace('?', '.') + '$'
{{- end }}

{{/* The signal's region: spec.region, else the chart's aws.region ('' when unknown). */}}
{{- define "signalman.regionExpression" -}}
(has(object.spec.region) && object.spec.region != '' ? object.spec.region : {{ .Values.aws.region | squote }})
{{- end }}

{{/*
The whole check as one expression: matchConditions of a MutatingAdmissionPolicy cannot read
variables, and this API server's CEL has no cel.bind, so the namespace's labels, the selector
and the region are spelled out where they are used. A namespace always carries the label
kubernetes.io/metadata.name, so its labels are never absent.
*/}}
{{- define "signalman.policyAllows" -}}
{{- $labels := "namespaceObject.metadata.labels" }}
{{- $sel := "params.spec.namespaceSelector" }}
{{- $region := include "signalman.regionExpression" . }}
(!has({{ $sel }}.matchLabels) || {{ $sel }}.matchLabels.all(k, k in {{ $labels }} && {{ $labels }}[k] == {{ $sel }}.matchLabels[k]))
&& (!has({{ $sel }}.matchExpressions) || {{ $sel }}.matchExpressions.all(e,
  e.operator == 'In' ? (e.key in {{ $labels }} && has(e.values) && {{ $labels }}[e.key] in e.values)
  : e.operator == 'NotIn' ? (!(e.key in {{ $labels }}) || !has(e.values) || !({{ $labels }}[e.key] in e.values))
  : e.operator == 'Exists' ? e.key in {{ $labels }}
  : e.operator == 'DoesNotExist' ? !(e.key in {{ $labels }})
  : false))
&& ({{ $region }} == '' || params.spec.regions.exists(p, {{ $region }}.matches({{ include "signalman.globRegex" "p" }})))
&& (object.kind == 'WorkflowSignal'
  ? (has(params.spec.swf)
     && params.spec.swf.domains.exists(p, object.spec.domain.matches({{ include "signalman.globRegex" "p" }}))
     && params.spec.swf.workflowIds.exists(p, object.spec.workflowId.matches({{ include "signalman.globRegex" "p" }})))
  : (has(params.spec.ssm) && object.spec.signalType in params.spec.ssm.signalTypes))
{{- end }}

{{/*
The namespaces the admission policies judge: admission.namespaceSelector when set; else, with
watchNamespaces, exactly those (another release's operator may own the others); else all.
*/}}
{{- define "signalman.admissionNamespaceSelector" -}}
{{- if .Values.admission.namespaceSelector }}
{{- toYaml .Values.admission.namespaceSelector }}
{{- else if .Values.watchNamespaces }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values:
      {{- toYaml .Values.watchNamespaces | nindent 6 }}
{{- else }}
{}
{{- end }}
{{- end }}
