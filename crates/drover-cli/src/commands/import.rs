//! `drover import <queue> <name> --file F`: bulk enqueue from JSONL or CSV
//! through `POST /api/jobs/bulk`, with a progress bar.
//!
//! The file is read twice: once to check every job the way the server will
//! (the server's own [`JobSpecBody`] rules), so a bad line stops the import
//! before anything is sent, and once to send. Reading twice instead of
//! holding the jobs keeps memory flat for files of millions of lines.

use crate::cli::{ImportArgs, ImportFormat};
use crate::client::Api;
use crate::client::output::Output;
use anyhow::{Context, bail};
use drover_server::dto::JobSpecBody;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Room kept in each request for the `{"jobs":[...]}` wrapper.
const WRAPPER_BYTES: usize = 64;

/// One job read from the file: its line number and its spec object.
type Record = anyhow::Result<(u64, Map<String, Value>)>;

/// Runs `drover import`.
pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let format = match args.format {
        Some(format) => format,
        None => format_of(&args.file)?,
    };
    if args.specs && format != ImportFormat::Jsonl {
        bail!("--specs applies to JSONL files only");
    }
    let out = Output::new(args.client.json);
    let api = Api::new(&args.client)?;

    // Pass 1: check everything before sending anything.
    let mut total = 0u64;
    for record in records(&args, format)? {
        let (line, spec) = record?;
        check(line, &spec)?;
        total += 1;
    }

    // Pass 2: send in batches bounded by count and by the server's body limit.
    let mut sender = Sender::new(&api, progress_bar(total, out.terminal));
    for record in records(&args, format)? {
        let (line, spec) = record?;
        let item = serde_json::to_string(&spec)?;
        if sender.bytes + item.len() + 1 > max_body_bytes() {
            sender.flush().await?;
        }
        sender.push(line, item);
        if sender.batch.len() >= args.batch as usize {
            sender.flush().await?;
        }
    }
    sender.flush().await?;
    let Sender { bar, created, duplicates, requests, .. } = sender;
    bar.finish_and_clear();
    let summary = json!({
        "file": args.file.display().to_string(),
        "queue": args.queue,
        "name": args.name,
        "total": total,
        "created": created,
        "duplicates": duplicates,
        "requests": requests,
    });
    out.show(&summary, |_| {
        format!(
            "imported {total} jobs from {} into {}: {created} created, {duplicates} duplicates ({requests} requests)",
            args.file.display(),
            args.queue
        )
    })
}

/// Largest request body sent: the server's limit, less the wrapper.
fn max_body_bytes() -> usize {
    drover_server::BODY_LIMIT_BYTES - WRAPPER_BYTES
}

/// Sends batches and counts what landed.
struct Sender<'a> {
    /// The server.
    api: &'a Api,
    /// Advanced by each request's jobs.
    bar: ProgressBar,
    /// Serialized job specs of the next request.
    batch: Vec<String>,
    /// Their size, with separators.
    bytes: usize,
    /// Line numbers of the batch, for errors.
    lines: (u64, u64),
    /// Jobs created so far.
    created: u64,
    /// Jobs that already existed (same id or unique key).
    duplicates: u64,
    /// Requests sent.
    requests: u64,
}

impl<'a> Sender<'a> {
    fn new(api: &'a Api, bar: ProgressBar) -> Self {
        Self { api, bar, batch: Vec::new(), bytes: 0, lines: (0, 0), created: 0, duplicates: 0, requests: 0 }
    }

    fn push(&mut self, line: u64, item: String) {
        if self.batch.is_empty() {
            self.lines.0 = line;
        }
        self.lines.1 = line;
        self.bytes += item.len() + 1;
        self.batch.push(item);
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let count = self.batch.len() as u64;
        let body = format!("{{\"jobs\":[{}]}}", self.batch.join(","));
        self.batch.clear();
        self.bytes = 0;
        self.requests += 1;
        let answer = self.api.job_create_bulk(body).await.with_context(|| {
            format!(
                "request {} (lines {}-{}) was refused; the {} jobs of earlier requests were imported",
                self.requests,
                self.lines.0,
                self.lines.1,
                self.created + self.duplicates
            )
        })?;
        let items = answer.get("items").and_then(Value::as_array).map_or(&[][..], |v| v);
        let duplicates = items.iter().filter(|j| j.get("duplicate") == Some(&Value::Bool(true))).count() as u64;
        self.duplicates += duplicates;
        self.created += count - duplicates;
        self.bar.inc(count);
        Ok(())
    }
}

fn format_of(path: &Path) -> anyhow::Result<ImportFormat> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "jsonl" | "ndjson" => Ok(ImportFormat::Jsonl),
        "csv" => Ok(ImportFormat::Csv),
        _ => bail!(
            "cannot tell the format of {} from its extension; give --format jsonl or --format csv",
            path.display()
        ),
    }
}

/// Checks one job the way the server will, naming its line on failure.
fn check(line: u64, spec: &Map<String, Value>) -> anyhow::Result<()> {
    let size = serde_json::to_string(spec)?.len();
    if size + 1 > max_body_bytes() {
        bail!("line {line}: the job is {size} bytes as JSON, more than a request to the server may hold");
    }
    let body: JobSpecBody = serde_json::from_value(Value::Object(spec.clone()))
        .map_err(|e| anyhow::anyhow!("line {line}: not a valid job spec: {e}"))?;
    body.into_spec("").map_err(|e| anyhow::anyhow!("line {line}: {}", e.message))?;
    Ok(())
}

