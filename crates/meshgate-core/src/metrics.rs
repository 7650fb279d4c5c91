//! Exporting counters the gateway and its plugins keep anyway (atomics on their own paths) as
//! Prometheus metrics, read only when `/metrics` is scraped: nothing is added to the request path.
//!
//! A plugin exports its counters by registering a [`collector`] in
//! [`crate::PluginFactory::register_metrics`]. Each family name must be written by one collector
//! only, and once per scrape: a second `# HELP`/`# TYPE` for a name makes Prometheus reject the
//! whole scrape. Plugins that share families (the two transformers) register one collector for
//! them together.
//!
//! The same collectors serve both exposition formats (OpenMetrics 1.0 and Prometheus text 0.0.4,
//! chosen by the scraper's `Accept` header), so help texts hold no `\`, `"` or line break: the
//! two formats escape them differently, and prometheus-client escapes help text only in 0.0.4.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
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

/// Writes an info family: one sample `name_info{labels} 1` (OpenMetrics type `info`, a gauge in
/// the Prometheus text format), for facts such as the version, which queries join onto other
/// series.
pub fn info(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, labels: Labels) -> fmt::Result {
    debug_assert!(plain(help), "help of {name} needs escaping: {help:?}");
    Info::new(labels).encode(enc.encode_descriptor(name, help, None, MetricType::Info)?)
}

/// Whether `help` reads the same in both formats without escaping.
fn plain(help: &str) -> bool {
    !help.contains(['\\', '"', '\n'])
}

fn family<V: Copy, M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
    metric: impl Fn(V) -> M,
) -> fmt::Result {
    debug_assert!(plain(help), "help of {name} needs escaping: {help:?}");
    let mut family = enc.encode_descriptor(name, help, None, metric_type)?;
    for (labels, v) in samples {
        // An empty label set writes `name value`, not `name{} value`.
        metric(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn collectors_read_at_scrape_time_in_both_formats() {
        static N: AtomicU64 = AtomicU64::new(0);
        let mut r = MetricsRegistry::default();
        r.register_collector(collector(|enc| {
            counters(
                enc,
                "demo_hits",
                "Hits.",
                [(vec![("kind", "a\"b\\c\nd".to_owned())], N.load(Ordering::Relaxed))],
            )?;
            gauges(enc, "demo_level", "Level.", [(Vec::new(), -2)])?;
            info(enc, "demo", "Build.", vec![("version", "1.2".to_owned())])
        }));
        N.store(7, Ordering::Relaxed);
        let mut om = String::new();
        prometheus_client::encoding::text::encode(&mut om, &r).unwrap();
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &r).unwrap();
        // Label values escaped the same way in both.
        let hits = r#"demo_hits_total{kind="a\"b\\c\nd"} 7"#;
        for out in [&om, &text] {
            assert!(out.contains(hits), "{out}");
            assert!(out.contains("\ndemo_level -2\n"), "{out}");
            assert!(out.contains("\ndemo_info{version=\"1.2\"} 1\n"), "{out}");
        }
        assert!(om.contains("# TYPE demo_hits counter\n") && om.contains("# TYPE demo info\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        // 0.0.4: the family is named as its sample, an info is a gauge, and nothing ends it.
        assert!(text.contains("# TYPE demo_hits_total counter\n"), "{text}");
        assert!(text.contains("# TYPE demo_info gauge\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    }
}
