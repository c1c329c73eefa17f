// Package kubeapi is the small Kubernetes API client the lab's stand-in images share: JSON GET
// and PUT with a pod's service-account credentials, nothing more (no watch, no retries, no
// client-side caching). The stand-ins poll, so they need no watch.
package kubeapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// The files kubelet projects into every pod that mounts its service-account token.
const (
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	DefaultTokenFile  = ServiceAccountDir + "/token"
	DefaultCAFile     = ServiceAccountDir + "/ca.crt"
)

// Options say where the API is and how to authenticate. Empty fields fall back to what
// InCluster uses, except HTTPClient (built from CAFile when nil).
type Options struct {
	BaseURL    string       // e.g. https://10.96.0.1:443 (no trailing slash needed)
	TokenFile  string       // bearer token, re-read on every request; "" sends none
	CAFile     string       // PEM bundle that signs the API's certificate; "" uses system roots
	HTTPClient *http.Client // overrides CAFile when set (tests)
	Timeout    time.Duration
}

// Client talks JSON to one API server.
type Client struct {
	base      string
	tokenFile string
	http      *http.Client
}

// New makes a Client from explicit options (tests, Fluent Bit's Kube_URL / Kube_CA_File /
// Kube_Token_File).
func New(opts Options) (*Client, error) {
	if opts.BaseURL == "" {
		return nil, errors.New("kubeapi: no API server URL")
	}
	hc := opts.HTTPClient
	if hc == nil {
		var err error
		if hc, err = httpClientFor(opts.CAFile, opts.Timeout); err != nil {
			return nil, err
		}
	}
	return &Client{base: strings.TrimRight(opts.BaseURL, "/"), tokenFile: opts.TokenFile, http: hc}, nil
}

// InCluster makes a Client from the pod's environment, as client-go's rest.InClusterConfig does:
// KUBERNETES_SERVICE_HOST/PORT and the projected service-account files.
func InCluster() (*Client, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("kubeapi: not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
	}
	return New(Options{
		BaseURL:   "https://" + net.JoinHostPort(host, port),
		TokenFile: DefaultTokenFile,
		CAFile:    DefaultCAFile,
	})
}

func httpClientFor(caFile string, timeout time.Duration) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("kubeapi: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kubeapi: CA file %s holds no PEM certificate", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	transport.Proxy = nil // in-cluster traffic never goes through an HTTP proxy
	return &http.Client{Transport: transport, Timeout: timeout}, nil
}

// APIError is a non-2xx answer, with the message of the API's Status object when it sent one.
type APIError struct {
	Method  string
	Path    string
	Code    int
	Reason  string // Status.reason, e.g. NotFound, Forbidden, Conflict
	Message string // Status.message, or the start of the body
}

func (e *APIError) Error() string {
	reason := e.Reason
	if reason == "" {
		reason = http.StatusText(e.Code)
	}
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Code, reason, e.Message)
}

// IsNotFound says whether err is the API's 404.
func IsNotFound(err error) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.Code == http.StatusNotFound
}

// GetJSON decodes the object at path (e.g. /api/v1/namespaces/x/pods/y) into out.
func (c *Client) GetJSON(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

// PutJSON replaces the object at path with in and decodes the answer into out (nil: ignored).
func (c *Client) PutJSON(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	return c.do(ctx, http.MethodPut, path, body, out)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := c.authorize(req); err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(method, path, resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// authorize reads the token on every request: the kubelet rotates projected tokens (hourly by
// default), and a cached copy would expire under a long-running stand-in.
func (c *Client) authorize(req *http.Request) error {
	if c.tokenFile == "" {
		return nil
	}
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return fmt.Errorf("kubeapi: token file: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	return nil
}

func apiError(method, path string, code int, body []byte) error {
	e := &APIError{Method: method, Path: path, Code: code}
	var status struct {
		Kind    string `json:"kind"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &status) == nil && status.Kind == "Status" {
		e.Reason, e.Message = status.Reason, status.Message
		return e
	}
	e.Message = strings.TrimSpace(string(body))
	if len(e.Message) > 200 {
		e.Message = e.Message[:200] + "..."
	}
	return e
}
