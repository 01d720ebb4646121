package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

// userPrefix is the common name's prefix of a user certificate (see
// daemon/identity/usercert.go; corralctl links no daemon package).
const userPrefix = "user:"

func (c *cli) certCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cert", Short: "Client certificates from the cluster CA: a way into the HTTPS API without a token"}
	var role, expires, dir string
	create := &cobra.Command{
		Use:   "create NAME --role viewer|operator|admin [--project P] [--dir D]",
		Short: "Make a key here and have the cluster CA sign its certificate; revoke it with token revoke NAME",
		Long: `Make a client certificate: the private key is made here and never leaves this
machine; the cluster CA signs a certificate for "user:NAME", and the cluster
records its fingerprint with the role (and project). It writes NAME.key (0600)
and NAME.crt to --dir. Use them with corralctl remote add --cert --key.
"corralctl token ls" lists it; "corralctl token revoke NAME" revokes it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			keyPath, certPath := filepath.Join(dir, name+".key"), filepath.Join(dir, name+".crt")
			for _, p := range []string{keyPath, certPath} {
				if _, err := os.Stat(p); err == nil {
					return fmt.Errorf("%s exists: not overwriting it", p)
				}
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: userPrefix + name}}, key)
			if err != nil {
				return err
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx()
			defer cancel()
			created, err := c.client().CreateCertificate(ctx, api.CertificateCreateRequest{
				Name: name, Role: role, Project: c.project, Expires: expires,
				CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
			})
			if err != nil {
				return err
			}
			if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
				return fmt.Errorf("%w (the certificate exists: revoke it with corralctl token revoke %s)", err, name)
			}
			if err := os.WriteFile(certPath, []byte(created.Certificate), 0o644); err != nil {
				return fmt.Errorf("%w (the certificate exists: revoke it with corralctl token revoke %s)", err, name)
			}
			return c.print(created.APIToken, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "certificate %s (%s), valid until %s, fingerprint %s\n", name, created.Role, created.Expires.Local().Format(time.RFC3339), created.Fingerprint)
				fmt.Fprintf(w, "wrote %s (0600) and %s; add the remote:\n", keyPath, certPath)
				fmt.Fprintf(w, "  corralctl remote add NAME https://HOST:PORT --cert %s --key %s\n", certPath, keyPath)
			})
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer, operator or admin")
	create.Flags().StringVar(&expires, "expires", "", "lifetime: a duration or days, at most 365d (default 90d)")
	create.Flags().StringVar(&dir, "dir", ".", "where to write NAME.key and NAME.crt")
	create.MarkFlagRequired("role")
	cmd.AddCommand(create)
	return cmd
}
