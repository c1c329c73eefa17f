package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

const (
	chunkMaxBytes = 2 << 20 // Fluent Bit's chunks hold about 2 MB
	esTimeout     = 60 * time.Second
	timeKeyFormat = "2006-01-02T15:04:05.000Z" // Time_Key_Format default, in UTC
)

// chunk is one batch of documents, sent as one _bulk request and retried as a whole.
type chunk struct {
	name    string // Fluent Bit's chunk file name form: <pid>-<sec>.<nsec>.flb
	taskID  int
	body    bytes.Buffer // the NDJSON request body
	docs    int
	retries int
	nextTry time.Time
}

// retryPolicy is Fluent Bit's scheduler: base 5 s, doubling, capped at 2000 s. Fluent Bit draws a
// random wait up to that bound; the stand-in waits the bound itself, so tests can rely on it.
type retryPolicy struct {
	base, cap time.Duration
	limit     int // Retry_Limit; -1: no limit
}

func (p retryPolicy) wait(retry int) time.Duration {
	d := p.base
	for i := 1; i < retry && d < p.cap; i++ {
		d *= 2
	}
	return min(d, p.cap)
}

// esOutput is the es output. Chunks are kept in memory: storage.type filesystem is accepted but
// not modelled, so a restart loses what was not yet sent.
type esOutput struct {
	cfg    esConfig
	log    *flbLogger
	client *http.Client
	url    string
	retry  retryPolicy
	health *health
	now    func() time.Time

	mu     sync.Mutex
	open   *chunk   // being filled until the next flush
	queue  []*chunk // sealed, oldest first
	queued int64    // bytes in open and queue, held to storage.total_limit_size
	tasks  int
}

func newESOutput(cfg esConfig, log *flbLogger, retry retryPolicy, h *health) (*esOutput, error) {
	tlsConfig, err := esTLSConfig(cfg)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	transport.TLSClientConfig = tlsConfig
	scheme := "http"
	if cfg.tls {
		scheme = "https"
	}
	return &esOutput{
		cfg:    cfg,
		log:    log,
		client: &http.Client{Transport: transport, Timeout: esTimeout},
		url:    scheme + "://" + net.JoinHostPort(cfg.host, strconv.Itoa(cfg.port)) + "/_bulk",
		retry:  retry,
		health: h,
		now:    time.Now,
	}, nil
}

// esTLSConfig: tls.verify checks the chain against tls.ca_file (system roots without one);
// tls.verify_hostname also checks that the certificate names Host (an IP Host needs an IP SAN).
func esTLSConfig(cfg esConfig) (*tls.Config, error) {
	if !cfg.tls {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if !cfg.tlsVerify {
		conf.InsecureSkipVerify = true
		return conf, nil
	}
	var roots *x509.CertPool
	if cfg.caFile != "" {
		pem, err := os.ReadFile(cfg.caFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s holds no PEM certificate", cfg.caFile)
		}
	}
	if cfg.tlsVerifyHost {
		conf.RootCAs, conf.ServerName = roots, cfg.host
		return conf, nil
	}
	// The chain only: Go verifies the name whenever it verifies, so that check is turned off
	// and the chain is verified here.
	conf.InsecureSkipVerify = true
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("no server certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
	return conf, nil
}

// document is a record's two bulk lines: the action, then the document.
func (o *esOutput) document(rec record) []byte {
	action := object{{"_index", o.cfg.index}}
	if !o.cfg.suppressTypeName {
		action = append(action, member{"_type", "_doc"})
	}
	body := rec.body
	if o.cfg.replaceDots {
		body = replaceDots(body).(object)
	}
	doc := append(object{{"@timestamp", rec.time.UTC().Format(timeKeyFormat)}}, body...)
	var buf bytes.Buffer
	writeJSON(&buf, object{{"create", action}})
	buf.WriteByte('\n')
	writeJSON(&buf, doc)
	buf.WriteByte('\n')
	return buf.Bytes()
}

// add buffers a record for the next flush.
func (o *esOutput) add(rec record) {
	doc := o.document(rec)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.open == nil {
		o.open = o.newChunk()
	}
	o.open.body.Write(doc)
	o.open.docs++
	o.queued += int64(len(doc))
	if o.open.body.Len() >= chunkMaxBytes {
		o.seal()
	}
	o.enforceLimit()
}

func (o *esOutput) newChunk() *chunk {
	t := o.now()
	o.tasks++
	return &chunk{name: fmt.Sprintf("%d-%d.%09d.flb", os.Getpid(), t.Unix(), t.Nanosecond()), taskID: o.tasks - 1}
}

// seal queues the open chunk. Callers hold mu.
func (o *esOutput) seal() {
	if o.open != nil && o.open.docs > 0 {
		o.queue = append(o.queue, o.open)
	}
	o.open = nil
}

// enforceLimit drops the oldest chunks beyond storage.total_limit_size. Callers hold mu.
func (o *esOutput) enforceLimit() {
	for o.cfg.totalLimit > 0 && o.queued > o.cfg.totalLimit && len(o.queue) > 0 {
		c := o.queue[0]
		o.queue = o.queue[1:]
		o.queued -= int64(c.body.Len())
		o.log.warnf(scopeEngine, "chunk '%s' dropped: storage.total_limit_size %d bytes reached, %d records lost",
			c.name, o.cfg.totalLimit, c.docs)
	}
}

// run flushes every interval until ctx ends.
func (o *esOutput) run(ctx context.Context, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			o.flush(ctx, false)
		}
	}
}

