package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/envfabric/envfabric/controlplane/api"
	"github.com/envfabric/envfabric/controlplane/config"
	"github.com/envfabric/envfabric/controlplane/diskspace"
	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/controlplane/store/sqlite"
)

// readiness returns /readyz's checks of the audit database and of the disk under DATA_ROOT, each
// named in the answer with its failure, and gives the SQLite store its disk reserve.
//
//   - database: a real write (store.Prober), since SELECT 1 passes on a full disk or a read-only
//     server.
//   - database_file (SQLite): the path still names the file the store opened; removed or replaced,
//     writes "succeed" into the unlinked file and are lost at restart.
//   - disk_space: free space under DATA_ROOT is at least DATA_ROOT_MIN_FREE_BYTES. With SQLite
//     the check also keeps the database's reserve (see package diskspace). With PostgreSQL the
//     control plane keeps nothing under DATA_ROOT and, in a fleet, does not mount it: the check
//     runs only when DATA_ROOT is there.
func readiness(cfg config.Config, st store.Store, log *slog.Logger) (map[string]api.Checker, error) {
	prober, ok := st.(store.Prober)
	if !ok {
		return nil, fmt.Errorf("the audit database (%T) has no write probe", st)
	}
	checks := map[string]api.Checker{
		"database": func(ctx context.Context) error { return prober.ProbeWrite(ctx, "readyz", cfg.InstanceID, time.Now()) },
	}
	guard := &diskspace.Guard{Root: cfg.DataRoot, Min: uint64(cfg.MinFreeBytes), Log: log}
	if sq, ok := st.(*sqlite.Store); ok {
		checks["database_file"] = sq.CheckFile
		if cfg.ReserveBytes > 0 {
			guard.Ballast = &diskspace.Ballast{Path: cfg.ReservePath, Size: cfg.ReserveBytes, Log: log}
			if err := guard.Ballast.Ensure(); err != nil {
				// The disk may be full right now: serve anyway, the guard writes it once there is room.
				log.Warn("no disk reserve for the audit database yet", "err", err)
			}
			sq.SetReserve(guard.Ballast)
		}
	} else if fi, err := os.Stat(cfg.DataRoot); err != nil || !fi.IsDir() {
		log.Info("DATA_ROOT is not on this host: its free space is not checked here", "data_root", cfg.DataRoot)
		return checks, nil
	}
	if cfg.MinFreeBytes > 0 || guard.Ballast != nil {
		checks["disk_space"] = guard.Check
	}
	return checks, nil
}