/// The jobs of the file, in order, as spec objects.
fn records(args: &ImportArgs, format: ImportFormat) -> anyhow::Result<Box<dyn Iterator<Item = Record> + '_>> {
    let file = File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let reader = BufReader::new(file);
    let raw: Box<dyn Iterator<Item = anyhow::Result<(u64, Value)>>> = match format {
        ImportFormat::Jsonl => Box::new(jsonl(reader)),
        ImportFormat::Csv => Box::new(csv_rows(reader)?),
    };
    Ok(Box::new(raw.map(move |record| {
        let (line, value) = record?;
        Ok((line, spec_of(args, line, value)?))
    })))
}

/// Non-blank lines as JSON values, numbered from 1.
pub(crate) fn jsonl(reader: impl BufRead) -> impl Iterator<Item = anyhow::Result<(u64, Value)>> {
    reader.lines().enumerate().filter_map(|(i, line)| {
        let n = i as u64 + 1;
        let line = match line {
            Ok(line) => line,
            Err(e) => return Some(Err(anyhow::anyhow!("line {n}: cannot read it: {e}"))),
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(serde_json::from_str(&line).map(|v| (n, v)).map_err(|e| anyhow::anyhow!("line {n}: not valid JSON: {e}")))
    })
}

/// Rows after the header as objects keyed by the header, numbered by the
/// line they start on.
fn csv_rows(reader: impl std::io::Read) -> anyhow::Result<impl Iterator<Item = anyhow::Result<(u64, Value)>>> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    let headers = csv.headers().map_err(|e| anyhow::anyhow!("line 1: cannot read the CSV header: {e}"))?.clone();
    if let Some(dup) = headers.iter().enumerate().find_map(|(i, h)| headers.iter().take(i).any(|p| p == h).then_some(h))
    {
        bail!("line 1: the CSV header names the column {dup:?} twice");
    }
    Ok(csv.into_records().map(move |row| {
        let row = row.map_err(|e| match e.position() {
            Some(pos) => anyhow::anyhow!("line {}: {e}", pos.line()),
            None => anyhow::anyhow!("{e}"),
        })?;
        let line = row.position().map_or(0, |p| p.line());
        let object: Map<String, Value> =
            headers.iter().zip(row.iter()).map(|(h, v)| (h.to_owned(), Value::String(v.to_owned()))).collect();
        Ok((line, Value::Object(object)))
    }))
}

/// The job spec of one file entry: a payload wrapped in a spec, or with
/// `--specs` a spec completed with the command line's queue, name and options.
fn spec_of(args: &ImportArgs, line: u64, value: Value) -> anyhow::Result<Map<String, Value>> {
    let mut spec = if args.specs {
        match value {
            Value::Object(spec) => spec,
            other => bail!("line {line}: with --specs each line must be a JSON object (a job spec), not {other}"),
        }
    } else {
        let mut spec = Map::new();
        spec.insert("payload".into(), value);
        spec
    };
    spec.entry("queue").or_insert_with(|| args.queue.clone().into());
    spec.entry("name").or_insert_with(|| args.name.clone().into());
    if let Some(prefix) = &args.id_prefix {
        spec.entry("id").or_insert_with(|| format!("{prefix}-{line}").into());
    }
    super::apply_job_options(&mut spec, &args.job);
    Ok(spec)
}

fn progress_bar(total: u64, terminal: bool) -> ProgressBar {
    let target = if terminal { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} jobs  {per_sec}  eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_skips_blank_lines_and_numbers_from_one() {
        let text = "{\"a\":1}\n\n  \n[2]\n{oops\n";
        let got: Vec<_> = jsonl(text.as_bytes()).collect();
        assert_eq!(got[0].as_ref().unwrap(), &(1, json!({"a": 1})));
        assert_eq!(got[1].as_ref().unwrap(), &(4, json!([2])));
        assert!(got[2].as_ref().unwrap_err().to_string().starts_with("line 5: not valid JSON"));
    }

    #[test]
    fn csv_rows_become_string_objects_with_their_line() {
        let text = "id,name\n007,\"Bond, James\"\n8,x\n9\n";
        let got: Vec<_> = csv_rows(text.as_bytes()).unwrap().collect();
        assert_eq!(got[0].as_ref().unwrap(), &(2, json!({"id": "007", "name": "Bond, James"})));
        assert_eq!(got[1].as_ref().unwrap(), &(3, json!({"id": "8", "name": "x"})));
        assert!(got[2].as_ref().unwrap_err().to_string().starts_with("line 4:"), "{:?}", got[2]);
    }

    #[test]
    fn checks_name_the_line() {
        let spec = |v: Value| v.as_object().unwrap().clone();
        assert!(check(3, &spec(json!({"queue": "q", "name": "n", "payload": 1}))).is_ok());
        let err = check(3, &spec(json!({"queue": "q", "name": "n", "prio": 1}))).unwrap_err().to_string();
        assert!(err.starts_with("line 3: not a valid job spec"), "{err}");
        let err = check(9, &spec(json!({"queue": "", "name": "n"}))).unwrap_err().to_string();
        assert!(err.starts_with("line 9: queue"), "{err}");
    }
}
