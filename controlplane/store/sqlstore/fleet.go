package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/envfabric/envfabric/controlplane/store"
)

// AdoptSetting implements store.Store.
func (s *Store) AdoptSetting(ctx context.Context, name, value string, now time.Time) (string, error) {
	var got string
	err := s.tx(ctx, func(_ *sql.Tx, r runner) error {
		if _, err := r.exec(ctx, `INSERT INTO fleet_settings (name, value, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO NOTHING`, name, value, s.time(orNow(now))); err != nil {
			return err
		}
		return r.row(ctx, `SELECT value FROM fleet_settings WHERE name = $1`, name).Scan(&got)
	})
	if err != nil {
		return "", fmt.Errorf("adopt setting %s: %w", name, err)
	}
	return got, nil
}

// Setting implements store.Store.
func (s *Store) Setting(ctx context.Context, name string) (string, error) {
	var got string
	err := s.read().row(ctx, `SELECT value FROM fleet_settings WHERE name = $1`, name).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read setting %s: %w", name, err)
	}
	return got, nil
}

// AcquireLeadership implements store.Store. The conditional upsert is one statement, so two
// control planes racing for an expired term cannot both win it.
func (s *Store) AcquireLeadership(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	now = orNow(now)
	res, err := s.exec(ctx, `INSERT INTO leaders (name, holder, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leaders.holder = excluded.holder OR leaders.expires_at <= $4`,
		name, holder, s.time(now.Add(ttl)), s.time(now))
	if err != nil {
		return false, fmt.Errorf("acquire leadership %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("acquire leadership %s: %w", name, err)
	}
	return n == 1, nil
}

// ResignLeadership implements store.Store.
func (s *Store) ResignLeadership(ctx context.Context, name, holder string) error {
	if _, err := s.exec(ctx, `DELETE FROM leaders WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("resign leadership %s: %w", name, err)
	}
	return nil
}

var _ store.Prober = (*Store)(nil)

// ProbeWrite implements store.Prober.
func (s *Store) ProbeWrite(ctx context.Context, name, holder string, now time.Time) error {
	if _, err := s.exec(ctx, `INSERT INTO readiness_probes (name, holder, probed_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, probed_at = excluded.probed_at`,
		name, holder, s.time(orNow(now))); err != nil {
		return fmt.Errorf("write probe to the %s database: %w", s.d.Name(), err)
	}
	return nil
}
