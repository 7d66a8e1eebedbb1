{{/*
CEL shared by the admission policies that take a SignalPolicy as parameter: whether the policy
selects the signal's namespace (its namespaceSelector over the namespace's labels) and allows the
signal (region; a WorkflowSignal by swf: domain and workflowId; an AutomationSignal by ssm: signal
type; any other kind by nothing, so it is never stamped and then refused). Patterns (* and ?) become
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
  : object.kind == 'AutomationSignal'
  ? (has(params.spec.ssm) && object.spec.signalType in params.spec.ssm.signalTypes)
  : false)
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

{{/*
The admissionregistration.k8s.io version of a kind that the API server serves (argument: dict
"root" . "kind" "MutatingAdmissionPolicy"), read from .Capabilities.APIVersions: the server's
discovery for helm install and upgrade (Flux's helm-controller runs those), --api-versions for
helm template (Argo CD 2.2 and later passes the cluster's). "admissionregistration.k8s.io/v1",
else ".../v1beta1", else "" (not served).
*/}}
{{- define "signalman.admissionApiVersion" -}}
{{- $apis := .root.Capabilities.APIVersions }}
{{- if $apis.Has (printf "admissionregistration.k8s.io/v1/%s" .kind) }}
{{- "admissionregistration.k8s.io/v1" }}
{{- else if $apis.Has (printf "admissionregistration.k8s.io/v1beta1/%s" .kind) }}
{{- "admissionregistration.k8s.io/v1beta1" }}
{{- end }}
{{- end }}

{{/*
apiVersion of the ValidatingAdmissionPolicies, "" for none: what the API server serves. A
version set that names no kind of the group at all (helm template without a cluster and without
--api-versions: Helm then knows group versions only) gets v1, which every Kubernetes signalman
supports (1.33 and newer; v1 since 1.30) serves.
*/}}
{{- define "signalman.vapApiVersion" -}}
{{- $v := include "signalman.admissionApiVersion" (dict "root" . "kind" "ValidatingAdmissionPolicy") }}
{{- if and (not $v) (not (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingWebhookConfiguration")) }}
{{- $v = "admissionregistration.k8s.io/v1" }}
{{- end }}
{{- $v }}
{{- end }}

{{/*
apiVersion of the MutatingAdmissionPolicies, "" for none: with admission.mutatingPolicies, the
version the API server serves (v1 from Kubernetes 1.36; v1beta1 on 1.34 and 1.35 only where the
feature gate and the runtime config turn it on; never an alpha). Unlike the validating ones they
are left out when the version set does not name them: rendered without a cluster, pass
--api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy to get them. They need
the ValidatingAdmissionPolicies that refuse what they did not stamp.
*/}}
{{- define "signalman.mapApiVersion" -}}
{{- if and .Values.admission.mutatingPolicies (include "signalman.vapApiVersion" .) }}
{{- include "signalman.admissionApiVersion" (dict "root" . "kind" "MutatingAdmissionPolicy") }}
{{- end }}
{{- end }}
