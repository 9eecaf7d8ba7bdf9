//! Command-line arguments (see `shared/spec/cli.md`). Every flag also reads
//! `DROVER_` + its name in upper snake case.

use clap::{Args, Parser, Subcommand, ValueEnum};
use drover_core::JobState;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Durable background jobs: server, client and benchmark.
#[derive(Debug, Parser)]
#[command(name = "drover", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Drover server on a store.
    Serve(ServeArgs),
    /// Measure enqueue, processing and latency against a store.
    Bench(BenchArgs),
    /// Enqueue one job and print it as JSON.
    Enqueue(EnqueueArgs),
    /// List, inspect, retry, cancel and watch jobs.
    Jobs(JobsArgs),
    /// List queues with their counts; pause, resume and configure them.
    Queues(QueuesArgs),
    /// Concurrency caps and rate limits per rate-limit key or key prefix.
    RateLimits(RateLimitsArgs),
    /// Create a flow (a job with nested children) from a JSON file.
    Flows(FlowsArgs),
    /// Create batches of jobs and follow their counts.
    Batches(BatchesArgs),
    /// Bulk-enqueue jobs from a JSONL or CSV file, with a progress bar.
    Import(ImportArgs),
    /// List, add, show, pause, resume and remove cron and interval schedules.
    Schedules(SchedulesArgs),
}

/// How client commands reach a server and print what it answers.
///
/// Global to the subcommand tree, so `drover jobs --json list` and
/// `drover jobs list --json` mean the same.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// Base URL of the Drover server.
    #[arg(long, global = true, env = "DROVER_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API key, sent as `Authorization: Bearer <key>`.
    #[arg(long, global = true, env = "DROVER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of tables (the default when stdout is not a terminal).
    #[arg(long, global = true, env = "DROVER_JSON")]
    pub json: bool,
    /// Give up on a request after this many milliseconds (event streams are
    /// exempt: they only need to hear from the server once a minute).
    #[arg(long, global = true, env = "DROVER_TIMEOUT_MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
}

/// Options that shape each created job (`enqueue` and `import`).
#[derive(Debug, Clone, Args)]
pub struct JobOptions {
    /// Lower runs first.
    #[arg(long, env = "DROVER_PRIORITY", allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Run no earlier than this many milliseconds from now.
    #[arg(long, env = "DROVER_DELAY_MS")]
    pub delay_ms: Option<u64>,
    /// Attempts in all, first run included (server default: 3).
    #[arg(long, env = "DROVER_ATTEMPTS")]
    pub attempts: Option<u32>,
}

/// Arguments of `drover enqueue`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  drover enqueue emails send_welcome --payload '{\"user_id\": 7}' --priority -1")]
pub struct EnqueueArgs {
    /// Queue to add the job to.
    pub queue: String,
    /// Job type, which picks the handler.
    pub name: String,
    /// Handler input, as JSON (default: null).
    #[arg(long, env = "DROVER_PAYLOAD", conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Read the handler input, as JSON, from this file (`-` for stdin).
    #[arg(long, env = "DROVER_PAYLOAD_FILE")]
    pub payload_file: Option<PathBuf>,
    /// Job id; enqueueing an id that exists returns that job (`"duplicate": true`).
    #[arg(long, env = "DROVER_ID")]
    pub id: Option<String>,
    /// Per-job options.
    #[command(flatten)]
    pub job: JobOptions,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Arguments of `drover jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Which jobs command.
    #[command(subcommand)]
    pub command: JobsCommand,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The `drover jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first, optionally filtered.
    List(JobsListArgs),
    /// Show one job with its attempts.
    Show(JobIdArg),
    /// Run a failed or cancelled job again, with its original attempt budget.
    Retry(JobIdArg),
    /// Cancel a job; an active job is asked to stop.
    Cancel(JobIdArg),
    /// Print a job's log lines.
    Logs(JobIdArg),
    /// List a job's children (flows), in enqueue order.
    Children(JobIdArg),
    /// Follow a job with a live progress bar until it ends.
    ///
    /// Exit status: 0 when the job completes, 3 when it fails, 4 when it is
    /// cancelled, 1 on any other error. A dropped event stream is resumed
    /// where it left off.
    Watch(JobIdArg),
}

