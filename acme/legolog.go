package acme

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	legolog "github.com/go-acme/lego/v4/log"
)

// RouteLegoLog sends the log lines lego writes itself (its badNonce retries, for one) to
// logger with component=lego, at the level lego's "[INFO]"/"[WARN]" prefix names, instead
// of lego's default: unstructured lines on standard error. lego's logger is one global
// variable, so this affects every lego client in the process; call it once at start-up.
func RouteLegoLog(logger *slog.Logger) {
	legolog.Logger = legoLogger{log: logger.With("component", "lego")}
}

// legoLogger adapts slog to lego's StdLogger interface.
type legoLogger struct{ log *slog.Logger }

func (l legoLogger) line(s string) {
	level := slog.LevelInfo

	switch {
	case strings.HasPrefix(s, "[WARN] "):
		level, s = slog.LevelWarn, s[len("[WARN] "):]
	case strings.HasPrefix(s, "[INFO] "):
		s = s[len("[INFO] "):]
	}

	l.log.Log(context.Background(), level, strings.TrimSpace(s))
}

func (l legoLogger) Print(args ...any)                 { l.line(fmt.Sprint(args...)) }
func (l legoLogger) Println(args ...any)               { l.line(fmt.Sprintln(args...)) }
func (l legoLogger) Printf(format string, args ...any) { l.line(fmt.Sprintf(format, args...)) }

// lego calls Fatal only from its command-line tool, never from the library paths
// certfetch uses; should it ever, the line is logged at error level and the process goes
// on, since ending a daemon is not lego's decision.
func (l legoLogger) Fatal(args ...any)                 { l.log.Error(fmt.Sprint(args...)) }
func (l legoLogger) Fatalln(args ...any)               { l.log.Error(strings.TrimSpace(fmt.Sprintln(args...))) }
func (l legoLogger) Fatalf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }
