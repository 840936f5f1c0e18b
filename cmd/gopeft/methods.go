package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gopeft/gopeft/peft"
	_ "github.com/gopeft/gopeft/peft/adalora"      // registers ADALORA
	_ "github.com/gopeft/gopeft/peft/bitfit"       // registers BITFIT and BEFT
	_ "github.com/gopeft/gopeft/peft/bottleneck"   // registers BOTTLENECK
	_ "github.com/gopeft/gopeft/peft/childtuning"  // registers CHILD_TUNING_F and CHILD_TUNING_D
	_ "github.com/gopeft/gopeft/peft/diffpruning"  // registers DIFF_PRUNING
	_ "github.com/gopeft/gopeft/peft/dylora"       // registers DYLORA
	_ "github.com/gopeft/gopeft/peft/fishdip"      // registers FISH_DIP
	_ "github.com/gopeft/gopeft/peft/fishmask"     // registers FISHMASK
	_ "github.com/gopeft/gopeft/peft/full"         // registers FULL
	_ "github.com/gopeft/gopeft/peft/hybrid"       // registers MAM, UNIPELT
	_ "github.com/gopeft/gopeft/peft/ia3"          // registers IA3
	_ "github.com/gopeft/gopeft/peft/lntuning"     // registers LN_TUNING
	_ "github.com/gopeft/gopeft/peft/lora"         // registers LORA
	_ "github.com/gopeft/gopeft/peft/pafi"         // registers PAFI
	_ "github.com/gopeft/gopeft/peft/prefixtuning" // registers PREFIX_TUNING
	_ "github.com/gopeft/gopeft/peft/prompttuning" // registers PROMPT_TUNING
	_ "github.com/gopeft/gopeft/peft/ptuning"      // registers P_TUNING
	_ "github.com/gopeft/gopeft/peft/sam"          // registers SAM
	_ "github.com/gopeft/gopeft/peft/ssf"          // registers SSF
)

// methodFlags are the flags that registered methods declare (--rank,
// --alpha, --targets, ...), each registered once however many methods
// share it. The CLI knows no method by name: a flag sets its method's
// config key, and a flag the chosen method does not have is an error.
type methodFlags struct{ fs *pflag.FlagSet }

// registerMethodFlags adds every registered method's flags to fs.
func registerMethodFlags(fs *pflag.FlagSet) *methodFlags {
	usage := map[string][]string{}
	isBool := map[string]bool{}
	var order []string
	for _, t := range peft.Types() {
		reg, _ := peft.Lookup(t)
		for _, f := range reg.Flags {
			if _, ok := usage[f.Name]; !ok {
				order = append(order, f.Name)
			}
			u := t + ": " + f.Usage
			if f.Default != "" {
				u += " (default " + f.Default + ")"
			}
			usage[f.Name] = append(usage[f.Name], u)
			if f.Kind == peft.BoolFlag {
				isBool[f.Name] = true
			}
		}
	}
	for _, name := range order {
		fs.String(name, "", strings.Join(usage[name], "; "))
		if isBool[name] { // --use-dora alone means true
			fs.Lookup(name).NoOptDefVal = "true"
		}
	}
	return &methodFlags{fs: fs}
}

// methodUsage is the --method flag's help: the registered peft_types.
func methodUsage() string {
	return "peft_type, in any case: " + strings.Join(peft.Types(), ", ")
}

// apply resolves method (in any case) to its registration and writes the
// flags given on the command line into block (a recipe's peft keys), then
// each flag's default for a key that neither sets.
func (mf *methodFlags) apply(method string, block map[string]any) (peft.Registration, error) {
	reg, err := peft.Lookup(method)
	if err != nil {
		return reg, fmt.Errorf("--method (recipe method): %w", err)
	}
	mine := map[string]peft.Flag{}
	var names []string
	for _, f := range reg.Flags {
		mine[f.Name] = f
		names = append(names, "--"+f.Name)
	}
	var bad error
	mf.fs.VisitAll(func(fl *pflag.Flag) {
		if _, declared := mine[fl.Name]; !declared && fl.Changed && isMethodFlag(fl.Name) && bad == nil {
			have := "none"
			if len(names) > 0 {
				have = strings.Join(names, ", ")
			}
			bad = fmt.Errorf("--%s is not a setting of method %s (its flags: %s)", fl.Name, reg.Type, have)
		}
	})
	if bad != nil {
		return reg, bad
	}
	for _, f := range reg.Flags {
		text, given := f.Default, mf.fs.Changed(f.Name)
		if given {
			text = mf.fs.Lookup(f.Name).Value.String()
		} else if _, inRecipe := block[f.Key]; inRecipe || text == "" {
			continue
		}
		v, err := f.Value(text)
		if err != nil {
			return reg, err
		}
		block[f.Key] = v
	}
	return reg, nil
}

// isMethodFlag reports whether some registered method declares the flag.
func isMethodFlag(name string) bool {
	for _, t := range peft.Types() {
		reg, _ := peft.Lookup(t)
		for _, f := range reg.Flags {
			if f.Name == name {
				return true
			}
		}
	}
	return false
}
