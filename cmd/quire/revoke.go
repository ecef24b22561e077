package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/manager"
)

// runCertsRevoke implements `quire certs revoke`: the managers add the
// serial to the revocation list in Raft, and every manager and agent
// refuses the certificate from then on.
func runCertsRevoke(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs revoke", stderr)
	f := addClusterFlags(fs)
	serial := fs.String("serial", "", "serial number of the certificate to revoke (hexadecimal, as openssl x509 -serial prints it)")
	certFile := fs.String("cert", "", "the certificate file to revoke (instead of --serial)")
	name := fs.String("name", "", "name to record with the serial (default: the certificate's)")
	reason := fs.String("reason", "", "why (recorded)")
	if _, err := positional(fs, args); err != nil {
		return err
	}
	switch {
	case (*serial == "") == (*certFile == ""):
		return fmt.Errorf("certs revoke: give --serial or --cert: %w", errUsage)
	case *certFile != "":
		crt, err := readCert(*certFile)
		if err != nil {
			return fmt.Errorf("certs revoke: %w", err)
		}
		*serial = certs.SerialString(crt.SerialNumber)
		if *name == "" {
			if id, err := certs.IdentityOf(crt); err == nil {
				*name = id.String()
			} else {
				*name = crt.Subject.CommonName
			}
		}
	}
	cl, ctx, done, err := f.connect("certs revoke")
	if err != nil {
		return err
	}
	defer done()
	list, err := cl.RevokeCertificate(ctx, *serial, *name, *reason)
	if err != nil {
		return err
	}
	return printRevoked(stdout, f.json, list, fmt.Sprintf("revoked serial %s; %d certificates revoked", *serial, len(list)))
}

// runCertsRevoked implements `quire certs revoked`: the revocation list.
func runCertsRevoked(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("certs revoked", stderr)
	f := addClusterFlags(fs)
	if _, err := positional(fs, args); err != nil {
		return err
	}
	cl, ctx, done, err := f.connect("certs revoked")
	if err != nil {
		return err
	}
	defer done()
	list, err := cl.ListRevoked(ctx)
	if err != nil {
		return err
	}
	return printRevoked(stdout, f.json, list, "")
}

func printRevoked(w io.Writer, asJSON bool, list []manager.RevokedCert, summary string) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	if summary != "" {
		fmt.Fprintln(w, summary)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERIAL\tNAME\tREVOKED\tBY\tREASON")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Serial, r.Name, r.At.Format(time.RFC3339), r.By, r.Reason)
	}
	return tw.Flush()
}

// readCert reads the first certificate of a PEM file.
func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s holds no PEM certificate", path)
		}
		if blk.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse %s: %w", path, err)
			}
			return c, nil
		}
	}
}
