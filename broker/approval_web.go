package broker

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mcpbroker/mcpbroker/broker/approval"
)

// The /approvals page and the approver API, on the main HTTP listener.
//
// The page is server-rendered and works without JavaScript. Approvers sign
// in with their token (approvals.approvers); the session is a random
// cookie (HttpOnly, SameSite=Strict, Secure over TLS, path /approvals)
// that names server-side state, never the token. Every POST carries a
// CSRF token bound to the session (the sign-in form a double-submit
// cookie) and must come from the broker's own origin. Pages are no-store,
// never framed, and load nothing from anywhere.
//
// The API takes the approver token as a bearer credential:
//
//	GET  /approvals/api/v1/approvals               pending (?all=1: every one)
//	GET  /approvals/api/v1/approvals/{id}
//	POST /approvals/api/v1/approvals/{id}/approve  {"comment": "..."}
//	POST /approvals/api/v1/approvals/{id}/deny     {"comment": "..."}

//go:embed templates/approvals.html
var approvalTemplates embed.FS

var approvalPages = template.Must(template.ParseFS(approvalTemplates, "templates/approvals.html"))

const (
	approverCookie = "mcpbroker_approver"
	loginCSRFCk    = "mcpbroker_login_csrf"
)

// webSession is one signed-in approver.
type webSession struct {
	approver approverCred
	csrf     string
	expires  time.Time
}

// webSessions holds the signed-in approvers, in memory: a broker restart
// signs everyone out.
type webSessions struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]*webSession // sha256(cookie) → session
}

