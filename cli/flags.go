package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// newFlags returns a flag set for a subcommand whose usage prints synopsis
// and every flag with its environment variable. In synopsis, {prog} stands
// for the program's name, {kind} for its first aggregate type and {prefix},
// {id}, {type} and {data} for an example command of it (catalog.example).
func newFlags(name, synopsis string, s *session) *flag.FlagSet {
	fs := flag.NewFlagSet(s.name+" "+name, flag.ContinueOnError)
	fs.SetOutput(s.err)
	fs.Usage = func() {
		fmt.Fprintf(s.err, "Usage: %s %s\n", s.name, s.expand(synopsis))
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(s.err, "\nFlags (each also read from the environment variable shown):\n")
		}
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			// A usage that explains its default itself ("(default
			// 2×CPUs)") is not followed by the zero value standing for it.
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" && !strings.Contains(f.Usage, "(default ") {
				def = fmt.Sprintf(" (default %s)", f.DefValue)
			}
			fmt.Fprintf(s.err, "  --%s  [%s]\n      %s%s\n", f.Name, envName(f.Name), f.Usage, def)
		})
	}
	return fs
}

// expand replaces the placeholders of a help text (see newFlags).
func (s *session) expand(text string) string {
	prefix, id, typ, data := s.kinds.example()
	kind := "TYPE"
	if len(s.kinds.kinds) > 0 {
		kind = s.kinds.kinds[0].Name()
	}
	return strings.NewReplacer("{prog}", s.name, "{kind}", kind, "{prefix}", prefix, "{id}", id, "{type}", typ, "{data}", data).Replace(text)
}

func envName(flagName string) string {
	return "CHRONICLE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags applies environment variables for flags not given on the
// command line, then parses args. It returns (positional args, exit code,
// done): done means the caller should return the code (help or bad flags).
func parseFlags(fs *flag.FlagSet, args []string) ([]string, int, bool) {
	// Flags may come before or after positional arguments.
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			if f := fs.Lookup(name); f != nil {
				if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
					continue
				}
				if i+1 < len(args) {
					flags = append(flags, args[i+1])
					i++
				}
			}
			continue
		}
		positional = append(positional, a)
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0, true
		}
		return nil, 2, true
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = errors.Join(envErr, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
			}
		}
	})
	if envErr != nil {
		fmt.Fprintf(fs.Output(), "%s: bad environment: %v\n", fs.Name(), envErr)
		return nil, 2, true
	}
	return positional, 0, false
}

// fail prints a one-line error with the subcommand's name and returns 1.
func fail(s *session, cmd string, err error) int {
	fmt.Fprintf(s.err, "%s %s: %v\n", s.name, cmd, err)
	return 1
}
