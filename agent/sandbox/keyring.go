package sandbox

// keyctl(2) operations and special keyring ids the system-call filter looks at (linux/keyctl.h). The stage program
// (stage/envfabric-sandbox.c) joins each run to a fresh anonymous session keyring before the drop
// to the run user, and after it seals the run user's user and user-session keyrings (shared by
// every process of that uid) so that only possessors reach them, which a run is not.
const (
	keyctlGetKeyringID       = 0
	keyctlJoinSessionKeyring = 1
	keyctlGetPersistent      = 22
	keySpecUserKeyring       = -4
	keySpecUserSessionKey    = -5
)
