package app

// The fleet's identity, held by its shared storage: the agents and control planes that share one
// storage and one gossip cluster are one fleet, and this file on the storage names it.

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FleetIDFile is where, under DATA_ROOT, the shared storage keeps its identity. The first agent
// on a fresh share writes it; every agent gossips it, and control planes refuse agents whose
// storage has another identity (they would be working on a different share).
const FleetIDFile = ".envfabric-fleet-id"

// fleetID reads the storage's identity, creating it when this is the first agent on the share.
func fleetID(dataRoot string, logger *slog.Logger) (string, error) {
	p := filepath.Join(dataRoot, FleetIDFile)
	for range 3 {
		b, err := os.ReadFile(p)
		if err == nil {
			id := strings.TrimSpace(string(b))
			if id == "" {
				// Being written by another agent right now, or truncated: try again shortly.
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return id, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read the fleet id %s: %w", p, err)
		}
		raw := make([]byte, 16)
		rand.Read(raw)
		id := "fleet-" + hex.EncodeToString(raw)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue // another agent won the race: read its id
		}
		if err != nil {
			return "", fmt.Errorf("create the fleet id %s: %w", p, err)
		}
		_, werr := f.WriteString(id + "\n")
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return "", fmt.Errorf("write the fleet id %s: %w", p, werr)
		}
		logger.Warn("this share had no fleet id; this agent created one. Every agent of the fleet must mount the same share",
			"fleet_id", id, "path", p)
		return id, nil
	}
	return "", fmt.Errorf("the fleet id file %s stays empty", p)
}
