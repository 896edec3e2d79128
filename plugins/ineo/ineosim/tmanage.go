package ineosim

import (
	"crypto/rand"
	"math/big"
	"net/url"
)

// account is the per-phone state of tmanage-v2.php. Steps must be done in
// order (sendcode → login → createapplication → information), as the
// original insists.
type account struct {
	randomHash string // pending code from sendcode; "" when none
	loggedIn   bool
	app        *application // survives logout, like a real developer app
}

type application struct {
	apiID     int
	apiHash   string
	title     string
	shortname string
}

// validPlatform reports whether p is one of the platforms the original
// allows for createapplication (case-sensitive, as written there).
func validPlatform(p string) bool {
	switch p {
	case "android", "ios", "ubuntu_mobile", "desktop", "black_berry", "windows_phone", "web", "other":
		return true
	}
	return false
}

// requiredParams lists an action's required parameters besides auth and
// action, exactly as the original's tables mark them اجباری (required).
// known is false for an action the service does not have.
func requiredParams(action string) (params []string, known bool) {
	switch action {
	case "sendcode", "information", "logout":
		return []string{"phone"}, true
	case "login":
		return []string{"phone", "random_hash", "password"}, true
	case "createapplication":
		return []string{"phone", "title", "shortname", "url", "platform"}, true
	case "deleteaccount":
		return []string{"phone", "access"}, true
	}
	return nil, false
}

// SendCodeResult is the sendcode result.
type SendCodeResult struct {
	Phone      string `json:"phone"`
	RandomHash string `json:"random_hash"`
}

// SessionResult is the login and logout result.
type SessionResult struct {
	Phone    string `json:"phone"`
	LoggedIn bool   `json:"logged_in"`
}

// CreateAppResult is the createapplication result (the documents show no
// payload; this one echoes what was registered).
type CreateAppResult struct {
	Phone        string `json:"phone"`
	AppTitle     string `json:"app_title"`
	AppShortname string `json:"app_shortname"`
	Platform     string `json:"platform"`
}

// DeleteResult is the deleteaccount result.
type DeleteResult struct {
	Phone   string `json:"phone"`
	Deleted bool   `json:"deleted"`
}

// Information is the information result, shaped like the v1 public client
// code reads it (including the vendor's "production_docfiguration" typo).
type Information struct {
	AppConfiguration struct {
		APIID        int    `json:"api_id"`
		APIHash      string `json:"api_hash"`
		AppTitle     string `json:"app_title"`
		AppShortname string `json:"app_shortname"`
	} `json:"app_configuration"`
	AvailableMTProtoServers struct {
		TestConfiguration       string `json:"test_configuration"`
		ProductionConfiguration string `json:"production_docfiguration"`
		PublicKeys              string `json:"public_keys"`
	} `json:"available_mtproto_servers"`
}

// isPhone accepts a number written as country code + subscriber number,
// digits only, no "+": 8 to 15 digits (E.164's maximum) and no leading 0,
// since a leading 0 is a national trunk prefix, i.e. no country code.
func isPhone(p string) bool {
	if len(p) < 8 || len(p) > 15 || p[0] == '0' {
		return false
	}
	for _, c := range []byte(p) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func (s *Sim) tmanageLocked(p url.Values) reply {
	action := p.Get("action")
	required, known := requiredParams(action)
	if !known {
		// The documents name no code for an unknown action; 400
		// bad_request ("the server cannot understand the request") fits.
		return reply{code: codeBadRequest}
	}
	for _, name := range required {
		if p.Get(name) == "" {
			return reply{code: codeParameterError}
		}
	}
	phone := p.Get("phone")
	if !isPhone(phone) {
		return reply{code: codePhoneError, status: statusPhoneError}
	}
	acc := s.accounts[phone]
	loggedIn := acc != nil && acc.loggedIn

	switch action {
	case "sendcode":
		if acc == nil {
			acc = &account{}
			s.accounts[phone] = acc
		}
		acc.randomHash = randomHex(9) // the document's sample hash is 18 hex digits
		return reply{code: codeOK, result: SendCodeResult{Phone: phone, RandomHash: acc.randomHash}}

	case "login":
		if acc == nil || acc.randomHash == "" {
			return reply{code: codeLoginRequired} // no sendcode first
		}
		if p.Get("random_hash") != acc.randomHash || p.Get("password") != s.opts.LoginCode {
			return reply{code: codeLoginFail, status: statusLoginFail}
		}
		acc.randomHash = "" // a code logs in once
		acc.loggedIn = true
		// The original calls this step's success "login successfully.".
		return reply{code: codeOK, status: statusLoginOK, result: SessionResult{Phone: phone, LoggedIn: true}}

	case "createapplication":
		if !loggedIn {
			return reply{code: codeLoginRequired}
		}
		if !validPlatform(p.Get("platform")) {
			return reply{code: codePlatformFail}
		}
		if acc.app != nil {
			return reply{code: codeCreateAppErr}
		}
		acc.app = &application{
			apiID:     randomAPIID(),
			apiHash:   randomHex(16),
			title:     p.Get("title"),
			shortname: p.Get("shortname"),
		}
		return reply{code: codeOK, result: CreateAppResult{Phone: phone, AppTitle: acc.app.title, AppShortname: acc.app.shortname, Platform: p.Get("platform")}}

	case "information":
		if !loggedIn {
			return reply{code: codeLoginRequired}
		}
		if acc.app == nil {
			// Logged in but never registered: the documents have no
			// dedicated code; 404 data_error is their "no data to show".
			return reply{code: codeNotFound, status: statusDataError}
		}
		var info Information
		info.AppConfiguration.APIID = acc.app.apiID
		info.AppConfiguration.APIHash = acc.app.apiHash
		info.AppConfiguration.AppTitle = acc.app.title
		info.AppConfiguration.AppShortname = acc.app.shortname
		info.AvailableMTProtoServers.TestConfiguration = "149.154.167.40:443"
		info.AvailableMTProtoServers.ProductionConfiguration = "149.154.167.50:443"
		info.AvailableMTProtoServers.PublicKeys = fakePublicKey
		return reply{code: codeOK, result: info}

	case "deleteaccount":
		if !loggedIn {
			return reply{code: codeLoginRequired}
		}
		if p.Get("access") != "yes" {
			return reply{code: codeDeleteCancel}
		}
		delete(s.accounts, phone)
		s.deletions = append(s.deletions, phone)
		s.log.Warn("ineosim: Telegram account deleted", "phone", phone)
		return reply{code: codeOK, result: DeleteResult{Phone: phone, Deleted: true}}

	default: // "logout"; requiredParams guarantees nothing else gets here
		if !loggedIn {
			return reply{code: codeLoginFail36, status: statusLoginFail}
		}
		acc.loggedIn = false
		return reply{code: codeOK, result: SessionResult{Phone: phone, LoggedIn: false}}
	}
}

// randomAPIID returns a 7-digit api_id like Telegram's.
func randomAPIID() int {
	n, err := rand.Int(rand.Reader, big.NewInt(9_000_000))
	if err != nil {
		return 1234567
	}
	return 1_000_000 + int(n.Int64())
}

// fakePublicKey is placeholder text shaped like Telegram's published server
// key block; it is not a usable key.
const fakePublicKey = "-----BEGIN RSA PUBLIC KEY-----\nSIMULATEDxKEYxNOTxREALxineosim\n-----END RSA PUBLIC KEY-----"
