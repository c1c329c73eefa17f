package main

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"bootstrap.lab/images/internal/kubeapi"
)

// upstream is one Ingress backend resolved to the addresses of its ready endpoints. An upstream
// without addresses answers 502, as NIC's upstreams whose only server is its 502 fallback.
type upstream struct {
	name  string   // namespace/service:port, the round-robin key and what the logs name
	addrs []string // host:port of every ready endpoint
	why   string   // why addrs is empty (logged when the table changes)
}

// route is one Ingress path of one host.
type route struct {
	path     string // normalised: a Prefix path has no trailing slash, except "/"
	exact    bool
	upstream *upstream
	order    int // position among all routes: the older Ingress wins a tie, as in NIC
}

// matches applies Kubernetes' path semantics: Exact is the whole path, case-sensitive; Prefix
// matches whole path elements, so /foo matches /foo and /foo/bar but not /foobar.
func (r route) matches(path string) bool {
	if r.exact {
		return path == r.path
	}
	if r.path == "/" || path == r.path {
		return true
	}
	return strings.HasPrefix(path, r.path+"/")
}

// routes of one host, most specific first: the longest path wins, then Exact over Prefix.
type routes []route

func (rs routes) sort() {
	slices.SortStableFunc(rs, func(a, b route) int {
		if c := cmp.Compare(len(b.path), len(a.path)); c != 0 {
			return c
		}
		if a.exact != b.exact {
			if a.exact {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.order, b.order)
	})
}

func (rs routes) find(path string) *upstream {
	for _, r := range rs {
		if r.matches(path) {
			return r.upstream
		}
	}
	return nil
}

// routeTable is what the proxy consults; it is rebuilt whole and swapped, never changed.
type routeTable struct {
	hosts     map[string]routes // exact host names, lower case
	wildcards map[string]routes // "*.example.com" stored as "example.com"
	anyHost   routes            // rules without host, and default backends of rule-less Ingresses
	summary   []string          // one line per route, for the log when the table changes
}

// lookup finds the upstream for a request. An exact host beats a wildcard host, which beats the
// rules without host; within one, the most specific path wins.
func (t *routeTable) lookup(host, path string) *upstream {
	if t == nil {
		return nil
	}
	host = strings.ToLower(host)
	if up := t.hosts[host].find(path); up != nil {
		return up
	}
	if _, parent, ok := strings.Cut(host, "."); ok {
		if up := t.wildcards[parent].find(path); up != nil {
			return up
		}
	}
	return t.anyHost.find(path)
}

// clusterState is what one sync read from the API.
type clusterState struct {
	ingresses []kubeapi.Ingress
	services  []kubeapi.Service
	slices    []kubeapi.EndpointSlice
}

// handledIngresses are the Ingresses of our class, oldest first (NIC's order for conflicts).
func handledIngresses(all []kubeapi.Ingress, class string) []kubeapi.Ingress {
	var out []kubeapi.Ingress
	for _, ing := range all {
		if ingressClassOf(ing) == class {
			out = append(out, ing)
		}
	}
	slices.SortStableFunc(out, func(a, b kubeapi.Ingress) int {
		return cmp.Or(
			cmp.Compare(a.Metadata.CreationTimestamp, b.Metadata.CreationTimestamp),
			cmp.Compare(a.Metadata.Namespace, b.Metadata.Namespace),
			cmp.Compare(a.Metadata.Name, b.Metadata.Name))
	})
	return out
}

// ingressClassOf reads spec.ingressClassName, else the legacy annotation.
func ingressClassOf(ing kubeapi.Ingress) string {
	if ing.Spec.IngressClassName != nil {
		return *ing.Spec.IngressClassName
	}
	return ing.Metadata.Annotations["kubernetes.io/ingress.class"]
}

// buildTable turns the Ingresses of class into a routing table.
func buildTable(state clusterState, class string) *routeTable {
	b := tableBuilder{
		state: state,
		table: &routeTable{hosts: map[string]routes{}, wildcards: map[string]routes{}},
	}
	for _, ing := range handledIngresses(state.ingresses, class) {
		b.addIngress(ing)
	}
	b.finish()
	return b.table
}

type tableBuilder struct {
	state clusterState
	table *routeTable
	order int
}

func (b *tableBuilder) addIngress(ing kubeapi.Ingress) {
	ns := ing.Metadata.Namespace
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			exact := p.PathType == "Exact" // Prefix and ImplementationSpecific: Prefix
			b.add(rule.Host, normalisePath(p.Path, exact), exact, b.resolve(ns, p.Backend))
		}
	}
	if ing.Spec.DefaultBackend == nil {
		return
	}
	// The default backend takes what the Ingress's own paths leave, on its hosts; an Ingress
	// without rules takes every host's leftovers.
	up := b.resolve(ns, *ing.Spec.DefaultBackend)
	if len(ing.Spec.Rules) == 0 {
		b.add("", "/", false, up)
	}
	for _, rule := range ing.Spec.Rules {
		b.add(rule.Host, "/", false, up)
	}
}

