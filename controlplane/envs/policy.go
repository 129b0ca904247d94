package envs

import (
	"fmt"

	"github.com/envfabric/envfabric/controlplane/osv"
	"github.com/envfabric/envfabric/controlplane/pkgpolicy"
	"github.com/envfabric/envfabric/controlplane/uvlock"
	"github.com/envfabric/envfabric/shared/errcode"
)

// PackageDeniedError is PACKAGE_DENIED: the lock a change resolved holds a version the install
// policy (PACKAGE_POLICY) denies. It is returned after the resolve and before any build, so
// nothing of the environment changed.
type PackageDeniedError struct {
	Denial pkgpolicy.Denial
}

func (e *PackageDeniedError) Error() string           { return string(e.ErrorCode()) + ": " + e.ErrorMessage() }
func (e *PackageDeniedError) ErrorCode() errcode.Code { return errcode.PackageDenied }
func (e *PackageDeniedError) ErrorMessage() string    { return e.Denial.String() }

// checkPolicy checks the lock a create, add or update resolved against the install policy, with
// the advisories loaded now.
func (s *Service) checkPolicy(lock string) error {
	if s.opt.PackagePolicy.Empty() {
		return nil
	}
	l, err := uvlock.Parse(lock)
	if err != nil {
		return errcode.Wrap(errcode.Internal, err, fmt.Sprintf("checking the package policy: %v", err))
	}
	var db *osv.DB
	if s.opt.Advisories != nil {
		db = s.opt.Advisories()
	}
	if d := s.opt.PackagePolicy.Check(l, db); d != nil {
		return &PackageDeniedError{Denial: *d}
	}
	return nil
}

// policyAudit is what the audit records of a refusal.
func policyAudit(err error) map[string]any {
	if e, ok := err.(*PackageDeniedError); ok {
		return map[string]any{"rule": e.Denial.Rule, "package": e.Denial.Package, "version": e.Denial.Version, "reason": e.Denial.Reason}
	}
	return nil
}
