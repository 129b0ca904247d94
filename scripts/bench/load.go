package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// LoadResult is one closed-loop load: Clients each send a request, wait for the answer, repeat,
// for Seconds.
type LoadResult struct {
	Name       string   `json:"name"`
	Clients    int      `json:"clients"`
	Seconds    float64  `json:"seconds"`
	Requests   int      `json:"requests"`
	Errors     int      `json:"errors"`
	ErrorNotes []string `json:"error_examples,omitempty"`
	RPS        float64  `json:"rps"`
	Latency    Summary  `json:"latency"`
	CPU        *CPUUse  `json:"cpu,omitempty"`
}

// loadRequest builds the i-th request of client c: the expected status, and optionally a check of
// the answer's body.
type loadRequest func(c, i int) (method, path, body string, want int, check func([]byte) error)

// load runs clients closed loops against f for d and collects every latency. A request counts as
// an error unless it got the expected status; errors are counted, never retried.
func load(ctx context.Context, f *fabric, name string, clients int, d time.Duration, next loadRequest) LoadResult {
	var (
		mu    sync.Mutex
		lat   []float64
		errs  int
		notes []string
		wg    sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	before := snapCPU(f)
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Go(func() {
			var mine []float64
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				method, path, body, want, check := next(c, i)
				t := time.Now()
				err := send(ctx, f.client, method, f.URL+path, body, want, check)
				el := time.Since(t)
				if err != nil {
					mu.Lock()
					errs++
					if len(notes) < 5 {
						notes = append(notes, err.Error())
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, ms(el))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	el := time.Since(start)
	after := snapCPU(f)
	return LoadResult{Name: name, Clients: clients, Seconds: el.Seconds(), Requests: len(lat) + errs, Errors: errs,
		ErrorNotes: notes, RPS: float64(len(lat)) / el.Seconds(), Latency: summarize(lat),
		CPU: cpuUse(before, after, len(lat)+errs)}
}

func send(ctx context.Context, c *http.Client, method, url, body string, want int, check func([]byte) error) error {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		if len(b) > 300 {
			b = b[:300]
		}
		return fmt.Errorf("%s %s: status %d: %s", method, url, resp.StatusCode, b)
	}
	if check != nil {
		if err := check(b); err != nil {
			return fmt.Errorf("%s %s: %w", method, url, err)
		}
	}
	return nil
}
