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

// backup is `controlplane backup -to FILE`: a consistent copy of the single host's SQLite
// database, taken while the control plane serves.
func backup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: controlplane backup -to FILE [-from FILE]

Writes a consistent copy of a single host's SQLite database (SQLite's VACUUM INTO) to FILE,
which must not exist, while the control plane keeps serving. To restore: stop the control
plane, remove fabric.db, fabric.db-wal and fabric.db-shm, put the copy in place as fabric.db,
start it (docs/operations.md). PostgreSQL is backed up with pg_dump.

`)
		fs.PrintDefaults()
	}
	cfg, cfgErr := config.Load(sharedconfig.Env())
	from := fs.String("from", cfg.SQLitePath, "the SQLite database (default: $DATA_ROOT/controlplane/fabric.db)")
	to := fs.String("to", "", "the backup file to write")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *to == "" || *from == "" {
		if cfgErr != nil && *from == "" {
			fmt.Fprintf(stderr, "controlplane backup: configuration:\n%v\n", cfgErr)
		}
		fs.Usage()
		return 2
	}
	if err := dbcopy.Backup(ctx, *from, *to); err != nil {
		fmt.Fprintf(stderr, "controlplane backup: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "backed up %s to %s\n", *from, *to)
	return 0
}

// restore is `controlplane restore -from BACKUP`: with the control plane stopped, put a backup
// of the single host's SQLite database in place and advance its ids (dbcopy.RestoreSQLite).
func restore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: controlplane restore -from BACKUP [-to FILE] [-id-gap N]

With the control plane stopped, puts BACKUP (from controlplane backup) in place of the single
host's SQLite database, keeping what it replaces beside it (fabric.db.replaced-<time>), and
advances every id sequence by the gap, so that new operation ids pass those of the operations
after the backup, which the agents have seen. Then start the control plane and sync the
environments whose status says files_match_revision: false (docs/operations.md).

`)
		fs.PrintDefaults()
	}
	cfg, cfgErr := config.Load(sharedconfig.Env())
	from := fs.String("from", "", "the backup to restore")
	to := fs.String("to", cfg.SQLitePath, "the SQLite database to replace (default: $DATA_ROOT/controlplane/fabric.db)")
	gap := fs.Int64("id-gap", dbcopy.DefaultIDGap, "how far to advance every id sequence")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || *from == "" || *to == "" {
		if cfgErr != nil && *to == "" {
			fmt.Fprintf(stderr, "controlplane restore: configuration:\n%v\n", cfgErr)
		}
		fs.Usage()
		return 2
	}
	replaced, seqs, err := dbcopy.RestoreSQLite(ctx, *from, *to, *gap)
	if err != nil {
		fmt.Fprintf(stderr, "controlplane restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "restored %s from %s\n", *to, *from)
	if replaced != "" {
		fmt.Fprintf(stdout, "the database it replaced is kept as %s\n", replaced)
	}
	printSequences(stdout, seqs)
	return 0
}

// advanceIDs is `controlplane advance-ids`: after pg_restore (or any restore), move every id
// sequence of the configured database forward (dbcopy.AdvanceIDs).
func advanceIDs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane advance-ids", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: controlplane advance-ids [-sqlite FILE | -database URL] [-by N]

Advances every id sequence of a restored database by N, so that new operation ids pass those
of the operations after the backup, which the agents have seen (they refuse an older operation
id with ENV_LOCKED). Run it after pg_restore, before starting the control planes.

`)
		fs.PrintDefaults()
	}
	cfg, cfgErr := config.Load(sharedconfig.Env())
	sqlitePath := fs.String("sqlite", cfg.SQLitePath, "the SQLite database, when no PostgreSQL database is given")
	url := fs.String("database", cfg.DatabaseURL, "the PostgreSQL database (default: $DATABASE_URL)")
	by := fs.Int64("by", dbcopy.DefaultIDGap, "how far to advance every id sequence")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 || (*url == "" && *sqlitePath == "") {
		if cfgErr != nil {
			fmt.Fprintf(stderr, "controlplane advance-ids: configuration:\n%v\n", cfgErr)
		}
		fs.Usage()
		return 2
	}
	seqs, err := dbcopy.AdvanceIDs(ctx, *sqlitePath, *url, *by)
	if err != nil {
		fmt.Fprintf(stderr, "controlplane advance-ids: %v\n", err)
		return 1
	}
	printSequences(stdout, seqs)
	return 0
}

func printSequences(w io.Writer, seqs []dbcopy.SequenceReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQUENCE\tFROM\tTO")
	for _, s := range seqs {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", s.Name, s.From, s.To)
	}
	tw.Flush()
}
