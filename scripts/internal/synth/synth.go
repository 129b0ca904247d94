// Package synth makes the synthetic fleets the benchmarks and the scale harness measure: a few
// hundred distinct uv.lock files of 5 to 60 packages, popular packages in most of them, and an
// uneven spread of environments over them (a few locks carry many), as a platform's workflows
// share their dependency sets.
package synth

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/storetest"
	"github.com/envfabric/envfabric/shared/envid"
)

const (
	// Names is how many package names the locks draw from; the first Popular appear in most.
	Names   = 500
	Popular = 12
)

// Locks are the distinct lock files of a synthetic fleet.
type Locks struct {
	Locks    []string
	Versions map[string][]string // name → versions
	weights  []int               // environments per lock index, relative
	total    int
}

// PkgName is the i-th package name: real popular names first.
func PkgName(i int) string {
	real := []string{"idna", "certifi", "urllib3", "requests", "charset-normalizer", "six", "packaging", "typing-extensions",
		"numpy", "python-dateutil", "pyyaml", "setuptools"}
	if i < len(real) {
		return real[i]
	}
	return fmt.Sprintf("pkg%03d", i)
}

// MakeLocks draws n distinct locks from r.
func MakeLocks(r *rand.Rand, n int) *Locks {
	ls := &Locks{Versions: map[string][]string{}}
	for i := 0; i < Names; i++ {
		k := 2 + r.IntN(7)
		for v := 0; v < k; v++ {
			ls.Versions[PkgName(i)] = append(ls.Versions[PkgName(i)], fmt.Sprintf("%d.%d.%d", 1+v/3, v%3, r.IntN(4)))
		}
	}
	for l := 0; l < n; l++ {
		size := 5 + r.IntN(56)
		chosen := map[string]bool{}
		var direct, indirect []string
		for i := 0; i < Popular && len(chosen) < size; i++ {
			if r.IntN(10) < 7 {
				chosen[PkgName(i)] = true
			}
		}
		for len(chosen) < size {
			chosen[PkgName(Popular+r.IntN(Names-Popular))] = true
		}
		for name := range chosen {
			vs := ls.Versions[name]
			p := name + "==" + vs[r.IntN(len(vs))]
			if r.IntN(3) == 0 {
				direct = append(direct, p)
			} else {
				indirect = append(indirect, p)
			}
		}
		sort.Strings(direct)
		sort.Strings(indirect)
		if len(direct) == 0 {
			direct, indirect = indirect[:1], indirect[1:]
		}
		ls.Locks = append(ls.Locks, storetest.LockOf(direct, indirect...))
	}
	// An uneven spread: a few locks carry many environments.
	for l := 0; l < n; l++ {
		w := 1 + int(1000/float64(l+1))
		ls.weights = append(ls.weights, w)
		ls.total += w
	}
	return ls
}

// Pick chooses a lock index for one environment, by the spread.
func (ls *Locks) Pick(r *rand.Rand) int {
	n := r.IntN(ls.total)
	for i, w := range ls.weights {
		if n < w {
			return i
		}
		n -= w
	}
	return 0
}

// Insert makes key an ACTIVE environment at revision 1 with lock through the store, as a
// create does (CreateEnv, a lease, CommitRevision), without an agent. buildID, when set, must be
// recorded.
func Insert(ctx context.Context, st store.Store, key envid.Key, pyproject, lock, buildID string, opID int64) error {
	now := time.Now()
	if err := st.CreateEnv(ctx, store.Env{Key: key, State: store.StateCreating}, now); err != nil {
		return err
	}
	l, err := st.AcquireLease(ctx, store.LeaseRequest{Key: key, Mode: store.LeaseChange, Holder: "synth", Operation: "create", TTL: time.Minute, Now: now})
	if err != nil {
		return err
	}
	_, err = st.CommitRevision(ctx, store.Commit{Key: key, LeaseID: l.ID, Now: now, State: store.StateActive,
		PyprojectTOML: pyproject, UvLock: lock, BuildID: buildID, OperationID: opID})
	if rerr := st.ReleaseLease(ctx, l.ID); err == nil {
		err = rerr
	}
	return err
}
