package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

const leaseCols = `id, workflow_id, node_id, version_id, mode, holder, operation, operation_id, acquired_at, expires_at`

func (s *Store) scanLease(r scanner) (store.Lease, error) {
	var l store.Lease
	err := r.Scan(&l.ID, &l.Key.WorkflowID, &l.Key.NodeID, &l.Key.VersionID, &l.Mode, &l.Holder,
		&l.Operation, &l.OperationID, s.scanTime(&l.AcquiredAt), s.scanTime(&l.ExpiresAt))
	return l, err
}

// AcquireLease implements store.Store: under the key's lock, drop the key's expired leases, look
// for one in the way, else insert the new one.
func (s *Store) AcquireLease(ctx context.Context, req store.LeaseRequest) (store.Lease, error) {
	now := s.round(orNow(req.Now))
	k := req.Key
	if !req.Mode.Valid() {
		return store.Lease{}, fmt.Errorf("acquire lease on %s: unknown lease mode %q", k, req.Mode)
	}
	l := store.Lease{
		ID: newLeaseID(), Key: k, Mode: req.Mode, Holder: req.Holder, Operation: req.Operation,
		OperationID: req.OperationID, AcquiredAt: now, ExpiresAt: s.round(now.Add(req.TTL)),
	}
	err := s.tx(ctx, func(tx *sql.Tx, r runner) error {
		if err := s.d.LockKey(ctx, tx, envLockKey(k)...); err != nil {
			return err
		}
		if _, err := r.exec(ctx, `DELETE FROM env_leases
			WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND expires_at <= $4`,
			k.WorkflowID, k.NodeID, k.VersionID, s.time(now)); err != nil {
			return err
		}
		// The held modes in the way are store.LeaseMode.Conflicts's; a change or delete in the
		// way is named before a run (it says more about how long the wait is).
		in, args := modeIn(5, req.Mode.ConflictingModes())
		held, err := s.scanLease(r.row(ctx, `SELECT `+leaseCols+` FROM env_leases
			WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND mode IN (`+in+`)
			ORDER BY CASE WHEN mode = $4 THEN 1 ELSE 0 END, acquired_at, id LIMIT 1`,
			append([]any{k.WorkflowID, k.NodeID, k.VersionID, string(store.LeaseRun)}, args...)...))
		if err == nil {
			return &store.LockedError{Held: held}
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err = r.exec(ctx, `INSERT INTO env_leases (`+leaseCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			l.ID, k.WorkflowID, k.NodeID, k.VersionID, string(l.Mode), l.Holder, l.Operation, l.OperationID,
			s.time(l.AcquiredAt), s.time(l.ExpiresAt))
		return err
	})
	if err != nil {
		return store.Lease{}, fmt.Errorf("acquire lease on %s: %w", k, err)
	}
	return l, nil
}

// RenewLease implements store.Store.
func (s *Store) RenewLease(ctx context.Context, id string, now time.Time, ttl time.Duration) error {
	now = orNow(now)
	res, err := s.exec(ctx, `UPDATE env_leases SET expires_at = $1 WHERE id = $2 AND expires_at > $3`,
		s.time(now.Add(ttl)), id, s.time(now))
	if err == nil {
		err = oneRow(res)
	}
	if errors.Is(err, store.ErrNotFound) {
		err = store.ErrLeaseLost
	}
	if err != nil {
		return fmt.Errorf("renew lease %s: %w", id, err)
	}
	return nil
}

// ReleaseLease implements store.Store.
func (s *Store) ReleaseLease(ctx context.Context, id string) error {
	if _, err := s.exec(ctx, `DELETE FROM env_leases WHERE id = $1`, id); err != nil {
		return fmt.Errorf("release lease %s: %w", id, err)
	}
	return nil
}

// ListLeases implements store.Store.
func (s *Store) ListLeases(ctx context.Context, key envid.Key, now time.Time) ([]store.Lease, error) {
	rows, err := s.read().query(ctx, `SELECT `+leaseCols+` FROM env_leases
		WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND expires_at > $4 ORDER BY acquired_at, id`,
		key.WorkflowID, key.NodeID, key.VersionID, s.time(orNow(now)))
	leases, err := collect(rows, err, s.scanLease)
	if err != nil {
		return nil, fmt.Errorf("list leases on %s: %w", key, err)
	}
	return leases, nil
}

// CountLeases implements store.Store.
func (s *Store) CountLeases(ctx context.Context, now time.Time, changesOnly bool) (int, error) {
	var n int
	err := s.read().row(ctx, `SELECT count(*) FROM env_leases WHERE expires_at > $1 AND (mode <> $2 OR NOT $3)`,
		s.time(orNow(now)), string(store.LeaseRun), changesOnly).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count leases: %w", err)
	}
	return n, nil
}

// fence returns store.ErrLeaseLost unless leaseID is a live lease on key at now, and holds the
// lease row until the transaction ends so that it cannot be released under the caller.
func (s *Store) fence(ctx context.Context, r runner, key envid.Key, leaseID string, now time.Time) error {
	var one int
	err := r.row(ctx, `SELECT 1 FROM env_leases
		WHERE id = $1 AND workflow_id = $2 AND node_id = $3 AND version_id = $4 AND expires_at > $5`+s.d.RowLock("FOR SHARE"),
		leaseID, key.WorkflowID, key.NodeID, key.VersionID, s.time(now)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrLeaseLost
	}
	return err
}

// modeIn is a list of placeholders $first, $first+1, ... for modes (an IN list, the one form of
// "one of these" both dialects take), and the arguments they stand for. An empty list is never
// true: IN (”) matches no mode.
func modeIn(first int, modes []store.LeaseMode) (string, []any) {
	if len(modes) == 0 {
		return fmt.Sprintf("$%d", first), []any{""}
	}
	marks := make([]string, len(modes))
	args := make([]any, len(modes))
	for i, m := range modes {
		marks[i] = fmt.Sprintf("$%d", first+i)
		args[i] = string(m)
	}
	return strings.Join(marks, ", "), args
}
