//! Events kept aside while a store file is read, for rebuilding projections (pending
//! checkpoints, active intents, live sessions) without reading the file again.
//!
//! An opening event and the event that closes it (matched by an id in their payloads) cancel
//! out as soon as both are seen, so what is kept is what is still open, however long the file.

use std::collections::HashMap;

use crate::json::payload_string;

/// An opening event type and the event types that close it, matched by a payload id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenClose {
    pub open_type: String,
    /// Payload fields holding the id in an opening event (the first present is used).
    pub open_fields: Vec<String>,
    pub close_types: Vec<String>,
    /// Payload fields holding the id in a closing event.
    pub close_fields: Vec<String>,
}

/// What to keep: every event of `types`, and the opening events of `pairs` (those with an id)
/// not closed since.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectSpec {
    pub types: Vec<String>,
    pub pairs: Vec<OpenClose>,
}

impl CollectSpec {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.pairs.is_empty()
    }
}

/// Collects events in file order as they are offered.
pub struct Collector<'s> {
    spec: &'s CollectSpec,
    kept: Vec<Option<(u64, Vec<u8>)>>,
    /// (pair index, id) -> index in `kept` of the opening event still open.
    open: HashMap<(usize, String), usize>,
}

fn first_id<'a>(line: &'a [u8], fields: &[String]) -> Option<std::borrow::Cow<'a, str>> {
    fields.iter().find_map(|field| payload_string(line, field))
}

impl<'s> Collector<'s> {
    pub fn new(spec: &'s CollectSpec) -> Self {
        Self {
            spec,
            kept: Vec::new(),
            open: HashMap::new(),
        }
    }

    /// Offers one event: its seq, type, the whole line (`line`) and the JSON to keep (`json`).
    pub fn offer(&mut self, seq: u64, event_type: &str, line: &[u8], json: [&[u8]; 2]) {
        for (index, pair) in self.spec.pairs.iter().enumerate() {
            if pair.open_type == event_type {
                // An opening without an id can never be closed, and projections skip it.
                let Some(id) = first_id(line, &pair.open_fields) else {
                    return;
                };
                // The same id opened twice: the first opening stands, as in projections.
                let key = (index, id.into_owned());
                if !self.open.contains_key(&key) {
                    self.open.insert(key, self.kept.len());
                    self.kept.push(Some((seq, json.concat())));
                }
                return;
            }
            if pair.close_types.iter().any(|t| t == event_type) {
                // A closing event carries nothing a projection needs once its opening is gone,
                // and closing an unknown id changes nothing.
                if let Some(id) = first_id(line, &pair.close_fields) {
                    if let Some(slot) = self.open.remove(&(index, id.into_owned())) {
                        self.kept[slot] = None;
                    }
                }
                return;
            }
        }
        if self.spec.types.iter().any(|t| t == event_type) {
            self.kept.push(Some((seq, json.concat())));
        }
    }

    /// The kept events, in file order.
    pub fn finish(self) -> Vec<(u64, Vec<u8>)> {
        self.kept.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CollectSpec {
        CollectSpec {
            types: vec!["session.end".into()],
            pairs: vec![OpenClose {
                open_type: "cp.requested".into(),
                open_fields: vec!["id".into()],
                close_types: vec!["cp.approved".into(), "cp.rejected".into()],
                close_fields: vec!["checkpoint_id".into()],
            }],
        }
    }

    fn offer(collector: &mut Collector<'_>, seq: u64, line: &str) {
        let event_type = crate::json::scan_event_line(line.as_bytes())
            .unwrap()
            .event_type
            .into_owned();
        collector.offer(seq, &event_type, line.as_bytes(), [line.as_bytes(), b""]);
    }

    #[test]
    fn closed_pairs_cancel_and_open_ones_stay_in_order() {
        let spec = spec();
        let mut collector = Collector::new(&spec);
        offer(
            &mut collector,
            1,
            r#"{"type":"cp.requested","payload":{"id":"a"}}"#,
        );
        offer(
            &mut collector,
            2,
            r#"{"type":"cp.requested","payload":{"id":"b"}}"#,
        );
        offer(
            &mut collector,
            3,
            r#"{"type":"other","payload":{"id":"a"}}"#,
        );
        offer(
            &mut collector,
            4,
            r#"{"type":"cp.approved","payload":{"checkpoint_id":"a"}}"#,
        );
        offer(&mut collector, 5, r#"{"type":"session.end"}"#);
        offer(
            &mut collector,
            6,
            r#"{"type":"cp.rejected","payload":{"checkpoint_id":"zzz"}}"#,
        );
        offer(&mut collector, 7, r#"{"type":"cp.requested","payload":{}}"#);
        let kept: Vec<u64> = collector.finish().into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(
            kept,
            [2, 5],
            "seq 7 has no id: nothing could close it or project it"
        );
    }

    #[test]
    fn a_reopened_id_keeps_only_the_first_opening() {
        let spec = spec();
        let mut collector = Collector::new(&spec);
        offer(
            &mut collector,
            1,
            r#"{"type":"cp.requested","payload":{"id":"a"}}"#,
        );
        offer(
            &mut collector,
            2,
            r#"{"type":"cp.requested","payload":{"id":"a"}}"#,
        );
        let kept: Vec<u64> = collector.finish().into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(kept, [1]);
    }
}
