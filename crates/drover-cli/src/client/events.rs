//! A Server-Sent Events parser for `GET /api/events`, fed the raw byte
//! chunks of a response as they arrive.
//!
//! It follows the event-stream format: lines end in `\n`, `\r\n` or `\r`;
//! `id:`, `event:` and `data:` fields (one optional space after the colon);
//! several `data:` lines join with `\n`; a line starting with `:` is a comment
//! (keep-alive); a blank line ends an event.
//!
//! ```ignore
//! use crate::client::events::SseParser;
//! let mut parser = SseParser::default();
//! let events = parser.push(b"id: 7\nevent: job:progress\ndata: 50\n\n");
//! assert_eq!(events[0].data, "50");
//! ```

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The last `id:` seen on the stream so far (what `Last-Event-ID` resumes from).
    pub id: Option<String>,
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Incremental parser: bytes in, complete events out.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet terminated (kept as bytes: a chunk may end
    /// inside a multi-byte character).
    line: Vec<u8>,
    /// The previous chunk ended in `\r`; a `\n` opening this one belongs to it.
    after_cr: bool,
    /// `event:` of the event being read.
    event: Option<String>,
    /// `data:` of the event being read.
    data: Option<String>,
    /// Last event id: persists across events, per the format.
    last_id: Option<String>,
}

impl SseParser {
    /// Feeds one chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for &byte in chunk {
            let after_cr = std::mem::take(&mut self.after_cr);
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&String::from_utf8_lossy(&line)) {
                        out.push(event);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        out
    }

    /// The id to send as `Last-Event-ID` when reconnecting.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn line_done(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            // An event with no data is not dispatched (but its id still counts).
            let data = self.data.take()?;
            return Some(SseEvent {
                id: self.last_id.clone(),
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            // An id holding NUL is ignored, per the format.
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
        chunks.iter().flat_map(|c| parser.push(c)).collect()
    }

    #[test]
    fn reads_fields_and_dispatches_on_blank_lines() {
        let mut p = SseParser::default();
        let events =
            feed(&mut p, &[b"id: 1\nevent: job:active\ndata: {\"a\":1}\n\n: keep-alive\n\ndata:x\ndata: y\n\n"]);
        assert_eq!(
            events,
            [
                SseEvent { id: Some("1".into()), event: "job:active".into(), data: "{\"a\":1}".into() },
                SseEvent { id: Some("1".into()), event: "message".into(), data: "x\ny".into() },
            ]
        );
        assert_eq!(p.last_event_id(), Some("1"));
    }

    #[test]
    fn survives_any_chunking_and_line_ending() {
        let text = "id: 9\r\nevent: job:progress\r\ndata: {\"total\": 10, \"message\": \"déjà\"}\r\n\r\nid:10\revent:job:completed\rdata:null\r\r";
        let whole = SseParser::default().push(text.as_bytes());
        assert_eq!(whole.len(), 2);
        // Every split point, including inside `\r\n` and inside a multi-byte character.
        for at in 0..text.len() {
            let mut p = SseParser::default();
            let (a, b) = text.as_bytes().split_at(at);
            assert_eq!(feed(&mut p, &[a, b]), whole, "split at {at}");
        }
        assert_eq!(whole[1].event, "job:completed");
        assert_eq!(whole[1].id.as_deref(), Some("10"));
        assert!(whole[0].data.contains("déjà"));
    }

    #[test]
    fn events_without_data_are_not_dispatched_but_keep_their_id() {
        let mut p = SseParser::default();
        assert!(p.push(b"id: 5\nevent: ping\n\n").is_empty());
        assert_eq!(p.last_event_id(), Some("5"));
    }
}
