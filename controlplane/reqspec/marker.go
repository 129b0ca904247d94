package reqspec

import (
	"fmt"
	"strings"
)

// markerVars are PEP 508's environment marker variables; uv refuses others, so do we, here,
// rather than as a uv failure later.
var markerVars = map[string]bool{
	"python_version": true, "python_full_version": true, "os_name": true, "sys_platform": true,
	"platform_release": true, "platform_system": true, "platform_version": true, "platform_machine": true,
	"platform_python_implementation": true, "implementation_name": true, "implementation_version": true,
	"extra": true,
}

// versionVars compare as PEP 440 versions, so their literals must be versions.
var versionVars = map[string]bool{"python_version": true, "python_full_version": true, "implementation_version": true}

// maxMarkerDepth bounds parentheses, so a hostile marker cannot recurse deeply.
const maxMarkerDepth = 8

type markerToken struct {
	kind string // "var", "str", "op", "and", "or", "(", ")"
	text string
}

// parseMarker checks a PEP 508 marker against its grammar and returns it in canonical spacing:
//
//	marker = and ("or" and)* ; and = expr ("and" expr)* ; expr = var op var | "(" marker ")"
func parseMarker(s string) (string, error) {
	toks, err := lexMarker(s)
	if err != nil {
		return "", err
	}
	p := &markerParser{toks: toks}
	out, err := p.or(0)
	if err != nil {
		return "", err
	}
	if p.pos != len(p.toks) {
		return "", fmt.Errorf("unexpected %q", p.toks[p.pos].text)
	}
	return out, nil
}

func lexMarker(s string) ([]markerToken, error) {
	var toks []markerToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')':
			toks = append(toks, markerToken{kind: string(c), text: string(c)})
			i++
		case c == '"' || c == '\'':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, fmt.Errorf("unterminated string")
			}
			lit := s[i+1 : i+1+end]
			if strings.ContainsAny(lit, `"'\`) {
				return nil, fmt.Errorf("string %q: quotes and backslashes are not allowed", lit)
			}
			toks = append(toks, markerToken{kind: "str", text: lit})
			i += end + 2
		case strings.ContainsRune("<>=!~", rune(c)):
			j := i
			for j < len(s) && strings.ContainsRune("<>=!~", rune(s[j])) {
				j++
			}
			op := s[i:j]
			switch op {
			case "<", "<=", ">", ">=", "==", "!=", "~=": // uv refuses === in markers
			default:
				return nil, fmt.Errorf("unknown operator %q", op)
			}
			toks = append(toks, markerToken{kind: "op", text: op})
			i = j
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_':
			j := i
			for j < len(s) && (s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9' || s[j] == '_' || s[j] == '.') {
				j++
			}
			word := s[i:j]
			switch {
			case word == "and" || word == "or":
				toks = append(toks, markerToken{kind: word, text: word})
			case word == "in":
				toks = append(toks, markerToken{kind: "op", text: "in"})
			case word == "not":
				// only as "not in"
				k := j
				for k < len(s) && (s[k] == ' ' || s[k] == '\t') {
					k++
				}
				if k == j || !strings.HasPrefix(s[k:], "in") || k+2 < len(s) && isWordByte(s[k+2]) {
					return nil, fmt.Errorf("'not' must be followed by 'in'")
				}
				toks = append(toks, markerToken{kind: "op", text: "not in"})
				j = k + 2
			case markerVars[word]:
				toks = append(toks, markerToken{kind: "var", text: word})
			default:
				return nil, fmt.Errorf("unknown marker variable %q", word)
			}
			i = j
		default:
			return nil, fmt.Errorf("unexpected character %q", c)
		}
	}
	return toks, nil
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.'
}

type markerParser struct {
	toks []markerToken
	pos  int
}

func (p *markerParser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos].kind
	}
	return ""
}

func (p *markerParser) or(depth int) (string, error) {
	left, err := p.and(depth)
	if err != nil {
		return "", err
	}
	for p.peek() == "or" {
		p.pos++
		right, err := p.and(depth)
		if err != nil {
			return "", err
		}
		left += " or " + right
	}
	return left, nil
}

func (p *markerParser) and(depth int) (string, error) {
	left, err := p.expr(depth)
	if err != nil {
		return "", err
	}
	for p.peek() == "and" {
		p.pos++
		right, err := p.expr(depth)
		if err != nil {
			return "", err
		}
		left += " and " + right
	}
	return left, nil
}

func (p *markerParser) expr(depth int) (string, error) {
	if p.peek() == "(" {
		if depth >= maxMarkerDepth {
			return "", fmt.Errorf("nested deeper than %d", maxMarkerDepth)
		}
		p.pos++
		inner, err := p.or(depth + 1)
		if err != nil {
			return "", err
		}
		if p.peek() != ")" {
			return "", fmt.Errorf("unclosed '('")
		}
		p.pos++
		return "(" + inner + ")", nil
	}
	if p.pos+3 > len(p.toks) {
		return "", fmt.Errorf("incomplete comparison")
	}
	l, op, r := p.toks[p.pos], p.toks[p.pos+1], p.toks[p.pos+2]
	if op.kind != "op" || (l.kind != "var" && l.kind != "str") || (r.kind != "var" && r.kind != "str") {
		return "", fmt.Errorf("want <variable> <operator> <string> or the reverse")
	}
	if l.kind == r.kind {
		return "", fmt.Errorf("a comparison needs one variable and one string")
	}
	v, lit := l, r
	if l.kind == "str" {
		v, lit = r, l
	}
	if versionVars[v.text] && op.text != "in" && op.text != "not in" {
		if err := checkVersion(op.text, lit.text); err != nil {
			return "", fmt.Errorf("%s: %v", v.text, err)
		}
	}
	p.pos += 3
	render := func(t markerToken) string {
		if t.kind == "str" {
			return `"` + t.text + `"`
		}
		return t.text
	}
	return render(l) + " " + op.text + " " + render(r), nil
}