/// A job id argument.
#[derive(Debug, Args)]
pub struct JobIdArg {
    /// The job's id.
    pub id: String,
}

/// Arguments of `drover jobs list`.
#[derive(Debug, Args)]
pub struct JobsListArgs {
    /// Only jobs of this queue.
    #[arg(long, env = "DROVER_QUEUE")]
    pub queue: Option<String>,
    /// Only jobs in this state.
    #[arg(long, env = "DROVER_STATE", value_parser = state_parser())]
    pub state: Option<JobState>,
    /// Only jobs of this type.
    #[arg(long, env = "DROVER_NAME")]
    pub name: Option<String>,
    /// Only jobs of this batch.
    #[arg(long, env = "DROVER_BATCH_ID")]
    pub batch_id: Option<String>,
    /// Only children of this job.
    #[arg(long, env = "DROVER_PARENT_ID")]
    pub parent_id: Option<String>,
    /// Jobs per page (1 to 1000; server default 50).
    #[arg(long, env = "DROVER_LIMIT", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Start after this cursor, from a previous page's `next_cursor`.
    #[arg(long, env = "DROVER_CURSOR")]
    pub cursor: Option<String>,
}

/// Accepts exactly the engine's state names, and lists them in `--help`.
fn state_parser() -> impl clap::builder::TypedValueParser<Value = JobState> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(JobState::ALL.map(JobState::as_str))
        .map(|name| name.parse::<JobState>().expect("the parser admits only JobState::ALL names"))
}

/// Arguments of `drover queues`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Which queues command.
    #[command(subcommand)]
    pub command: QueuesCommand,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The `drover queues` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// List queues: paused or not, jobs per state, limits.
    List,
    /// Stop handing out the queue's jobs (running ones finish).
    Pause(QueueNameArg),
    /// Hand out the queue's jobs again.
    Resume(QueueNameArg),
    /// Change a queue's limits; settings not named keep their value.
    #[command(after_help = "Examples:\n  drover queues set emails --concurrency 5 --rate-limit 100/60000\n  \
                            drover queues set emails --concurrency none")]
    Set(QueueSetArgs),
    /// Retry every failed job of the queue.
    RetryFailed(QueueNameArg),
}

/// Arguments of `drover schedules`.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    /// Which schedules command.
    #[command(subcommand)]
    pub command: SchedulesCommand,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The `drover schedules` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List schedules: cadence, job, next and last run.
    List,
    /// Show one schedule as JSON.
    Show(ScheduleIdArg),
    /// Create a schedule, or replace the one with the same id.
    #[command(after_help = "Examples:\n  \
                            drover schedules add nightly --cron '0 2 * * *' --timezone Europe/Berlin --queue ops --name cleanup\n  \
                            drover schedules add heartbeat --every-ms 60000 --queue ops --name ping --payload '{\"n\": 1}'")]
    Add(ScheduleAddArgs),
    /// Delete a schedule (the jobs it enqueued stay).
    Remove(ScheduleIdArg),
    /// Stop a schedule from firing until it is resumed.
    Pause(ScheduleIdArg),
    /// Fire a paused schedule again, from its first tick after now.
    Resume(ScheduleIdArg),
}

/// A schedule id argument.
#[derive(Debug, Args)]
pub struct ScheduleIdArg {
    /// The schedule's id.
    pub id: String,
}

