// Command signalman-health reads signalman's objects from a real API server and prints, for
// each, what the GitOps tools would make of it: kstatus (the library Flux and kpt use), the
// Argo CD health Lua run by gopher-lua (the interpreter Argo CD embeds), and, when given the
// Flux Kustomization, Flux's own evaluator of its healthCheckExprs.
//
//	signalman-health -kubeconfig FILE -namespace NS -argocd-cm FILE [-flux FILE] [-policies SELECTOR]
//
// It reads the namespace's WorkflowSignals, AutomationSignals and SignalReceipts and, with
// -policies, the (cluster-scoped) SignalPolicies matching that label selector. The Lua is taken
// from the argocd-cm ConfigMap's resource.customizations block, chosen for each object's group
// and kind as Argo CD chooses it (exact key, else a glob key). Flux is reported for the kinds
// the Kustomization has healthCheckExprs for.
//
// One JSON object per line, sorted by kind and name.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// report is one output line.
type report struct {
	Kind           string `json:"kind"`
	Name           string `json:"name"`
	Kstatus        string `json:"kstatus"`
	KstatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo"`
	ArgoMessage    string `json:"argoMessage"`
	Flux           string `json:"flux,omitempty"`
	// ResourceVersion of the object that was judged, so that the caller can tell whether it
	// is still the object it wrote.
	ResourceVersion string `json:"resourceVersion"`
}

var resources = []schema.GroupVersionResource{
	{Group: "signalman.dev", Version: "v1alpha1", Resource: "automationsignals"},
	{Group: "signalman.dev", Version: "v1alpha1", Resource: "workflowsignals"},
	{Group: "signalman.dev", Version: "v1alpha1", Resource: "signalreceipts"},
}

var policies = schema.GroupVersionResource{Group: "signalman.dev", Version: "v1alpha1", Resource: "signalpolicies"}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server")
	namespace := flag.String("namespace", "", "namespace whose signals are read")
	cmPath := flag.String("argocd-cm", "", "an argocd-cm ConfigMap with resource.customizations")
	fluxPath := flag.String("flux", "", "a Flux Kustomization manifest whose healthCheckExprs are evaluated (optional)")
	policySelector := flag.String("policies", "", "label selector of the SignalPolicies to read too (optional; they are cluster-scoped)")
	flag.Parse()
	if *kubeconfig == "" || *namespace == "" || *cmPath == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*kubeconfig, *namespace, *cmPath, *fluxPath, *policySelector); err != nil {
		fmt.Fprintln(os.Stderr, "signalman-health:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, namespace, cmPath, fluxPath, policySelector string) error {
	ctx := context.Background()
	scripts, err := loadArgoScripts(cmPath)
	if err != nil {
		return err
	}
	var flux *fluxChecks
	if fluxPath != "" {
		if flux, err = loadFluxChecks(fluxPath); err != nil {
			return err
		}
	}
	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		return err
	}
	var lists []*unstructured.UnstructuredList
	for _, gvr := range resources {
		list, err := client.Resource(gvr).Namespace(namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("listing %s: %w", gvr.Resource, err)
		}
		lists = append(lists, list)
	}
	if policySelector != "" {
		list, err := client.Resource(policies).List(ctx, metav1.ListOptions{LabelSelector: policySelector})
		if err != nil {
			return fmt.Errorf("listing %s: %w", policies.Resource, err)
		}
		lists = append(lists, list)
	}
	var out []report
	for _, list := range lists {
		for i := range list.Items {
			r, err := assess(ctx, &list.Items[i], scripts, flux)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", list.Items[i].GetKind(), list.Items[i].GetName(), err)
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	enc := json.NewEncoder(os.Stdout)
	for _, r := range out {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func assess(ctx context.Context, obj *unstructured.Unstructured, scripts argoScripts, flux *fluxChecks) (report, error) {
	r := report{Kind: obj.GetKind(), Name: obj.GetName(), ResourceVersion: obj.GetResourceVersion()}
	res, err := status.Compute(obj)
	if err != nil {
		return r, fmt.Errorf("kstatus: %w", err)
	}
	r.Kstatus, r.KstatusMessage = res.Status.String(), res.Message
	gvk := obj.GroupVersionKind()
	script, err := scripts.forKind(gvk.Group, gvk.Kind)
	if err != nil {
		return r, fmt.Errorf("argo health lua: %w", err)
	}
	r.Argo, r.ArgoMessage, err = argoHealth(script, obj.Object)
	if err != nil {
		return r, fmt.Errorf("argo health lua: %w", err)
	}
	if flux != nil {
		if r.Flux, err = flux.evaluate(ctx, obj); err != nil {
			return r, fmt.Errorf("flux healthCheckExprs: %w", err)
		}
	}
	return r, nil
}
