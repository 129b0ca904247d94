package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
	"github.com/envfabric/envfabric/shared/envid"
)

// BeginOperation implements store.Store.
func (s *Store) BeginOperation(ctx context.Context, op store.Operation) (int64, error) {
	if op.Status == "" {
		op.Status = store.OpRunning
	}
	if len(op.Params) == 0 {
		op.Params = json.RawMessage("{}")
	}
	k := op.Key
	var id int64
	err := s.write(func() error {
		return s.read().row(ctx, `INSERT INTO env_operations (workflow_id, node_id, version_id, operation,
			status, error_code, error_message, actor, request_id, agent, params, result, started_at, finished_at,
			duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id`,
			k.WorkflowID, k.NodeID, k.VersionID, op.Kind, op.Status, op.ErrorCode, op.ErrorMessage, op.Actor,
			op.RequestID, op.Agent, string(op.Params), nullJSON(op.Result), s.time(orNow(op.StartedAt)),
			s.nullTime(op.FinishedAt), op.DurationMS).Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("record %s operation on %s: %w", op.Kind, k, err)
	}
	return id, nil
}

// FinishOperation implements store.Store.
func (s *Store) FinishOperation(ctx context.Context, id int64, out store.Outcome) error {
	res, err := s.exec(ctx, `UPDATE env_operations SET status = $1, error_code = $2, error_message = $3,
		agent = COALESCE(NULLIF($4, ''), agent), result = $5, finished_at = $6, duration_ms = $7 WHERE id = $8`,
		out.Status, out.ErrorCode, out.ErrorMessage, out.Agent, nullJSON(out.Result), s.time(orNow(out.FinishedAt)),
		out.DurationMS, id)
	if err == nil {
		err = oneRow(res)
	}
	if err != nil {
		return fmt.Errorf("finish operation %d: %w", id, err)
	}
	return nil
}

const opCols = `id, workflow_id, node_id, version_id, operation, status, error_code, error_message, actor,
	request_id, agent, params, result, started_at, finished_at, duration_ms`

func (s *Store) scanOp(r scanner) (store.Operation, error) {
	var op store.Operation
	var params, result []byte // result NULL: nil
	err := r.Scan(&op.ID, &op.Key.WorkflowID, &op.Key.NodeID, &op.Key.VersionID, &op.Kind, &op.Status,
		&op.ErrorCode, &op.ErrorMessage, &op.Actor, &op.RequestID, &op.Agent, &params, &result,
		s.scanTime(&op.StartedAt), s.scanTime(&op.FinishedAt), &op.DurationMS)
	op.Params = params
	if result != nil {
		op.Result = result
	}
	return op, err
}

// ListOperations implements store.Store.
func (s *Store) ListOperations(ctx context.Context, key envid.Key, beforeID int64, limit int) ([]store.Operation, error) {
	rows, err := s.read().query(ctx, `SELECT `+opCols+` FROM env_operations
		WHERE workflow_id = $1 AND node_id = $2 AND version_id = $3 AND (CAST($4 AS bigint) <= 0 OR id < $4)
		ORDER BY id DESC LIMIT $5`, key.WorkflowID, key.NodeID, key.VersionID, beforeID, sqlLimit(limit))
	ops, err := collect(rows, err, s.scanOp)
	if err != nil {
		return nil, fmt.Errorf("list operations on %s: %w", key, err)
	}
	return ops, nil
}

// ListOperationsOfKind implements store.Store.
func (s *Store) ListOperationsOfKind(ctx context.Context, kind string, beforeID int64, limit int) ([]store.Operation, error) {
	rows, err := s.read().query(ctx, `SELECT `+opCols+` FROM env_operations
		WHERE operation = $1 AND (CAST($2 AS bigint) <= 0 OR id < $2)
		ORDER BY id DESC LIMIT $3`, kind, beforeID, sqlLimit(limit))
	ops, err := collect(rows, err, s.scanOp)
	if err != nil {
		return nil, fmt.Errorf("list %s operations: %w", kind, err)
	}
	return ops, nil
}

// GetOperation implements store.Store.
func (s *Store) GetOperation(ctx context.Context, id int64) (store.Operation, error) {
	op, err := s.scanOp(s.read().row(ctx, `SELECT `+opCols+` FROM env_operations WHERE id = $1`, id))
	if err != nil {
		return store.Operation{}, fmt.Errorf("get operation %d: %w", id, notFound(err))
	}
	return op, nil
}

// AbandonOperations implements store.Store. It runs under the key's lock, so that it sees every
// lease granted before it.
func (s *Store) AbandonOperations(ctx context.Context, key envid.Key, except int64, now time.Time) (int, error) {
	now = orNow(now)
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx, r runner) error {
		if err := s.d.LockKey(ctx, tx, envLockKey(key)...); err != nil {
			return err
		}
		res, err := r.exec(ctx, `UPDATE env_operations SET `+s.abandonedOutcome(7)+`,
				finished_at = $1, duration_ms = `+s.d.MillisBetween("started_at", "$1")+`
			WHERE workflow_id = $2 AND node_id = $3 AND version_id = $4 AND status = $5 AND id <> $6
				AND id NOT IN (SELECT operation_id FROM env_leases
					WHERE workflow_id = $2 AND node_id = $3 AND version_id = $4 AND expires_at > $1)`,
			append([]any{s.time(now), key.WorkflowID, key.NodeID, key.VersionID, store.OpRunning, except}, abandonedArgs()...)...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations on %s: %w", key, err)
	}
	return int(n), nil
}

// abandonedOutcome is how an operation whose holder is gone is closed, with its six arguments
// (abandonedArgs) from placeholder $first: succeeded when a revision carries its id (its commit
// landed; only the outcome row was never written), with that revision as its result, as the
// holder would have recorded it; failed as INTERRUPTED otherwise.
func (s *Store) abandonedOutcome(first int) string {
	committed := "id IN (SELECT operation_id FROM env_revisions)"
	col := func(name string, i int) string {
		return fmt.Sprintf("%s = CASE WHEN %s THEN $%d ELSE $%d END", name, committed, first+i, first+i+3)
	}
	revision := `(SELECT max(r.revision) FROM env_revisions r WHERE r.operation_id = env_operations.id)`
	result := fmt.Sprintf(`result = CASE WHEN %s THEN %s ELSE result END`, committed,
		s.d.JSON(`'{"revision": ' || CAST(`+revision+` AS text) || '}'`))
	return col("status", 0) + ", " + col("error_code", 1) + ", " + col("error_message", 2) + ", " + result
}

func abandonedArgs() []any {
	return []any{store.OpSucceeded, "", store.RecoveredMessage, store.OpFailed, store.ErrorCodeInterrupted, store.InterruptedMessage}
}

// envLockKey names the lock that serialises the transactions on one environment.
func envLockKey(k envid.Key) []string { return []string{"env", k.WorkflowID, k.NodeID, k.VersionID} }

// AbandonStaleOperations implements store.Store: the fleet-wide form of AbandonOperations, for
// the maintenance pass.
func (s *Store) AbandonStaleOperations(ctx context.Context, startedBefore, now time.Time) (int, error) {
	now = orNow(now)
	res, err := s.exec(ctx, `UPDATE env_operations SET `+s.abandonedOutcome(4)+`,
			finished_at = $1, duration_ms = `+s.d.MillisBetween("started_at", "$1")+`
		WHERE status = $2 AND started_at < $3
			AND id NOT IN (SELECT operation_id FROM env_leases WHERE expires_at > $1)`,
		append([]any{s.time(now), store.OpRunning, s.time(startedBefore)}, abandonedArgs()...)...)
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("close abandoned operations: %w", err)
	}
	return int(n), nil
}
