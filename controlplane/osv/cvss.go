package osv

import (
	"fmt"
	"math"
	"strings"
)

// CVSS3Score computes the base score of a CVSS v3.0 or v3.1 vector ("CVSS:3.1/AV:N/AC:L/...")
// with the specification's formulas (https://www.first.org/cvss/v3.1/specification-document,
// section 7.1). Temporal and environmental metrics, when present, are ignored.
func CVSS3Score(vector string) (float64, error) {
	parts := strings.Split(vector, "/")
	if len(parts) < 9 || (parts[0] != "CVSS:3.0" && parts[0] != "CVSS:3.1") {
		return 0, fmt.Errorf("%q: not a CVSS v3 vector", vector)
	}
	m := map[string]string{}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, ":")
		if !ok {
			return 0, fmt.Errorf("%q: malformed metric %q", vector, p)
		}
		m[k] = v
	}
	pick := func(k string, table map[string]float64) (float64, bool) {
		v, ok := table[m[k]]
		return v, ok
	}
	av, ok1 := pick("AV", map[string]float64{"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2})
	ac, ok2 := pick("AC", map[string]float64{"L": 0.77, "H": 0.44})
	ui, ok3 := pick("UI", map[string]float64{"N": 0.85, "R": 0.62})
	cia := map[string]float64{"H": 0.56, "L": 0.22, "N": 0}
	c, ok4 := pick("C", cia)
	i, ok5 := pick("I", cia)
	a, ok6 := pick("A", cia)
	scope := m["S"]
	prTable := map[string]float64{"N": 0.85, "L": 0.62, "H": 0.27}
	if scope == "C" {
		prTable = map[string]float64{"N": 0.85, "L": 0.68, "H": 0.5}
	}
	pr, ok7 := pick("PR", prTable)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || (scope != "U" && scope != "C") {
		return 0, fmt.Errorf("%q: a base metric is missing or has an unknown value", vector)
	}
	iss := 1 - (1-c)*(1-i)*(1-a)
	var impact float64
	if scope == "U" {
		impact = 6.42 * iss
	} else {
		impact = 7.52*(iss-0.029) - 3.25*math.Pow(iss-0.02, 15)
	}
	if impact <= 0 {
		return 0, nil
	}
	expl := 8.22 * av * ac * pr * ui
	if scope == "U" {
		return roundUp(math.Min(impact+expl, 10)), nil
	}
	return roundUp(math.Min(1.08*(impact+expl), 10)), nil
}

// roundUp is CVSS v3.1's Roundup: the smallest number with one decimal at or above x, computed
// on integers so that floating-point error does not push 4.0 to 4.1.
func roundUp(x float64) float64 {
	n := int64(math.Round(x * 100000))
	if n%10000 == 0 {
		return float64(n) / 100000
	}
	return float64(n/10000+1) / 10
}
