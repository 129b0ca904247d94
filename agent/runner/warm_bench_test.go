package runner_test

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/envfabric/envfabric/agent/config"
	"github.com/envfabric/envfabric/agent/runner"
	"github.com/envfabric/envfabric/agent/sandbox"
	"github.com/envfabric/envfabric/agent/uv"
	"github.com/envfabric/envfabric/agent/warm"
	"github.com/envfabric/envfabric/shared/testutil/testenv"
)

// BenchmarkWarm compares, for `pass` and for `import numpy, pandas` with a small DataFrame
// operation: the environment's python started directly, a cold run and a warm run, in the
// namespace tier with the agent's default limits. numpy and pandas come from the real index:
//
//	UV_BIN=... go test ./agent/runner -run '^$' -bench Warm -benchtime 20x
func BenchmarkWarm(b *testing.B) {
	d := benchData(b)
	dir := filepath.Join(d.root, "envs", "sci")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	pp := "[project]\nname = \"sci\"\nversion = \"0.1.0\"\nrequires-python = \">=3.9\"\ndependencies = []\n"
	if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(pp), 0o644); err != nil {
		b.Fatal(err)
	}
	pass := map[string]string{}
	for _, name := range uv.PassthroughVars {
		if v := os.Getenv(name); v != "" {
			pass[name] = v
		}
	}
	ex := uv.New(uv.Config{
		Bin: testenv.UV(b), CacheDir: filepath.Join(d.root, "uv_cache"), LinkMode: "hardlink", DefaultIndex: realIndex(), Passthrough: pass,
		Path: "/usr/local/bin:/usr/bin:/bin", Home: b.TempDir(), WaitDelay: 5 * time.Second,
	}, slog.New(slog.DiscardHandler))
	if _, err := ex.Add(b.Context(), uv.Project{Dir: dir, Python: "/usr/bin/python3"}, []string{"numpy", "pandas"}, nil); err != nil {
		b.Fatalf("uv add: %v\n%s", err, uv.OutputOf(err))
	}
	venv := filepath.Join(dir, ".venv")
	// Bytecode present for every way of running (a run cannot write it: the environment is
	// read-only to the run user, and PYTHONDONTWRITEBYTECODE may be set).
	if out, err := exec.Command(filepath.Join(venv, "bin", "python"), "-m", "compileall", "-q", "-j", "0", filepath.Join(venv, "lib")).CombinedOutput(); err != nil {
		b.Fatalf("compileall: %v %s", err, out)
	}
	sb := sandbox.Config{Tier: sandbox.Namespace, UID: d.uid, GID: d.gid, Hide: []string{d.root}, Limits: sandbox.Limits{
		CPUSeconds: config.DefaultRunCPUSeconds, MemoryBytes: config.DefaultRunMemoryBytes, FileBytes: config.DefaultRunFileBytes,
		OpenFiles: config.DefaultRunOpenFiles, Processes: config.DefaultRunProcesses,
	}}
	if err := sb.Probe(sandbox.Program{}); err != nil {
		b.Skipf("namespace tier unavailable: %v", err)
	}
	pool := warm.New(warm.Config{Sandbox: sb, MemoryBytes: 2 << 30, ParentsPerBuild: 1, WaitFree: time.Minute, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	defer pool.Close()
	build := warm.Build{ID: "sci", Venv: venv}
	if err := pool.Prestart(b.Context(), build); err != nil {
		b.Fatal(err)
	}
	codes := []struct{ name, code string }{
		{"pass", "pass"},
		{"numpy+pandas", "import numpy, pandas\ndf = pandas.DataFrame({'a': numpy.arange(100)})\nprint(df['a'].sum())"},
	}
	for _, c := range codes {
		spec := runner.Spec{VenvDir: venv, Code: c.code, Timeout: time.Minute, MaxOutput: 1 << 20, Sandbox: sb}
		if _, err := runner.Run(b.Context(), spec); err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/direct", func(b *testing.B) {
			main := filepath.Join(b.TempDir(), "main.py")
			if err := os.WriteFile(main, []byte(c.code), 0o644); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if out, err := exec.Command(filepath.Join(venv, "bin", "python"), main).CombinedOutput(); err != nil {
					b.Fatalf("%v %s", err, out)
				}
			}
		})
		b.Run(c.name+"/cold", func(b *testing.B) {
			for b.Loop() {
				if res, err := runner.Run(b.Context(), spec); err != nil || res.ExitCode != 0 {
					b.Fatalf("%v %+v", err, res)
				}
			}
		})
		b.Run(c.name+"/warm", func(b *testing.B) {
			for b.Loop() {
				res, ok, err := pool.Run(b.Context(), build, spec)
				if err != nil || !ok || res.ExitCode != 0 {
					b.Fatalf("warm=%v %v %+v", ok, err, res)
				}
			}
		})
	}
}
