package runner_test

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envfabric/envfabric/agent/config"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// realIndex is the package index this machine uses, found at run time: uv's own setting, else
// pip's (pip may reach PyPI through a mirror, and uv never reads pip's configuration), else uv's
// default ("").
func realIndex() string {
	for _, v := range []string{"UV_DEFAULT_INDEX", "PIP_INDEX_URL"} {
		if s := os.Getenv(v); s != "" {
			return s
		}
	}
	out, err := exec.Command("python3", "-m", "pip", "config", "get", "global.index-url").Output()
	if err == nil {
		return strings.TrimSpace(string(out))
	}
	return ""
}

// scientificCode exercises what filters of other sandboxes broke: BLAS threads, pandas, joblib's
// process workers (loky: semaphores in /dev/shm, fork and exec), a multiprocessing pool that
// forks, and threadpoolctl looking at the BLAS library.
const scientificCode = `
import multiprocessing as mp
import numpy as np, pandas as pd
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from threadpoolctl import threadpool_info
X, y = make_classification(n_samples=2000, n_features=20, random_state=0)
a = np.random.default_rng(0).standard_normal((600, 600))
print("blas", bool(np.isfinite(a @ a.T).all()), any(i["user_api"] == "blas" for i in threadpool_info()))
df = pd.DataFrame(X[:, :4], columns=list("abcd")).assign(y=y)
print("pandas", df.groupby("y").mean().shape, df.describe().shape)
print("threads", RandomForestClassifier(n_estimators=20, n_jobs=2, random_state=0).fit(X, y).score(X, y) > 0.9)
print("processes", cross_val_score(LogisticRegression(max_iter=500), X, y, cv=3, n_jobs=2).mean() > 0.7)
def square(v):
    return v * v
with mp.get_context("fork").Pool(2) as pool:
    print("fork", pool.map(square, range(5)))
`

// The scientific stack works under the system-call filter and the whole-run limits, with the
// agent's default limits, in every tier that has the filter. Its wheels come from the real index.
func TestScientificStack(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the real package index")
	}
	d := newData(t)
	dir := filepath.Join(d.envs, "wf", "sci", "v1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pp := "[project]\nname = \"wf-sci\"\nversion = \"0.1.0\"\nrequires-python = \">=3.9\"\ndependencies = []\n"
	if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(pp), 0o644); err != nil {
		t.Fatal(err)
	}
	// TLS and proxy settings reach uv as they reach the agent's (uv.PassthroughVars).
	pass := map[string]string{}
	for _, name := range uv.PassthroughVars {
		if v := os.Getenv(name); v != "" {
			pass[name] = v
		}
	}
	ex := uv.New(uv.Config{
		Bin: testenv.UV(t), CacheDir: d.cache, LinkMode: "hardlink", DefaultIndex: realIndex(), Passthrough: pass,
		Path: "/usr/local/bin:/usr/bin:/bin", Home: t.TempDir(), WaitDelay: 5 * time.Second,
	}, slog.New(slog.DiscardHandler))
	if _, err := ex.Add(t.Context(), uv.Project{Dir: dir, Python: systemPython(t)}, []string{"numpy", "pandas", "scikit-learn"}, nil); err != nil {
		t.Fatalf("uv add: %v\n%s", err, uv.OutputOf(err))
	}
	want := "blas True True\npandas (2, 4) (8, 5)\nthreads True\nprocesses True\nfork [0, 1, 4, 9, 16]\n"
	forRunners(t, dropTiers, func(t *testing.T, r runKind, tier sandbox.Tier) {
		sb := d.sandbox(t, tier)
		sb.Limits = sandbox.Limits{
			CPUSeconds: config.DefaultRunCPUSeconds, MemoryBytes: config.DefaultRunMemoryBytes, FileBytes: config.DefaultRunFileBytes,
			OpenFiles: config.DefaultRunOpenFiles, Processes: config.DefaultRunProcesses,
		}
		sb = withRunLimits(t, sb, sandbox.RunLimits{MemoryBytes: config.DefaultRunTotalMemoryBytes, Processes: config.DefaultRunTotalProcesses})
		res := run(t, r, sb, dir, scientificCode, 5*time.Minute)
		if string(res.Stdout) != want || res.ExitReason != "exited" {
			t.Errorf("got exit_reason %q stdout\n%s\nwant\n%s", res.ExitReason, res.Stdout, want)
		}
		// Two runs draw different numbers from numpy's and Python's global generators (warm: two
		// children of one parent that imported both).
		draw := "import numpy, random\nprint(numpy.random.rand(), numpy.random.randint(1 << 30), random.random())"
		first, second := run(t, r, sb, dir, draw, time.Minute), run(t, r, sb, dir, draw, time.Minute)
		if first.ExitCode != 0 || string(first.Stdout) == string(second.Stdout) {
			t.Errorf("two runs drew %q and %q; want different numbers", first.Stdout, second.Stdout)
		}
	})
}
