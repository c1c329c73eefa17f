package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"bootstrap.lab/images/internal/kubeapi"
)

const (
	podCacheTTL      = 5 * time.Minute
	podFailureTTL    = 30 * time.Second // an API failure is not asked again for each line
	podLookupTimeout = 10 * time.Second
)

// The kubelet's name for a container log: <pod>_<namespace>_<container>-<64 hex id>.log.
var containerLogName = regexp.MustCompile(`^([a-z0-9][-a-z0-9.]*)_([^_]+)_(.+)-([a-f0-9]{64})\.log$`)

// podGetter is the part of kubeapi.Client the filter uses.
type podGetter interface {
	GetJSON(ctx context.Context, path string, out any) error
}

// kubeFilter is the kubernetes filter: pod metadata from the file name and the API, Merge_Log,
// and K8S-Logging.Exclude. K8S-Logging.Parser is accepted but not modelled (no pod-suggested
// parsers).
type kubeFilter struct {
	cfg   kubeFilterConfig
	api   podGetter
	log   *flbLogger
	cache map[string]cachedPod // namespace/pod
	now   func() time.Time
}

type cachedPod struct {
	pod     *kubeapi.Pod // nil: the lookup failed
	expires time.Time
}

func newKubeFilter(cfg kubeFilterConfig, api podGetter, log *flbLogger) *kubeFilter {
	return &kubeFilter{cfg: cfg, api: api, log: log, cache: map[string]cachedPod{}, now: time.Now}
}

// containerRef is what the file name says.
type containerRef struct {
	pod, namespace, container, id string
}

// apply enriches rec in place; false means the record is dropped (excluded pod).
func (k *kubeFilter) apply(rec *record) bool {
	if !matchTag(k.cfg.match, rec.tag) {
		return true
	}
	m := containerLogName.FindStringSubmatch(strings.TrimPrefix(rec.tag, k.cfg.tagPrefix))
	if m == nil {
		k.log.debugf(scopeKube, "invalid pattern for given tag %s", rec.tag)
		return true
	}
	ref := containerRef{pod: m[1], namespace: m[2], container: m[3], id: m[4]}
	pod := k.lookup(ref)
	if k.cfg.exclude && pod != nil && isTrue(pod.Metadata.Annotations["fluentbit.io/exclude"]) {
		return false
	}
	if k.cfg.mergeLog {
		rec.body = k.mergeLog(rec.body)
	}
	rec.body = rec.body.set("kubernetes", k.metadata(ref, pod))
	return true
}

// mergeLog: a log that is a JSON object goes under Merge_Log_Key (or the top level without
// one); with Keep_Log Off the original log then goes. Anything else stays as it is.
func (k *kubeFilter) mergeLog(body object) object {
	v, ok := body.get("log")
	s, isString := v.(string)
	if !ok || !isString {
		return body
	}
	parsed, ok := parseJSONObject(strings.TrimSpace(s))
	if !ok {
		return body
	}
	if !k.cfg.keepLog {
		body = body.without("log")
	}
	if k.cfg.mergeLogKey != "" {
		return body.set(k.cfg.mergeLogKey, parsed)
	}
	for _, m := range parsed {
		body = body.set(m.key, m.value)
	}
	return body
}

// metadata builds the kubernetes key in Fluent Bit's order; without the pod (API failure) only
// what the file name gives.
func (k *kubeFilter) metadata(ref containerRef, pod *kubeapi.Pod) object {
	meta := object{{"pod_name", ref.pod}, {"namespace_name", ref.namespace}}
	if pod != nil {
		meta = append(meta, member{"pod_id", pod.Metadata.UID})
		if k.cfg.labels && len(pod.Metadata.Labels) > 0 {
			meta = append(meta, member{"labels", sortedObject(pod.Metadata.Labels)})
		}
		if k.cfg.annotations && len(pod.Metadata.Annotations) > 0 {
			meta = append(meta, member{"annotations", sortedObject(pod.Metadata.Annotations)})
		}
		if pod.Spec.NodeName != "" {
			meta = append(meta, member{"host", pod.Spec.NodeName})
		}
	}
	meta = append(meta, member{"container_name", ref.container}, member{"docker_id", ref.id})
	if pod != nil {
		hash, image := containerImage(pod, ref.container)
		if hash != "" {
			meta = append(meta, member{"container_hash", hash})
		}
		if image != "" {
			meta = append(meta, member{"container_image", image})
		}
	}
	return meta
}

// containerImage: the image the container runs and its digest, from the pod's status (init
// containers too), else the spec's image.
func containerImage(pod *kubeapi.Pod, container string) (hash, image string) {
	for _, s := range slices.Concat(pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses) {
		if s.Name == container {
			return s.ImageID, s.Image
		}
	}
	for _, c := range slices.Concat(pod.Spec.Containers, pod.Spec.InitContainers) {
		if c.Name == container {
			return "", c.Image
		}
	}
	return "", ""
}

func sortedObject(m map[string]string) object {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	out := make(object, len(keys))
	for i, key := range keys {
		out[i] = member{key, m[key]}
	}
	return out
}

// lookup asks the API for the pod, cached for 5 minutes (a failure for 30 s).
func (k *kubeFilter) lookup(ref containerRef) *kubeapi.Pod {
	key := ref.namespace + "/" + ref.pod
	now := k.now()
	if c, ok := k.cache[key]; ok && now.Before(c.expires) {
		return c.pod
	}
	ctx, cancel := context.WithTimeout(context.Background(), podLookupTimeout)
	defer cancel()
	var pod kubeapi.Pod
	err := k.api.GetJSON(ctx, fmt.Sprintf("/api/v1/namespaces/%s/pods/%s", ref.namespace, ref.pod), &pod)
	k.pruneCache(now)
	if err != nil {
		k.log.warnf(scopeKube, "could not get meta for pod %s: %v", key, err)
		k.cache[key] = cachedPod{expires: now.Add(podFailureTTL)}
		return nil
	}
	k.cache[key] = cachedPod{pod: &pod, expires: now.Add(podCacheTTL)}
	return &pod
}

// pruneCache forgets expired pods once the cache grows, so deleted pods do not pile up.
func (k *kubeFilter) pruneCache(now time.Time) {
	if len(k.cache) < 256 {
		return
	}
	for key, c := range k.cache {
		if !now.Before(c.expires) {
			delete(k.cache, key)
		}
	}
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "true", "on", "yes", "1":
		return true
	}
	return false
}

// matchTag is Fluent Bit's Match: '*' stands for any run of characters.
func matchTag(pattern, tag string) bool {
	star := strings.IndexByte(pattern, '*')
	if star < 0 {
		return pattern == tag
	}
	prefix, rest := pattern[:star], pattern[star+1:]
	if !strings.HasPrefix(tag, prefix) {
		return false
	}
	for i := len(prefix); i <= len(tag); i++ {
		if matchTag(rest, tag[i:]) {
			return true
		}
	}
	return false
}
