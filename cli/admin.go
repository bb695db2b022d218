package cli

import (
	"context"
	"flag"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/chronicle-es/chronicle/admin"
	"github.com/chronicle-es/chronicle/metrics"
	"github.com/chronicle-es/chronicle/processor"
)

// adminFlags are the admin server's flags, shared by run and dev.
type adminFlags struct {
	addr      *string
	pprof     *bool
	listening string // the address the server listens on, once started; "off"
}

func (a *adminFlags) register(fs *flag.FlagSet, def string) {
	a.addr = fs.String("admin-addr", def, "address of the admin HTTP server (/metrics, /livez, /readyz); \"off\" disables it")
	a.pprof = fs.Bool("pprof", false, "also serve /debug/pprof/ on the admin server (keep that port private)")
}

// instrument returns the metrics to pass as the processor's Observer and a
// function that, given the processor, starts the admin server (unless
// --admin-addr is off) and logs where it listens.
// The third result, franz-go's client metrics (kprom, named
// chronicle_kafka_*), goes into processor.Config.SessionOptions.
func (a *adminFlags) instrument(ctx context.Context, logger *slog.Logger) (*metrics.Metrics, func(p *processor.Processor) error, kgo.Opt, error) {
	a.listening = "off"
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.New(reg)
	if err != nil {
		return nil, nil, nil, err
	}
	kafkaMetrics := kgo.WithHooks(kprom.NewMetrics("chronicle_kafka", kprom.Registerer(reg)))
	start := func(p *processor.Processor) error {
		m.Watch(p)
		if *a.addr == "off" || *a.addr == "" {
			return nil
		}
		srv, err := admin.Start(ctx, admin.Config{Addr: *a.addr, Gatherer: reg, Readiness: p.Readiness, Pprof: *a.pprof, Logger: logger})
		if err != nil {
			return err
		}
		a.listening = srv.Addr()
		logger.Info("admin server listening", "addr", srv.Addr(), "pprof", *a.pprof)
		return nil
	}
	return m, start, kafkaMetrics, nil
}