// flush seals the open chunk and sends every chunk that is due (all of them when final).
func (o *esOutput) flush(ctx context.Context, final bool) {
	o.mu.Lock()
	o.seal()
	now := o.now()
	var due []*chunk
	for _, c := range o.queue {
		if final || !now.Before(c.nextTry) {
			due = append(due, c)
		}
	}
	o.mu.Unlock()
	for _, c := range due {
		if ctx.Err() != nil {
			return
		}
		ok := o.send(ctx, c)
		if ctx.Err() == nil || ok {
			o.settle(c, ok, final)
		}
	}
}

// pending is the number of chunks not yet sent.
func (o *esOutput) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(o.queue)
	if o.open != nil && o.open.docs > 0 {
		n++
	}
	return n
}

// settle removes a sent chunk, or schedules its retry, or gives it up after Retry_Limit retries.
func (o *esOutput) settle(c *chunk, ok, final bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	i := slices.Index(o.queue, c)
	if i < 0 {
		return // dropped by storage.total_limit_size meanwhile
	}
	route := fmt.Sprintf("task_id=%d, input=tail.0 > output=es.0 (out_id=0)", c.taskID)
	if ok {
		o.removeAt(i)
		if c.retries > 0 {
			o.log.infof(scopeEngine, "flush chunk '%s' succeeded at retry %d: %s", c.name, c.retries, route)
		}
		return
	}
	if final {
		return // no retries at shutdown
	}
	if o.retry.limit >= 0 && c.retries >= o.retry.limit {
		o.removeAt(i)
		o.health.retryFailed()
		o.log.errorf(scopeEngine, "chunk '%s' cannot be retried: task_id=%d, input=tail.0 > output=es.0", c.name, c.taskID)
		return
	}
	c.retries++
	wait := o.retry.wait(c.retries)
	c.nextTry = o.now().Add(wait)
	o.log.warnf(scopeEngine, "failed to flush chunk '%s', retry in %s: %s", c.name, wait, route)
}

func (o *esOutput) removeAt(i int) {
	o.queued -= int64(o.queue[i].body.Len())
	o.queue = slices.Delete(o.queue, i, i+1)
}

