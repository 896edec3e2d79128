package main

import "github.com/spf13/cobra"

// newHellorfCmd groups the hellorf provider's commands.
func newHellorfCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "hellorf",
		Short: "hellorf provider commands (not implemented yet; use 'sluicectl call')",
	}
}
