package ineosim

// iNeo status codes (the general table and the per-service tables of
// spotify.php and tmanage-v2.php; docs/upstreams.md, "iNeo"). The vendor puts
// the outcome in the body's status_code; HTTP is 200 for every JSON answer.
const (
	codeOK             = 200
	codeBadRequest     = 400
	codeParameterError = 4001
	codeAuthError      = 401
	codeNotFound       = 404
	codeMethodError    = 405
	codeIPBlocked      = 10
	codeDownloadError  = 602

	// tmanage-v2.php codes. Note the vendor uses 36 for two different names
	// (phone_error and login_fail); the status phrase tells them apart.
	codePhoneError    = 36
	codeLoginFail36   = 36
	codeLoginRequired = 606
	codeDeleteCancel  = 22
	codeCreateAppErr  = 32
	codePlatformFail  = 903
	codeLoginFail     = 2003
)

// Status phrases. Success is "successfully." with the trailing dot, as the
// public client code and the originals show it.
const (
	statusOK            = "successfully."
	statusLoginOK       = "login successfully."
	statusPhoneError    = "phone_error"
	statusLoginFail     = "login_fail"
	statusDataError     = "data_error"
	statusNotFound      = "not_found"
	statusBadRequest    = "bad_request"
	statusDownloadError = "download_error"
)

// statusName maps a code to the name the vendor documents for it. Where one
// code has several names (36, 404) the most common one is used; handlers that
// need the other pass their phrase explicitly.
func statusName(code int) string {
	switch code {
	case 200:
		return statusOK
	case 400:
		return statusBadRequest
	case 4001:
		return "parameter_error"
	case 401:
		return "authentication_error"
	case 402:
		return "data_error"
	case 403:
		return "access_deniad" // sic, as the vendor spells it
	case 404:
		return statusNotFound
	case 405:
		return "method_error"
	case 408:
		return "user_blocked"
	case 12:
		return "ip_limited"
	case 33:
		return "activity_error"
	case 66:
		return "offline"
	case 2001:
		return "update"
	case 1:
		return "country_error"
	case 2:
		return "ip_country_error"
	case 3:
		return "phone_invalid"
	case 8:
		return "input_error"
	case 72:
		return "ip_error"
	case 10:
		return "ip_blocked"
	case 6:
		return "no_charge"
	case 101:
		return "bot_token_invalid"
	case 2003:
		return statusLoginFail
	case 13:
		return "fail"
	case 429:
		return "too_many_requests"
	case 503:
		return "service_unavailable"
	case 500:
		return "internal_server_error"
	case 502, 504:
		return "server_error"
	case 602:
		return statusDownloadError
	case 36:
		return statusPhoneError
	case 606:
		return "login_error"
	case 22:
		return "delete_cancel"
	case 32:
		return "ceateapp_error" // sic
	case 903:
		return "platform_fail"
	default:
		return "unknown_error" // code 0 and anything undocumented
	}
}
