package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"bootstrap.lab/images/internal/kubeapi"
)

// nicController is the controller name an IngressClass must carry for NIC to serve it.
const nicController = "nginx.org/ingress-controller"

// api is what the controller needs of kubeapi.Client (tests use the real client on a fake API).
type api interface {
	GetJSON(ctx context.Context, path string, out any) error
	PutJSON(ctx context.Context, path string, in, out any) error
}

// controller keeps the proxy's table in step with the cluster by polling.
type controller struct {
	api     api
	opts    options
	proxy   *proxy
	logs    *logger
	ready   atomic.Bool // the first sync succeeded: /nginx-ready answers 200
	summary string      // the table last logged
}

// checkStart does what NIC does before it starts nginx: its IngressClass must exist and be
// NIC's; its ConfigMap is read, and a missing one is only an error in the log.
func (c *controller) checkStart(ctx context.Context) error {
	var class kubeapi.IngressClass
	err := c.api.GetJSON(ctx, "/apis/networking.k8s.io/v1/ingressclasses/"+c.opts.ingressClass, &class)
	if kubeapi.IsNotFound(err) {
		return fmt.Errorf("IngressClass with name %s was not found", c.opts.ingressClass)
	}
	if err != nil {
		return fmt.Errorf("error when getting IngressClass %s: %w", c.opts.ingressClass, err)
	}
	if class.Spec.Controller != nicController {
		return fmt.Errorf("IngressClass with name %s has an invalid Spec.Controller %s; expected %s",
			c.opts.ingressClass, class.Spec.Controller, nicController)
	}
	c.readConfigMap(ctx)
	return nil
}

func (c *controller) readConfigMap(ctx context.Context) {
	if c.opts.configMap == "" {
		return
	}
	ns, name, _ := strings.Cut(c.opts.configMap, "/")
	var cm kubeapi.ConfigMap
	if err := c.api.GetJSON(ctx, fmt.Sprintf("/api/v1/namespaces/%s/configmaps/%s", ns, name), &cm); err != nil {
		c.logs.errorf("error when getting ConfigMap %s: %v", c.opts.configMap, err)
		return
	}
	keys := make([]string, 0, len(cm.Data))
	for k := range cm.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) > 0 {
		// The stand-in generates no nginx.conf, so none of NIC's ConfigMap keys changes anything.
		c.logs.warnf("ConfigMap %s keys %v are not modelled by the stand-in", c.opts.configMap, keys)
	}
}

// run syncs now and every interval until ctx ends.
func (c *controller) run(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		c.syncOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// syncOnce reads the cluster, swaps in a new table, and reports Ingress status. On an API error
// the last good table stays.
func (c *controller) syncOnce(ctx context.Context) {
	state, err := c.readState(ctx)
	if err != nil {
		c.logs.errorf("sync failed, keeping the last routing table: %v", err)
		return
	}
	table := buildTable(state, c.opts.ingressClass)
	c.proxy.table.Store(table)
	c.logTableChange(table)
	if !c.ready.Swap(true) {
		c.logs.infof("first sync done: ready")
	}
	if c.opts.reportStatus && c.opts.externalService != "" {
		c.reportStatus(ctx, handledIngresses(state.ingresses, c.opts.ingressClass))
	}
}

func (c *controller) logTableChange(table *routeTable) {
	summary := strings.Join(table.summary, "\n  ")
	if summary == c.summary {
		return
	}
	c.summary = summary
	if summary == "" {
		summary = "(no Ingress of class " + c.opts.ingressClass + ")"
	}
	c.logs.infof("routing table:\n  %s", summary)
}

func (c *controller) readState(ctx context.Context) (clusterState, error) {
	var state clusterState
	for _, ns := range c.namespaces() {
		var ings kubeapi.IngressList
		var svcs kubeapi.ServiceList
		var eps kubeapi.EndpointSliceList
		if err := c.api.GetJSON(ctx, listPath("/apis/networking.k8s.io/v1", ns, "ingresses"), &ings); err != nil {
			return state, err
		}
		if err := c.api.GetJSON(ctx, listPath("/api/v1", ns, "services"), &svcs); err != nil {
			return state, err
		}
		if err := c.api.GetJSON(ctx, listPath("/apis/discovery.k8s.io/v1", ns, "endpointslices"), &eps); err != nil {
			return state, err
		}
		state.ingresses = append(state.ingresses, ings.Items...)
		state.services = append(state.services, svcs.Items...)
		state.slices = append(state.slices, eps.Items...)
	}
	return state, nil
}

// namespaces are the -watch-namespace list; "" stands for all namespaces.
func (c *controller) namespaces() []string {
	if c.opts.watchNamespace == "" {
		return []string{""}
	}
	return strings.Split(c.opts.watchNamespace, ",")
}

func listPath(prefix, namespace, resource string) string {
	if namespace == "" {
		return prefix + "/" + resource
	}
	return prefix + "/namespaces/" + namespace + "/" + resource
}

// reportStatus writes the external Service's addresses into each handled Ingress's status, as
// NIC's -report-ingress-status with -external-service does. A NodePort Service without
// externalIPs has none, and then nothing is written.
func (c *controller) reportStatus(ctx context.Context, ingresses []kubeapi.Ingress) {
	var svc kubeapi.Service
	path := fmt.Sprintf("/api/v1/namespaces/%s/services/%s", c.opts.podNamespace, c.opts.externalService)
	if err := c.api.GetJSON(ctx, path, &svc); err != nil {
		c.logs.errorf("error getting external service %s/%s: %v", c.opts.podNamespace, c.opts.externalService, err)
		return
	}
	addrs := externalAddresses(svc)
	if len(addrs) == 0 {
		return
	}
	for _, ing := range ingresses {
		if slices.Equal(ing.Status.LoadBalancer.Ingress, addrs) {
			continue
		}
		if err := c.writeStatus(ctx, ing, addrs); err != nil {
			c.logs.errorf("error updating status of Ingress %s/%s: %v", ing.Metadata.Namespace, ing.Metadata.Name, err)
			continue
		}
		c.logs.infof("updated status of Ingress %s/%s: %v", ing.Metadata.Namespace, ing.Metadata.Name, addrs)
	}
}

// externalAddresses: a LoadBalancer Service's status addresses, else its spec.externalIPs.
func externalAddresses(svc kubeapi.Service) []kubeapi.LoadBalancerIngress {
	if svc.Spec.Type == "LoadBalancer" {
		return svc.Status.LoadBalancer.Ingress
	}
	var out []kubeapi.LoadBalancerIngress
	for _, ip := range svc.Spec.ExternalIPs {
		out = append(out, kubeapi.LoadBalancerIngress{IP: ip})
	}
	return out
}

// writeStatus PUTs the Ingress as read (so its resourceVersion guards against a lost update)
// with the new status.
func (c *controller) writeStatus(ctx context.Context, ing kubeapi.Ingress, addrs []kubeapi.LoadBalancerIngress) error {
	var obj map[string]any
	if err := json.Unmarshal(ing.Raw, &obj); err != nil {
		return err
	}
	// List items come without apiVersion and kind; a PUT names them.
	obj["apiVersion"], obj["kind"] = "networking.k8s.io/v1", "Ingress"
	obj["status"] = map[string]any{"loadBalancer": map[string]any{"ingress": addrs}}
	path := fmt.Sprintf("/apis/networking.k8s.io/v1/namespaces/%s/ingresses/%s/status", ing.Metadata.Namespace, ing.Metadata.Name)
	return c.api.PutJSON(ctx, path, obj, nil)
}
