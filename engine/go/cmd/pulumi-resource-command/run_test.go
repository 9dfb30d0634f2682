package main

// The run helpers without an engine: the dial retry count and wording, line logging, and the
// previous-output variables.

import (
	"context"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestDialRetriesUpToTheLimitAndNamesTheLastError(t *testing.T) {
	attempts := 0
	_, err := dialWithRetry(context.Background(), engineLog{}, "Dial", 2, func() (int, error) {
		attempts++
		return 0, errors.New("connection refused")
	})
	// Upstream: dialErrorLimit failures are retried, so limit+1 attempts, and the count it reports is
	// that of the retries.
	if attempts != 3 || err == nil || err.Error() != "after 2 failed attempts: connection refused" {
		t.Errorf("attempts %d, err %v", attempts, err)
	}
}

func TestDialStopsAtTheFirstSuccess(t *testing.T) {
	attempts := 0
	got, err := dialWithRetry(context.Background(), engineLog{}, "Dial", unlimitedDials, func() (string, error) {
		if attempts++; attempts < 2 {
			return "", errors.New("not yet")
		}
		return "client", nil
	})
	if got != "client" || err != nil || attempts != 2 {
		t.Errorf("got %q, %v after %d attempts", got, err, attempts)
	}
}

func TestDialGivesUpWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := dialWithRetry(ctx, engineLog{}, "Dial", unlimitedDials, func() (int, error) {
		return 0, errors.New("refused")
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
}

func TestLogLinesSplitsLinesCutsLongOnesAndReadsToTheEnd(t *testing.T) {
	long := strings.Repeat("x", maxLoggedLine+10)
	reader, writer := io.Pipe()
	go func() {
		_, _ = io.WriteString(writer, "one\r\n\ntwo\n"+long+"\nlast")
		writer.Close()
	}()
	var lines []string
	logLines(reader, func(line string) { lines = append(lines, line) })
	want := []string{"one", "", "two", long[:maxLoggedLine], "last"}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("lines %q", lines)
	}
}

func TestOnlyNonEmptyPreviousOutputIsPassedOn(t *testing.T) {
	got := commandOutput{stdout: "out"}.env()
	if !reflect.DeepEqual(got, [][2]string{{"PULUMI_COMMAND_STDOUT", "out"}}) {
		t.Errorf("env %v", got)
	}
}

func TestAFailedRunCarriesTheCommandAndItsInterleavedOutput(t *testing.T) {
	capture := newOutputCapture(nil, engineLog{})
	_, _ = io.WriteString(capture.stdoutWriter(), "to stdout\n")
	_, _ = io.WriteString(capture.stderrWriter(), "to stderr\n")
	_, err := capture.finish(errors.New("exit status 2"), "make it")
	if err == nil || err.Error() != "exit status 2: running \"make it\":\nto stdout\nto stderr\n" {
		t.Errorf("err %v", err)
	}
}
