package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/envfabric/envfabric/controlplane/config"
	"github.com/envfabric/envfabric/controlplane/dbcopy"
	sharedconfig "github.com/envfabric/envfabric/shared/config"
	"github.com/envfabric/envfabric/shared/logging"
)

// migrate is `controlplane migrate`: copy a single host's SQLite database into PostgreSQL. Its
// defaults are the serving configuration's (the SQLite file under DATA_ROOT, DATABASE_URL), so
// it runs with the same environment file as the service. The exit status is 0 when the copy was
// committed and verified, 1 when it failed (nothing committed), 2 for a usage error.
func migrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: controlplane migrate [-from FILE] [-to URL] [-replace]

Copies a single-host fabric's SQLite database (environments, every revision, the whole audit
with its operation ids, the fleet id) into PostgreSQL, in one transaction, verified table by
table. Stop the single-host control plane first; start the fleet's control planes on the
PostgreSQL database afterwards. Both databases are migrated to this binary's schema first.

`)
		fs.PrintDefaults()
	}
	cfg, cfgErr := config.Load(sharedconfig.Env())
	from := fs.String("from", cfg.SQLitePath, "the SQLite database (default: $DATA_ROOT/controlplane/fabric.db)")
	to := fs.String("to", cfg.DatabaseURL, "the PostgreSQL database (default: $DATABASE_URL)")
	replace := fs.Bool("replace", false, "delete what the PostgreSQL database holds instead of refusing a database that is not empty")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "controlplane migrate: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *from == "" || *to == "" {
		if cfgErr != nil {
			fmt.Fprintf(stderr, "controlplane migrate: configuration:\n%v\n", cfgErr)
		}
		fmt.Fprintln(stderr, "controlplane migrate: needs the SQLite database (-from or DATA_ROOT) and the PostgreSQL database (-to or DATABASE_URL)")
		return 2
	}
	log := logging.New(stderr, cfg.Log, "controlplane")
	rep, err := dbcopy.Copy(ctx, dbcopy.Options{SQLitePath: *from, PostgresURL: *to, Replace: *replace, Log: log})
	if err != nil {
		fmt.Fprintf(stderr, "controlplane migrate: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "copied %s into PostgreSQL at schema version %d, verified:\n", *from, rep.SchemaVersion)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tROWS\tSHA-256")
	for _, t := range rep.Tables {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", t.Name, t.Rows, t.Digest)
	}
	tw.Flush()
	return 0
}
