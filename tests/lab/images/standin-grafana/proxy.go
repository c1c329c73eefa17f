package main

import (
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
)

var errBadPath = errors.New("invalid path")

// proxyByUID serves /api/datasources/proxy/uid/{uid}/{rest...}.
func (s *server) proxyByUID(w http.ResponseWriter, r *http.Request) {
	ds := s.prov.datasourceByUID(r.PathValue("uid"))
	s.proxy(w, r, ds, pathAfter(r.URL.EscapedPath(), 5))
}

// proxyByID serves the older /api/datasources/proxy/{id}/{rest...}.
func (s *server) proxyByID(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	var ds *datasource
	if err == nil {
		ds = s.prov.datasourceByID(id)
	}
	s.proxy(w, r, ds, pathAfter(r.URL.EscapedPath(), 4))
}

// pathAfter drops the first n segments of an escaped path ("/api/datasources/proxy/1/x/y", 4
// -> "x/y"). The escaped form is kept so that %2F and the like reach the data source as sent.
func pathAfter(escaped string, n int) string {
	parts := strings.SplitN(strings.TrimPrefix(escaped, "/"), "/", n+1)
	if len(parts) <= n {
		return ""
	}
	return parts[n]
}

// proxy forwards the request, any method, to the data source's URL + rest with the same query
// string, and streams the answer back. Like Grafana it does not pass the caller's
// Authorization or cookies on to the data source.
func (s *server) proxy(w http.ResponseWriter, r *http.Request, ds *datasource, rest string) {
	if ds == nil {
		writeMessage(w, http.StatusNotFound, "Data source not found")
		return
	}
	if ds.Access != "proxy" {
		writeMessage(w, http.StatusBadRequest, "Data source is not configured for proxy access")
		return
	}
	target, err := joinURL(ds.base, rest)
	if err != nil {
		writeMessage(w, http.StatusBadRequest, "Invalid proxy path")
		return
	}
	target.RawQuery = r.URL.RawQuery
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = "" // the data source's own host name
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
		},
		Transport:     s.client.Transport,
		FlushInterval: -1, // stream as it arrives
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			s.log.log("data-proxy-log", "error", "Data source proxy failed", "datasource", ds.Name, "error", err)
			writeMessage(w, http.StatusBadGateway, "Bad Gateway")
		},
	}
	rp.ServeHTTP(w, r)
}

// joinURL appends an escaped relative path to a data source's base URL, keeping a base path
// (a Prometheus behind /prometheus/) and refusing `..` segments that would climb out of it.
func joinURL(base *url.URL, escapedRest string) (*url.URL, error) {
	for _, seg := range strings.Split(escapedRest, "/") {
		if s, err := url.PathUnescape(seg); err != nil || s == ".." {
			return nil, errBadPath
		}
	}
	u := *base
	rawPath := strings.TrimSuffix(base.EscapedPath(), "/") + "/" + escapedRest
	p, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, err
	}
	u.Path, u.RawPath = p, rawPath
	u.RawQuery, u.Fragment = "", ""
	return &u, nil
}
