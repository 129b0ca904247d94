package main

import (
	"math"
	"sort"
	"time"
)

// Summary condenses a set of durations, in milliseconds.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median_ms"`
	P99    float64 `json:"p99_ms"`
	Min    float64 `json:"min_ms"`
	Max    float64 `json:"max_ms"`
	Mean   float64 `json:"mean_ms"`
}

// Samples is one method's raw figures: every measured duration, in milliseconds.
type Samples struct {
	Name    string    `json:"name"`
	Samples []float64 `json:"samples_ms"`
	Summary Summary   `json:"summary"`
}

func (s *Samples) add(d time.Duration) { s.Samples = append(s.Samples, ms(d)) }

func (s *Samples) finish() { s.Summary = summarize(s.Samples) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize computes the median (the mean of the two middle values for an even count) and the
// nearest-rank p99: with fewer than 100 samples that is the maximum.
func summarize(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	rank := int(math.Ceil(0.99*float64(n))) - 1
	var sum float64
	for _, x := range s {
		sum += x
	}
	return Summary{N: n, Median: med, P99: s[rank], Min: s[0], Max: s[n-1], Mean: sum / float64(n)}
}

// ratio is a/b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
