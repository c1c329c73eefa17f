package kubeapi

import (
	"encoding/json"
	"strconv"
)

// Only the fields the stand-ins read. Unknown fields are ignored when decoding; an object that is
// written back (Ingress status) is written from its Raw JSON so nothing is lost.

// ObjectMeta is the part of metadata the stand-ins use.
type ObjectMeta struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	CreationTimestamp string            `json:"creationTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// IntOrString is a Kubernetes int-or-string field (a Service's targetPort).
type IntOrString struct {
	IsString bool
	Int      int32
	Str      string
}

// UnmarshalJSON takes either a JSON number or a JSON string.
func (v *IntOrString) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		v.IsString = true
		return json.Unmarshal(data, &v.Str)
	}
	v.IsString = false
	return json.Unmarshal(data, &v.Int)
}

// MarshalJSON writes the form it was read in.
func (v IntOrString) MarshalJSON() ([]byte, error) {
	if v.IsString {
		return json.Marshal(v.Str)
	}
	return json.Marshal(v.Int)
}

// IsZero says whether the field was absent (a Service port without targetPort).
func (v IntOrString) IsZero() bool { return !v.IsString && v.Int == 0 }

func (v IntOrString) String() string {
	if v.IsString {
		return v.Str
	}
	return strconv.Itoa(int(v.Int))
}

// IngressClass (networking.k8s.io/v1).
type IngressClass struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     struct {
		Controller string `json:"controller"`
	} `json:"spec"`
}

// Ingress (networking.k8s.io/v1). Raw is the object as the API sent it.
type Ingress struct {
	Metadata ObjectMeta      `json:"metadata"`
	Spec     IngressSpec     `json:"spec"`
	Status   IngressStatus   `json:"status"`
	Raw      json.RawMessage `json:"-"`
}

// UnmarshalJSON keeps the raw object beside the typed fields.
func (i *Ingress) UnmarshalJSON(data []byte) error {
	type plain Ingress // no methods: no recursion
	if err := json.Unmarshal(data, (*plain)(i)); err != nil {
		return err
	}
	i.Raw = append(json.RawMessage(nil), data...)
	return nil
}

// IngressSpec holds the routing rules.
type IngressSpec struct {
	IngressClassName *string         `json:"ingressClassName,omitempty"`
	DefaultBackend   *IngressBackend `json:"defaultBackend,omitempty"`
	Rules            []IngressRule   `json:"rules,omitempty"`
}

// IngressRule is one host's paths.
type IngressRule struct {
	Host string `json:"host,omitempty"`
	HTTP *struct {
		Paths []HTTPIngressPath `json:"paths"`
	} `json:"http,omitempty"`
}

// HTTPIngressPath is one path of a rule.
type HTTPIngressPath struct {
	Path     string         `json:"path,omitempty"`
	PathType string         `json:"pathType,omitempty"`
	Backend  IngressBackend `json:"backend"`
}

// IngressBackend names a Service port (resource backends are not modelled).
type IngressBackend struct {
	Service *struct {
		Name string `json:"name"`
		Port struct {
			Name   string `json:"name,omitempty"`
			Number int32  `json:"number,omitempty"`
		} `json:"port"`
	} `json:"service,omitempty"`
}

// IngressStatus is what the controller reports.
type IngressStatus struct {
	LoadBalancer struct {
		Ingress []LoadBalancerIngress `json:"ingress,omitempty"`
	} `json:"loadBalancer"`
}

// LoadBalancerIngress is one address of a load balancer (ports are not modelled).
type LoadBalancerIngress struct {
	IP       string `json:"ip,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

// Service (v1).
type Service struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     struct {
		Type        string        `json:"type,omitempty"`
		Ports       []ServicePort `json:"ports,omitempty"`
		ExternalIPs []string      `json:"externalIPs,omitempty"`
	} `json:"spec"`
	Status struct {
		LoadBalancer struct {
			Ingress []LoadBalancerIngress `json:"ingress,omitempty"`
		} `json:"loadBalancer"`
	} `json:"status"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name       string      `json:"name,omitempty"`
	Port       int32       `json:"port"`
	TargetPort IntOrString `json:"targetPort,omitzero"`
}

// EndpointSlice (discovery.k8s.io/v1).
type EndpointSlice struct {
	Metadata  ObjectMeta          `json:"metadata"`
	Endpoints []Endpoint          `json:"endpoints"`
	Ports     []EndpointSlicePort `json:"ports"`
}

// Endpoint is one backend of a slice.
type Endpoint struct {
	Addresses  []string `json:"addresses"`
	Conditions struct {
		Ready *bool `json:"ready,omitempty"`
	} `json:"conditions"`
}

// EndpointSlicePort is named after the Service port it serves; Port is the resolved targetPort.
type EndpointSlicePort struct {
	Name *string `json:"name,omitempty"`
	Port *int32  `json:"port,omitempty"`
}

// Pod (v1): what Fluent Bit's kubernetes filter adds to a record.
type Pod struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     struct {
		NodeName   string `json:"nodeName,omitempty"`
		Containers []struct {
			Name  string `json:"name"`
			Image string `json:"image"`
		} `json:"containers,omitempty"`
		InitContainers []struct {
			Name  string `json:"name"`
			Image string `json:"image"`
		} `json:"initContainers,omitempty"`
	} `json:"spec"`
	Status struct {
		ContainerStatuses     []ContainerStatus `json:"containerStatuses,omitempty"`
		InitContainerStatuses []ContainerStatus `json:"initContainerStatuses,omitempty"`
	} `json:"status"`
}

// ContainerStatus names the image a container actually runs.
type ContainerStatus struct {
	Name        string `json:"name"`
	Image       string `json:"image"`
	ImageID     string `json:"imageID"`
	ContainerID string `json:"containerID"`
}

// ConfigMap (v1).
type ConfigMap struct {
	Metadata ObjectMeta        `json:"metadata"`
	Data     map[string]string `json:"data,omitempty"`
}

// The lists the stand-ins read.
type (
	IngressList struct {
		Items []Ingress `json:"items"`
	}
	ServiceList struct {
		Items []Service `json:"items"`
	}
	EndpointSliceList struct {
		Items []EndpointSlice `json:"items"`
	}
)
