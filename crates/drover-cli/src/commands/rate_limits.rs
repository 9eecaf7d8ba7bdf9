//! `drover rate-limits list|show|set|remove`: caps and rate limits per
//! rate-limit key or key prefix.

use crate::cli::{RateLimitSetArgs, RateLimitsArgs, RateLimitsCommand};
use crate::client::Api;
use crate::client::output::{Output, Table, cell};
use crate::commands::queues::{apply_limits, render_rate};
use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};

/// Runs a `drover rate-limits` subcommand.
pub async fn run(args: RateLimitsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.client)?;
    let out = Output::new(args.client.json);
    match args.command {
        RateLimitsCommand::List => {
            let page = api.get(&["api", "rate-limits"], &[]).await?;
            out.show(&page, |page| render_rules(page.get("items").and_then(Value::as_array).map_or(&[], |v| v)))
        }
        RateLimitsCommand::Show(k) => {
            let state = api.get(&["api", "rate-limits", &k.key], &[]).await?;
            out.show(&state, render_state)
        }
        RateLimitsCommand::Set(set_args) => {
            let rule = set(&api, set_args).await?;
            out.show(&rule, |rule| render_rules(std::slice::from_ref(rule)))
        }
        RateLimitsCommand::Remove(k) => {
            api.call(Method::DELETE, &["api", "rate-limits", &k.key], None::<&Value>).await?;
            out.show(&json!({ "removed": k.key }), |_| format!("removed the rule of {}\n", k.key))
        }
    }
}

/// `PUT` replaces the whole rule, so the key's own rule is read first and
/// only the limits named on the command line change.
async fn set(api: &Api, args: RateLimitSetArgs) -> anyhow::Result<Value> {
    if args.concurrency.is_none() && args.rate_limit.is_none() {
        bail!("nothing to set: give --concurrency and/or --rate-limit");
    }
    let mut rule = json!({ "concurrency": null, "rate_limit": null });
    // Only a pattern that is a plain key can be read back through `show`; a
    // prefix's rule is found in the list.
    let rules = api.get(&["api", "rate-limits"], &[]).await?;
    let current = rules.get("items").and_then(Value::as_array).and_then(|items| {
        items.iter().find(|r| r.get("key").and_then(Value::as_str) == Some(args.key.as_str())).cloned()
    });
    if let Some(current) = current {
        for field in ["concurrency", "rate_limit"] {
            rule[field] = current.get(field).cloned().unwrap_or(Value::Null);
        }
    }
    apply_limits(&mut rule, args.concurrency, args.rate_limit);
    api.call(Method::PUT, &["api", "rate-limits", &args.key], Some(&rule)).await
}

fn render_rules(rules: &[Value]) -> String {
    let mut table = Table::new(&["KEY", ">CONCURRENCY", "RATE LIMIT"]);
    for r in rules {
        table.row(vec![cell(r, "key"), cell(r, "concurrency"), render_rate(r.get("rate_limit"))]);
    }
    table.render()
}

fn render_state(state: &Value) -> String {
    let rule = state.get("rule").filter(|r| !r.is_null());
    let mut text = format!("key:               {}\n", cell(state, "key"));
    match rule {
        Some(rule) => {
            text += &format!("rule:              {}\n", cell(rule, "key"));
            text += &format!("concurrency:       {}\n", cell(rule, "concurrency"));
            text += &format!("rate limit:        {}\n", render_rate(rule.get("rate_limit")));
        }
        None => text += "rule:              (none: not limited)\n",
    }
    text += &format!("active:            {}\n", cell(state, "active"));
    text += &format!("started in window: {}\n", cell(state, "started_in_window"));
    text += &format!("throttled until:   {}\n", cell(state, "throttled_until"));
    text
}
