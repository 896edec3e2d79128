package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/core/api"
	"github.com/sluice-dev/sluice/core/api/client"
)

// Completion of values the daemon knows (providers, hellorf's categories)
// asks the running daemon, briefly: a shell waiting on Tab must not hang,
// and with no daemon the shell just offers nothing.

// completionWait bounds one completion request.
const completionWait = 2 * time.Second

// completionClient is a client for the socket the command line names; the
// command's own action, which would make one, does not run for __complete.
func completionClient(cmd *cobra.Command, o *options) *client.Client {
	socket := o.choice.path
	if f := cmd.Flag("socket"); f != nil && f.Value.String() != "" {
		socket = f.Value.String()
	}
	return client.New(socket)
}

// completeProviders offers the daemon's providers (cache purge PROVIDER).
func completeProviders(o *options) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(context.Background(), completionWait)
		defer cancel()
		st, err := completionClient(cmd, o).Status(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return providerNames(st), cobra.ShellCompDirectiveNoFileComp
	}
}

func providerNames(st *api.Status) []cobra.Completion {
	var out []cobra.Completion
	for _, p := range st.Providers {
		out = append(out, cobra.CompletionWithDesc(p.Name, p.State))
	}
	return out
}

// completeCategory offers one hellorf category list for --genre, --mood,
// --instrument or --bpm: the English name where sluice's gloss table has
// one (easy to type), else the id, described by id and hellorf's name.
func completeCategory(o *options, pick func(*hellorfCategories) []named) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(context.Background(), completionWait)
		defer cancel()
		resp, err := completionClient(cmd, o).Call(ctx, http.MethodGet, "/v1/hellorf/audio/categories", nil, nil, nil)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		env, err := parseHellorf(resp.Status, resp.Header, resp.Body)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var c hellorfCategories
		if json.Unmarshal(env.Data, &c) != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return categoryCompletions(pick(&c), toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

func categoryCompletions(list []named, toComplete string) []cobra.Completion {
	var out []cobra.Completion
	for _, n := range list {
		value := n.ID.String()
		if en := englishName(n.Name); en != "" && !strings.ContainsAny(en, " /") {
			value = en
		}
		if !strings.HasPrefix(strings.ToLower(value), strings.ToLower(toComplete)) {
			continue
		}
		out = append(out, cobra.CompletionWithDesc(value, n.ID.String()+" "+glossName(n.Name)))
	}
	return out
}

// fixedValues completes a flag from a fixed list.
func fixedValues(values ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
}
