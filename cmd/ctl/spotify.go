package main

import "github.com/spf13/cobra"

// newSpotifyCmd groups the spotify provider's commands.
func newSpotifyCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "spotify",
		Short: "spotify provider commands (not implemented yet; use 'sluicectl call')",
	}
}
