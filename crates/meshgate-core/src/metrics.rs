//! Exporting counters the gateway and its plugins keep anyway (atomics on their own paths) as
//! Prometheus metrics, read only when `/metrics` is scraped: nothing is added to the request path.
//!
//! A plugin exports its counters by registering a [`collector`] in
//! [`crate::PluginFactory::register_metrics`].

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::fmt;

pub use prometheus_client::registry::Registry as MetricsRegistry;

/// Labels of one sample: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// A collector that runs `f` at each scrape.
pub fn collector(f: impl Fn(&mut DescriptorEncoder<'_>) -> fmt::Result + Send + Sync + 'static) -> Box<dyn Collector> {
    Box::new(FnCollector(Box::new(f)))
}

type EncodeFn = Box<dyn Fn(&mut DescriptorEncoder<'_>) -> fmt::Result + Send + Sync>;

struct FnCollector(EncodeFn);

impl fmt::Debug for FnCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCollector")
    }
}

impl Collector for FnCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        (self.0)(&mut encoder)
    }
}

/// Writes a counter family (`name` gets the `_total` suffix) with one sample per label set.
pub fn counters(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, samples, ConstCounter::new)
}

/// Writes a gauge family with one sample per label set.
pub fn gauges(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, i64)>,
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, samples, ConstGauge::new)
}

fn family<V: Copy, M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
    metric: impl Fn(V) -> M,
) -> fmt::Result {
    let samples: Vec<_> = samples.into_iter().collect();
    let mut family = enc.encode_descriptor(name, help, None, metric_type)?;
    if let [(labels, v)] = samples.as_slice()
        && labels.is_empty()
    {
        // Unlabelled: `name value`, not `name{} value`.
        return metric(*v).encode(family);
    }
    for (labels, v) in samples {
        metric(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn collectors_read_at_scrape_time() {
        static N: AtomicU64 = AtomicU64::new(0);
        let mut r = MetricsRegistry::default();
        r.register_collector(collector(|enc| {
            counters(enc, "demo_hits", "Hits.", [(vec![("kind", "a".to_owned())], N.load(Ordering::Relaxed))])?;
            gauges(enc, "demo_level", "Level.", [(Vec::new(), -2)])
        }));
        N.store(7, Ordering::Relaxed);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains("demo_hits_total{kind=\"a\"} 7"), "{out}");
        assert!(out.contains("demo_level -2"), "{out}");
    }
}
