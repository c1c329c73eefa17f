package main

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// frame is a Grafana data frame in its JSON wire form: a schema and the columns' values.
type frame struct {
	Schema frameSchema `json:"schema"`
	Data   frameData   `json:"data"`
}

type frameSchema struct {
	RefID  string    `json:"refId"`
	Meta   frameMeta `json:"meta"`
	Fields []field   `json:"fields"`
}

type frameMeta struct {
	Type                string         `json:"type"`
	TypeVersion         [2]int         `json:"typeVersion"`
	Custom              map[string]any `json:"custom,omitempty"`
	ExecutedQueryString string         `json:"executedQueryString,omitempty"`
}

type field struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	TypeInfo fieldTypeInfo     `json:"typeInfo"`
	Labels   map[string]string `json:"labels,omitempty"`
}

type fieldTypeInfo struct {
	Frame string `json:"frame"`
}

// frameData holds the Time column (epoch ms) and the Value column. JSON has no NaN or
// infinities, so, as in Grafana's encoding, such a value is null in "values" and its index is
// listed under "entities".
type frameData struct {
	Values   [2]any         `json:"values"`
	Entities []*specialVals `json:"entities,omitempty"`
}

type specialVals struct {
	NaN    []int `json:"NaN,omitempty"`
	Inf    []int `json:"Inf,omitempty"`
	NegInf []int `json:"NegInf,omitempty"`
}

// sample is one Prometheus point.
type sample struct {
	ms    int64
	value float64
}

// series is one Prometheus series: its labels and points.
type series struct {
	labels  map[string]string
	samples []sample
}

// promResult is a parsed Prometheus result of any type, as series.
type promResult struct {
	resultType string
	series     []series
}

// parsePromResult reads the "result" of a vector, matrix or scalar answer.
func parsePromResult(resultType string, raw json.RawMessage) (*promResult, error) {
	res := &promResult{resultType: resultType}
	switch resultType {
	case "vector":
		var items []struct {
			Metric map[string]string `json:"metric"`
			Value  json.RawMessage   `json:"value"`
		}
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("reading Prometheus vector: %v", err)
		}
		for _, it := range items {
			s, err := parseSample(it.Value)
			if err != nil {
				return nil, err
			}
			res.series = append(res.series, series{labels: it.Metric, samples: []sample{s}})
		}
	case "matrix":
		var items []struct {
			Metric map[string]string `json:"metric"`
			Values []json.RawMessage `json:"values"`
		}
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("reading Prometheus matrix: %v", err)
		}
		for _, it := range items {
			ser := series{labels: it.Metric}
			for _, v := range it.Values {
				s, err := parseSample(v)
				if err != nil {
					return nil, err
				}
				ser.samples = append(ser.samples, s)
			}
			res.series = append(res.series, ser)
		}
	case "scalar":
		s, err := parseSample(raw)
		if err != nil {
			return nil, err
		}
		res.series = []series{{samples: []sample{s}}}
	default:
		return nil, fmt.Errorf("Prometheus result type %q is not supported by this Grafana stand-in", resultType)
	}
	return res, nil
}

// parseSample reads [<seconds as a number>, "<value as a string>"].
func parseSample(raw json.RawMessage) (sample, error) {
	var pair []json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return sample{}, fmt.Errorf("reading a Prometheus sample: %s", raw)
	}
	var seconds float64
	var text string
	if json.Unmarshal(pair[0], &seconds) != nil || json.Unmarshal(pair[1], &text) != nil {
		return sample{}, fmt.Errorf("reading a Prometheus sample: %s", raw)
	}
	value, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return sample{}, fmt.Errorf("reading a Prometheus sample value %q", text)
	}
	return sample{ms: int64(math.Round(seconds * 1000)), value: value}, nil
}

// frames makes one frame per series, in Prometheus's order.
func (r *promResult) frames(refID, frameType, executed string) []frame {
	out := make([]frame, 0, len(r.series))
	for _, s := range r.series {
		out = append(out, s.frame(refID, frameType, r.resultType, executed))
	}
	return out
}

func (s series) frame(refID, frameType, resultType, executed string) frame {
	times := make([]int64, len(s.samples))
	values := make([]*float64, len(s.samples))
	special := &specialVals{}
	for i, smp := range s.samples {
		times[i] = smp.ms
		switch {
		case math.IsNaN(smp.value):
			special.NaN = append(special.NaN, i)
		case math.IsInf(smp.value, 1):
			special.Inf = append(special.Inf, i)
		case math.IsInf(smp.value, -1):
			special.NegInf = append(special.NegInf, i)
		default:
			v := smp.value
			values[i] = &v
		}
	}
	f := frame{
		Schema: frameSchema{
			RefID: refID,
			Meta: frameMeta{
				Type:                frameType,
				TypeVersion:         [2]int{0, 1},
				Custom:              map[string]any{"resultType": resultType},
				ExecutedQueryString: executed,
			},
			Fields: []field{
				{Name: "Time", Type: "time", TypeInfo: fieldTypeInfo{Frame: "time.Time"}},
				{Name: "Value", Type: "number", TypeInfo: fieldTypeInfo{Frame: "float64"}, Labels: s.labels},
			},
		},
		Data: frameData{Values: [2]any{times, values}},
	}
	if len(special.NaN)+len(special.Inf)+len(special.NegInf) > 0 {
		f.Data.Entities = []*specialVals{nil, special}
	}
	return f
}
