package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/model"
)

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "Manage OCI images (pull, import, list, inspect, remove, prune)",
		Long: `Images are pulled from registries or imported from tarballs, per app: an app
token sees its apps' images and the public ones (which only the admin makes).
A machine's config.image names one (name[:tag][@digest]); machine create pulls
it if the app does not have it yet. See docs/images.md.`,
	}
	cmd.AddCommand(newImagePullCmd(g), newImageImportCmd(g), newImageListCmd(g), newImageInspectCmd(g),
		newImageRemoveCmd(g), newImagePruneCmd(g))
	return cmd
}

func newImagePullCmd(g *globals) *cobra.Command {
	var req model.PullImageRequest
	cmd := &cobra.Command{
		Use:   "pull REFERENCE [--app APP] [--public]",
		Short: "Pull an image from its registry",
		Long: `Pull an image (name[:tag][@digest]; "nginx" is docker.io/library/nginx:latest)
for an app, or, for the admin without --app, as the admin's own image (--public
lets every app run it). The daemon pulls with the credentials of its Docker
config file for the admin; an app's pulls are anonymous unless the daemon runs
with --share-registry-credentials. Progress goes to stderr (a bar on a
terminal); the image is printed once pulled.`,
		Args: exactlyOne("image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			req.Image = args[0]
			p := newProgressPrinter(cmd.ErrOrStderr())
			img, err := c.PullImage(cmd.Context(), req, p.show)
			p.finish()
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, img)
			}
			say(cmd, "%s %s\n", img.Reference, img.Digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.App, "app", "", "app that owns the pulled image (an app token of one app: that app)")
	cmd.Flags().BoolVar(&req.Public, "public", false, "admin only: let every app run the image")
	return cmd
}

func newImageImportCmd(g *globals) *cobra.Command {
	var name, app string
	var public bool
	cmd := &cobra.Command{
		Use:   "import FILE|- [--name REFERENCE] [--app APP] [--public]",
		Short: "Load images from a `docker save` or OCI layout tarball",
		Long: `Load the images of a tarball made by "docker save" (or "podman save") or of an
OCI image layout packed with tar, for hosts that cannot reach a registry. The
images keep the names the tarball gives them unless --name names its (only)
image. An imported reference is never looked up in a registry.`,
		Args: exactlyOne("file (or - for stdin)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			p := newProgressPrinter(cmd.ErrOrStderr())
			imgs, err := c.ImportImage(cmd.Context(), r, name, app, public, p.show)
			p.finish()
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, nonNil(imgs))
			}
			for _, img := range imgs {
				say(cmd, "%s %s\n", img.Reference, img.Digest)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "reference to give the tarball's image")
	cmd.Flags().StringVar(&app, "app", "", "app that owns the imported images")
	cmd.Flags().BoolVar(&public, "public", false, "admin only: let every app run the images")
	return cmd
}

