package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3 document of this API. It is written by hand; TestOpenAPIMatchesRoutes
// keeps it true to the routes (paths, methods, query parameters, roles, error codes), and the
// end-to-end tests check every status they see against it.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the document served at /openapi.json.
func OpenAPI() []byte { return openAPI }

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPI)
}
