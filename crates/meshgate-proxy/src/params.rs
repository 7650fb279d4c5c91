//! Named groups of a route's regex paths, captured per request for the plugins and aggregation
//! templates that use them (`{path.id}`). Only routes whose regex paths name groups pay for it.

use meshgate_config::PathPattern;
use meshgate_core::PathParams;
use regex::Regex;
use std::sync::Arc;

/// The route's regex paths that name at least one group, anchored like the router's.
pub(crate) struct ParamRegexes(Vec<Regex>);

impl ParamRegexes {
    /// `None` when no path of the route names a group (the usual case: nothing to capture).
    pub(crate) fn compile(paths: &[String]) -> Option<Arc<ParamRegexes>> {
        let rx: Vec<Regex> = paths
            .iter()
            .filter_map(|p| match PathPattern::parse(p) {
                Ok(PathPattern::Regex(re)) => Regex::new(&format!("^(?:{re})")).ok(),
                _ => None,
            })
            .filter(|rx| rx.capture_names().flatten().next().is_some())
            .collect();
        (!rx.is_empty()).then(|| Arc::new(ParamRegexes(rx)))
    }

    /// The named groups of the first regex that matches `path` (the router matched one of them).
    pub(crate) fn capture(&self, path: &str) -> Option<PathParams> {
        self.0.iter().find_map(|rx| {
            let caps = rx.captures(path)?;
            let params = rx
                .capture_names()
                .flatten()
                .filter_map(|name| caps.name(name).map(|m| (Arc::from(name), m.as_str().to_owned())))
                .collect();
            Some(PathParams(params))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_named_groups_of_the_matching_regex() {
        let paths = ["/plain".to_owned(), "~/a/[0-9]+".to_owned(), "~/users/(?<id>[0-9]+)(/(?<rest>.*))?".to_owned()];
        let rx = ParamRegexes::compile(&paths).expect("one regex names groups");
        let p = rx.capture("/users/42/orders/7").unwrap();
        assert_eq!(p.get("id"), Some("42"));
        assert_eq!(p.get("rest"), Some("orders/7"));
        let p = rx.capture("/users/42").unwrap();
        assert_eq!((p.get("id"), p.get("rest")), (Some("42"), None));
        assert!(rx.capture("/x/users/1").is_none(), "anchored at the start like the router");
        assert!(ParamRegexes::compile(&paths[..2]).is_none());
    }
}