func newImageListCmd(g *globals) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:     "list [--app APP]",
		Aliases: []string{"ls"},
		Short:   "List images (an app's and the public ones; the admin without --app: all)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.ListImages(cmd.Context(), app)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, nonNil(list))
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tREFERENCE\tDIGEST\tSIZE\tSOURCE\tPULLED")
			for _, img := range list {
				owner := img.App
				if owner == "" {
					owner = "(admin)"
					if img.Public {
						owner = "(public)"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", owner, img.Reference, shortDigest(img.Digest),
					humanBytes(img.SizeBytes), img.Source, formatTime(img.PulledAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "list this app's images (and the public ones)")
	return cmd
}

func newImageInspectCmd(g *globals) *cobra.Command {
	var app string
	cmd := &cobra.Command{
		Use:   "inspect REFERENCE [--app APP]",
		Short: "Show an image as JSON: its digest, config, layers and the machines using it",
		Args:  exactlyOne("image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			img, err := c.GetImage(cmd.Context(), args[0], app)
			if err != nil {
				return err
			}
			return printJSON(cmd, img)
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "the app whose image it is")
	return cmd
}

func newImageRemoveCmd(g *globals) *cobra.Command {
	var app string
	var force bool
	cmd := &cobra.Command{
		Use:     "rm REFERENCE [--app APP] [--force]",
		Aliases: []string{"remove"},
		Short:   "Remove an image reference (its content goes once nothing uses it)",
		Args:    exactlyOne("image reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.RemoveImage(cmd.Context(), args[0], app, force)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, res)
			}
			say(cmd, "Removed %s; freed %s\n", strings.Join(res.References, ", "), humanBytes(res.FreedBytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "the app whose reference it is (the admin without --app: the admin's own)")
	cmd.Flags().BoolVar(&force, "force", false, "remove the reference even if a machine uses the image (the machine keeps running it)")
	return cmd
}

func newImagePruneCmd(g *globals) *cobra.Command {
	var app string
	var all bool
	cmd := &cobra.Command{
		Use:   "prune [--app APP] [--all]",
		Short: "Delete image content nothing refers to (with --all, first the references no machine uses)",
		Long: `Delete the image content that no reference, machine config, snapshot or pull in
progress refers to. With --all, first remove the references (of --app, or for
the admin without --app of everyone) whose image no machine uses.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.PruneImages(cmd.Context(), app, all)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd, res)
			}
			say(cmd, "Removed %d references and %d images; freed %s\n", len(res.References), len(res.Digests), humanBytes(res.FreedBytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&app, "app", "", "prune this app's references")
	cmd.Flags().BoolVar(&all, "all", false, "also remove references no machine uses")
	return cmd
}

// progressPrinter shows a pull's progress: on a terminal one line per
// layer with a bar, redrawn in place; elsewhere a plain line per step.
type progressPrinter struct {
	w        io.Writer
	tty      bool
	open     bool // a bar line is drawn and not yet ended
	lastSeen string
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	p := &progressPrinter{w: w}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progressPrinter) show(ev model.PullProgress) {
	switch ev.Phase {
	case "layer":
		if p.tty {
			fmt.Fprintf(p.w, "\r\033[K%s", layerLine(ev))
			p.open = true
			if ev.Bytes >= ev.Total {
				fmt.Fprintln(p.w)
				p.open = false
			}
			return
		}
		// Plain lines: when a layer starts and when it is done.
		key := fmt.Sprintf("%s %v", ev.Layer, ev.Bytes >= ev.Total)
		if (ev.Bytes == 0 || ev.Bytes >= ev.Total) && key != p.lastSeen {
			p.lastSeen = key
			fmt.Fprintln(p.w, layerLine(ev))
		}
	case "end":
	case "error":
		p.endLine()
	default:
		p.endLine()
		if ev.Message != "" {
			fmt.Fprintln(p.w, ev.Message)
		}
	}
}

func (p *progressPrinter) endLine() {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}

func (p *progressPrinter) finish() { p.endLine() }

// layerLine is "layer 2/3 sha256:abcdef012345 [#####.....] 12.3 MB / 45.6 MB".
func layerLine(ev model.PullProgress) string {
	const width = 24
	done := width
	if ev.Total > 0 {
		done = int(int64(width) * min(ev.Bytes, ev.Total) / ev.Total)
	}
	state := fmt.Sprintf("%s / %s", humanBytes(ev.Bytes), humanBytes(ev.Total))
	if ev.Cached {
		state = "already here"
	}
	return fmt.Sprintf("layer %d/%d %s [%s%s] %s", ev.Index, ev.Layers, shortDigest(ev.Layer),
		strings.Repeat("#", done), strings.Repeat(".", width-done), state)
}

// shortDigest is "sha256:" and the first 12 hex digits.
func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// humanBytes is n in B, kB, MB or GB (powers of 1000, as registries say).
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}
