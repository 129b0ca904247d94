package osv

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/envfabric/envfabric/controlplane/pep440"
	"github.com/envfabric/envfabric/shared/pyproject"
)

// maxRecord bounds one record: OSV records are a few kilobytes; PyPI's largest are under 1 MiB.
const maxRecord = 8 << 20

// DB is a loaded set of advisories, read-only once loaded and safe for concurrent use.
type DB struct {
	// Source is the path it was loaded from.
	Source string
	// Records is how many advisories were kept; Withdrawn how many were ignored as withdrawn
	// (or affecting no PyPI package); Bad lists the records that could not be read.
	Records   int
	Withdrawn int
	Bad       []string

	byPackage map[string][]hit
	byID      map[string]*Advisory
}

// hit is one advisory's entry for one package.
type hit struct {
	adv *Advisory
	aff *Affected
}

// Match is one advisory affecting one package version.
type Match struct {
	Advisory *Advisory
	// Fixed lists the versions that fix it for the package.
	Fixed []string
}

// Empty is a DB without advisories, for a control plane without OSV_DATA.
func Empty() *DB { return &DB{byPackage: map[string][]hit{}, byID: map[string]*Advisory{}} }

// Len is how many advisories the DB holds.
func (db *DB) Len() int { return len(db.byID) }

// Packages lists the package names with at least one advisory.
func (db *DB) Packages() []string {
	out := make([]string, 0, len(db.byPackage))
	for p := range db.byPackage {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Advisory returns one advisory by id.
func (db *DB) Advisory(id string) (*Advisory, bool) {
	a, ok := db.byID[id]
	return a, ok
}

// Affecting returns the advisories that affect version of package name, in id order. A
// version that is not PEP 440 matches nothing.
func (db *DB) Affecting(name, version string) []Match {
	hits := db.byPackage[pyproject.Normalize(name)]
	if len(hits) == 0 {
		return nil
	}
	v, err := pep440.Parse(version)
	if err != nil {
		return nil
	}
	var out []Match
	for _, h := range hits {
		if h.aff.Affects(v) {
			out = append(out, Match{Advisory: h.adv, Fixed: h.aff.Fixed})
		}
	}
	return out
}

// Load reads a directory of OSV JSON records (recursively, *.json) or a zip of them.
func Load(path string) (*DB, error) {
	db := Empty()
	db.Source = path
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading OSV data: %w", err)
	}
	if st.IsDir() {
		err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(d.Name(), ".json") {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			db.add(p, f)
			return nil
		})
	} else {
		err = db.loadZip(path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading OSV data at %s: %w", path, err)
	}
	for _, hits := range db.byPackage {
		sort.Slice(hits, func(i, j int) bool { return hits[i].adv.ID < hits[j].adv.ID })
	}
	return db, nil
}

func (db *DB) loadZip(path string) error {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return fmt.Errorf("not a directory and not a zip: %w", err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || !strings.HasSuffix(f.Name, ".json") {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			db.Bad = append(db.Bad, f.Name+": "+err.Error())
			continue
		}
		db.add(f.Name, rc)
		rc.Close()
	}
	return nil
}

// add reads one record; a bad record is listed in Bad and does not stop the load (one broken
// file in a dataset of thousands must not hide the others).
func (db *DB) add(name string, r io.Reader) {
	b, err := io.ReadAll(io.LimitReader(r, maxRecord+1))
	if err == nil && len(b) > maxRecord {
		err = errors.New("larger than 8 MiB")
	}
	if err != nil {
		db.Bad = append(db.Bad, name+": "+err.Error())
		return
	}
	a, ok, err := parseRecord(b)
	switch {
	case err != nil:
		db.Bad = append(db.Bad, name+": "+err.Error())
		return
	case !ok:
		db.Withdrawn++
		return
	}
	if old, dup := db.byID[a.ID]; dup {
		if !a.Modified.After(old.Modified) {
			return
		}
		db.remove(old)
	}
	db.byID[a.ID] = a
	db.Records = len(db.byID)
	for i := range a.Affected {
		aff := &a.Affected[i]
		db.byPackage[aff.Package] = append(db.byPackage[aff.Package], hit{adv: a, aff: aff})
	}
}

func (db *DB) remove(a *Advisory) {
	for _, aff := range a.Affected {
		hits := db.byPackage[aff.Package]
		kept := hits[:0]
		for _, h := range hits {
			if h.adv != a {
				kept = append(kept, h)
			}
		}
		db.byPackage[aff.Package] = kept
	}
	delete(db.byID, a.ID)
}
