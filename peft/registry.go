package peft

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Registration is what a method tells the rest of gopeft about itself:
// train, eval, generate, merge, inspect and bench reach a method only
// through it (and the interfaces its Method implements), never by name.
type Registration struct {
	// Type is the peft_type, upper case (LORA, FULL).
	Type string
	// New returns a method with the method's defaults, ready to decode its
	// config into.
	New func() Method
	// Flags are the command-line flags that set its config's keys.
	Flags []Flag
	// AliasOf, when set, makes Type a name for a setting of another
	// method (DORA: LORA with use_dora true). New's config carries that
	// method's peft_type, which is what adapter files hold, so a file
	// naming the alias is refused.
	AliasOf string
}

// FlagKind says how a flag's text becomes a config value.
type FlagKind int

const (
	IntFlag     FlagKind = iota // a whole number
	FloatFlag                   // a number
	StringFlag                  // text
	BoolFlag                    // true or false
	ModulesFlag                 // target_modules: a comma list, or one regex / "all-linear"
)

// Flag is a command-line flag of a method, standing for one config key.
type Flag struct {
	Name  string // without dashes: "rank"
	Key   string // the config key it sets: "r"
	Kind  FlagKind
	Usage string
	// Default is the flag's value when neither the command line nor the
	// recipe sets the key ("" leaves the config's own default).
	Default string
}

// Value converts the flag's text to the config value it stands for.
func (f Flag) Value(s string) (any, error) {
	bad := func(want string) error { return fmt.Errorf("--%s %q: want %s", f.Name, s, want) }
	switch f.Kind {
	case IntFlag:
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, bad("a whole number")
		}
		return n, nil
	case FloatFlag:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, bad("a number")
		}
		return x, nil
	case BoolFlag:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, bad("true or false")
		}
		return b, nil
	case ModulesFlag:
		if !strings.Contains(s, ",") && (strings.EqualFold(s, "all-linear") || strings.ContainsAny(s, `.*+?()[]|^$\`)) {
			return s, nil // one regex, or the all-linear shorthand
		}
		var names []string
		for _, n := range strings.Split(s, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
		return names, nil
	}
	return s, nil
}

var registry = map[string]Registration{}

// Register makes a method known by its peft_type. Sub-packages call it
// from init.
func Register(r Registration) {
	r.Type = strings.ToUpper(r.Type)
	if _, dup := registry[r.Type]; dup {
		panic("peft: method " + r.Type + " registered twice")
	}
	registry[r.Type] = r
}

// Lookup finds a method's registration by peft_type, in any case.
func Lookup(peftType string) (Registration, error) {
	r, ok := registry[strings.ToUpper(strings.TrimSpace(peftType))]
	if !ok {
		return Registration{}, fmt.Errorf("unsupported peft_type %q (supported: %s)", peftType, strings.Join(Types(), ", "))
	}
	return r, nil
}

// Types lists the registered peft_types, sorted.
func Types() []string {
	ts := make([]string, 0, len(registry))
	for t := range registry {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// NewMethod returns a method with its defaults for a peft_type (in any
// case), ready to receive its config.
func NewMethod(peftType string) (Method, error) {
	r, err := Lookup(peftType)
	if err != nil {
		return nil, err
	}
	return r.New(), nil
}
