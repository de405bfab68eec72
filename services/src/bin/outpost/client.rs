//! The commands that call the REST API, and how each prints its answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use outpost_bus as bus;
use outpost_schemas::state::ExecutionStatus;
use outpost_services::cli::{self, Client};
use outpost_services::contract::{
    wire_word as word, CredentialState, Draining, NodeSource, PingReply, Revocation, Rotation,
};
use outpost_services::formats::{self, Format};
use uuid::Uuid;

use crate::args::{
    AuditCmd, Command, ConfigCmd, ExecCmd, JobCmd, NodesArgs, NodesCmd, ProjectCmd, RunnerCmd,
    SecurityCmd, TokenCmd,
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
        Command::Job(JobCmd::Load {
            file: path,
            dupe,
            format,
        }) => {
            let (text, format) = read_job_file(&path, format)?;
            let result = client
                .import(project, text, format, dupe)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for j in &result.succeeded {
                println!("{:<8} {}  {}", word(&j.action), j.id, j.full_name());
                for w in &j.warnings {
                    eprintln!("warning: {}: {w}", j.full_name());
                }
            }
        }
        Command::Job(JobCmd::Check { file, format, to }) => {
            let (text, format) = read_job_file(&file, format)?;
            let jobs = formats::parse_jobs(&text, format)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for format in [Format::Yaml, Format::Xml, Format::Json] {
                formats::reads_back(&jobs, format).map_err(|why| {
                    anyhow::anyhow!(
                        "{}: read, but {why}; this is a bug in Outpost",
                        file.display()
                    )
                })?;
            }
            match to {
                Some(to) => print!("{}", formats::export(&jobs, to)),
                None => {
                    for job in &jobs {
                        let id = job.uuid.map(|u| u.to_string()).unwrap_or_default();
                        println!("ok       {id:<36}  {}", job.full_name());
                    }
                }
            }
            for job in &jobs {
                for why in job.inactive() {
                    eprintln!("warning: {}: {why}", job.full_name());
                }
            }
            eprintln!(
                "{}: {} job(s) read as {}; each reads back the same as yaml, xml and json",
                file.display(),
                jobs.len(),
                format.name()
            );
        }
        Command::Job(JobCmd::List) => {
            for j in client.jobs(project).await? {
                let name = match &j.group {
                    Some(g) => format!("{g}/{}", j.name),
                    None => j.name.clone(),
                };
                println!("{}  {:<30} {}", j.id, name, j.description);
            }
        }
        Command::Job(JobCmd::Get { job, format, yaml }) => {
            let id = client.resolve_job(project, &job).await?;
            match format.or(yaml.then_some(Format::Yaml)) {
                Some(format) => print!("{}", client.job_file(id, format).await?),
                None => println!("{}", serde_json::to_string_pretty(&client.job(id).await?)?),
            }
        }
        Command::Job(JobCmd::Values {
            job,
            option,
            options,
        }) => {
            let id = client.resolve_job(project, &job).await?;
            let listed = client.option_values(id, &option, &options).await?;
            for v in &listed.values {
                let mark = if v.selected { "  (selected)" } else { "" };
                println!("{:<24} {}{mark}", v.value, v.name);
            }
        }
        Command::Job(JobCmd::Export { format }) => {
            print!("{}", client.export_jobs(project, format).await?);
        }
        Command::Job(JobCmd::Delete { job }) => {
            let id = client.resolve_job(project, &job).await?;
            client.delete_job(id).await?;
            println!("deleted {id}");
        }
        Command::Run(a) => {
            let id = client.resolve_job(project, &a.job).await?;
            let options: BTreeMap<String, String> = a.options.into_iter().collect();
            let exec = client.run(id, options).await?.id;
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
            let reply = client.abort(id).await?;
            let status = word(&reply.abort.status);
            match reply.abort.reason {
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
            let loaded = client
                .put_nodes(project, yaml)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            println!("loaded {} nodes into project {project}", loaded.nodes);
        }
        Command::Nodes(NodesArgs { filter, cmd: None }) => {
            for n in client.nodes(project, filter.as_deref()).await? {
                let source = match &n.source {
                    NodeSource::Runner { runner_id } => format!("runner:{runner_id}"),
                    NodeSource::Project => "project".into(),
                };
                let host = match n.node.port {
                    Some(p) => format!("{}:{p}", n.node.hostname),
                    None => n.node.hostname.clone(),
                };
                println!(
                    "{:<20} {:<24} {:<18} tags=[{}]",
                    n.node.nodename,
                    host,
                    source,
                    n.node.tags.iter().cloned().collect::<Vec<_>>().join(",")
                );
            }
        }
        Command::Audit(AuditCmd::Tail { lines, follow }) => {
            let mut after: Option<u64> = None;
            loop {
                let entries = client
                    .audit(after, if after.is_some() { 1000 } else { lines })
                    .await?;
                for e in entries {
                    let ev = &e.event;
                    println!(
                        "{}  {:<9} {:<3} {:<40} {} {}",
                        ev.header
                            .time
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        ev.actor,
                        ev.status,
                        ev.action,
                        ev.target,
                        ev.source,
                    );
                    after = Some(e.seq);
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
            let enrolment = client.enrol_runner(&name, &tags).await?;
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
            write_bundle(&path, &enrolment.bundle)?;
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
            let rotation: Rotation = client.runner_action(&name, "rotate").await?;
            let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.creds")));
            write_bundle(&path, &rotation.bundle)?;
            println!(
                "new credentials for runner {name} written to {}; replace the runner's --creds file with it. \
                 The old credentials stop working once the runner has switched.",
                path.display()
            );
        }
        Command::Runner(RunnerCmd::Revoke { name }) => {
            let revocation: Revocation = client.runner_action(&name, "revoke").await?;
            println!(
                "revoked runner {name}; {} claimed step(s) ended as runner-lost",
                revocation.steps_ended
            );
            if !revocation.connections_cut {
                eprintln!("warning: NATS is not in operator mode, so the runner's connections were not cut; the control plane refuses its work");
            }
        }
        Command::Runner(RunnerCmd::Drain { name }) => {
            let draining: Draining = client.runner_action(&name, "drain").await?;
            println!(
                "draining runner {name} ({} live replica(s)): no new steps; running ones finish, then it stops",
                draining.live_replicas
            );
        }
        Command::Runner(RunnerCmd::Ping { name }) => {
            let ping: PingReply = client.runner_action(&name, "ping").await?;
            if ping.replicas.is_empty() {
                eprintln!("no replica of runner {name} answered within 2 s");
                return Ok(1);
            }
            for r in ping.replicas {
                println!("{name} replica {}: {:.2} ms", r.replica_id, r.rtt_ms);
            }
        }
        Command::Runner(RunnerCmd::Enrolled) => {
            for r in client.enrolled_runners().await? {
                println!(
                    "{:<16} {:<8} tags=[{}] credentials: {} active, {} superseded, {} revoked; created {} by {}",
                    r.name,
                    if r.revoked.is_none() { "enrolled" } else { "REVOKED" },
                    r.tags.join(","),
                    r.credentials_in(CredentialState::Active),
                    r.credentials_in(CredentialState::Superseded),
                    r.credentials_in(CredentialState::Revoked),
                    r.created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    r.created_by,
                );
            }
        }
        Command::Project(ProjectCmd::Config { change }) => {
            let config = match change {
                None => client.project_config(project).await?,
                Some(ConfigCmd::Set { key, value }) => {
                    client.set_project_config(project, &key, &value).await?
                }
                Some(ConfigCmd::Unset { key }) => {
                    client.unset_project_config(project, &key).await?
                }
            };
            for (k, v) in &config.0 {
                println!("{k}={v}");
            }
        }
        Command::Deadletters => {
            let dead = client.dead_letters().await?;
            for (subject, n) in &dead.counts {
                println!("{n:>6}  {subject}");
            }
            for d in &dead.recent {
                println!(
                    "#{} {} {} from {}: {}",
                    d.seq,
                    d.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    d.consumer,
                    d.subject,
                    d.error,
                );
            }
        }
        Command::Token(TokenCmd::Create { name, roles }) => {
            let created = client.create_token(&name, &roles).await?;
            eprintln!(
                "token {} ({name}) created; it is shown once, here:",
                created.record.id
            );
            println!("{}", created.token);
        }
        Command::Token(TokenCmd::List) => {
            for t in client.tokens().await? {
                println!(
                    "{}  {:<20} {:<8} roles={} created {} by {}",
                    t.id,
                    t.name,
                    if t.revoked.is_none() {
                        "active"
                    } else {
                        "revoked"
                    },
                    serde_json::to_string(&t.roles)?,
                    t.created
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    t.created_by,
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
                if let Ok(old) = std::fs::read_to_string(&conf) {
                    // It carries the revocations made since (a fresh one
                    // would let revoked runners back in), and perhaps an
                    // older version's accounts.
                    let text = keys.refreshed_nats_auth_conf(&old)?;
                    outpost_services::security::write_private(&conf, text.as_bytes())?;
                    println!(
                        "nats-server auth include: {} (rebuilt with this version's accounts, keeping its revocations and resolver dir; restart nats-server to load it)",
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
            let runners = client.runners().await?;
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
            for r in runners {
                let replica = r.replica_id.map_or("-".to_string(), |id| id.to_string());
                println!(
                    "{:<16} {:<10} {:<10} {:<10} {:<9} {:<7} {:<8} {:<30} {} ({})",
                    r.runner_id,
                    word(&r.health),
                    &replica[replica.len().saturating_sub(8)..],
                    r.state.as_ref().map_or("-".to_string(), word),
                    match (r.running_steps, r.capacity) {
                        (Some(n), Some(c)) => format!("{n}/{c}"),
                        _ => "-".to_string(),
                    },
                    // Messages waiting for NATS: non-zero after a link cut.
                    r.outbox_entries.map_or("-".into(), |n| n.to_string()),
                    r.version.as_deref().unwrap_or("-"),
                    r.time.map_or("never".to_string(), |t| t
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                    r.hostname.as_deref().unwrap_or("-"),
                    r.tags.join(","),
                );
                // Said only when a list leaves some out: why a plugin step
                // waits is then in plain sight.
                if !r.plugins_not_allowed.is_empty() {
                    println!(
                        "  not allowed by its --allowed-plugins: {}",
                        r.plugins_not_allowed.join(", ")
                    );
                }
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
fn write_bundle(path: &std::path::Path, bundle: &str) -> anyhow::Result<()> {
    outpost_services::security::write_private(path, bundle.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A job file's text and format: `--format`, else the extension, else
/// what the text looks like.
fn read_job_file(path: &Path, format: Option<Format>) -> anyhow::Result<(String, Format)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let format = format
        .or_else(|| {
            path.extension()
                .and_then(|e| e.to_str())
                .and_then(Format::from_name)
        })
        .unwrap_or_else(|| Format::sniff(&text));
    Ok((text, format))
}
