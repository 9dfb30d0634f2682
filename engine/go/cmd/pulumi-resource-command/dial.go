package main

// The SSH connection of a remote command, as upstream makes it.
//
//   - Authentication, in this order: `privateKey` (OpenSSH or PEM; `privateKeyPassword` when it is
//     encrypted), then `password` (also answering keyboard-interactive prompts), then the SSH agent
//     at `agentSocketPath` or $SSH_AUTH_SOCK. A key that does not parse, or an agent socket that does
//     not answer, fails the run at once.
//   - The host key is checked only when `hostKey` (authorized_keys form) is given.
//   - Each dial is bounded by `perDialTimeout` seconds (0: none). A failed dial is retried (the
//     SDK's retry loop: 0.1 s, growing 1.5x, at most 5 s apart), each failure shown as an info
//     status "Dial n/limit failed: retrying", until dialErrorLimit retries have failed (-1: no
//     limit); the error is then "after <limit> failed attempts: <the last dial error>".
//   - Through a `proxy`: dial the bastion (retried per the proxy's limit), open a TCP channel from it
//     to the host, and run the SSH handshake over that; the errors say "proxy: ".

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/retry"
)

const unlimitedDials = -1

func dialConnection(ctx context.Context, c *connection, log engineLog) (*ssh.Client, error) {
	config, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	target := c.address()
	if c.Proxy == nil {
		return dialWithRetry(ctx, log, "Dial", *c.DialErrorLimit, func() (*ssh.Client, error) {
			return ssh.Dial("tcp", target, config)
		})
	}

	proxyConfig, err := c.Proxy.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	bastion, err := dialWithRetry(ctx, log, "Dial proxy", *c.Proxy.DialErrorLimit, func() (*ssh.Client, error) {
		return ssh.Dial("tcp", c.Proxy.address(), proxyConfig)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	tunnel, err := dialWithRetry(ctx, log, "Dial from proxy", *c.DialErrorLimit, func() (net.Conn, error) {
		return bastion.Dial("tcp", target)
	})
	if err != nil {
		bastion.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	type handshake struct {
		conn     ssh.Conn
		channels <-chan ssh.NewChannel
		requests <-chan *ssh.Request
	}
	done, err := dialWithRetry(ctx, log, "Dial", *c.DialErrorLimit, func() (handshake, error) {
		conn, channels, requests, err := ssh.NewClientConn(tunnel, target, config)
		return handshake{conn, channels, requests}, err
	})
	if err != nil {
		bastion.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return ssh.NewClient(done.conn, done.channels, done.requests), nil
}

func (e *sshEndpoint) address() string {
	return net.JoinHostPort(*e.Host, strconv.Itoa(int(*e.Port)))
}

func (e *sshEndpoint) clientConfig() (*ssh.ClientConfig, error) {
	config := &ssh.ClientConfig{
		User:            *e.User,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // upstream checks a host key only when given one
		Timeout:         time.Duration(*e.PerDialTimeout) * time.Second,
	}
	if e.HostKey != nil {
		hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*e.HostKey))
		if err != nil {
			return nil, fmt.Errorf("failed to parse host key: %w", err)
		}
		config.HostKeyCallback = ssh.FixedHostKey(hostKey)
		config.HostKeyAlgorithms = []string{hostKey.Type()}
	}
	if e.PrivateKey != nil {
		var signer ssh.Signer
		var err error
		if e.PrivateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*e.PrivateKey), []byte(*e.PrivateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*e.PrivateKey))
		}
		if err != nil {
			return nil, err
		}
		config.Auth = append(config.Auth, ssh.PublicKeys(signer))
	}
	if e.Password != nil {
		password := *e.Password
		config.Auth = append(config.Auth, ssh.Password(password),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = password
				}
				return answers, nil
			}))
	}
	socket := os.Getenv("SSH_AUTH_SOCK")
	if e.AgentSocketPath != nil {
		socket = *e.AgentSocketPath
	}
	if socket != "" {
		conn, err := net.Dial("unix", socket)
		if err != nil {
			return nil, err
		}
		config.Auth = append(config.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
	}
	return config, nil
}

// dialWithRetry makes up to limit+1 attempts (any number when limit is unlimitedDials or below).
func dialWithRetry[T any](ctx context.Context, log engineLog, what string, limit int,
	attempt func() (T, error),
) (T, error) {
	limitText := strconv.Itoa(limit)
	if limit == unlimitedDials {
		limitText = "inf"
	}
	var result T
	ok, _, err := retry.Until(ctx, retry.Acceptor{
		Accept: func(try int, _ time.Duration) (bool, any, error) {
			var dialErr error
			if result, dialErr = attempt(); dialErr == nil {
				return true, nil, nil
			}
			if dials := try + 1; limit > unlimitedDials && dials > limit {
				return true, nil, fmt.Errorf("after %d failed attempts: %w", try, dialErr)
			}
			log.status(diag.Info, fmt.Sprintf("%s %d/%s failed: retrying", what, try+1, limitText))
			return false, nil, nil
		},
	})
	if ok && err == nil {
		return result, nil
	}
	var zero T
	if err == nil {
		err = ctx.Err() // cancelled or timed out between attempts
	}
	return zero, err
}
