// Command envfabric-ca is the fleet's certificate authority: it makes the CA that control planes
// and agents trust, and issues their certificates, each carrying one role (a control plane's can
// only call agents, an agent's can only serve them). See the README's security section.
//
//	envfabric-ca init   -dir DIR [-name NAME] [-days N]
//	envfabric-ca issue  -dir DIR -role agent|controlplane -name NAME [-host H,...] [-days N] [-out DIR]
//	envfabric-ca bundle -out FILE CA.crt...
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/envfabric/envfabric/shared/fleetca"
	"github.com/envfabric/envfabric/shared/fleettls"
)

const usage = `envfabric-ca: the fleet's certificate authority.

  envfabric-ca init   -dir DIR [-name NAME] [-days 3650]
      make a CA: DIR/ca.crt (give it to every member: FLEET_TLS_CA) and DIR/ca.key (keep it
      offline; mode 0600). Refuses to overwrite an existing CA.

  envfabric-ca issue  -dir DIR -role agent|controlplane -name NAME [-host H,...] [-days 365] [-out DIR]
      issue a member certificate signed by the CA in DIR: OUT/NAME.crt and OUT/NAME.key
      (FLEET_TLS_CERT, FLEET_TLS_KEY). An agent's needs -host: every DNS name or IP control
      planes reach it at (its AGENT_ADVERTISE_URL). Files are replaced atomically, so issuing
      again over a running member's files rotates its certificate: it is reloaded on change.

  envfabric-ca bundle -out FILE CA.crt...
      concatenate CA certificates into one bundle (FLEET_TLS_CA), for a CA rotation: trust old
      and new, re-issue every member from the new CA, then trust the new one only.
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "envfabric-ca: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "init":
		return initCA(args[1:])
	case "issue":
		return issue(args[1:])
	case "bundle":
		return bundle(args[1:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	return fs
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

func initCA(args []string) error {
	fs := flags("init")
	dir := fs.String("dir", "", "directory for ca.crt and ca.key")
	name := fs.String("name", "Environment Fabric fleet CA", "the CA's common name")
	valid := fs.Int("days", 3650, "validity in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *valid <= 0 {
		return errors.New("init: -dir is required and -days must be positive")
	}
	crt, key := filepath.Join(*dir, "ca.crt"), filepath.Join(*dir, "ca.key")
	for _, p := range []string{crt, key} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("init: %s exists; a CA is never overwritten (make the new one in another directory and rotate, see bundle)", p)
		}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	ca, keyPEM, err := fleetca.New(*name, days(*valid))
	if err != nil {
		return err
	}
	if err := fleetca.WriteFile(key, keyPEM, 0o600); err != nil {
		return err
	}
	if err := fleetca.WriteFile(crt, ca.CertPEM, 0o644); err != nil {
		return err
	}
	fmt.Printf("CA %q: %s (trust it everywhere: FLEET_TLS_CA), key %s (keep it safe)\n", *name, crt, key)
	return nil
}

func issue(args []string) error {
	fs := flags("issue")
	dir := fs.String("dir", "", "the CA's directory (ca.crt, ca.key)")
	roleName := fs.String("role", "", "agent or controlplane")
	name := fs.String("name", "", "the member's name (AGENT_ID, INSTANCE_ID)")
	hosts := fs.String("host", "", "comma-separated DNS names and IPs the agent is reached at")
	valid := fs.Int("days", 365, "validity in days")
	out := fs.String("out", "", "directory for NAME.crt and NAME.key (default: -dir)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	role, err := fleettls.ParseRole(*roleName)
	if err != nil {
		return fmt.Errorf("issue: -role: %w", err)
	}
	if *dir == "" || *name == "" || *valid <= 0 || strings.ContainsAny(*name, `/\`) {
		return errors.New("issue: -dir and -name (no slashes) are required and -days must be positive")
	}
	if *out == "" {
		*out = *dir
	}
	ca, err := fleetca.Load(filepath.Join(*dir, "ca.crt"), filepath.Join(*dir, "ca.key"))
	if err != nil {
		return err
	}
	var hs []string
	if *hosts != "" {
		hs = strings.Split(*hosts, ",")
	}
	certPEM, keyPEM, err := ca.Issue(fleetca.Request{Role: role, Name: *name, Hosts: hs, Validity: days(*valid)})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	crt, key := filepath.Join(*out, *name+".crt"), filepath.Join(*out, *name+".key")
	// The key first: a member reloading between the two sees a pair that does not match, keeps
	// its old one, and picks the new pair up when the certificate lands.
	if err := fleetca.WriteFile(key, keyPEM, 0o600); err != nil {
		return err
	}
	if err := fleetca.WriteFile(crt, certPEM, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s certificate for %s: %s, key %s\n", role, *name, crt, key)
	return nil
}

func bundle(args []string) error {
	fs := flags("bundle")
	out := fs.String("out", "", "the bundle to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 {
		return errors.New("bundle: -out and at least one CA certificate are required")
	}
	var b []byte
	for _, p := range fs.Args() {
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		b = append(b, data...)
		if len(b) > 0 && b[len(b)-1] != '\n' {
			b = append(b, '\n')
		}
	}
	return fleetca.WriteFile(*out, b, 0o644)
}
