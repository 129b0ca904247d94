// Package pgtest starts a private, throwaway PostgreSQL server for tests: its own data directory
// in a temporary directory, its own port on 127.0.0.1, trust authentication, fsync off.
//
// It runs the real server from Debian's postgresql package (/usr/lib/postgresql/<version>/bin,
// the highest version installed); .ci/run installs that package, so in CI (CI=true) a missing
// PostgreSQL fails the tests instead of skipping them. initdb and postgres refuse to run as root;
// under root they run as the "postgres" system user the package creates. The machine's own
// cluster is never touched.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotInstalled is returned by Start when no PostgreSQL server binaries are found.
var ErrNotInstalled = errors.New("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres)")

// Server is a running (or stopped) private PostgreSQL server.
type Server struct {
	bin  string // directory of initdb and postgres
	dir  string // temporary directory: data/, the socket, postgres.log
	port int
	cred *syscall.Credential // nil unless running as root
	logf func(string, ...any)
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	dbs  atomic.Int64
}

// Start initialises a data directory and starts a server on a free port. logf (may be nil)
// receives progress messages. Close the server when done.
func Start(ctx context.Context, logf func(string, ...any)) (*Server, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, logf: logf}
	tmpRoot := ""
	if os.Geteuid() == 0 {
		// Run as the postgres user, in a directory it owns under /tmp (which it can traverse).
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		tmpRoot = "/tmp"
	}
	if s.dir, err = os.MkdirTemp(tmpRoot, "pgtest-"); err != nil {
		return nil, fmt.Errorf("create pgtest directory: %w", err)
	}
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			s.Close()
			return nil, fmt.Errorf("chown pgtest directory: %w", err)
		}
	}
	initdb := s.command(ctx, "initdb", "-D", s.dataDir(), "-A", "trust", "-U", "postgres", "--no-sync",
		"-E", "UTF8", "--locale=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		s.Close()
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if s.port, err = freePort(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// StartT starts a server for t and closes it at t.Cleanup. Without PostgreSQL it skips t, unless
// CI=true, where PostgreSQL tests must run: then it fails t.
func StartT(t testing.TB) *Server {
	t.Helper()
	s, err := Start(t.Context(), t.Logf)
	if err != nil {
		Unavailable(t, err)
	}
	t.Cleanup(s.Close)
	return s
}

// Unavailable ends t for a Start error: a skip when PostgreSQL is not installed and CI is not
// "true", a failure otherwise. For TestMain, which starts one server per package and hands the
// error on to the tests.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	t.Fatalf("start PostgreSQL: %v", err)
}

// findBin returns the bin directory of the highest PostgreSQL version installed.
func findBin() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	version := func(p string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return v
	}
	if len(matches) == 0 {
		return "", ErrNotInstalled
	}
	best := slices.MaxFunc(matches, func(a, b string) int { return version(a) - version(b) })
	return filepath.Dir(best), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

// Start (re)starts the server on its data directory and port and waits until it accepts
// connections. It is for tests that Stop the database and bring it back.
func (s *Server) Start(ctx context.Context) error {
	if s.cmd != nil {
		return errors.New("pgtest: server already running")
	}
	logFile, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	defer logFile.Close()
	// Not CommandContext: the server outlives ctx, which bounds only the start.
	cmd := s.command(context.Background(), "postgres", "-D", s.dataDir(), "-p", strconv.Itoa(s.port),
		"-k", s.dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Die with the test binary rather than linger when it is killed.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done = cmd, done

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			s.logf("pgtest: PostgreSQL (%s) ready on port %d, data in %s", s.bin, s.port, s.dir)
			return nil
		}
		select {
		case <-done:
			s.cmd = nil
			return fmt.Errorf("postgres exited while starting: %s\n%s", cmd.ProcessState, s.logTail())
		case <-ctx.Done():
			s.Stop()
			return fmt.Errorf("postgres not ready: %w (last error: %v)\n%s", ctx.Err(), err, s.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

// Stop shuts the server down (fast shutdown: sessions are disconnected) and waits for it to exit.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	s.Stop()
	if err := os.RemoveAll(s.dir); err != nil {
		s.logf("pgtest: remove %s: %v", s.dir, err)
	}
}

// Bin is the directory of the server's programs (pg_dump, pg_restore, psql of the same version).
func (s *Server) Bin() string { return s.bin }

// URL is the connection URL of database dbname as the superuser "postgres".
func (s *Server) URL(dbname string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, dbname)
}

// NewDatabase creates an empty database with a unique name and returns its URL.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d_%s", s.dbs.Add(1), strings.ToLower(sanitize(t.Name())))
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return s.URL(name)
}

// sanitize keeps a database name readable and within PostgreSQL's 63 bytes.
func sanitize(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	if len(b) > 40 {
		b = b[len(b)-40:]
	}
	return string(b)
}
