package main

import (
	"context"
	"fmt"
	"os"

	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// fluxChecks holds Flux's own evaluator for each kind named in a Kustomization's
// spec.healthCheckExprs.
type fluxChecks struct {
	byKind map[string]*fluxcel.StatusEvaluator
}

func loadFluxChecks(path string) (*fluxChecks, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var manifest struct {
		Kind string `json:"kind"`
		Spec struct {
			HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(text, &manifest); err != nil {
		return nil, err
	}
	if manifest.Kind != "Kustomization" || len(manifest.Spec.HealthCheckExprs) == 0 {
		return nil, fmt.Errorf("%s: not a Kustomization with healthCheckExprs", path)
	}
	checks := &fluxChecks{byKind: map[string]*fluxcel.StatusEvaluator{}}
	for _, c := range manifest.Spec.HealthCheckExprs {
		e, err := fluxcel.NewStatusEvaluator(&c.HealthCheckExpressions)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", c.APIVersion, c.Kind, err)
		}
		checks.byKind[c.APIVersion+"/"+c.Kind] = e
	}
	return checks, nil
}

func (f *fluxChecks) evaluate(ctx context.Context, obj *unstructured.Unstructured) (string, error) {
	e, ok := f.byKind[obj.GetAPIVersion()+"/"+obj.GetKind()]
	if !ok {
		// Not one of the Kustomization's kinds: no Flux verdict (the caller expects one for
		// each kind the Kustomization lists).
		return "", nil
	}
	res, err := e.Evaluate(ctx, obj)
	if err != nil {
		return "", err
	}
	return res.Status.String(), nil
}
