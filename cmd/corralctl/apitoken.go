package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/corralhq/corral/api"
)

func (c *cli) apiTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "API tokens: what remote clients send to the HTTPS API (api_addr)"}
	var role, expires, secretFile string
	create := &cobra.Command{
		Use: "create NAME --role viewer|operator|admin [--project P]", Short: "Make an API token (with --project, confined to that project); its secret is shown once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			var f *os.File
			if secretFile != "" {
				// Made before the token, so a bad path costs no token.
				var err error
				if f, err = os.OpenFile(secretFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
					return fmt.Errorf("--secret-file: %w", err)
				}
				defer f.Close()
			}
			t, err := c.client().CreateAPIToken(ctx, api.APITokenCreateRequest{Name: args[0], Role: role, Expires: expires, Project: c.project})
			if err != nil {
				if f != nil {
					os.Remove(secretFile)
				}
				return err
			}
			if f != nil {
				if _, err := fmt.Fprintln(f, t.Token); err != nil {
					return fmt.Errorf("--secret-file: %w (the token exists: revoke it)", err)
				}
				if err := f.Close(); err != nil {
					return fmt.Errorf("--secret-file: %w (the token exists: revoke it)", err)
				}
				t.Token = "" // in the file only
			}
			return c.print(t, func(w *tabwriter.Writer) {
				until := "never expires"
				if !t.Expires.IsZero() {
					until = "valid until " + t.Expires.Local().Format(time.RFC3339)
				}
				file := "FILE"
				if t.Token != "" {
					fmt.Fprintf(w, "API token %s (%s), %s\n\n%s\n\n", t.Name, t.Role, until, t.Token)
					fmt.Fprintln(w, "It is shown this once. Save it to a file of mode 0600 and add the remote:")
				} else {
					file = secretFile
					fmt.Fprintf(w, "API token %s (%s), %s, written to %s (0600). Add the remote:\n", t.Name, t.Role, until, secretFile)
				}
				fmt.Fprintf(w, "  corralctl remote add NAME https://HOST:PORT --token-file %s\n", file)
			})
		},
	}
	create.Flags().StringVar(&role, "role", "", "viewer (reads), operator (VMs, networks, images) or admin (everything)")
	create.Flags().StringVar(&expires, "expires", "", "lifetime: a duration (12h) or days (90d); empty: never")
	create.Flags().StringVar(&secretFile, "secret-file", "", "write the secret to this new file (0600) instead of showing it")
	create.MarkFlagRequired("role")
	ls := &cobra.Command{
		Use: "ls", Short: "List API tokens and client certificates (never a secret)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			ts, err := c.client().APITokens(ctx)
			if err != nil {
				return err
			}
			return c.print(ts, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "NAME\tKIND\tROLE\tPROJECT\tEXPIRES\tSTATE\tCREATED BY")
				for _, t := range ts {
					state, exp := "valid", "never"
					if t.Expired {
						state = "expired"
					}
					if !t.Expires.IsZero() {
						exp = t.Expires.Local().Format(time.RFC3339)
					}
					project := t.Project
					if project == "" {
						project = "(all)"
					}
					kind := "token"
					if t.Kind != "" {
						kind = t.Kind
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, kind, t.Role, project, exp, state, orDash(t.CreatedBy))
				}
			})
		},
	}
	revoke := &cobra.Command{
		Use: "revoke NAME", Short: "Make every host refuse an API token or client certificate", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := c.ctx()
			defer cancel()
			if err := c.client().RevokeAPIToken(ctx, args[0]); err != nil {
				return err
			}
			return c.print(struct{}{}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "API token %s revoked\n", args[0]) })
		},
	}
	cmd.AddCommand(create, ls, revoke)
	return cmd
}