/// Arguments of `drover schedules add`.
#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// The schedule's id (letters, digits, `_ - .`); an existing one is replaced.
    pub id: String,
    /// Cron expression: 5 fields, or 6 with seconds first.
    #[arg(long, env = "DROVER_CRON", required_unless_present = "every_ms", conflicts_with = "every_ms")]
    pub cron: Option<String>,
    /// Fixed interval in milliseconds.
    #[arg(long, env = "DROVER_EVERY_MS")]
    pub every_ms: Option<u64>,
    /// IANA time zone the cron expression is read in (server default: UTC).
    #[arg(long, env = "DROVER_TIMEZONE", requires = "cron")]
    pub timezone: Option<String>,
    /// Queue each job goes to.
    #[arg(long, env = "DROVER_QUEUE")]
    pub queue: String,
    /// Job type of each job.
    #[arg(long, env = "DROVER_NAME")]
    pub name: String,
    /// Handler input of each job, as JSON (default: null).
    #[arg(long, env = "DROVER_PAYLOAD")]
    pub payload: Option<String>,
    /// Per-job options.
    #[command(flatten)]
    pub job: JobOptions,
}

/// A queue name argument.
#[derive(Debug, Args)]
pub struct QueueNameArg {
    /// The queue's name.
    pub queue: String,
}

/// Arguments of `drover queues set`.
#[derive(Debug, Args)]
pub struct QueueSetArgs {
    /// The queue's name.
    pub queue: String,
    /// Most jobs of the queue active at once across all workers, or `none`.
    #[arg(long, env = "DROVER_CONCURRENCY", value_parser = parse_concurrency)]
    pub concurrency: Option<Limit<u32>>,
    /// Most job starts per window, as `MAX/PER_MS` (e.g. `10/1000`), or `none`.
    #[arg(long, env = "DROVER_RATE_LIMIT", value_parser = parse_rate_limit)]
    pub rate_limit: Option<Limit<(u32, u64)>>,
}

/// Arguments of `drover flows`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Which flows command.
    #[command(subcommand)]
    pub command: FlowsCommand,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The `drover flows` subcommands.
#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Create a flow atomically: the file holds one job spec with
    /// `"children": [job spec, ...]`, nested to any depth (the body of `POST /api/flows`).
    Create(FileArg),
}

/// A JSON file argument.
#[derive(Debug, Args)]
pub struct FileArg {
    /// The file.
    #[arg(long, env = "DROVER_FILE")]
    pub file: PathBuf,
}

/// Arguments of `drover batches`.
#[derive(Debug, Args)]
pub struct BatchesArgs {
    /// Which batches command.
    #[command(subcommand)]
    pub command: BatchesCommand,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The `drover batches` subcommands.
#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// Create a batch from a JSONL file of job specs (one `POST /api/jobs` body per line).
    Create(BatchCreateArgs),
    /// Show a batch's counts and progress.
    Show(BatchIdArg),
}

/// Arguments of `drover batches create`.
#[derive(Debug, Args)]
pub struct BatchCreateArgs {
    /// The jobs, one JSON job spec per line (1 to 10,000).
    #[arg(long, env = "DROVER_FILE")]
    pub file: PathBuf,
    /// The job enqueued once when every job of the batch has finished, as a JSON job spec.
    #[arg(long, env = "DROVER_ON_COMPLETE")]
    pub on_complete: Option<String>,
}

/// A batch id argument.
#[derive(Debug, Args)]
pub struct BatchIdArg {
    /// The batch's id.
    pub id: String,
}

