//! Events kept aside while a store file is read, for rebuilding projections (pending
//! checkpoints, active intents, live sessions) without reading the file again.
//!
//! An opening event and the event that closes it (matched by an id in their payloads) cancel
//! out as soon as both are seen, so what is kept is what is still open, however long the file.

use std::collections::HashMap;

use crate::json::first_payload_string;

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

/// One kept event: when it was offered (file order), its seq and its JSON (without `seq`).
#[derive(Debug, Clone)]
struct Kept {
    order: u64,
    seq: u64,
    json: Vec<u8>,
}

/// Collects events in file order as they are offered, while a store is opened and then for as
/// long as it is open: what is still open is what a new segment's snapshot carries forward.
pub struct Collector {
    spec: CollectSpec,
    /// Every type an offer must look at (openings, closings, and `types` while they are kept).
    watched: Vec<String>,
    offered: u64,
    /// (pair index, id) -> the opening event still open.
    open: HashMap<(usize, String), Kept>,
    /// Events of `spec.types`, kept until `take_collected`.
    typed: Vec<Kept>,
    keep_types: bool,
}

fn first_id<'a>(line: &'a [u8], fields: &[String]) -> Option<std::borrow::Cow<'a, str>> {
    first_payload_string(line, fields)
}

impl Collector {
    pub fn new(spec: &CollectSpec) -> Self {
        let mut collector = Self {
            spec: spec.clone(),
            watched: Vec::new(),
            offered: 0,
            open: HashMap::new(),
            typed: Vec::new(),
            keep_types: true,
        };
        collector.watch();
        collector
    }

    fn watch(&mut self) {
        let mut watched: Vec<String> = Vec::new();
        for pair in &self.spec.pairs {
            watched.push(pair.open_type.clone());
            watched.extend(pair.close_types.iter().cloned());
        }
        if self.keep_types {
            watched.extend(self.spec.types.iter().cloned());
        }
        watched.sort();
        watched.dedup();
        self.watched = watched;
    }

    /// Whether an event of this type can change what is collected (a cheap test for appends).
    /// A closing event cannot while nothing is open, and that spares parsing its line.
    pub fn wants(&self, event_type: &str) -> bool {
        self.watched.iter().any(|t| t == event_type)
            && (!self.open.is_empty() || !self.closes(event_type))
    }

    /// Whether `offer` takes an event of this type for a closing (the first pair naming the
    /// type decides, as in `offer`).
    fn closes(&self, event_type: &str) -> bool {
        self.spec
            .pairs
            .iter()
            .find_map(|pair| {
                if pair.open_type == event_type {
                    Some(false)
                } else {
                    pair.close_types
                        .iter()
                        .any(|t| t == event_type)
                        .then_some(true)
                }
            })
            .unwrap_or(false)
    }

    /// Offers one event: its seq, type, the whole line (`line`) and the JSON to keep (`json`).
    pub fn offer(&mut self, seq: u64, event_type: &str, line: &[u8], json: [&[u8]; 2]) {
        self.offered += 1;
        let order = self.offered;
        for (index, pair) in self.spec.pairs.iter().enumerate() {
            if pair.open_type == event_type {
                // An opening without an id can never be closed, and projections skip it.
                let Some(id) = first_id(line, &pair.open_fields) else {
                    return;
                };
                // The same id opened twice: the first opening stands, as in projections.
                self.open
                    .entry((index, id.into_owned()))
                    .or_insert_with(|| Kept {
                        order,
                        seq,
                        json: json.concat(),
                    });
                return;
            }
            if pair.close_types.iter().any(|t| t == event_type) {
                // A closing event carries nothing a projection needs once its opening is gone,
                // and closing an unknown id changes nothing.
                if let Some(id) = first_id(line, &pair.close_fields) {
                    self.open.remove(&(index, id.into_owned()));
                }
                return;
            }
        }
        if self.keep_types && self.spec.types.iter().any(|t| t == event_type) {
            self.typed.push(Kept {
                order,
                seq,
                json: json.concat(),
            });
        }
    }

    /// Forgets everything collected so far: a complete snapshot follows, holding all that is
    /// still open.
    pub fn reset(&mut self) {
        self.open.clear();
        self.typed.clear();
    }

    /// The kept events in file order (taken once): the openings still open and the events of
    /// `types`. From then on `types` are no longer kept; openings stay until closed or forgotten.
    pub fn take_collected(&mut self) -> Vec<(u64, Vec<u8>)> {
        let mut kept: Vec<&Kept> = self.open.values().chain(self.typed.iter()).collect();
        kept.sort_by_key(|k| k.order);
        let taken = kept.into_iter().map(|k| (k.seq, k.json.clone())).collect();
        self.typed = Vec::new();
        self.keep_types = false;
        self.watch();
        taken
    }

    /// The openings still open, by seq: what a snapshot carries forward.
    pub fn open_items(&self) -> Vec<(u64, &[u8])> {
        let mut items: Vec<(u64, &[u8])> = self
            .open
            .values()
            .map(|k| (k.seq, k.json.as_slice()))
            .collect();
        items.sort_by_key(|item| item.0);
        items
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Stops carrying the opening `id` of `open_type`, closed by the caller without a closing
    /// event (for instance dropped with its session). Returns whether it was open.
    pub fn forget(&mut self, open_type: &str, id: &str) -> bool {
        let mut found = false;
        for (index, pair) in self.spec.pairs.iter().enumerate() {
            if pair.open_type == open_type {
                found |= self.open.remove(&(index, id.to_string())).is_some();
            }
        }
        found
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

    fn offer(collector: &mut Collector, seq: u64, line: &str) {
        let event_type = crate::json::scan_event_line(line.as_bytes())
            .unwrap()
            .event_type
            .into_owned();
        collector.offer(seq, &event_type, line.as_bytes(), [line.as_bytes(), b""]);
    }

    #[test]
    fn a_closing_is_wanted_only_while_something_is_open() {
        let mut collector = Collector::new(&spec());
        assert!(collector.wants("cp.requested") && collector.wants("session.end"));
        assert!(!collector.wants("cp.approved") && !collector.wants("other"));
        offer(
            &mut collector,
            1,
            r#"{"seq":1,"type":"cp.requested","payload":{"id":"a"}}"#,
        );
        assert!(collector.wants("cp.approved") && collector.wants("cp.rejected"));
        offer(
            &mut collector,
            2,
            r#"{"seq":2,"type":"cp.rejected","payload":{"checkpoint_id":"a"}}"#,
        );
        assert!(!collector.wants("cp.approved"));
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
        let kept: Vec<u64> = collector
            .take_collected()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
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
        let kept: Vec<u64> = collector
            .take_collected()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(kept, [1]);
    }
}
