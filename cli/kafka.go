package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// kafkaFlags are the connection flags every Kafka-using subcommand shares.
type kafkaFlags struct {
	brokers       string
	tls           bool
	tlsCA         string
	tlsCert       string
	tlsKey        string
	saslMechanism string
	saslUser      string
	saslPassword  string
}

func (k *kafkaFlags) register(fs *flag.FlagSet, defaultBrokers string) {
	fs.StringVar(&k.brokers, "brokers", defaultBrokers, "comma-separated Kafka seed brokers, host:port")
	fs.BoolVar(&k.tls, "tls", false, "connect to Kafka over TLS (implied by --tls-ca/--tls-cert)")
	fs.StringVar(&k.tlsCA, "tls-ca", "", "PEM file of the CA that signed the brokers' certificates (default: system roots)")
	fs.StringVar(&k.tlsCert, "tls-cert", "", "PEM client certificate for mutual TLS")
	fs.StringVar(&k.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&k.saslMechanism, "sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)")
	fs.StringVar(&k.saslUser, "sasl-user", "", "SASL user name")
	fs.StringVar(&k.saslPassword, "sasl-password", "", "SASL password (prefer the environment variable; never logged)")
}

func (k *kafkaFlags) brokerList() []string {
	var out []string
	for _, b := range strings.Split(k.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// options turns the flags into franz-go options (TLS, SASL). Seed brokers
// are not included.
func (k *kafkaFlags) options() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if len(k.brokerList()) == 0 {
		return nil, errors.New("no brokers: set --brokers (or CHRONICLE_BROKERS) to host:port")
	}
	if k.tls || k.tlsCA != "" || k.tlsCert != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if k.tlsCA != "" {
			pem, err := os.ReadFile(k.tlsCA)
			if err != nil {
				return nil, fmt.Errorf("reading --tls-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate", k.tlsCA)
			}
			cfg.RootCAs = pool
		}
		if k.tlsCert != "" || k.tlsKey != "" {
			cert, err := tls.LoadX509KeyPair(k.tlsCert, k.tlsKey)
			if err != nil {
				return nil, fmt.Errorf("loading --tls-cert/--tls-key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	switch m := strings.ToUpper(k.saslMechanism); m {
	case "":
		if k.saslUser != "" {
			return nil, errors.New("--sasl-user is set but --sasl-mechanism is not: choose PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: k.saslUser, Pass: k.saslPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.saslUser, Pass: k.saslPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.saslUser, Pass: k.saslPassword}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("--sasl-mechanism %q is not supported: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.saslMechanism)
	}
	return opts, nil
}

// clientOptions are options() plus the seed brokers.
func (k *kafkaFlags) clientOptions() ([]kgo.Opt, error) {
	opts, err := k.options()
	if err != nil {
		return nil, err
	}
	return append([]kgo.Opt{kgo.SeedBrokers(k.brokerList()...)}, opts...), nil
}