// normalisePath: an empty path is "/", and a Prefix path's trailing slash is ignored.
func normalisePath(path string, exact bool) string {
	if path == "" {
		return "/"
	}
	if exact || path == "/" {
		return path
	}
	return strings.TrimRight(path, "/")
}

func (b *tableBuilder) add(host, path string, exact bool, up *upstream) {
	b.order++
	r := route{path: path, exact: exact, upstream: up, order: b.order}
	host = strings.ToLower(host)
	switch {
	case host == "":
		b.table.anyHost = append(b.table.anyHost, r)
	case strings.HasPrefix(host, "*."):
		b.table.wildcards[host[2:]] = append(b.table.wildcards[host[2:]], r)
	default:
		b.table.hosts[host] = append(b.table.hosts[host], r)
	}
	b.table.summary = append(b.table.summary, describeRoute(host, r))
}

func describeRoute(host string, r route) string {
	kind := "Prefix"
	if r.exact {
		kind = "Exact"
	}
	if host == "" {
		host = "*"
	}
	state := fmt.Sprintf("%d ready endpoint(s)", len(r.upstream.addrs))
	if r.upstream.why != "" {
		state = r.upstream.why
	}
	return fmt.Sprintf("%s %s (%s) -> %s: %s", host, r.path, kind, r.upstream.name, state)
}

func (b *tableBuilder) finish() {
	for _, rs := range b.table.hosts {
		rs.sort()
	}
	for _, rs := range b.table.wildcards {
		rs.sort()
	}
	b.table.anyHost.sort()
}

// resolve follows backend → Service port → EndpointSlices of the Service → the port the slices
// publish under that Service port's name (the slice controller has already resolved a named
// targetPort to each pod's number) → the ready endpoints.
func (b *tableBuilder) resolve(namespace string, backend kubeapi.IngressBackend) *upstream {
	if backend.Service == nil {
		return &upstream{name: namespace + "/<resource backend>", why: "resource backends are not modelled by the stand-in"}
	}
	port := backend.Service.Port.Name
	if port == "" {
		port = strconv.Itoa(int(backend.Service.Port.Number))
	}
	up := &upstream{name: fmt.Sprintf("%s/%s:%s", namespace, backend.Service.Name, port)}
	svc := b.service(namespace, backend.Service.Name)
	if svc == nil {
		up.why = "service not found"
		return up
	}
	svcPort := servicePort(svc, backend.Service.Port.Name, backend.Service.Port.Number)
	if svcPort == nil {
		up.why = "service has no such port"
		return up
	}
	up.addrs = b.readyAddresses(namespace, svc.Metadata.Name, svcPort.Name)
	if len(up.addrs) == 0 {
		up.why = "no ready endpoints"
	}
	return up
}

func (b *tableBuilder) service(namespace, name string) *kubeapi.Service {
	for i := range b.state.services {
		if m := b.state.services[i].Metadata; m.Namespace == namespace && m.Name == name {
			return &b.state.services[i]
		}
	}
	return nil
}

func servicePort(svc *kubeapi.Service, name string, number int32) *kubeapi.ServicePort {
	for i, p := range svc.Spec.Ports {
		if (name != "" && p.Name == name) || (name == "" && p.Port == number) {
			return &svc.Spec.Ports[i]
		}
	}
	return nil
}

// readyAddresses lists host:port of the ready endpoints (conditions.ready true or unset, as the
// EndpointSlice API says consumers should take an unknown state) of the Service's slices.
func (b *tableBuilder) readyAddresses(namespace, service, portName string) []string {
	var addrs []string
	seen := map[string]bool{}
	for _, slice := range b.state.slices {
		m := slice.Metadata
		if m.Namespace != namespace || m.Labels["kubernetes.io/service-name"] != service {
			continue
		}
		port, ok := slicePort(slice, portName)
		if !ok {
			continue
		}
		for _, ep := range slice.Endpoints {
			if len(ep.Addresses) == 0 || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			// Every address of an endpoint is the same pod: the first is enough.
			addr := net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(port)))
			if !seen[addr] {
				seen[addr] = true
				addrs = append(addrs, addr)
			}
		}
	}
	return addrs
}

func slicePort(slice kubeapi.EndpointSlice, name string) (int32, bool) {
	for _, p := range slice.Ports {
		pname := ""
		if p.Name != nil {
			pname = *p.Name
		}
		if pname == name && p.Port != nil {
			return *p.Port, true
		}
	}
	return 0, false
}
