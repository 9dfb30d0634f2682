package main

// What a running command writes, and what becomes of it (both resources alike, as upstream):
//
//   - stdout and stderr are kept apart for the state's outputs, one trailing newline trimmed;
//   - both are kept interleaved, in the order written, for a failure's error:
//     `<exit error>: running "<command>":\n<output>`;
//   - per `logging` (both streams when unset), each line goes to the engine while the command runs,
//     as an ephemeral info status of the resource: the CLI shows the latest line on the resource's
//     row, and the final summary keeps none of them.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
)

// maxLoggedLine bounds a logged line (upstream's line scanner limit); the rest of a longer line is
// dropped from the log only, never from the outputs.
const maxLoggedLine = 64 * 1024

type outputCapture struct {
	stdout, stderr bytes.Buffer
	combined       lockedBuffer
	logStdout      bool
	logStderr      bool
	lines          *io.PipeWriter
	linesDone      chan struct{}
}

// lockedBuffer is written by the goroutines copying stdout and stderr at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newOutputCapture(logging *string, log engineLog) *outputCapture {
	reader, writer := io.Pipe()
	capture := &outputCapture{
		logStdout: logsStdout(logging),
		logStderr: logsStderr(logging),
		lines:     writer,
		linesDone: make(chan struct{}),
	}
	go func() {
		defer close(capture.linesDone)
		logLines(reader, func(line string) { log.status(diag.Info, line) })
	}()
	return capture
}

func (c *outputCapture) stdoutWriter() io.Writer {
	if c.logStdout {
		return io.MultiWriter(&c.stdout, &c.combined, c.lines)
	}
	return io.MultiWriter(&c.stdout, &c.combined)
}

func (c *outputCapture) stderrWriter() io.Writer {
	if c.logStderr {
		return io.MultiWriter(&c.stderr, &c.combined, c.lines)
	}
	return io.MultiWriter(&c.stderr, &c.combined)
}

// finish waits for the last line to be logged and turns the run's result into the output or the error.
func (c *outputCapture) finish(runErr error, command string) (commandOutput, error) {
	c.lines.Close()
	<-c.linesDone
	if runErr != nil {
		return commandOutput{}, fmt.Errorf("%w: running %q:\n%s", runErr, command, c.combined.String())
	}
	return commandOutput{
		stdout: strings.TrimSuffix(c.stdout.String(), "\n"),
		stderr: strings.TrimSuffix(c.stderr.String(), "\n"),
	}, nil
}

// logLines calls emit with each line read (without its end of line, as a line scanner gives it,
// also the last one without a newline), until the reader is closed. It always reads to the end, so
// a writer never blocks on it.
func logLines(r io.Reader, emit func(string)) {
	reader := bufio.NewReaderSize(r, maxLoggedLine)
	for {
		line, isPrefix, err := reader.ReadLine()
		if len(line) > 0 || (err == nil && !isPrefix) {
			emit(string(line))
		}
		for isPrefix && err == nil { // a line over the limit: its remainder is not logged
			_, isPrefix, err = reader.ReadLine()
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_, _ = io.Copy(io.Discard, r)
			}
			return
		}
	}
}
