package api

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// web holds the settings page: plain HTML, a small vanilla script and a style sheet, served from
// the binary. Nothing is loaded from elsewhere (no CDN, no web fonts), and the policy below
// forbids it.
//
//go:embed web
var web embed.FS

// pageCSP allows only this origin's script, style and API: no inline script, no framing.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

func pageHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", pageCSP)
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Cache-Control", "no-cache")
}

func servePage(w http.ResponseWriter, r *http.Request) {
	pageHeaders(w)
	http.ServeFileFS(w, r, web, "web/index.html")
}

func assetHandler() http.Handler {
	sub, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embed directive guarantees web/ exists
	}
	files := http.StripPrefix("/assets/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		pageHeaders(w)
		files.ServeHTTP(w, r)
	})
}
