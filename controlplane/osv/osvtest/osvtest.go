// Package osvtest writes a small OSV dataset in the real OSV schema for the tests of the
// advisory features: several ranges, a versions list, a withdrawn record, aliases, a record of
// another ecosystem and each way of giving a severity. It covers the releases of
// pyindex.Universe. Import it only from _test.go files and test programs.
package osvtest

import (
	"archive/zip"
	"os"
	"path/filepath"
	"testing"
)

// The dataset's advisories, against pyindex.Universe:
//
//	GHSA-aaaa-1111-2222 alpha <1.1.0 and ==2.0.0 (two ranges: fixed, last_affected), CRITICAL by CVSS 9.8
//	PYSEC-2099-2        delta 0.1.0 (a versions list and a range fixed in 0.2.0), MEDIUM (MODERATE)
//	PYSEC-2099-3        beta, every version: WITHDRAWN, so it affects nothing
//	GHSA-cccc-5555-6666 alpha in npm: another ecosystem, ignored
//	PYSEC-2099-4        gamma <1.0.0 (fixed in 1.0.0: no release of the universe), LOW by CVSS 2.0
var Records = map[string]string{
	"GHSA-aaaa-1111-2222.json": `{
  "schema_version": "1.6.0",
  "id": "GHSA-aaaa-1111-2222",
  "modified": "2099-01-02T00:00:00Z",
  "published": "2099-01-01T00:00:00Z",
  "aliases": ["CVE-2099-0001", "PYSEC-2099-1"],
  "summary": "alpha evaluates untrusted input",
  "details": "Versions before 1.1.0, and 2.0.0, evaluate untrusted input.",
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
  "affected": [{
    "package": {"ecosystem": "PyPI", "name": "Alpha", "purl": "pkg:pypi/alpha"},
    "ranges": [
      {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1.0"}]},
      {"type": "ECOSYSTEM", "events": [{"introduced": "2.0.0"}, {"last_affected": "2.0.0"}]},
      {"type": "GIT", "repo": "https://git.invalid/alpha", "events": [{"introduced": "0"}, {"fixed": "abcdef"}]}
    ]
  }],
  "database_specific": {"severity": "CRITICAL", "github_reviewed": true}
}`,
	"PYSEC-2099-2.json": `{
  "id": "PYSEC-2099-2",
  "modified": "2099-01-03T00:00:00Z",
  "aliases": ["CVE-2099-0002", "GHSA-bbbb-3333-4444"],
  "details": "delta 0.1.0 leaks memory.\nMore text.",
  "affected": [{
    "package": {"ecosystem": "PyPI", "name": "delta"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0.1.0"}, {"fixed": "0.2.0"}]}],
    "versions": ["0.1.0"],
    "database_specific": {"severity": "MODERATE"}
  }]
}`,
	"PYSEC-2099-3.json": `{
  "id": "PYSEC-2099-3",
  "modified": "2099-01-04T00:00:00Z",
  "withdrawn": "2099-01-05T00:00:00Z",
  "aliases": ["CVE-2099-0003"],
  "summary": "beta (withdrawn: not a vulnerability)",
  "affected": [{
    "package": {"ecosystem": "PyPI", "name": "beta"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]
  }]
}`,
	"GHSA-cccc-5555-6666.json": `{
  "id": "GHSA-cccc-5555-6666",
  "modified": "2099-01-06T00:00:00Z",
  "summary": "alpha for JavaScript",
  "affected": [{
    "package": {"ecosystem": "npm", "name": "alpha"},
    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]
  }]
}`,
	"PYSEC-2099-4.json": `{
  "id": "PYSEC-2099-4",
  "modified": "2099-01-07T00:00:00Z",
  "summary": "gamma before 1.0.0",
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"}],
  "affected": [{
    "package": {"ecosystem": "PyPI", "name": "gamma"},
    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0.0"}]}]
  }]
}`,
}

// WriteDir writes the dataset as one file per record into dir (created).
func WriteDir(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range Records {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// WriteZip writes records (Records when nil) as a zip in OSV's export layout (all.zip: one
// <id>.json per record at the top level) at path, replacing it by rename so that a reader never
// sees half a file.
func WriteZip(t testing.TB, path string, records map[string]string) {
	t.Helper()
	if records == nil {
		records = Records
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for name, body := range records {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
