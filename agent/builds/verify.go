package builds

import (
	"context"
	"encoding/csv"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/envfabric/envfabric/agent/flock"
)

// maxListed bounds the paths a PackageDamage lists of each kind.
const maxListed = 20

// PackageDamage is one installed distribution whose files do not match its RECORD.
type PackageDamage struct {
	Name, Version            string
	Missing, WrongSize       []string // paths as RECORD names them, at most maxListed each
	MissingCount, WrongCount int
}

// Check is the outcome of verifying a build.
type Check struct {
	ID           string
	Complete     bool
	Intact       bool
	Damaged      []PackageDamage
	FilesChecked int64
	BytesChecked int64
}

// DamagedNames are the names of the damaged distributions.
func (c Check) DamagedNames() []string {
	out := make([]string, 0, len(c.Damaged))
	for _, d := range c.Damaged {
		out = append(out, d.Name)
	}
	return out
}

// Verify checks build id against every installed distribution's RECORD: each listed file must
// exist with its recorded size. Contents are not hashed (stat only), which keeps a check of a
// large build to metadata I/O. It holds the build's lock shared (waiting, bounded by ctx), so a
// removal or repair does not pass for damage.
func (s *Store) Verify(ctx context.Context, id string) (Check, error) {
	if err := checkID(id); err != nil {
		return Check{}, err
	}
	m := s.marker(id)
	if m == nil {
		return Check{ID: id}, nil
	}
	release, err := s.holdForCheck(ctx, id)
	if err != nil {
		return Check{}, err
	}
	defer release()
	return s.verify(ctx, id, s.marker(id)), nil
}

func (s *Store) holdForCheck(ctx context.Context, id string) (func(), error) {
	l, err := flock.Wait(ctx, s.lockPath(id), flock.Shared)
	if err != nil {
		return nil, s.busy(err, id)
	}
	return l.Release, nil
}

// verify is Verify for a caller that holds the lock; m is the build's marker (nil: incomplete).
func (s *Store) verify(ctx context.Context, id string, m *Marker) Check {
	c := Check{ID: id, Complete: m != nil}
	if m == nil {
		return c
	}
	sp := SitePackages(s.Venv(id))
	if sp == "" {
		c.Damaged = append(c.Damaged, PackageDamage{Name: "(site-packages)", Missing: []string{"lib/python*/site-packages"}, MissingCount: 1})
		return c
	}
	present := map[string]bool{}
	infos, _ := filepath.Glob(filepath.Join(sp, "*.dist-info"))
	for _, d := range infos {
		if ctx.Err() != nil {
			break
		}
		p := distInfoPackage(filepath.Base(d))
		present[p.Name] = true
		dmg := checkRecord(sp, filepath.Join(d, "RECORD"), &c)
		if dmg.MissingCount+dmg.WrongCount > 0 {
			dmg.Name, dmg.Version = p.Name, p.Version
			c.Damaged = append(c.Damaged, dmg)
		}
	}
	// A distribution the marker lists whose dist-info is gone is damaged as a whole.
	for _, p := range m.Packages {
		if !present[p.Name] {
			c.Damaged = append(c.Damaged, PackageDamage{Name: p.Name, Version: p.Version,
				Missing: []string{p.Name + "-" + p.Version + ".dist-info/RECORD"}, MissingCount: 1})
		}
	}
	sort.Slice(c.Damaged, func(i, j int) bool { return c.Damaged[i].Name < c.Damaged[j].Name })
	c.Intact = len(c.Damaged) == 0 && ctx.Err() == nil
	return c
}

// checkRecord compares the files one RECORD lists with the disk. Paths are relative to
// site-packages (scripts are ../../../bin/x); entries without a size (RECORD itself, files
// written after install such as .pyc) are not checked.
func checkRecord(sp, record string, c *Check) PackageDamage {
	var d PackageDamage
	f, err := os.Open(record)
	if err != nil {
		d.Missing, d.MissingCount = []string{filepath.Base(filepath.Dir(record)) + "/RECORD"}, 1
		return d
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	for {
		row, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || len(row) < 3 || row[2] == "" {
			continue
		}
		size, err := strconv.ParseInt(row[2], 10, 64)
		if err != nil {
			continue
		}
		c.FilesChecked++
		fi, err := os.Stat(filepath.Join(sp, filepath.FromSlash(row[0])))
		switch {
		case err != nil:
			d.MissingCount++
			if len(d.Missing) < maxListed {
				d.Missing = append(d.Missing, row[0])
			}
		case fi.Size() != size:
			d.WrongCount++
			if len(d.WrongSize) < maxListed {
				d.WrongSize = append(d.WrongSize, row[0])
			}
		default:
			c.BytesChecked += size
		}
	}
	return d
}