/// Arguments of `drover rate-limits`.
#[derive(Debug, Args)]
pub struct RateLimitsArgs {
    /// Which rate-limits command.
    #[command(subcommand)]
    pub command: RateLimitsCommand,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The `drover rate-limits` subcommands.
#[derive(Debug, Subcommand)]
pub enum RateLimitsCommand {
    /// List the rules of every key and key prefix.
    List,
    /// Show where one key stands: its rule, active jobs, starts in the window, hold.
    Show(RateLimitKeyArg),
    /// Set a key's (or, with a trailing `*`, each prefixed key's) limits; settings not named keep their value.
    #[command(after_help = "Examples:\n  drover rate-limits set places --concurrency 4\n  \
                            drover rate-limits set 'tenant:*' --rate-limit 10/60000")]
    Set(RateLimitSetArgs),
    /// Remove a key's or prefix's rule.
    Remove(RateLimitKeyArg),
}

/// A rate-limit key (or prefix pattern) argument.
#[derive(Debug, Args)]
pub struct RateLimitKeyArg {
    /// The key, or a prefix followed by `*`.
    pub key: String,
}

/// Arguments of `drover rate-limits set`.
#[derive(Debug, Args)]
pub struct RateLimitSetArgs {
    /// The key, or a prefix followed by `*` (each matching key limited apart).
    pub key: String,
    /// Most jobs with the key active at once across all workers, or `none`.
    #[arg(long, env = "DROVER_CONCURRENCY", value_parser = parse_concurrency)]
    pub concurrency: Option<Limit<u32>>,
    /// Most starts of jobs with the key per window, as `MAX/PER_MS`, or `none`.
    #[arg(long, env = "DROVER_RATE_LIMIT", value_parser = parse_rate_limit)]
    pub rate_limit: Option<Limit<(u32, u64)>>,
}

/// A limit to set, or `none` to remove it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit<T> {
    /// Set this value.
    To(T),
    /// Remove the limit.
    Unlimited,
}

fn parse_concurrency(s: &str) -> Result<Limit<u32>, String> {
    if s == "none" {
        return Ok(Limit::Unlimited);
    }
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Limit::To(n)),
        _ => Err("expected a positive whole number or `none`".into()),
    }
}

fn parse_rate_limit(s: &str) -> Result<Limit<(u32, u64)>, String> {
    if s == "none" {
        return Ok(Limit::Unlimited);
    }
    let err = || "expected MAX/PER_MS with both positive, e.g. 10/1000, or `none`".to_owned();
    let (max, per) = s.split_once('/').ok_or_else(err)?;
    match (max.trim().parse::<u32>(), per.trim().parse::<u64>()) {
        (Ok(max), Ok(per)) if max > 0 && per > 0 => Ok(Limit::To((max, per))),
        _ => Err(err()),
    }
}

