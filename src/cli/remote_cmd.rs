//! `pending`, `approve` and `reject`: they ask the running `rollbackd watch`
//! through its HTTP API, with the bearer token from `server.api_token`.

use serde_json::Value;

use super::{CliError, Exit, RemoteArgs};
use crate::config::Config;

fn base(config: &Config, remote: &RemoteArgs) -> String {
    remote
        .server
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen))
        .trim_end_matches('/')
        .to_string()
}

fn client() -> Result<reqwest::Client, CliError> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| CliError::Usage(format!("cannot build the HTTP client: {e}")))
}

async fn send(request: reqwest::RequestBuilder, base: &str) -> Result<(u16, Value), CliError> {
    let response = request.send().await.map_err(|e| {
        CliError::Failed(format!(
            "cannot reach rollbackd at {base}: {e} (is `rollbackd watch` running? see --server)"
        ))
    })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, value))
}

fn message(v: &Value) -> String {
    v.get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

pub(super) async fn pending(config: &Config, remote: &RemoteArgs, json: bool) -> Exit {
    let base = base(config, remote);
    let client = client()?;
    let (status, body) = send(client.get(format!("{base}/api/v1/pending")), &base).await?;
    if status != 200 {
        return Err(CliError::Failed(message(&body)));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        return Ok(());
    }
    let list = body.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no rollbacks are waiting for confirmation");
    }
    for p in list {
        println!(
            "{}  expires {}  {}",
            p["id"].as_str().unwrap_or("?"),
            p["expires_at"].as_str().unwrap_or("?"),
            p["reason"].as_str().unwrap_or("")
        );
        for line in p["plan"].as_str().unwrap_or("").lines() {
            println!("    {line}");
        }
        if let Ok(j) = serde_json::from_value::<crate::blame::Judgement>(p["blame"].clone()) {
            println!("    blame: {j}");
        }
        println!(
            "    approve: rollbackd approve {id}    reject: rollbackd reject {id}",
            id = p["id"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `approve` (force = Some) or `reject` (force = None).
pub(super) async fn decide(
    config: &Config,
    remote: &RemoteArgs,
    id: &str,
    force: Option<bool>,
) -> Exit {
    let base = base(config, remote);
    let client = client()?;
    let Some(token) = &config.server.api_token else {
        return Err(CliError::Usage(
            "approving and rejecting need the API token: set server.api_token (or ROLLBACKD_SERVER__API_TOKEN)".into(),
        ));
    };
    let action = if force.is_some() { "approve" } else { "reject" };
    let mut request = client
        .post(format!("{base}/api/v1/pending/{id}/{action}"))
        .bearer_auth(token.expose());
    if let Some(force) = force {
        request = request.json(&serde_json::json!({ "force": force }));
    }
    let (status, body) = send(request, &base).await?;
    if status == 202 && body["forwarded_to_leader"] == true {
        // A follower handed it over; the leader carries it out.
        println!(
            "{action} {id}: handed to the leader (request {}); follow it with `rollbackd history` or the logs",
            body["request"].as_str().unwrap_or("?")
        );
        return Ok(());
    }
    match (status, force) {
        (200 | 202, Some(_)) => {
            println!(
                "approved: rollback {} started",
                body["rollback_id"].as_str().unwrap_or("?")
            );
            for f in body["findings"].as_array().into_iter().flatten() {
                println!("  {}", f.as_str().unwrap_or(""));
            }
            println!("follow it with `rollbackd history` or the logs");
            Ok(())
        }
        (200, None) => {
            println!("rejected {id}; nothing was changed");
            Ok(())
        }
        _ => Err(CliError::Failed(format!(
            "{action} {id}: {}",
            message(&body)
        ))),
    }
}
