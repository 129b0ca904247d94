package uv

import (
	"context"
	"strings"
)

// subcommand names a uv call for the metrics: the first one or two words that are not options
// ("add", "python find", "cache prune").
func subcommand(args []string) string {
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") || len(words) == 2 {
			break
		}
		words = append(words, a)
	}
	switch {
	case len(words) == 0:
		return "uv"
	case words[0] == "python" || words[0] == "cache":
		return strings.Join(words, " ")
	default:
		return words[0]
	}
}

// PruneCache runs `uv cache prune`, which removes unused entries from the cache. uv takes the
// cache's lock exclusively for it, so every other uv command waits meanwhile: callers prune only
// when no uv operation is under way.
func (e *Executor) PruneCache(ctx context.Context) (string, error) {
	return e.run(ctx, "", "cache", "prune")
}

// CleanCache runs `uv cache clean -- names`, which drops those packages' cache entries, so the
// next install downloads and unpacks them afresh (used when a build's damage is the cache's
// too). Like prune it takes the cache's lock exclusively while it runs.
func (e *Executor) CleanCache(ctx context.Context, names []string) (string, error) {
	return e.run(ctx, "", append([]string{"cache", "clean", "--"}, names...)...)
}