/// Arguments of `drover import`.
#[derive(Debug, Args)]
#[command(after_help = IMPORT_HELP)]
pub struct ImportArgs {
    /// Queue of the imported jobs (with `--specs`: where a line names none).
    pub queue: String,
    /// Job type of the imported jobs (with `--specs`: where a line names none).
    pub name: String,
    /// The file: `.jsonl`/`.ndjson` (one JSON value per line) or `.csv` (a header row, then one job per row).
    #[arg(long, env = "DROVER_FILE")]
    pub file: PathBuf,
    /// Read the file as this format instead of going by its extension.
    #[arg(long, env = "DROVER_FORMAT")]
    pub format: Option<ImportFormat>,
    /// JSONL only: each line is a whole job spec (the body of `POST /api/jobs`), not a payload.
    #[arg(long, env = "DROVER_SPECS")]
    pub specs: bool,
    /// Jobs per request (1 to 10000); requests are also kept under the server's 1 MiB body limit.
    #[arg(long, env = "DROVER_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Give each job the id `PREFIX-LINE` (its line number in the file), so a
    /// re-run after a failure skips the jobs that already landed.
    #[arg(long, env = "DROVER_ID_PREFIX")]
    pub id_prefix: Option<String>,
    /// Per-job options, for every imported job (a `--specs` line's own values win).
    #[command(flatten)]
    pub job: JobOptions,
    /// Server and output.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// File formats `drover import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// One JSON value per line; blank lines are skipped.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

const IMPORT_HELP: &str = "\
Formats:
  JSONL  Each non-blank line is one job's payload (any JSON value). With --specs,
         each line is instead a job spec object with the fields of POST /api/jobs
         (queue, name, payload, id, priority, delay_ms, attempts, ...); its queue
         and name default to the <QUEUE> and <NAME> arguments. Payloads are never
         guessed to be specs: a payload may well have a \"name\" field.
  CSV    The first row names the columns; every other row becomes a payload
         object keyed by those names, with every value a string (no guessing:
         \"007\" stays \"007\").

The whole file is checked before anything is sent: a line that is not valid
JSON, a row with the wrong number of fields, or a job the server would refuse
stops the import with its line number, and nothing is imported. Each request is
all-or-nothing; if one fails midway, the jobs of earlier requests stay (use
--id-prefix to make a re-run skip them).

Examples:
  drover import emails send_welcome --file users.jsonl
  drover import emails send_welcome --file users.csv --batch 500 --id-prefix users-2026-01";

/// Arguments of `drover serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "DROVER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Store URL: `sqlite://PATH` (embedded, one server) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (several servers on one database).
    #[arg(long, env = "DROVER_DATABASE", default_value = "sqlite://drover.db")]
    pub database: String,
    /// PostgreSQL only: the schema for Drover's tables, created if missing
    /// (a plain lowercase name); the server's default (`public`) when unset.
    #[arg(long, env = "DROVER_DATABASE_SCHEMA")]
    pub schema: Option<String>,
    /// Also run built-in sample workers and a trickle of sample jobs (queues
    /// `demo-import`, `demo-enrich`, `demo-report`), so there is something to watch.
    /// (`DROVER_DEMO` takes `1`/`0`, `true`/`false`, `yes`/`no`.)
    #[arg(long, env = "DROVER_DEMO", value_parser = clap::builder::BoolishValueParser::new())]
    pub demo: bool,
    /// With `--demo`: least milliseconds between sample jobs (each gap is
    /// this to twice this). Hidden: tests shorten it; nobody else needs to.
    #[arg(long, env = "DROVER_DEMO_INTERVAL_MS", default_value_t = 1_000, hide = true)]
    pub demo_interval_ms: u64,
}

/// Arguments of `drover bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Store URL (`sqlite://PATH` or `postgres://...`); a fresh temporary
    /// SQLite file by default. On PostgreSQL the bench works in a scratch
    /// schema it drops afterwards.
    #[arg(long, env = "DROVER_DATABASE")]
    pub database: Option<String>,
    /// Jobs enqueued in bulk and then processed.
    #[arg(long, env = "DROVER_JOBS", default_value_t = 100_000)]
    pub jobs: u32,
    /// Worker concurrency, and concurrent callers of the single-enqueue phase.
    #[arg(long, env = "DROVER_CONCURRENCY", default_value_t = 50)]
    pub concurrency: usize,
    /// Size of each job's payload.
    #[arg(long, env = "DROVER_PAYLOAD_BYTES", default_value_t = 0)]
    pub payload_bytes: usize,
    /// Jobs per second offered in the latency phase.
    #[arg(long, env = "DROVER_RATE", default_value_t = 1_000)]
    pub rate: u32,
    /// Length of the latency phase, in seconds.
    #[arg(long, env = "DROVER_LATENCY_SECONDS", default_value_t = 5)]
    pub latency_seconds: u32,
    /// SQLite durability: `full` (survives power loss) or `normal`.
    #[arg(long, env = "DROVER_SYNCHRONOUS", default_value = "full")]
    pub synchronous: String,
    /// Print the figures as one JSON object on the last line.
    #[arg(long, env = "DROVER_JSON")]
    pub json: bool,
    /// Also measure over loopback HTTP: enqueue latency at --rate, HTTP
    /// workers with batch fetch and ack, SSE delivery latency.
    #[arg(long, env = "DROVER_HTTP")]
    pub http: bool,
    /// HTTP workers in the --http phase.
    #[arg(long, env = "DROVER_HTTP_WORKERS", default_value_t = 4)]
    pub http_workers: usize,
}
