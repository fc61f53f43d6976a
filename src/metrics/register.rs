//! Creating a metric and registering it in ivrd's registry in one step, so each definition in the
//! group files is one line and a registration error names the metric it came from.

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use super::MetricsError;

/// Defines metrics in one registry.
pub(super) struct Reg<'a> {
    registry: &'a Registry,
}

impl<'a> Reg<'a> {
    /// A definer for `registry`.
    pub(super) fn new(registry: &'a Registry) -> Self {
        Reg { registry }
    }

    fn add<C>(
        &self,
        name: &'static str,
        made: Result<C, prometheus::Error>,
    ) -> Result<C, MetricsError>
    where
        C: Collector + Clone + 'static,
    {
        let metric = made.map_err(|source| MetricsError::Define { name, source })?;
        self.registry
            .register(Box::new(metric.clone()))
            .map_err(|source| MetricsError::Define { name, source })?;
        Ok(metric)
    }

    /// An integer counter without labels.
    pub(super) fn counter(
        &self,
        name: &'static str,
        help: &str,
    ) -> Result<IntCounter, MetricsError> {
        self.add(name, IntCounter::new(name, help))
    }

    /// An integer counter with the given label names.
    pub(super) fn counter_vec(
        &self,
        name: &'static str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        self.add(name, IntCounterVec::new(Opts::new(name, help), labels))
    }

    /// A floating-point counter (for seconds) with the given label names.
    pub(super) fn float_counter_vec(
        &self,
        name: &'static str,
        help: &str,
        labels: &[&str],
    ) -> Result<CounterVec, MetricsError> {
        self.add(name, CounterVec::new(Opts::new(name, help), labels))
    }

    /// An integer gauge without labels.
    pub(super) fn gauge(&self, name: &'static str, help: &str) -> Result<IntGauge, MetricsError> {
        self.add(name, IntGauge::new(name, help))
    }

    /// A floating-point gauge without labels.
    pub(super) fn float_gauge(
        &self,
        name: &'static str,
        help: &str,
    ) -> Result<Gauge, MetricsError> {
        self.add(name, Gauge::new(name, help))
    }

    /// An integer gauge with the given label names.
    pub(super) fn gauge_vec(
        &self,
        name: &'static str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricsError> {
        self.add(name, IntGaugeVec::new(Opts::new(name, help), labels))
    }

    /// A histogram without labels and with the given upper bounds (in the metric's base unit).
    pub(super) fn histogram(
        &self,
        name: &'static str,
        help: &str,
        buckets: &[f64],
    ) -> Result<Histogram, MetricsError> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(name, Histogram::with_opts(opts))
    }

    /// A histogram with the given label names and upper bounds (in the metric's base unit).
    pub(super) fn histogram_vec(
        &self,
        name: &'static str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricsError> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(name, HistogramVec::new(opts, labels))
    }
}

/// Makes one series per value exist at zero, so rates and alerts see it before the first event.
pub(super) fn touch<const N: usize>(vec: &IntCounterVec, values: &[[&str; N]]) {
    for v in values {
        vec.with_label_values(v);
    }
}

/// A count as a gauge value; saturates rather than wraps (no real count gets near `i64::MAX`).
pub(super) fn as_gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
