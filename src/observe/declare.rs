//! How a row of the metrics table ([`super::metrics`]) becomes a registered metric: the
//! [`declare_metrics!`] macro, which makes both the `Metrics` struct and the table `DECLARED`
//! from the same rows, and what a row says ([`Declaration`]).

use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// One metric as the table declares it: what is registered, and what the README lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Declaration {
    /// The metric's name.
    pub name: &'static str,
    /// Its help text (`# HELP`).
    pub help: &'static str,
    /// Its label names, in order; none for a single series.
    pub labels: &'static [&'static str],
    /// Counter, gauge or histogram (`# TYPE`).
    pub kind: Kind,
    /// A histogram's bucket bounds; `None`: Prometheus' default ones (or not a histogram).
    pub buckets: Option<Buckets>,
}

/// The `# TYPE` of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets.
    Histogram,
}

impl Kind {
    /// The name Prometheus and the README use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A histogram's bucket bounds, written so that the table can be a constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Buckets {
    /// These upper bounds.
    List(&'static [f64]),
    /// `count` bounds from `start`, each `factor` times the one before.
    Exponential {
        /// The first bound.
        start: f64,
        /// Each bound over the one before.
        factor: f64,
        /// How many bounds.
        count: usize,
    },
}

impl Buckets {
    /// The upper bounds.
    fn bounds(self) -> Vec<f64> {
        match self {
            Buckets::List(b) => b.to_vec(),
            Buckets::Exponential {
                start,
                factor,
                count,
            } => exponential_buckets(start, factor, count).expect("valid exponential buckets"),
        }
    }
}

/// A Prometheus metric type the table can declare.
pub trait Metric: Collector + Clone + Sized + 'static {
    /// Its `# TYPE`.
    const KIND: Kind;
    /// Builds it as `d` declares it.
    fn build(d: &Declaration) -> prometheus::Result<Self>;
}

fn opts(d: &Declaration) -> Opts {
    Opts::new(d.name, d.help)
}

fn histogram_opts(d: &Declaration) -> HistogramOpts {
    let opts = HistogramOpts::new(d.name, d.help);
    match d.buckets {
        Some(b) => opts.buckets(b.bounds()),
        None => opts,
    }
}

/// A metric of a single series: its row names no labels.
fn single(d: &Declaration) -> &Declaration {
    assert!(
        d.labels.is_empty(),
        "{}: a single series has no labels",
        d.name
    );
    d
}

/// Implements [`Metric`] for a type: its kind, and how it is built from a row.
macro_rules! metric_type {
    ($ty:ty, $kind:ident, |$d:ident| $build:expr) => {
        impl Metric for $ty {
            const KIND: Kind = Kind::$kind;
            fn build($d: &Declaration) -> prometheus::Result<Self> {
                $build
            }
        }
    };
}

metric_type!(IntCounter, Counter, |d| IntCounter::with_opts(opts(
    single(d)
)));
metric_type!(IntCounterVec, Counter, |d| IntCounterVec::new(
    opts(d),
    d.labels
));
metric_type!(IntGauge, Gauge, |d| IntGauge::with_opts(opts(single(d))));
metric_type!(IntGaugeVec, Gauge, |d| IntGaugeVec::new(opts(d), d.labels));
metric_type!(Gauge, Gauge, |d| Gauge::with_opts(opts(single(d))));
metric_type!(GaugeVec, Gauge, |d| GaugeVec::new(opts(d), d.labels));
metric_type!(Histogram, Histogram, |d| Histogram::with_opts(
    histogram_opts(single(d))
));
metric_type!(HistogramVec, Histogram, |d| HistogramVec::new(
    histogram_opts(d),
    d.labels
));

/// Builds the metric `d` declares and registers it in `registry`.
pub fn register<M: Metric>(registry: &Registry, d: &Declaration) -> M {
    let metric = M::build(d).unwrap_or_else(|e| panic!("metric {}: {e}", d.name));
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// Declares the metrics. Each row is the field's doc, then
/// `field: Type("name", "help");`, `field: Type("name", "help", [labels]);` or
/// `field: Type("name", "help", [labels], buckets);`, where `Type` is a `prometheus` metric type.
/// Makes `pub struct Metrics` with the registry and one field per row, `pub const DECLARED`, the
/// rows as [`Declaration`]s, and `Metrics::register_declared`, which registers them in a registry.
macro_rules! declare_metrics {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ident($name:literal, $help:literal $(, [$($label:literal),*] $(, $buckets:expr)?)?);
    )+) => {
        /// Every metric of one worker, one field per row of the table.
        pub struct Metrics {
            /// The registry `/metrics` renders.
            pub registry: prometheus::Registry,
            $($(#[doc = $doc])+ pub $field: $ty,)+
        }

        /// Every metric of [`Metrics`], as declared (the README's table is checked against it).
        pub const DECLARED: &[$crate::observe::declare::Declaration] = &[$(
            $crate::observe::declare::Declaration {
                name: $name,
                help: $help,
                labels: &[$($($label),*)?],
                kind: <$ty as $crate::observe::declare::Metric>::KIND,
                buckets: declare_metrics!(@buckets $($($buckets)?)?),
            },
        )+];

        impl Metrics {
            /// Registers every row of the table in `registry`.
            fn register_declared(registry: prometheus::Registry) -> Metrics {
                let mut rows = DECLARED.iter();
                let mut next = || rows.next().expect("one row per field");
                Metrics {
                    $($field: $crate::observe::declare::register(&registry, next()),)+
                    registry,
                }
            }
        }
    };
    (@buckets) => { None };
    (@buckets $buckets:expr) => { Some($buckets) };
}

pub(crate) use declare_metrics;