// send posts the chunk; false means the whole chunk is to be retried.
func (o *esOutput) send(ctx context.Context, c *chunk) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url, bytes.NewReader(c.body.Bytes()))
	if err != nil {
		o.log.errorf(scopeES, "%v", err)
		return false
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("User-Agent", "Fluent-Bit")
	if o.cfg.user != "" {
		req.SetBasicAuth(o.cfg.user, o.cfg.password)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		// The error names the URL, never the credentials (they travel in a header).
		o.log.errorf(scopeES, "no upstream connections available to %s:%d: %v", o.cfg.host, o.cfg.port, err)
		return false
	}
	defer resp.Body.Close()
	// Buffer_Size False: the whole response is read; a truncated one is a failure.
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		o.log.errorf(scopeES, "HTTP status=%d URI=/_bulk: reading the response: %v", resp.StatusCode, err)
		return false
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		o.log.errorf(scopeES, "HTTP status=%d URI=/_bulk, response:\n%s", resp.StatusCode, answer)
		return false
	}
	return o.checkItems(c, answer)
}

// bulkResponse is the part of Elasticsearch's _bulk answer the output reads.
type bulkResponse struct {
	Errors *bool                        `json:"errors"`
	Items  []map[string]bulkItemOutcome `json:"items"`
}

type bulkItemOutcome struct {
	Status int `json:"status"`
	Error  *struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	} `json:"error"`
}

// checkItems reads a 2xx answer. Documents Elasticsearch refused are logged and dropped and the
// chunk is done: Fluent Bit 5.1 does not resend a chunk some of whose documents were taken,
// and the stand-in does not resend one whose documents were all refused either (they would be
// refused again). Only an unreadable answer sends the chunk again.
func (o *esOutput) checkItems(c *chunk, answer []byte) bool {
	var r bulkResponse
	if err := json.Unmarshal(answer, &r); err != nil || r.Errors == nil {
		o.log.errorf(scopeES, "could not pack/validate JSON response\n%s", answer)
		return false
	}
	if !*r.Errors {
		o.log.debugf(scopeES, "HTTP Status=200 URI=/_bulk: %d documents", c.docs)
		return true
	}
	docs := bytes.Split(c.body.Bytes(), []byte("\n"))
	failed := 0
	for i, item := range r.Items {
		for _, outcome := range item {
			if outcome.Status < 300 && outcome.Error == nil {
				continue
			}
			failed++
			if o.cfg.traceError && 2*i+1 < len(docs) {
				o.logItemError(outcome, docs[2*i+1])
			}
		}
	}
	if !o.cfg.traceError {
		o.log.errorf(scopeES, "error: Output: %d of %d documents were refused (Trace_Error Off)", failed, c.docs)
	}
	if failed >= c.docs {
		o.health.outputError()
	}
	return true
}

func (o *esOutput) logItemError(outcome bulkItemOutcome, doc []byte) {
	kind, reason := "", ""
	if outcome.Error != nil {
		kind, reason = outcome.Error.Type, outcome.Error.Reason
	}
	o.log.errorf(scopeES, "error: Output: status=%d type=%s reason=%q document=%s", outcome.Status, kind, reason, doc)
}

// health is Fluent Bit's Health_Check with HC_Errors_Count 5, HC_Retry_Failure_Count 5 and
// HC_Period 60: unhealthy while more than 5 errors, or more than 5 chunks that ran out of
// retries, happened in the last 60 s. As in Fluent Bit, a failed request that will be retried is
// neither: an Elasticsearch outage does not fail the liveness probe until chunks run out of
// retries.
type health struct {
	mu            sync.Mutex
	errors        []time.Time
	retryFailures []time.Time
	limit         int
	period        time.Duration
	now           func() time.Time
}

func newHealth() *health {
	return &health{limit: 5, period: 60 * time.Second, now: time.Now}
}

func (h *health) outputError() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errors = append(h.errors, h.now())
}

func (h *health) retryFailed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.retryFailures = append(h.retryFailures, h.now())
}

func (h *health) healthy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	since := h.now().Add(-h.period)
	h.errors = recent(h.errors, since)
	h.retryFailures = recent(h.retryFailures, since)
	return len(h.errors) <= h.limit && len(h.retryFailures) <= h.limit
}

func recent(times []time.Time, since time.Time) []time.Time {
	i := 0
	for i < len(times) && times[i].Before(since) {
		i++
	}
	return times[i:]
}
