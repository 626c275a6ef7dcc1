package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/model"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "token",
		Aliases: []string{"tokens"},
		Short:   "Manage API tokens (admin only: use the local admin socket or an admin token)",
	}
	cmd.AddCommand(newTokenCreateCmd(g), newTokenListCmd(g), newTokenRevokeCmd(g))
	return cmd
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var req model.CreateTokenRequest
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "create (--app APP... | --admin) [--name NAME] [--expires DURATION]",
		Short: "Create an API token and print its secret (shown only this once)",
		Long: `Create an API token for the TCP API. An app token (--app, repeatable) may use
only those apps, and create apps of those names; an admin token (--admin) may do
everything, including managing tokens. The secret is printed on stdout and is not
kept by the daemon: store it now. Send it as TORPOR_TOKEN or --token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Admin == (len(req.Apps) > 0) {
				return fmt.Errorf("give either --admin or at least one --app")
			}
			if expires < 0 {
				return fmt.Errorf("invalid --expires %s: must not be negative", expires)
			}
			req.ExpiresIn = model.Duration{Duration: expires}
			c, err := g.client()
			if err != nil {
				return err
			}
			tok, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, tok)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Created token %s (%s, expires %s). Its secret is shown only now:\n",
				tok.ID, scopeSummary(tok.Token), expiry(tok.Token))
			say(cmd, "%s\n", tok.Secret)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.Apps, "app", nil, "app the token may use (repeat for several)")
	f.BoolVar(&req.Admin, "admin", false, "make an admin token (every app, token management)")
	f.StringVar(&req.Name, "name", "", "a name to recognise the token by")
	f.DurationVar(&expires, "expires", 0, "lifetime, e.g. 720h (default: no expiry)")
	return cmd
}

func newTokenListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List API tokens (never their secrets)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, struct {
					Tokens []model.Token `json:"tokens"`
				}{nonNil(list)})
			}
			if len(list) == 0 {
				say(cmd, "No tokens\n")
				return nil
			}
			return writeTokens(cmd, list)
		},
	}
}

// writeTokens prints tokens as a table.
func writeTokens(cmd *cobra.Command, list []model.Token) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED\tEXPIRES")
	for _, t := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, dash(t.Name), scopeSummary(t), formatTime(t.CreatedAt), expiry(t))
	}
	return tw.Flush()
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"delete", "rm"},
		Short:   "Revoke an API token: it stops working at once",
		Args:    exactlyOne("token ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, okJSON{OK: true})
			}
			say(cmd, "Revoked token %s\n", args[0])
			return nil
		},
	}
}

// scopeSummary says what a token may use.
func scopeSummary(t model.Token) string {
	if t.Admin {
		return "admin"
	}
	return "apps: " + strings.Join(t.Apps, ",")
}

// expiry says when a token expires.
func expiry(t model.Token) string {
	if t.ExpiresAt == nil {
		return "never"
	}
	return formatTime(*t.ExpiresAt)
}
