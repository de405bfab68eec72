//! The commands that call the REST API, and how each prints its answer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use outpost_bus as bus;
use outpost_schemas::state::ExecutionStatus;
use outpost_services::cli::{self, Client};
use uuid::Uuid;

use crate::args::{
    AuditCmd, Command, ExecCmd, JobCmd, NodesArgs, NodesCmd, RunnerCmd, SecurityCmd, TokenCmd,
};
use crate::Ctx;

/// Runs a client command; the server commands are `main`'s.
pub(crate) async fn run(ctx: &Ctx, command: Command) -> anyhow::Result<i32> {
    let (client, project) = (&ctx.client, &ctx.project);
    let mut stdout = std::io::stdout();
    match command {
        Command::Up(_) | Command::Serve(_) | Command::Projector(_) => {
            anyhow::bail!("not a client command")
        }
        Command::Job(JobCmd::Load { file: path, dupe }) => {
            let yaml = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let v = client
                .import(project, yaml, &dupe)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for j in v["succeeded"].as_array().into_iter().flatten() {
                let name = match j["group"].as_str() {
                    Some(g) => format!("{g}/{}", j["name"].as_str().unwrap_or("")),
                    None => j["name"].as_str().unwrap_or("").to_string(),
                };
                println!(
                    "{:<8} {}  {}",
                    j["action"].as_str().unwrap_or(""),
                    j["id"].as_str().unwrap_or(""),
                    name
                );
            }
        }
        Command::Job(JobCmd::List) => {
            let v = client.jobs(project).await?;
            for j in v.as_array().into_iter().flatten() {
                let name = match j["group"].as_str() {
                    Some(g) => format!("{g}/{}", j["name"].as_str().unwrap_or("")),
                    None => j["name"].as_str().unwrap_or("").to_string(),
                };
                println!(
                    "{}  {:<30} {}",
                    j["id"].as_str().unwrap_or(""),
                    name,
                    j["description"].as_str().unwrap_or("")
                );
            }
        }
        Command::Job(JobCmd::Get { job, yaml }) => {
            let id = client.resolve_job(project, &job).await?;
            print!("{}", client.job(id, yaml).await?);
            if !yaml {
                println!();
            }
        }
        Command::Job(JobCmd::Delete { job }) => {
            let id = client.resolve_job(project, &job).await?;
            client.delete_job(id).await?;
            println!("deleted {id}");
        }
        Command::Run(a) => {
            let id = client.resolve_job(project, &a.job).await?;
            let options: BTreeMap<String, String> = a.options.into_iter().collect();
            let exec = client.run(id, options).await?;
            if !a.follow {
                println!("{exec}");
                return Ok(0);
            }
            eprintln!("execution {exec} started");
            return follow_exit(client, exec, &mut stdout).await;
        }
        Command::Exec(ExecCmd::Show { id, json }) => {
            let st = client.execution(id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print!("{}", cli::describe(&st));
            }
        }
        Command::Exec(ExecCmd::Output { id }) => {
            let mut offset = String::from("0");
            loop {
                let page = client.output(id, &offset).await?;
                for e in &page.entries {
                    println!("{}", e.log);
                }
                if page.entries.is_empty() || page.offset == offset {
                    break;
                }
                offset = page.offset;
            }
        }
        Command::Exec(ExecCmd::Follow { id }) => return follow_exit(client, id, &mut stdout).await,
        Command::Exec(ExecCmd::List { max }) => {
            for st in client.executions(project, max).await? {
                println!(
                    "{}  {:<10} {}  {}",
                    st.id,
                    cli::status_word(st.status),
                    st.requested_at.format("%Y-%m-%d %H:%M:%S"),
                    st.job_name
                );
            }
        }
        Command::Exec(ExecCmd::Abort { id }) => {
            let v = client.abort(id).await?;
            let status = v["abort"]["status"].as_str().unwrap_or("unknown");
            match v["abort"]["reason"].as_str() {
                Some(r) => println!("abort {status}: {r}"),
                None => println!("abort {status}"),
            }
        }
        Command::Nodes(NodesArgs {
            cmd: Some(NodesCmd::Load { file: path }),
            ..
        }) => {
            let yaml = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let v = client
                .put_nodes(project, yaml)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!("loaded {} nodes into project {project}", v["nodes"]);
        }
        Command::Nodes(NodesArgs { filter, cmd: None }) => {
            let v = client.nodes(project, filter.as_deref()).await?;
            for n in v.as_array().into_iter().flatten() {
                let source = match n["source"]["kind"].as_str() {
                    Some("runner") => {
                        format!("runner:{}", n["source"]["runner_id"].as_str().unwrap_or(""))
                    }
                    _ => "project".into(),
                };
                let host = match n["port"].as_u64() {
                    Some(p) => format!("{}:{p}", n["hostname"].as_str().unwrap_or("")),
                    None => n["hostname"].as_str().unwrap_or("").to_string(),
                };
                let tags: Vec<&str> = n["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str())
                    .collect();
                println!(
                    "{:<20} {:<24} {:<18} tags=[{}]",
                    n["nodename"].as_str().unwrap_or(""),
                    host,
                    source,
                    tags.join(",")
                );
            }
        }
        Command::Audit(AuditCmd::Tail { lines, follow }) => {
            let mut after: Option<u64> = None;
            loop {
                let v = client
                    .audit(after, if after.is_some() { 1000 } else { lines })
                    .await?;
                for e in v.as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<9} {:<3} {:<40} {} {}",
                        e["time"].as_str().unwrap_or(""),
                        e["actor"].as_str().unwrap_or(""),
                        e["status"],
                        e["action"].as_str().unwrap_or(""),
                        e["target"].as_str().unwrap_or(""),
                        e["source"].as_str().unwrap_or(""),
                    );
                    after = e["seq"].as_u64().or(after);
                }
                if !follow {
                    break;
                }
                after = after.or(Some(0));
                // The audit API has no push form yet; a second's delay is
                // fine for a human watching.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        Command::Runner(RunnerCmd::Create { name, tags, output }) => {
            let tags = outpost_schemas::job::parse_tag_list(&tags).map_err(anyhow::Error::msg)?;
            let v = client.enrol_runner(&name, &tags).await?;
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
            write_bundle(&path, &v)?;
            println!(
                "enrolled runner {name} (tags: {}); credentials written to {} (mode 0600)\n\
                 start it with: outpost-runner --creds {}",
                if tags.is_empty() {
                    "none".to_string()
                } else {
                    tags.join(",")
                },
                path.display(),
                path.display()
            );
        }
        Command::Runner(RunnerCmd::Rotate { name, output }) => {
            let v = client.runner_action(&name, "rotate").await?;
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
            write_bundle(&path, &v)?;
            println!(
                "new credentials for runner {name} written to {}; replace the runner's --creds file with it. \
                 The old credentials stop working once the runner has switched.",
                path.display()
            );
        }
        Command::Runner(RunnerCmd::Revoke { name }) => {
            let v = client.runner_action(&name, "revoke").await?;
            println!(
                "revoked runner {name}; {} claimed step(s) ended as runner-lost",
                v["steps_ended"]
            );
            if v["connections_cut"] == false {
                eprintln!("warning: NATS is not in operator mode, so the runner's connections were not cut; the control plane refuses its work");
            }
        }
        Command::Runner(RunnerCmd::Drain { name }) => {
            let v = client.runner_action(&name, "drain").await?;
            println!(
                "draining runner {name} ({} live replica(s)): no new steps; running ones finish, then it stops",
                v["live_replicas"]
            );
        }
        Command::Runner(RunnerCmd::Ping { name }) => {
            let v = client.runner_action(&name, "ping").await?;
            let replicas = v["replicas"].as_array().cloned().unwrap_or_default();
            if replicas.is_empty() {
                eprintln!("no replica of runner {name} answered within 2 s");
                return Ok(1);
            }
            for r in replicas {
                println!(
                    "{name} replica {}: {:.2} ms",
                    r["replica_id"].as_str().unwrap_or(""),
                    r["rtt_ms"].as_f64().unwrap_or_default()
                );
            }
        }
        Command::Runner(RunnerCmd::Enrolled) => {
            let v = client.enrolled_runners().await?;
            for r in v.as_array().into_iter().flatten() {
                let creds = r["credentials"].as_array().cloned().unwrap_or_default();
                let state = |s: &str| creds.iter().filter(|c| c["state"] == s).count();
                println!(
                    "{:<16} {:<8} tags=[{}] credentials: {} active, {} superseded, {} revoked; created {} by {}",
                    r["name"].as_str().unwrap_or(""),
                    if r["revoked"].is_null() { "enrolled" } else { "REVOKED" },
                    r["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect::<Vec<_>>().join(","),
                    state("active"),
                    state("superseded"),
                    state("revoked"),
                    r["created"].as_str().unwrap_or(""),
                    r["created_by"].as_str().unwrap_or(""),
                );
            }
        }
        Command::Deadletters => {
            let v = client.dead_letters().await?;
            for (subject, n) in v["counts"].as_object().into_iter().flatten() {
                println!("{n:>6}  {subject}");
            }
            for d in v["recent"].as_array().into_iter().flatten() {
                println!(
                    "#{} {} {} from {}: {}",
                    d["seq"],
                    d["time"].as_str().unwrap_or(""),
                    d["consumer"].as_str().unwrap_or(""),
                    d["subject"].as_str().unwrap_or(""),
                    d["error"].as_str().unwrap_or(""),
                );
            }
        }
        Command::Token(TokenCmd::Create { name, roles }) => {
            let v = client.create_token(&name, &roles).await?;
            eprintln!(
                "token {} ({name}) created; it is shown once, here:",
                v["id"].as_str().unwrap_or("")
            );
            println!("{}", v["token"].as_str().unwrap_or(""));
        }
        Command::Token(TokenCmd::List) => {
            let v = client.tokens().await?;
            for t in v.as_array().into_iter().flatten() {
                println!(
                    "{}  {:<20} {:<8} roles={} created {} by {}",
                    t["id"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    if t["revoked"].is_null() {
                        "active"
                    } else {
                        "revoked"
                    },
                    t["roles"],
                    t["created"].as_str().unwrap_or(""),
                    t["created_by"].as_str().unwrap_or(""),
                );
            }
        }
        Command::Token(TokenCmd::Revoke { id }) => {
            client.revoke_token(&id).await?;
            println!("token {id} revoked");
        }
        Command::Token(TokenCmd::Bootstrap { name, output }) => {
            let (_c, js) = bus::connect(
                &ctx.nats("outpost token bootstrap"),
                std::time::Duration::from_secs(10),
            )
            .await?;
            outpost_services::store::topology::ensure(&js).await?;
            let tokens = outpost_services::security::auth::Tokens::open(&js).await?;
            let roles = outpost_services::security::auth::parse_roles(&["admin".into()])
                .map_err(anyhow::Error::msg)?;
            let (rec, token) = tokens
                .create(&name, roles, "bootstrap")
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match output {
                Some(p) => {
                    outpost_services::security::write_private(&p, format!("{token}\n").as_bytes())
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    println!(
                        "admin token {} written to {} (mode 0600)",
                        rec.id,
                        p.display()
                    );
                }
                None => println!("{token}"),
            }
        }
        Command::Security(SecurityCmd::Init {
            keys_dir,
            resolver_dir,
        }) => {
            let keys = outpost_services::security::KeyStore::init(&keys_dir)?;
            println!(
                "keys in {} (mode 0600); account {}",
                keys_dir.display(),
                keys.account_public_key()
            );
            if let Some(dir) = resolver_dir {
                let conf = keys_dir.join(outpost_services::security::NATS_AUTH_CONF);
                if conf.exists() {
                    // It carries the revocations made since; a fresh one
                    // would let revoked runners back in.
                    println!(
                        "nats-server auth include: {} (kept; it holds the current revocations)",
                        conf.display()
                    );
                    return Ok(0);
                }
                let text = keys.nats_auth_conf(&dir, &Default::default())?;
                outpost_services::security::write_private(&conf, text.as_bytes())?;
                println!(
                    "nats-server auth include: {} (include it from nats-server's config)",
                    conf.display()
                );
            }
        }
        Command::Runner(RunnerCmd::List) => {
            let v = client.runners().await?;
            println!(
                "{:<16} {:<10} {:<10} {:<10} {:<9} {:<7} {:<8} {:<30} HOST (TAGS)",
                "RUNNER",
                "HEALTH",
                "REPLICA",
                "STATE",
                "STEPS",
                "OUTBOX",
                "VERSION",
                "LAST CHECK-IN"
            );
            for r in v.as_array().into_iter().flatten() {
                let replica = r["replica_id"].as_str().unwrap_or("-");
                println!(
                    "{:<16} {:<10} {:<10} {:<10} {:<9} {:<7} {:<8} {:<30} {} ({})",
                    r["runner_id"].as_str().unwrap_or(""),
                    r["health"].as_str().unwrap_or(""),
                    &replica[replica.len().saturating_sub(8)..],
                    r["state"].as_str().unwrap_or("-"),
                    if r["capacity"].is_null() {
                        "-".to_string()
                    } else {
                        format!("{}/{}", r["running_steps"], r["capacity"])
                    },
                    // Messages waiting for NATS: non-zero after a link cut.
                    r["outbox_entries"]
                        .as_u64()
                        .map_or("-".into(), |n| n.to_string()),
                    r["version"].as_str().unwrap_or("-"),
                    r["time"].as_str().unwrap_or("never"),
                    r["hostname"].as_str().unwrap_or("-"),
                    r["tags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
        }
    }
    Ok(0)
}

async fn follow_exit(client: &Client, id: Uuid, out: &mut std::io::Stdout) -> anyhow::Result<i32> {
    let st = client.follow(id, out).await?;
    let failed: Vec<String> = st
        .steps
        .iter()
        .filter_map(|s| {
            s.reason
                .as_ref()
                .filter(|_| s.status >= outpost_schemas::state::StepStatus::Failed)
                .map(|r| format!("step {}: {r}", s.step))
        })
        .collect();
    eprintln!(
        "execution {id} {}{}",
        cli::status_word(st.status),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({})", failed.join("; "))
        }
    );
    Ok(if st.status == ExecutionStatus::Succeeded {
        0
    } else {
        1
    })
}

/// Writes the bundle of an enrol/rotate reply, mode 0600, atomically (a
/// runner watching the file never reads half of it).
fn write_bundle(path: &std::path::Path, reply: &serde_json::Value) -> anyhow::Result<()> {
    let bundle = reply["bundle"]
        .as_str()
        .context("unexpected API response: no bundle")?;
    outpost_services::security::write_private(path, bundle.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