func newWebSessions(ttl time.Duration) *webSessions {
	return &webSessions{ttl: ttl, m: map[string]*webSession{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func sessionKey(cookie string) string {
	h := sha256.Sum256([]byte(cookie))
	return string(h[:])
}

func (ws *webSessions) create(a approverCred, now time.Time) (cookie string, s *webSession) {
	cookie = randomToken()
	s = &webSession{approver: a, csrf: randomToken(), expires: now.Add(ws.ttl)}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for k, v := range ws.m {
		if now.After(v.expires) {
			delete(ws.m, k)
		}
	}
	ws.m[sessionKey(cookie)] = s
	return cookie, s
}

func (ws *webSessions) get(cookie string, now time.Time) *webSession {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	s := ws.m[sessionKey(cookie)]
	if s == nil || now.After(s.expires) {
		return nil
	}
	return s
}

func (ws *webSessions) drop(cookie string) {
	ws.mu.Lock()
	delete(ws.m, sessionKey(cookie))
	ws.mu.Unlock()
}

// approverByToken finds the approver whose token this is, comparing every
// configured hash in constant time.
func (st *approvalStage) approverByToken(tok string) (approverCred, bool) {
	if tok == "" {
		return approverCred{}, false
	}
	h := sha256.Sum256([]byte(tok))
	var found approverCred
	ok := false
	for _, a := range st.approvers {
		if subtle.ConstantTimeCompare(h[:], a.hash[:]) == 1 {
			found, ok = a, true
		}
	}
	return found, ok
}

type pageData struct {
	Title     string
	Approver  string
	CSRF      string
	Flash     string
	Pending   []*approval.Record
	Recent    []*approval.Record
	Record    *approval.Record
	CanDecide bool
}

// approvalsHandler serves /approvals/ (mounted in httpHandler).
func (b *Broker) approvalsHandler() http.Handler {
	mux := http.NewServeMux()
	if b.approvals == nil {
		return http.NotFoundHandler()
	}
	st := b.approvals
	mux.HandleFunc("GET /approvals/{$}", func(w http.ResponseWriter, r *http.Request) {
		s := b.webSession(r)
		if s == nil {
			b.loginPage(w, r, "")
			return
		}
		all, err := st.svc.List(true)
		if err != nil {
			http.Error(w, "approvals unavailable", http.StatusInternalServerError)
			return
		}
		all = s.approver.visible(all)
		d := pageData{Title: "Pending approvals", Approver: s.approver.id, CSRF: s.csrf, Flash: r.URL.Query().Get("flash")}
		for i := len(all) - 1; i >= 0; i-- {
			if all[i].State == approval.Requested {
				d.Pending = append([]*approval.Record{all[i]}, d.Pending...)
			} else if len(d.Recent) < 20 {
				d.Recent = append(d.Recent, all[i])
			}
		}
		render(w, "list", d)
	})
	mux.HandleFunc("POST /approvals/login", func(w http.ResponseWriter, r *http.Request) {
		if !b.sameOrigin(r) {
			http.Error(w, "cross-origin request refused", http.StatusForbidden)
			return
		}
		ck, err := r.Cookie(loginCSRFCk)
		if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostFormValue("csrf"))) != 1 {
			b.loginPage(w, r, "Your sign-in form expired; please try again.")
			return
		}
		a, ok := st.approverByToken(r.PostFormValue("token"))
		if !ok {
			b.log.Warn("approver sign-in failed", "remote", r.RemoteAddr)
			w.WriteHeader(http.StatusUnauthorized)
			b.loginPage(w, r, "That token is not an approver's.")
			return
		}
		cookie, _ := st.web.create(a, time.Now())
		http.SetCookie(w, &http.Cookie{Name: approverCookie, Value: cookie, Path: "/approvals", HttpOnly: true,
			Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: int(st.web.ttl.Seconds())})
		http.SetCookie(w, &http.Cookie{Name: loginCSRFCk, Value: "", Path: "/approvals", MaxAge: -1})
		b.log.Info("approver signed in", "approver", a.id)
		http.Redirect(w, r, "/approvals/", http.StatusSeeOther)
	})
	mux.HandleFunc("POST /approvals/logout", func(w http.ResponseWriter, r *http.Request) {
		if s := b.webSession(r); s != nil && b.csrfOK(r, s) {
			ck, _ := r.Cookie(approverCookie)
			st.web.drop(ck.Value)
		}
		http.SetCookie(w, &http.Cookie{Name: approverCookie, Value: "", Path: "/approvals", MaxAge: -1})
		http.Redirect(w, r, "/approvals/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		s := b.webSession(r)
		if s == nil {
			b.loginPage(w, r, "")
			return
		}
		rec, err := st.svc.Get(r.PathValue("id"))
		if err == nil && !s.approver.approver().MaySee(rec) {
			err = approval.ErrUnknown // another tenant's: as if it did not exist
		}
		if err != nil {
			http.Error(w, "no such approval", approvalStatus(err))
			return
		}
		render(w, "detail", pageData{Title: "Approval " + rec.ID, Approver: s.approver.id, CSRF: s.csrf, Record: rec,
			Flash: r.URL.Query().Get("flash"), CanDecide: rec.State == approval.Requested && rec.Mode == approval.ModeApprover})
	})
	mux.HandleFunc("POST /approvals/{id}/decide", func(w http.ResponseWriter, r *http.Request) {
		s := b.webSession(r)
		if s == nil {
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		if !b.sameOrigin(r) || !b.csrfOK(r, s) {
			b.log.Warn("approval decision refused: CSRF check failed", "approver", s.approver.id)
			http.Error(w, "CSRF check failed", http.StatusForbidden)
			return
		}
		id := r.PathValue("id")
		action := r.PostFormValue("action")
		if action != "approve" && action != "deny" {
			http.Error(w, "action must be approve or deny", http.StatusBadRequest)
			return
		}
		flash := "Decision recorded."
		_, err := b.decideAndRecord(r.Context(), id, approval.Decision{Approve: action == "approve", Channel: approval.ChannelWeb,
			Comment: r.PostFormValue("comment"), By: s.approver.approver()})
		if err != nil {
			flash = "Refused: " + refusalText(err)
		}
		http.Redirect(w, r, "/approvals/"+url.PathEscape(id)+"?flash="+url.QueryEscape(flash), http.StatusSeeOther)
	})

	// The approver API.
	mux.HandleFunc("GET /approvals/api/v1/approvals", func(w http.ResponseWriter, r *http.Request) {
		a, ok := b.bearerApprover(w, r)
		if !ok {
			return
		}
		rs, err := st.svc.List(r.URL.Query().Get("all") != "")
		if err != nil {
			writeJSONStatus(w, http.StatusInternalServerError, map[string]string{"error": "approvals unavailable"})
			return
		}
		rs = a.visible(rs)
		if rs == nil {
			rs = []*approval.Record{}
		}
		writeJSONStatus(w, http.StatusOK, rs)
	})
	mux.HandleFunc("GET /approvals/api/v1/approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := b.bearerApprover(w, r)
		if !ok {
			return
		}
		rec, err := st.svc.Get(r.PathValue("id"))
		if err == nil && !a.approver().MaySee(rec) {
			err = approval.ErrUnknown // another tenant's: as if it did not exist
		}
		if err != nil {
			writeJSONStatus(w, approvalStatus(err), map[string]string{"error": refusalText(err)})
			return
		}
		writeJSONStatus(w, http.StatusOK, rec)
	})
	mux.HandleFunc("POST /approvals/api/v1/approvals/{id}/{action}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := b.bearerApprover(w, r)
		if !ok {
			return
		}
		action := r.PathValue("action")
		if action != "approve" && action != "deny" {
			writeJSONStatus(w, http.StatusNotFound, map[string]string{"error": "unknown action"})
			return
		}
		var body struct {
			Comment string `json:"comment"`
		}
		if r.ContentLength != 0 {
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				writeJSONStatus(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
				return
			}
		}
		rec, err := b.decideAndRecord(r.Context(), r.PathValue("id"), approval.Decision{Approve: action == "approve",
			Channel: approval.ChannelHTTP, Comment: body.Comment, By: a.approver()})
		if err != nil {
			writeJSONStatus(w, approvalStatus(err), map[string]string{"error": refusalText(err)})
			return
		}
		writeJSONStatus(w, http.StatusOK, rec)
	})
	return securityHeaders(mux)
}

// refusalText is what an approver is told about a refused decision.
func refusalText(err error) string {
	for _, e := range []error{approval.ErrUnknown, approval.ErrNotPending, approval.ErrExpired, approval.ErrSeparation,
		approval.ErrNotInGroup, approval.ErrWrongChannel} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "the decision could not be recorded"
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func render(w http.ResponseWriter, name string, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := approvalPages.ExecuteTemplate(w, name, d); err != nil {
		http.Error(w, "page not rendered", http.StatusInternalServerError)
	}
}

func (b *Broker) loginPage(w http.ResponseWriter, r *http.Request, flash string) {
	csrf := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCk, Value: csrf, Path: "/approvals", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	render(w, "login", pageData{Title: "Sign in", CSRF: csrf, Flash: flash})
}

func (b *Broker) webSession(r *http.Request) *webSession {
	ck, err := r.Cookie(approverCookie)
	if err != nil || ck.Value == "" {
		return nil
	}
	return b.approvals.web.get(ck.Value, time.Now())
}

func (b *Broker) csrfOK(r *http.Request, s *webSession) bool {
	return subtle.ConstantTimeCompare([]byte(s.csrf), []byte(r.PostFormValue("csrf"))) == 1
}

// sameOrigin refuses browser POSTs from other origins: Origin (or, without
// it, Referer) must name this host.
func (b *Broker) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return true // not a browser; the CSRF token still applies
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host) || (r.Header.Get("Origin") != "" && b.originAllowed(r))
}

// bearerApprover authenticates an API request by approver token.
func (b *Broker) bearerApprover(w http.ResponseWriter, r *http.Request) (approverCred, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a, found := b.approvals.approverByToken(strings.TrimSpace(tok))
	if !ok || !found {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mcpbroker-approvals"`)
		writeJSONStatus(w, http.StatusUnauthorized, map[string]string{"error": "approver token required"})
		return approverCred{}, false
	}
	return a, true
}
