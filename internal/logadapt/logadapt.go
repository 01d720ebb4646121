// Package logadapt routes the loggers that third-party libraries want —
// hclog.Logger for hashicorp/raft, *log.Logger for hashicorp/memberlist —
// into log/slog, so the daemon has one log stream with one format.
package logadapt

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// LevelTrace is below slog.LevelDebug; hclog's Trace maps to it.
const LevelTrace = slog.LevelDebug - 4

// Std returns a *log.Logger whose lines go to l. A leading "[LEVEL]" tag, as
// memberlist writes, chooses the slog level; the tag and a "memberlist: "
// style prefix are dropped from the message.
func Std(l *slog.Logger) *log.Logger {
	return log.New(&stdWriter{l: l}, "", 0)
}

type stdWriter struct{ l *slog.Logger }

func (w *stdWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\n"))
	level := slog.LevelInfo
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			switch line[1:end] {
			case "TRACE":
				level = LevelTrace
			case "DEBUG":
				level = slog.LevelDebug
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = strings.TrimSpace(line[end+1:])
		}
	}
	if i := strings.Index(line, ": "); i > 0 && !strings.ContainsAny(line[:i], " ") {
		line = line[i+2:]
	}
	w.l.Log(context.Background(), level, line)
	return len(p), nil
}

// Hclog returns an hclog.Logger writing to l.
func Hclog(l *slog.Logger, name string) hclog.Logger {
	return &hcLogger{l: l, name: name}
}

type hcLogger struct {
	l    *slog.Logger
	name string
	args []any
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return LevelTrace
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo
}

func (h *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	h.l.Log(context.Background(), slogLevel(level), strings.ToLower(msg[:min(1, len(msg))])+msg[min(1, len(msg)):], args...)
}
func (h *hcLogger) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hcLogger) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hcLogger) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hcLogger) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hcLogger) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hcLogger) enabled(level hclog.Level) bool {
	return h.l.Enabled(context.Background(), slogLevel(level))
}
func (h *hcLogger) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hcLogger) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hcLogger) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hcLogger) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hcLogger) IsError() bool { return h.enabled(hclog.Error) }

func (h *hcLogger) ImpliedArgs() []any { return h.args }
func (h *hcLogger) With(args ...any) hclog.Logger {
	return &hcLogger{l: h.l.With(args...), name: h.name, args: append(append([]any{}, h.args...), args...)}
}
func (h *hcLogger) Name() string { return h.name }
func (h *hcLogger) Named(name string) hclog.Logger {
	if h.name != "" {
		name = h.name + "." + name
	}
	return &hcLogger{l: h.l.With("sub", name), name: name, args: h.args}
}
func (h *hcLogger) ResetNamed(name string) hclog.Logger {
	return &hcLogger{l: h.l.With("sub", name), name: name, args: h.args}
}

// SetLevel is a no-op: the slog handler decides what is printed.
func (h *hcLogger) SetLevel(hclog.Level) {}
func (h *hcLogger) GetLevel() hclog.Level {
	for _, lv := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn} {
		if h.enabled(lv) {
			return lv
		}
	}
	return hclog.Error
}
func (h *hcLogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger { return Std(h.l) }
func (h *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &stdWriter{l: h.l}
}
