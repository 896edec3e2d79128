package main

import (
	"time"

	"github.com/sluice-dev/sluice/core/provider"
)

// codes is iNeo's status-code table (docs/upstreams.md, "iNeo": the general
// table and the two services' own codes). The "stop now" codes pause the bucket: an
// explicit ban or block for an hour (a human must look), maintenance and
// offline for a few minutes, 429 for half a minute.
//
// 2 ip_country_error and 401 authentication_error blame sluice's host and
// configuration, not the caller: the caller's token is dropped and the
// configured one sent, from this host's IP. The SDK has no class of its
// own for that, so they are server errors, as hellorf's signature and
// client-id refusals are: never cached (only Success is) and never retried
// (this plugin retries nothing), and clients do not report them as the
// caller's mistake.
var codes = provider.Codes{
	200:  {Name: "successfully", Class: provider.Success},
	400:  {Name: "bad_request", Class: provider.CallerError},
	4001: {Name: "parameter_error", Class: provider.CallerError},
	401:  {Name: "authentication_error", Class: provider.ServerError}, // access_key / tmanage_auth is wrong
	402:  {Name: "data_error", Class: provider.ServerError},
	403:  {Name: "access_deniad", Class: provider.CallerError},
	404:  {Name: "not_found", Class: provider.CallerError},
	405:  {Name: "method_error", Class: provider.CallerError},
	408:  {Name: "user_blocked", Class: provider.Stop, Pause: time.Hour},
	12:   {Name: "ip_limited", Class: provider.Stop, Pause: time.Hour},
	33:   {Name: "activity_error", Class: provider.ServerError},
	66:   {Name: "offline", Class: provider.Stop, Pause: 5 * time.Minute},
	2001: {Name: "update", Class: provider.Stop, Pause: 5 * time.Minute},
	1:    {Name: "country_error", Class: provider.CallerError},
	2:    {Name: "ip_country_error", Class: provider.ServerError}, // sluiced's IP is not in Iran
	3:    {Name: "phone_invalid", Class: provider.CallerError},
	8:    {Name: "input_error", Class: provider.CallerError},
	72:   {Name: "ip_error", Class: provider.CallerError},
	10:   {Name: "ip_blocked", Class: provider.Stop, Pause: time.Hour},
	6:    {Name: "no_charge", Class: provider.Stop, Pause: time.Hour},
	101:  {Name: "bot_token_invalid", Class: provider.CallerError},
	2003: {Name: "login_fail", Class: provider.CallerError},
	0:    {Name: "unknown_error", Class: provider.ServerError},
	13:   {Name: "fail", Class: provider.ServerError},
	429:  {Name: "too_many_requests", Class: provider.Stop, Pause: 30 * time.Second},
	503:  {Name: "service_unavailable", Class: provider.ServerError},
	500:  {Name: "internal_server_error", Class: provider.ServerError},
	502:  {Name: "server_error", Class: provider.ServerError},
	504:  {Name: "server_error", Class: provider.ServerError},
	// spotify.php service code.
	602: {Name: "download_error", Class: provider.ServerError},
	// tmanage-v2.php service codes.
	36:  {Name: "phone_error/login_fail", Class: provider.CallerError},
	606: {Name: "login_error", Class: provider.CallerError},
	22:  {Name: "delete_cancel", Class: provider.CallerError},
	32:  {Name: "ceateapp_error", Class: provider.CallerError},
	903: {Name: "platform_fail", Class: provider.CallerError},
}
